#!/usr/bin/env python3
"""The chart's Grafana dashboards and alert rules against a live Prometheus.

    promql_live.py panels --prom URL --namespace NS --experiment NAME --start EPOCH
    promql_live.py rules  --prom URL [--nonempty ALERT]... [--empty ALERT]...
    promql_live.py rule-nonempty --prom URL ALERT      (exit 0 when the alert's expr has a result)

`panels` resolves every dashboard's query variables through Prometheus (label values of
the variable's own selector, over the run's time range), fills them in ($namespace,
$experiment, $pod, ${datasource}, $__rate_interval, $__interval, $__range), and runs every
panel target as Grafana would: instant targets with /api/v1/query, the rest with
/api/v1/query_range from --start to now. Every query must succeed without warnings; the
panels that show a storm must have data (NONEMPTY), some of it above zero (POSITIVE).

`rules` evaluates every `expr` of the rules file; each must succeed, the --nonempty ones
must have a result (the alert would fire, `for:` aside) and the --empty ones none.

Output: one line per assertion, `ok DESCRIPTION` or `not ok DESCRIPTION`, details on
lines starting with `#`; e2e/scenarios.sh counts them. Exit status 1 when one failed.
"""

import argparse
import glob
import json
import math
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(HERE, "..", "charts", "mapchaos")

# The local Prometheus scrapes every 5s (e2e/cluster); Grafana's $__rate_interval is
# max($__interval + scrape interval, 4 * scrape interval).
SCRAPE = 5
STEP = 15

# Panels (dashboard file stem, title) that must show data after the scenarios' storms,
# and the ones where some value must also be above zero.
NONEMPTY = {
    ("overview", "Experiments by phase"),
    ("overview", "Active storms"),
    ("overview", "Anomalies in range"),
    ("overview", "Targets by state"),
    ("overview", "Active storms by namespace"),
    ("overview", "Operations/s by op"),
    ("overview", "Race exposures/s by kind"),
    ("overview", "Anomalies by kind"),
    ("overview", "Delete latency (storm): p50 / p99 / p99.9"),
    ("overview", "Delete latency heatmap (storm)"),
    ("overview", "Live keys vs memory held"),
    ("overview", "Reconciles/s by result"),
    ("overview", "Reconcile duration p50 / p99"),
    ("experiment", "Anomalies (experiment)"),
    ("experiment", "Storms active (pods)"),
    ("experiment", "Operations in range"),
    ("experiment", "Experiment anomalies over time"),
    ("experiment", "Storm active by pod"),
    ("experiment", "Operations/s by op (storm)"),
    ("experiment", "Race exposures/s by kind"),
    ("experiment", "Anomalies by kind and pod"),
    ("experiment", "Delete latency (storm): p50 / p99 / p99.9"),
    ("experiment", "Delete latency heatmap (storm)"),
    ("experiment", "Live keys vs memory held"),
    ("experiment", "Memory by pod (rss)"),
}
POSITIVE = {
    ("overview", "Anomalies in range"),
    ("overview", "Operations/s by op"),
    ("overview", "Race exposures/s by kind"),
    ("overview", "Anomalies by kind"),
    ("overview", "Reconciles/s by result"),
    ("experiment", "Anomalies (experiment)"),
    ("experiment", "Operations in range"),
    ("experiment", "Storm active by pod"),
    ("experiment", "Operations/s by op (storm)"),
    ("experiment", "Race exposures/s by kind"),
    ("experiment", "Anomalies by kind and pod"),
    ("experiment", "Delete latency (storm): p50 / p99 / p99.9"),
}

FAILED = 0


def ok(what):
    print(f"ok {what}", flush=True)


def not_ok(what, detail=None):
    global FAILED
    FAILED += 1
    print(f"not ok {what}", flush=True)
    if detail:
        for line in str(detail).splitlines()[:6]:
            print(f"#   {line}", flush=True)


def api(prom, path, params):
    """GET prom+path; the decoded body (Prometheus answers errors as JSON too)."""
    url = f"{prom}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        try:
            return json.load(e)
        except ValueError:
            return {"status": "error", "error": f"HTTP {e.code}"}
    except (urllib.error.URLError, OSError, ValueError) as e:
        return {"status": "error", "error": str(e)}


