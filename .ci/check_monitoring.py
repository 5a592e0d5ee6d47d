#!/usr/bin/env python3
"""Checks of the Grafana dashboard and the alerting rules against what the gateway exports.

    check_monitoring.py --metrics SCRAPE --dashboard JSON [--rules RULES] [--tests TEST...]
                        [--runbook MARKDOWN]
    check_monitoring.py --self-test     show that each kind of mistake is caught

SCRAPE is a /metrics exposition of a running gateway. It fails when:
- the dashboard is not valid JSON, or has no panels, a panel without a query, or two
  panels with one id;
- a query of a panel or of a template variable does not parse: each one, with Grafana's
  variables replaced by concrete values ($__rate_interval by 1m, $job by a name, ...),
  becomes a recording rule in a scratch rules file that `promtool check rules` must
  accept;
- a query or an alert names a metric that is not in the scrape (a histogram's name counts
  with its _bucket, _sum and _count suffixes; `up` and the other series Prometheus adds to
  every target count as well);
- an alert has no test case in TEST files that fires it (non-empty exp_alerts) or none
  that must not fire (exp_alerts: []);
- an alert has no section in the runbook (a heading that is its name).

Python standard library only; the YAML files are read line by line in the layout that
`helm template` and the test files use.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

# Series Prometheus writes for every scrape target, not the target itself.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
             "scrape_samples_post_metric_relabeling", "scrape_series_added"}
# Words of PromQL that are not metric names where they stand alone.
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "bool", "offset", "inf", "nan", "start", "end"}
# Grafana's interval variables, and what stands in for them.
INTERVALS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h",
             "__interval_ms": "60000", "__range_ms": "3600000", "__range_s": "3600"}


def exported_names(scrape):
    """Metric names a /metrics exposition offers: sample names, and the series names
    of each histogram and summary its TYPE lines declare."""
    names = set(SYNTHETIC)
    for line in scrape.splitlines():
        m = re.match(r"#\s*TYPE\s+([a-zA-Z_:][a-zA-Z0-9_:]*)\s+(\w+)", line)
        if m:
            name, kind = m.groups()
            names.add(name)
            if kind == "histogram":
                names |= {name + "_bucket", name + "_sum", name + "_count"}
            elif kind == "summary":
                names |= {name + "_sum", name + "_count"}
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)[{\s]", line)
        if m and not line.startswith("#"):
            names.add(m.group(1))
    return names


def metric_names(expr):
    """The metric names a PromQL expression selects: identifiers that are neither a
    function (followed by '('), a keyword, a label name (in {...} or in by/on/... lists)
    nor inside a string or a duration."""
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", "{}", s)
    s = re.sub(r"\[[^\]]*\]", "", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"#[^\n]*", "", s)
    names = set()
    for m in re.finditer(r"(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*", s):
        word = m.group(0)
        rest = s[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def substitute(expr):
    """Grafana's variables ($x, ${x}, ${x:fmt}, [[x]]) replaced by concrete values."""
    def value(m):
        name = next(g for g in m.groups() if g)
        return INTERVALS.get(name, "value")
    return re.sub(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]", value, expr)


def variable_expr(query):
    """The PromQL inside a template variable's query, or None where it has none."""
    q = query.get("query") if isinstance(query, dict) else query
    if not isinstance(q, str) or not q.strip():
        return None
    q = q.strip()
    m = re.fullmatch(r"label_values\((.*),\s*[a-zA-Z_]\w*\s*\)", q, re.S)
    if m:
        return m.group(1)
    m = re.fullmatch(r"query_result\((.*)\)", q, re.S)
    if m:
        return m.group(1)
    if re.fullmatch(r"(label_values\(\s*\w+\s*\)|label_names\(\)|metrics\(.*\))", q):
        return None
    return q


