#!/usr/bin/env bash
# The smoke proof of the local cluster itself (scheduling, probes, volumes, tokens,
# Prometheus, back-off, termination) from a clean slate: see run-suite.sh.
exec bash "$(dirname "${BASH_SOURCE[0]}")/run-suite.sh" smoke
