#!/usr/bin/env bash
# The mapchaos storm scenarios (chart install, storms, broken engine, invalid spec,
# lifecycle, metrics) from a clean slate: see run-suite.sh.
exec bash "$(dirname "${BASH_SOURCE[0]}")/run-suite.sh" scenarios
