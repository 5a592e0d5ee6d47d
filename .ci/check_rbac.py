#!/usr/bin/env python3
"""Least-privilege check of the chart's rendered RBAC.

    check_rbac.py --mode MODE RENDERED.yaml   check one `helm template` output
    check_rbac.py --self-test                 show that over-broad grants are caught

For the discovery mode the manifests were rendered with, it fails when:
- anything is cluster-wide (a ClusterRole or ClusterRoleBinding);
- a Role grants a verb other than get/list/watch, a wildcard, a non-resource URL, a
  subresource, or a resource other than discovery.k8s.io endpointslices (plus core
  endpoints in the kubernetes-endpoints mode); the static mode may have no Role at all;
- the grants the mode needs are missing (the gateway would fail at start);
- a RoleBinding points at anything but this chart's Role (a RoleBinding to a ClusterRole
  such as `view` or `edit` grants that ClusterRole in the namespace), or binds other
  subjects than the gateway's ServiceAccount;
- the Role is not in the namespace the gateway watches;
- the service-account token is mounted where it is not needed, or the ServiceAccount
  hands it to every pod that uses it.
"""

import argparse
import sys

import yaml

READ = {"get", "list", "watch"}
SLICES = ("discovery.k8s.io", "endpointslices")
ENDPOINTS = ("", "endpoints")

# What each mode may be granted, and what it must be granted.
ALLOWED = {
    "kubernetes-endpointslices": {SLICES},
    "kubernetes-endpoints": {ENDPOINTS},
    "static": set(),
}
REQUIRED = {
    "kubernetes-endpointslices": {SLICES},
    "kubernetes-endpoints": {ENDPOINTS},
    "static": set(),
}


def load(text):
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind")]


def check(docs, mode):
    """Returns the list of problems found in the rendered documents for this mode."""
    problems = []
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)

    for kind in ("ClusterRole", "ClusterRoleBinding"):
        for doc in by_kind.get(kind, []):
            problems.append(f"{kind} {doc['metadata']['name']}: nothing may be cluster-wide")

    deployments = by_kind.get("Deployment", [])
    if len(deployments) != 1:
        return problems + [f"expected one Deployment, found {len(deployments)}"]
    pod = deployments[0]["spec"]["template"]["spec"]
    release_ns = deployments[0]["metadata"].get("namespace")
    env = {}
    for container in pod.get("containers", []):
        for var in container.get("env", []) or []:
            env[var["name"]] = var.get("value")
    if env.get("DISCOVERY_MODE") != mode:
        problems.append(f"Deployment DISCOVERY_MODE is {env.get('DISCOVERY_MODE')!r}, expected {mode!r}")
    watch_ns = env.get("KUBERNETES_NAMESPACE")
    sa_name = pod.get("serviceAccountName", "default")

    # Every grant, with the Role it comes from.
    granted = set()
    roles = {}
    for role in by_kind.get("Role", []):
        name = role["metadata"]["name"]
        ns = role["metadata"].get("namespace")
        roles[(ns, name)] = role
        where = f"Role {ns}/{name}"
        if ns != watch_ns:
            problems.append(f"{where}: not in the watched namespace {watch_ns!r}")
        for i, rule in enumerate(role.get("rules") or []):
            at = f"{where} rule {i}"
            if rule.get("nonResourceURLs"):
                problems.append(f"{at}: grants nonResourceURLs {rule['nonResourceURLs']}")
            verbs = set(rule.get("verbs") or [])
            groups = rule.get("apiGroups") or []
            resources = rule.get("resources") or []
            if "*" in verbs or "*" in groups or "*" in resources:
                problems.append(f"{at}: uses a wildcard")
            extra = verbs - READ
            if extra:
                problems.append(f"{at}: grants verbs beyond get/list/watch: {sorted(extra)}")
            for group in groups:
                for resource in resources:
                    if "/" in resource:
                        problems.append(f"{at}: grants a subresource {group}/{resource}")
                    pair = (group, resource)
                    if pair not in ALLOWED[mode]:
                        problems.append(f"{at}: grants {group or 'core'}/{resource}, which mode {mode} does not need")
                    elif verbs >= READ:
                        granted.add(pair)

    for pair in sorted(REQUIRED[mode] - granted):
        problems.append(f"mode {mode} needs get/list/watch on {pair[0] or 'core'}/{pair[1]}, which no Role grants")
    if mode == "static" and roles:
        problems.append("mode static calls no API, yet a Role is rendered")

    for binding in by_kind.get("RoleBinding", []):
        ns = binding["metadata"].get("namespace")
        where = f"RoleBinding {ns}/{binding['metadata']['name']}"
        ref = binding.get("roleRef", {})
        if ref.get("kind") != "Role" or (ns, ref.get("name")) not in roles:
            problems.append(f"{where}: refers to {ref.get('kind')} {ref.get('name')!r}, not to a Role of this chart")
        for subject in binding.get("subjects") or []:
            if subject.get("kind") != "ServiceAccount" or subject.get("name") != sa_name or subject.get("namespace") != release_ns:
                problems.append(f"{where}: binds {subject.get('kind')} {subject.get('namespace')}/{subject.get('name')}, not the gateway's ServiceAccount")
    bound = {(b["metadata"].get("namespace"), b.get("roleRef", {}).get("name")) for b in by_kind.get("RoleBinding", [])}
    for key in roles:
        if key not in bound:
            problems.append(f"Role {key[0]}/{key[1]} is bound to nothing")

    wants_token = mode != "static"
    if pod.get("automountServiceAccountToken") is not wants_token:
        problems.append(f"pod automountServiceAccountToken is {pod.get('automountServiceAccountToken')!r}, expected {wants_token}")
    for sa in by_kind.get("ServiceAccount", []):
        if sa.get("automountServiceAccountToken") is not False:
            problems.append(f"ServiceAccount {sa['metadata']['name']}: automountServiceAccountToken should be false (the pod opts in)")
    return problems