def values(body):
    """Every sample value of a query or query_range answer, as floats."""
    data = body.get("data", {})
    out = []
    for series in data.get("result", []):
        if "value" in series:
            out.append(float(series["value"][1]))
        for _, v in series.get("values", []):
            out.append(float(v))
    return out


def describe(body):
    data = body.get("data", {})
    result = data.get("result", [])
    vals = [v for v in values(body) if not math.isnan(v)]
    top = f", max {max(vals):.4g}" if vals else ""
    return f"{len(result)} series{top}"


def selector_of(query):
    """label_values(SELECTOR, LABEL) -> (SELECTOR, LABEL); label_values(LABEL) -> (None, LABEL)."""
    m = re.fullmatch(r"\s*label_values\((?:(.*),\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", query)
    if not m:
        return None
    return m.group(1), m.group(2)


def regex_escape(value):
    """Grafana's escaping of a multi-value for =~ in a PromQL string: regex metacharacters
    get a backslash, itself escaped for the string literal (Python's re.escape would also
    escape '-', an invalid escape in PromQL strings)."""
    return re.sub(r"([.*+?^${}()|\[\]\\])", r"\\\\\1", value)


def fill(expr, variables):
    """Grafana's substitution: ${name}, ${name:...} and $name, longest names first."""
    for name in sorted(variables, key=len, reverse=True):
        value = variables[name]
        expr = re.sub(r"\$\{" + re.escape(name) + r"(?::[a-z]+)?\}", lambda _: value, expr)
        expr = re.sub(r"\$" + re.escape(name) + r"(?![A-Za-z0-9_])", lambda _: value, expr)
    return expr


def panels(args):
    now = time.time()
    start = args.start
    span = max(int(now - start), 60)
    builtin = {
        "__rate_interval": f"{max(STEP + SCRAPE, 4 * SCRAPE)}s",
        "__interval": f"{STEP}s",
        "__range": f"{span}s",
        "__range_s": str(span),
    }
    files = sorted(glob.glob(os.path.join(args.chart, "dashboards", "*.json")))
    if not files:
        not_ok(f"dashboards found under {args.chart}/dashboards")
        return
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        with open(path) as f:
            board = json.load(f)
        variables = dict(builtin)
        wanted = {"namespace": args.namespace, "experiment": args.experiment}
        for var in board.get("templating", {}).get("list", []):
            name = var["name"]
            if var.get("type") == "datasource":
                variables[name] = "prometheus"
                continue
            if var.get("type") != "query":
                continue
            query = var.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            parsed = selector_of(fill(query or "", variables))
            if parsed is None:
                not_ok(f"{stem}: variable ${name} is a label_values() query", query)
                continue
            selector, label = parsed
            params = {"start": start, "end": now}
            if selector:
                params["match[]"] = selector
            body = api(args.prom, f"/api/v1/label/{label}/values", params)
            found = (body.get("data") or []) if body.get("status") == "success" else []
            if body.get("status") != "success" or not found:
                not_ok(f"{stem}: variable ${name} ({query}) has values", body.get("error") or "no values")
                continue
            if name in wanted:
                if wanted[name] in found:
                    ok(f"{stem}: variable ${name} offers {wanted[name]} ({len(found)} values)")
                    variables[name] = wanted[name]
                else:
                    not_ok(f"{stem}: variable ${name} offers {wanted[name]}", f"values: {found}")
                    variables[name] = wanted[name]
            else:
                # Multi-value "All": Grafana joins the values into a regex alternation.
                ok(f"{stem}: variable ${name} has {len(found)} values")
                variables[name] = "|".join(regex_escape(v) for v in found)
        for panel in walk_panels(board.get("panels", [])):
            title = panel.get("title", "?")
            targets = [t for t in panel.get("targets", []) if t.get("expr")]
            results = []
            for target in targets:
                expr = fill(target["expr"], variables)
                if "$" in expr:
                    not_ok(f"{stem} / {title} [{target.get('refId')}]: every variable filled", expr)
                    continue
                instant = target.get("instant") is True and target.get("range") is not True
                if instant:
                    body = api(args.prom, "/api/v1/query", {"query": expr, "time": now})
                else:
                    body = api(args.prom, "/api/v1/query_range",
                               {"query": expr, "start": start, "end": now, "step": STEP})
                kind = "query" if instant else "query_range"
                what = f"{stem} / {title} [{target.get('refId')}] {kind}"
                if body.get("status") != "success":
                    not_ok(f"{what} succeeds", f"{body.get('errorType')}: {body.get('error')}\n{expr}")
                    continue
                if body.get("warnings"):
                    not_ok(f"{what} succeeds without warnings", f"{body['warnings']}\n{expr}")
                    continue
                ok(f"{what} succeeds: {describe(body)}")
                results.append((expr, body))
            if not targets:
                continue
            key = (stem, title)
            if key in NONEMPTY:
                finite = [v for _, b in results for v in values(b) if not math.isnan(v)]
                if len(results) == len(targets) and finite:
                    ok(f"{stem} / {title}: shows data from the storms")
                else:
                    not_ok(f"{stem} / {title}: shows data from the storms",
                           "\n".join(e for e, b in results if not values(b)) or "no result")
            if key in POSITIVE:
                if any(v > 0 for _, b in results for v in values(b) if not math.isnan(v)):
                    ok(f"{stem} / {title}: some value above zero")
                else:
                    not_ok(f"{stem} / {title}: some value above zero",
                           "\n".join(e for e, _ in results))


