#!/usr/bin/env python3
"""Checks of a rendered loco-discovery chart that a schema cannot express.

    check_chart.py RENDERED.yaml [--mode MODE]

- the gateway container runs as non-root, read-only, without capabilities or privilege
  escalation, with the RuntimeDefault seccomp profile, and with requests and limits;
- liveness probes /healthz and readiness /readyz, on ports the container declares;
- every environment variable is one the gateway reads, set once; the files that
  INSTANCE_METADATA_FILE / STATIC_INSTANCES_FILE name are on mounted ConfigMaps that
  the chart renders (or that it is told exist); AUTH_TOKENS_FILE / JWT_KEY_FILE are on
  read-only Secret volumes mounted whole (a subPath mount would never see an update);
- terminationGracePeriodSeconds exceeds SHUTDOWN_GRACE plus the preStop sleep, and the
  heartbeat is below the ingress' read timeout, so no proxy cuts an idle stream;
- the Service, PodDisruptionBudget, HPA and ServiceMonitor select or target the
  gateway's pods and ports; a PDB never blocks the drain of a single replica;
- the PrometheusRule's alerts pick the job the ServiceMonitor gives the gateway's series
  (the Service's name) and carry severity, summary, description and runbook_url; the
  ServiceMonitor keeps the gateway's `service` label (honorLabels), which they group by;
- the dashboard ConfigMap carries a label for Grafana's sidecar and valid dashboard JSON.
"""

import argparse
import json
import re
import sys

import yaml

GATEWAY_ENV = {
    "LISTEN_ADDR", "ADMIN_LISTEN_ADDR", "KUBERNETES_NAMESPACE", "EMULATOR_SERVICE_NAME",
    "DISCOVERY_MODE", "CLUSTER_DOMAIN", "DNS_POD_NAMES", "KUBE_CONNECT_TIMEOUT", "HEARTBEAT_INTERVAL",
    "MAX_SUBSCRIBERS", "HISTORY_SIZE", "SHUTDOWN_GRACE", "LOG_FORMAT", "RUST_LOG",
    "INSTANCE_METADATA_FILE", "HEALTH_CHECK_INTERVAL", "STATIC_INSTANCES_FILE",
    "AUTH_TOKENS_FILE", "JWT_KEY_FILE", "JWT_ALGORITHM", "JWT_AUDIENCE", "CORS_ALLOW_ORIGINS",
}
MODES = {"kubernetes-endpointslices", "kubernetes-endpoints", "static"}