def dashboard_queries(dashboard):
    """(where, expr) of every panel target (rows' panels included) and query variable,
    and the problems of the panels' structure."""
    queries, problems, ids = [], [], {}

    def walk(panels):
        for p in panels or []:
            ptype = p.get("type")
            where = f"panel {p.get('id')} {p.get('title')!r}"
            if "id" in p:
                if p["id"] in ids:
                    problems.append(f"{where}: id {p['id']} is also panel {ids[p['id']]!r}")
                ids[p["id"]] = p.get("title")
            if ptype == "row":
                walk(p.get("panels"))
                continue
            exprs = [(t.get("refId", "?"), t["expr"]) for t in p.get("targets") or [] if t.get("expr")]
            if not exprs and ptype not in ("text", "news", "dashlist"):
                problems.append(f"{where}: no query")
            for ref, expr in exprs:
                queries.append((f"{where} target {ref}", expr))

    walk(dashboard.get("panels"))
    if not dashboard.get("panels"):
        problems.append("the dashboard has no panels")
    for v in (dashboard.get("templating") or {}).get("list") or []:
        if v.get("type") == "query":
            expr = variable_expr(v.get("query"))
            if expr:
                queries.append((f"variable ${v.get('name')}", expr))
    return queries, problems


def promtool_parse(named_exprs, promtool):
    """Problems promtool finds in the expressions, each checked as a recording rule."""
    rules = [{"record": f"dashboard:query_{i}", "expr": substitute(expr)} for i, (_, expr) in enumerate(named_exprs)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "queries.rules.json")  # JSON is YAML to promtool
        with open(path, "w") as f:
            json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, indent=1)
        run = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
    if run.returncode == 0:
        return []
    problems = []
    out = run.stdout + run.stderr
    for m in re.finditer(r'"dashboard:query_(\d+)": (.*)', out):
        where, expr = named_exprs[int(m.group(1))]
        problems.append(f"{where}: does not parse: {m.group(2).strip()}\n      {expr}")
    return problems or [f"promtool check rules failed: {out.strip()}"]


def unknown_names(where, expr, exported):
    missing = sorted(metric_names(substitute(expr)) - exported)
    return [f"{where}: {name} is not exported by the gateway" for name in missing]


def check_dashboard(text, exported, promtool):
    try:
        dashboard = json.loads(text)
    except ValueError as e:
        return [f"the dashboard is not valid JSON: {e}"], 0
    queries, problems = dashboard_queries(dashboard)
    for where, expr in queries:
        problems += unknown_names(where, expr, exported)
    if queries:
        problems += promtool_parse(queries, promtool)
    return problems, len(queries)


def rule_exprs(text):
    """(alert or record name, expr) of a rules file in helm's YAML layout."""
    out, name, lines = [], None, text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*-?\s*(alert|record):\s*(\S+)", line)
        if m:
            name = m.group(2).strip("'\"")
        m = re.match(r"(\s*)expr:\s*(.*)$", line)
        if m:
            indent, value = len(m.group(1)), m.group(2).strip()
            if re.fullmatch(r"[|>][-+]?", value):
                block = []
                while i + 1 < len(lines) and (not lines[i + 1].strip() or len(lines[i + 1]) - len(lines[i + 1].lstrip()) > indent):
                    i += 1
                    block.append(lines[i].strip())
                value = "\n".join(block)
            elif value[:1] in "'\"":
                value = value[1:-1]
            out.append((name, value))
        i += 1
    return out


def check_rules(text, exported):
    exprs = rule_exprs(text)
    problems = [] if exprs else ["the rules file has no rules"]
    for name, expr in exprs:
        problems += unknown_names(f"rule {name}", expr, exported)
    alerts = [name for name in re.findall(r"^\s*-?\s*alert:\s*(\S+)", text, re.M)]
    return problems, alerts


def test_cases(text):
    """{alert: (firing cases, non-firing cases)} of a promtool test file."""
    cases = {}
    alert = None
    for line in text.splitlines():
        m = re.match(r"\s*-?\s*alertname:\s*(\S+)", line)
        if m:
            alert = m.group(1)
            continue
        m = re.match(r"\s*exp_alerts:\s*(.*)$", line)
        if m and alert:
            fires, quiet = cases.get(alert, (0, 0))
            if m.group(1).strip() == "[]":
                quiet += 1
            else:
                fires += 1
            cases[alert] = (fires, quiet)
            alert = None
    return cases