def walk_panels(items):
    for panel in items:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def load_rules(chart):
    import yaml

    with open(os.path.join(chart, "rules", "mapchaos.rules.yaml")) as f:
        doc = yaml.safe_load(f)
    return [r for g in doc["groups"] for r in g["rules"] if "expr" in r]


def rules(args):
    now = time.time()
    rules_ = load_rules(args.chart)
    names = {r.get("alert") or r.get("record") for r in rules_}
    for name in args.nonempty + args.empty:
        if name not in names:
            not_ok(f"rule {name} exists in mapchaos.rules.yaml")
    for rule in rules_:
        name = rule.get("alert") or rule.get("record")
        expr = rule["expr"].strip()
        body = api(args.prom, "/api/v1/query", {"query": expr, "time": now})
        if body.get("status") != "success":
            not_ok(f"rule {name}: expr succeeds", f"{body.get('errorType')}: {body.get('error')}\n{expr}")
            continue
        if body.get("warnings"):
            not_ok(f"rule {name}: expr succeeds without warnings", body["warnings"])
            continue
        n = len(body["data"]["result"])
        if name in args.nonempty:
            check = n > 0
            what = f"rule {name}: expr has a result (would fire): {describe(body)}"
        elif name in args.empty:
            check = n == 0
            what = f"rule {name}: expr has no result (would not fire): {describe(body)}"
        else:
            check = True
            what = f"rule {name}: expr succeeds: {describe(body)}"
        if check:
            ok(what)
        else:
            not_ok(what, json.dumps(body["data"]["result"])[:600])


def rule_nonempty(args):
    for rule in load_rules(args.chart):
        if rule.get("alert") == args.alert:
            body = api(args.prom, "/api/v1/query", {"query": rule["expr"].strip()})
            result = body.get("data", {}).get("result", [])
            if body.get("status") == "success" and result:
                print(json.dumps([r["metric"] for r in result]))
                return 0
            return 1
    print(f"no alert {args.alert}", file=sys.stderr)
    return 2


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chart", default=os.path.normpath(CHART))
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("panels")
    p.add_argument("--prom", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--experiment", required=True)
    p.add_argument("--start", type=float, required=True, help="epoch seconds: the range queries' start")
    r = sub.add_parser("rules")
    r.add_argument("--prom", required=True)
    r.add_argument("--nonempty", action="append", default=[])
    r.add_argument("--empty", action="append", default=[])
    n = sub.add_parser("rule-nonempty")
    n.add_argument("--prom", required=True)
    n.add_argument("alert")
    args = parser.parse_args()
    if args.cmd == "rule-nonempty":
        return rule_nonempty(args)
    {"panels": panels, "rules": rules}[args.cmd](args)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