def seconds(value):
    """'15s', '1m', '500ms' -> seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m)", str(value))
    if not m:
        raise ValueError(f"not a duration: {value!r}")
    n, unit = int(m.group(1)), m.group(2)
    return {"ms": n / 1000, "s": n, "m": n * 60}[unit]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def check(docs, mode=None):
    problems = []
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    deployments = kinds.get("Deployment", [])
    if len(deployments) != 1:
        return [f"expected one Deployment, found {len(deployments)}"]
    dep = deployments[0]
    template = dep["spec"]["template"]
    pod = template["spec"]
    pod_labels = template["metadata"]["labels"]
    if not matches(dep["spec"]["selector"]["matchLabels"], pod_labels):
        problems.append("Deployment selector does not match its pod labels")

    psc = pod.get("securityContext") or {}
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("pod seccompProfile is not RuntimeDefault")
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        problems.append("pod shares a host namespace")

    containers = pod["containers"]
    if len(containers) != 1:
        problems.append(f"expected one container, found {len(containers)}")
    c = containers[0]
    sc = c.get("securityContext") or {}
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        problems.append("runAsNonRoot is not set")
    if (sc.get("runAsUser", psc.get("runAsUser")) or 0) == 0:
        problems.append("runAsUser is root or unset")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if sc.get("privileged"):
        problems.append("container is privileged")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []) or caps.get("add"):
        problems.append("capabilities are not dropped to none")
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        if not all((res.get(part) or {}).get(r) for r in ("cpu", "memory")):
            problems.append(f"resources.{part} lacks cpu or memory")
    image = c["image"]
    if image.endswith(":latest") or (":" not in image.rsplit("/", 1)[-1] and "@" not in image):
        problems.append(f"image {image} is not pinned to a tag or digest")

    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (c.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != path:
            problems.append(f"{probe} path is {get.get('path')!r}, expected {path}")
        if get.get("port") not in ports and get.get("port") not in ports.values():
            problems.append(f"{probe} port {get.get('port')!r} is not a container port")

    names = [e["name"] for e in c.get("env", [])]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"env {dup} is set twice")
    for unknown in sorted(set(names) - GATEWAY_ENV):
        problems.append(f"env {unknown} is not read by the gateway")
    if env.get("DISCOVERY_MODE") not in MODES:
        problems.append(f"DISCOVERY_MODE {env.get('DISCOVERY_MODE')!r} is not a gateway mode")
    if mode and env.get("DISCOVERY_MODE") != mode:
        problems.append(f"DISCOVERY_MODE is {env.get('DISCOVERY_MODE')!r}, expected {mode!r}")
    if env.get("DISCOVERY_MODE") == "static" and not env.get("STATIC_INSTANCES_FILE"):
        problems.append("the static mode has no STATIC_INSTANCES_FILE")
    listen_port = int(str(env.get("LISTEN_ADDR", "")).rsplit(":", 1)[-1] or 0)
    if ports.get("http") != listen_port:
        problems.append(f"container port http {ports.get('http')} is not LISTEN_ADDR's port {listen_port}")
    if "ADMIN_LISTEN_ADDR" in env and ports.get("metrics") != int(env["ADMIN_LISTEN_ADDR"].rsplit(":", 1)[-1]):
        problems.append("container port metrics is not ADMIN_LISTEN_ADDR's port")

    # Files named in the environment live on mounted ConfigMaps.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    rendered_cms = {d["metadata"]["name"]: d for d in kinds.get("ConfigMap", [])}
    # Secrets named in the environment live on read-only Secret volumes, mounted whole.
    for var in ("AUTH_TOKENS_FILE", "JWT_KEY_FILE"):
        path = env.get(var)
        if not path:
            continue
        mount = next((m for m in c.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
        secret = (volumes.get(mount["name"]) or {}).get("secret") if mount else None
        if not mount or not mount.get("readOnly") or mount.get("subPath") or not secret:
            problems.append(f"{var}={path} is not on a read-only Secret volume mounted whole")
    for var in ("INSTANCE_METADATA_FILE", "STATIC_INSTANCES_FILE"):
        path = env.get(var)
        if not path:
            continue
        mount = next((m for m in c.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
        if not mount:
            problems.append(f"{var}={path} is on no volume mount")
            continue
        if not mount.get("readOnly"):
            problems.append(f"the mount of {var} is not read-only")
        cm = (volumes.get(mount["name"]) or {}).get("configMap")
        if not cm:
            problems.append(f"{var}: volume {mount['name']} is not a ConfigMap")
            continue
        key = path[len(mount["mountPath"].rstrip("/")) + 1:]
        items = cm.get("items")
        if items and key not in [i["path"] for i in items]:
            problems.append(f"{var}: {key} is not among the volume's items")
        data_key = next((i["key"] for i in items if i["path"] == key), key) if items else key
        if cm["name"] in rendered_cms and data_key not in (rendered_cms[cm["name"]].get("data") or {}):
            problems.append(f"{var}: ConfigMap {cm['name']} has no key {data_key}")
        if cm["name"] not in rendered_cms:
            print(f"  note: {var} reads ConfigMap {cm['name']}, which this release does not render")

    # Streams close before the kubelet's SIGKILL.
    grace = pod.get("terminationGracePeriodSeconds", 30)
    pre_stop = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
    shutdown = seconds(env.get("SHUTDOWN_GRACE", "10s"))
    if grace <= shutdown + pre_stop:
        problems.append(f"terminationGracePeriodSeconds {grace} <= SHUTDOWN_GRACE {shutdown}s + preStop {pre_stop}s")
    heartbeat = seconds(env.get("HEARTBEAT_INTERVAL", "15s"))
    for ing in kinds.get("Ingress", []):
        ann = ing["metadata"].get("annotations") or {}
        if ann.get("nginx.ingress.kubernetes.io/proxy-buffering") != "off":
            problems.append(f"Ingress {ing['metadata']['name']}: proxy buffering is not off")
        timeout = int(ann.get("nginx.ingress.kubernetes.io/proxy-read-timeout", 60))
        if timeout <= 2 * heartbeat:
            problems.append(f"Ingress {ing['metadata']['name']}: read timeout {timeout}s is not well above the {heartbeat}s heartbeat")
        if any("rewrite-target" in k for k in ann):
            problems.append(f"Ingress {ing['metadata']['name']}: rewrites paths")

    services = [s for s in kinds.get("Service", []) if s["spec"].get("clusterIP") != "None"]
    gateway_services = [s for s in services if matches(s["spec"].get("selector"), pod_labels)]
    if len(gateway_services) != 1:
        problems.append(f"expected one Service selecting the gateway, found {len(gateway_services)}")
    for svc in gateway_services:
        for p in svc["spec"]["ports"]:
            if p.get("targetPort") not in ports and p.get("targetPort") not in ports.values():
                problems.append(f"Service port {p['name']} targets {p.get('targetPort')!r}, which the container lacks")

    replicas = dep["spec"].get("replicas")
    for pdb in kinds.get("PodDisruptionBudget", []):
        if not matches(pdb["spec"]["selector"]["matchLabels"], pod_labels):
            problems.append("PodDisruptionBudget does not select the gateway's pods")
        min_avail = pdb["spec"].get("minAvailable")
        if replicas is not None and isinstance(min_avail, int) and min_avail >= replicas:
            problems.append(f"PodDisruptionBudget minAvailable {min_avail} with {replicas} replicas blocks every drain")
    for hpa in kinds.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        if ref.get("kind") != "Deployment" or ref.get("name") != dep["metadata"]["name"]:
            problems.append("HorizontalPodAutoscaler does not target the Deployment")
        if replicas is not None:
            problems.append("Deployment sets replicas while an HPA scales it")
    for sm in kinds.get("ServiceMonitor", []):
        for ep in sm["spec"]["endpoints"]:
            if not any(p["name"] == ep.get("port") for s in gateway_services for p in s["spec"]["ports"]):
                problems.append(f"ServiceMonitor scrapes port {ep.get('port')!r}, which the Service lacks")
            if ep.get("path") != "/metrics":
                problems.append("ServiceMonitor does not scrape /metrics")
            if kinds.get("PrometheusRule") and ep.get("honorLabels") is not True:
                problems.append("ServiceMonitor without honorLabels: the alerts' service label becomes exported_service")
    jobs = {s["metadata"]["name"] for s in gateway_services if not any(sm["spec"].get("jobLabel") for sm in kinds.get("ServiceMonitor", []))}
    for rule_doc in kinds.get("PrometheusRule", []):
        where = f"PrometheusRule {rule_doc['metadata']['name']}"
        alerts = [r for g in rule_doc["spec"].get("groups", []) for r in g.get("rules", []) if "alert" in r]
        if not alerts:
            problems.append(f"{where}: no alerts")
        for rule in alerts:
            named = set(re.findall(r'\bjob="([^"]*)"', rule["expr"]))
            if jobs and not named <= jobs:
                problems.append(f"{where} {rule['alert']}: picks job {sorted(named - jobs)}, but the ServiceMonitor's job is {sorted(jobs)}")
            if not (rule.get("labels") or {}).get("severity"):
                problems.append(f"{where} {rule['alert']}: no severity label")
            missing = {"summary", "description", "runbook_url"} - set(rule.get("annotations") or {})
            if missing:
                problems.append(f"{where} {rule['alert']}: lacks annotations {sorted(missing)}")
    for cm in kinds.get("ConfigMap", []):
        for key, text in (cm.get("data") or {}).items():
            if not key.endswith(".json"):
                continue
            where = f"ConfigMap {cm['metadata']['name']}"
            own = set(pod_labels) | {"helm.sh/chart", "app.kubernetes.io/version", "app.kubernetes.io/managed-by"}
            if not set(cm["metadata"].get("labels") or {}) - own:
                problems.append(f"{where}: a dashboard without a label for Grafana's sidecar")
            try:
                dashboard = json.loads(text)
            except ValueError as e:
                problems.append(f"{where}: {key} is not JSON: {e}")
                continue
            if not dashboard.get("uid") or not dashboard.get("panels"):
                problems.append(f"{where}: {key} is no dashboard (no uid or panels)")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered")
    parser.add_argument("--mode", choices=sorted(MODES))
    args = parser.parse_args()
    with open(args.rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if isinstance(d, dict) and d.get("kind")]
    problems = check(docs, args.mode)
    kinds = ", ".join(sorted({d["kind"] for d in docs}))
    print(f"  {args.rendered}: {kinds}")
    for p in problems:
        print(f"  FAIL {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