def check_tests(texts, alerts):
    cases = {}
    for text in texts:
        for alert, (f, q) in test_cases(text).items():
            f0, q0 = cases.get(alert, (0, 0))
            cases[alert] = (f0 + f, q0 + q)
    problems = []
    for alert in alerts:
        fires, quiet = cases.get(alert, (0, 0))
        if not fires:
            problems.append(f"alert {alert}: no test case that fires it")
        if not quiet:
            problems.append(f"alert {alert}: no test case where it must not fire")
    for alert in sorted(set(cases) - set(alerts)):
        problems.append(f"tests name alert {alert}, which the rules do not define")
    return problems, cases


def check_runbook(text, alerts):
    headings = {h.strip() for h in re.findall(r"^#+\s+(.*)$", text, re.M)}
    return [f"alert {a}: no section '## {a}' in the runbook" for a in alerts if a not in headings]


def self_test(promtool):
    scrape = "\n".join([
        "# TYPE loco_discovery_synced gauge",
        "loco_discovery_synced 1",
        "# TYPE loco_discovery_deltas_total counter",
        'loco_discovery_deltas_total{type="InstanceAdded"} 3',
        "# TYPE loco_discovery_subscribers gauge",
        'loco_discovery_subscribers{transport="sse"} 1',
        "# TYPE loco_discovery_change_to_gateway_seconds histogram",
        'loco_discovery_change_to_gateway_seconds_bucket{service="s",le="+Inf"} 1',
        'loco_discovery_change_to_gateway_seconds_sum{service="s"} 0.1',
        'loco_discovery_change_to_gateway_seconds_count{service="s"} 1',
    ])
    exported = exported_names(scrape)

    def dash(*exprs, variable='label_values(loco_discovery_synced{job=~"$job"}, instance)'):
        return json.dumps({
            "uid": "t", "title": "t",
            "templating": {"list": [{"type": "query", "name": "instance", "query": {"query": variable}}]},
            "panels": [{"type": "row", "id": 1, "title": "r", "panels": []}] + [
                {"type": "timeseries", "id": 2 + i, "title": f"p{i}", "targets": [{"refId": "A", "expr": e}]}
                for i, e in enumerate(exprs)],
        })

    good = [
        'sum by (type) (rate(loco_discovery_deltas_total{job=~"$job", instance=~"$instance"}[$__rate_interval]))',
        'histogram_quantile(0.99, sum by (le) (rate(loco_discovery_change_to_gateway_seconds_bucket{service=~"${service:regex}"}[$__rate_interval])))',
        'sum(up{job="x"}) + on () group_left sum(loco_discovery_subscribers offset 5m)',
        'label_replace(loco_discovery_synced == 0, "hop", "1e3 loco_nothing", "", "")',
    ]
    cases = [
        ("a good dashboard", dash(*good), None),
        ("a misspelt metric", dash(good[0], "sum(loco_discovery_subscriber)"), "loco_discovery_subscriber is not exported"),
        ("a metric only in a variable", dash(good[0], variable="label_values(loco_discovery_instance, service)"),
         "variable $instance: loco_discovery_instance is not exported"),
        ("a _bucket of a counter", dash("rate(loco_discovery_deltas_total_bucket[5m])"), "loco_discovery_deltas_total_bucket is not exported"),
        ("invalid JSON", dash(good[0])[:-2], "not valid JSON"),
        ("an unparsable query", dash(good[0], "sum(rate(loco_discovery_synced[$__rate_interval])"), "p1' target A: does not parse"),
        ("a panel without a query", json.dumps({"panels": [{"type": "stat", "id": 1, "title": "x", "targets": []}]}), "no query"),
    ]
    failures = 0
    for what, text, expect in cases:
        problems, _ = check_dashboard(text, exported, promtool)
        caught = any(expect in p for p in problems) if expect else not problems
        print(f"  {'ok  ' if caught else 'MISS'} {what}: {problems[0].splitlines()[0] if problems else 'no problems'}")
        failures += not caught

    rules = "\n".join([
        "groups:",
        "  - name: g",
        "    rules:",
        "      - alert: Synced",
        "        expr: |-",
        "          max by (instance) (loco_discovery_synced) == 0",
        "          and on (instance) loco_discovery_subscriberz > 0",
        "      - alert: Typo",
        "        expr: loco_discovery_deltas_totl > 0",
    ])
    tests = "\n".join([
        "tests:",
        "  - alert_rule_test:",
        "      - alertname: Synced",
        "        exp_alerts: []",
        "      - alertname: Synced",
        "        exp_alerts:",
        "          - exp_labels: {instance: a}",
        "      - alertname: Typo",
        "        exp_alerts:",
        "          - exp_labels: {}",
    ])
    problems, alerts = check_rules(rules, exported)
    problems += check_tests([tests], alerts)[0]
    problems += check_runbook("# Runbook\n## Synced\n", alerts)
    for what, expect, present in [
        ("a rule with a misspelt metric", "rule Typo: loco_discovery_deltas_totl is not exported", True),
        ("a misspelt metric on a rule's second line", "rule Synced: loco_discovery_subscriberz is not exported", True),
        ("an alert without a non-firing case", "alert Typo: no test case where it must not fire", True),
        ("an alert with both cases", "alert Synced: no test", False),
        ("an alert without a runbook section", "alert Typo: no section", True),
    ]:
        caught = any(expect in p for p in problems) == present
        print(f"  {'ok  ' if caught else 'MISS'} {what}")
        failures += not caught
    if metric_names(good[1]) != {"loco_discovery_change_to_gateway_seconds_bucket"}:
        print(f"  MISS metric names of a quantile: {metric_names(good[1])}")
        failures += 1
    print(f"self-test: {len(cases) + 6 - failures} of {len(cases) + 6} cases as expected")
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true")
    parser.add_argument("--metrics", help="a /metrics scrape of the gateway")
    parser.add_argument("--dashboard", help="the Grafana dashboard JSON")
    parser.add_argument("--rules", help="a Prometheus rules file")
    parser.add_argument("--tests", nargs="*", default=[], help="promtool test files of the rules")
    parser.add_argument("--runbook", help="the runbook, with a section per alert")
    parser.add_argument("--promtool", default=shutil.which("promtool") or "promtool")
    args = parser.parse_args()
    if args.self_test:
        return self_test(args.promtool)
    if not args.metrics or not args.dashboard:
        parser.error("--metrics and --dashboard are required")

    with open(args.metrics) as f:
        exported = exported_names(f.read())
    print(f"  {args.metrics}: {len([n for n in exported if n.startswith('loco_discovery_')])} loco_discovery_* names")
    with open(args.dashboard) as f:
        text = f.read()
    problems, n = check_dashboard(text, exported, args.promtool)
    if n:
        d = json.loads(text)
        panels = []
        stack = list(d.get("panels") or [])
        while stack:
            p = stack.pop()
            stack += p.get("panels") or []
            panels.append(p)
        shown = [p for p in panels if p.get("type") != "row"]
        print(f"  {args.dashboard}: {len(shown)} panels, {n} queries")
    if args.rules:
        with open(args.rules) as f:
            rule_problems, alerts = check_rules(f.read(), exported)
        problems += rule_problems
        print(f"  {args.rules}: {len(alerts)} alerts")
        if args.tests:
            texts = []
            for path in args.tests:
                with open(path) as f:
                    texts.append(f.read())
            test_problems, cases = check_tests(texts, alerts)
            problems += test_problems
            fires = sum(f for f, _ in cases.values())
            quiet = sum(q for _, q in cases.values())
            print(f"  {', '.join(args.tests)}: {fires} firing and {quiet} non-firing checks over {len(cases)} alerts")
        if args.runbook:
            with open(args.runbook) as f:
                problems += check_runbook(f.read(), alerts)
            print(f"  {args.runbook}: a section per alert")
    for p in problems:
        print(f"  FAIL {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