def self_test():
    """Feeds deliberately over-broad RBAC and checks that each is reported."""
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "gw", "namespace": "loco"},
        "spec": {"template": {"spec": {
            "serviceAccountName": "gw",
            "automountServiceAccountToken": True,
            "containers": [{"name": "gateway", "env": [
                {"name": "DISCOVERY_MODE", "value": "kubernetes-endpointslices"},
                {"name": "KUBERNETES_NAMESPACE", "value": "loco"},
            ]}],
        }}},
    }
    sa = {"kind": "ServiceAccount", "metadata": {"name": "gw", "namespace": "loco"}, "automountServiceAccountToken": False}

    def role(*rules, ns="loco"):
        return {"kind": "Role", "metadata": {"name": "gw", "namespace": ns}, "rules": list(rules)}

    def binding(kind="Role", name="gw", subject="gw"):
        return {"kind": "RoleBinding", "metadata": {"name": "gw", "namespace": "loco"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": subject, "namespace": "loco"}]}

    good = {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}
    cases = {
        "a correct Role": ([deployment, sa, role(good), binding()], True),
        "a ClusterRole": ([deployment, sa, role(good), binding(), {"kind": "ClusterRole", "metadata": {"name": "x"}}], False),
        "a write verb": ([deployment, sa, role(dict(good, verbs=["get", "list", "watch", "patch"])), binding()], False),
        "a wildcard verb": ([deployment, sa, role(dict(good, verbs=["*"])), binding()], False),
        "a wildcard resource": ([deployment, sa, role(dict(good, resources=["*"])), binding()], False),
        "endpoints outside the endpoints mode": ([deployment, sa, role(good, {"apiGroups": [""], "resources": ["endpoints"], "verbs": ["get", "list", "watch"]}), binding()], False),
        "pods": ([deployment, sa, role(good, {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}), binding()], False),
        "secrets": ([deployment, sa, role(good, {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}), binding()], False),
        "a missing grant": ([deployment, sa, role(), binding()], False),
        "a Role in another namespace": ([deployment, sa, role(good, ns="kube-system"), binding()], False),
        "a RoleBinding to ClusterRole view": ([deployment, sa, role(good), binding(kind="ClusterRole", name="view")], False),
        "a binding of another subject": ([deployment, sa, role(good), binding(subject="default")], False),
        "a ServiceAccount that automounts": ([deployment, dict(sa, automountServiceAccountToken=True), role(good), binding()], False),
    }
    failed = 0
    for name, (docs, should_pass) in cases.items():
        problems = check(docs, "kubernetes-endpointslices")
        ok = (not problems) == should_pass
        failed += not ok
        verdict = "accepted" if not problems else "rejected"
        print(f"  {'ok ' if ok else 'BAD'} {name}: {verdict}" + ("" if ok else f" ({problems})"))
    return failed == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(ALLOWED))
    parser.add_argument("--self-test", action="store_true")
    parser.add_argument("rendered", nargs="?")
    args = parser.parse_args()
    if args.self_test:
        return 0 if self_test() else 1
    if not args.mode or not args.rendered:
        parser.error("--mode and a rendered manifest file are required")
    with open(args.rendered) as f:
        docs = load(f.read())
    problems = check(docs, args.mode)
    grants = sorted(
        f"{(g or 'core')}/{r}: {','.join(rule.get('verbs', []))}"
        for d in docs if d["kind"] == "Role"
        for rule in d.get("rules") or []
        for g in rule.get("apiGroups", []) for r in rule.get("resources", [])
    )
    print(f"  {args.rendered} [{args.mode}]: {'; '.join(grants) or 'no Role'}")
    for problem in problems:
        print(f"  FAIL {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
