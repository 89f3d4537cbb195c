#!/usr/bin/env bash
# tests/http/test_k8s.sh — deploy/k8s (issue 9, point 4). No cluster runs here
# and Debian 12 packages no Kubernetes schema validator, so the manifests are
# parsed (python3-yaml) and held to what cqrsd needs:
#   - kustomization.yaml lists every manifest; the kinds are the Deployment,
#     migrate Job, Service, HorizontalPodAutoscaler, PodDisruptionBudget,
#     ConfigMap and Secret;
#   - every key of the ConfigMap and the Secret is a setting `cqrsd --help`
#     names, and `cqrsd serve` starts with the ConfigMap's values (its strict
#     checks accept them);
#   - the probes are /readyz and /healthz on the port CQRSD_HTTP_ADDR opens;
#     the grace period exceeds CQRSD_SHUTDOWN_TIMEOUT plus the preStop pause;
#     the pods run as docker/Dockerfile's user; the Job runs `migrate` with
#     the Deployment's image and settings; the Service, the HPA and the PDB
#     select or target the Deployment's pods, the HPA on CPU with requests set.
# Needs CQRSD_BIN, DATABASE_URL and REDIS_URL (make test sets them).
set -uo pipefail
fail() { echo "test_k8s: $*" >&2; exit 1; }
help=$("$CQRSD_BIN" --help) || fail "cqrsd --help failed"
out=$(/usr/bin/python3 - deploy/k8s docker/Dockerfile "$help" <<'EOF'
import os, re, sys, yaml
root, dockerfile, help_text = sys.argv[1], sys.argv[2], sys.argv[3]
bad = []
docs, files = {}, sorted(f for f in os.listdir(root) if f.endswith(".yaml"))
for f in files:
    with open(os.path.join(root, f)) as h:
        for d in yaml.safe_load_all(h):
            docs.setdefault(d["kind"], []).append(d)
kust = docs.pop("Kustomization")[0]
if sorted(kust["resources"]) != sorted(f for f in files if f != "kustomization.yaml"):
    bad.append(f"kustomization.yaml lists {kust['resources']}, the folder has {files}")
want = {"Deployment", "Job", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap", "Secret"}
if set(docs) != want:
    bad.append(f"kinds {sorted(docs)}, expected {sorted(want)}")
one = {k: v[0] for k, v in docs.items()}
known = set(re.findall(r"\b(?:CQRSD_[A-Z_]+|DATABASE_URL|REDIS_URL)\b", help_text))
cm, sec = one["ConfigMap"]["data"], one["Secret"]["stringData"]
for k in list(cm) + list(sec):
    if k not in known:
        bad.append(f"setting {k} is not one cqrsd --help names")
dep = one["Deployment"]
pod = dep["spec"]["template"]
c = pod["spec"]["containers"][0]
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
addr_port = int(cm["CQRSD_HTTP_ADDR"].rsplit(":", 1)[1])
if ports.get("http") != addr_port:
    bad.append(f"container port http {ports.get('http')} is not CQRSD_HTTP_ADDR's {addr_port}")
for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
    g = c.get(probe, {}).get("httpGet", {})
    if g.get("path") != path or g.get("port") not in ("http", addr_port):
        bad.append(f"{probe} is {g}, not {path} on the http port")
pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
pause = int(pre[1]) if pre[:1] == ["sleep"] else 0
grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
if grace <= int(cm["CQRSD_SHUTDOWN_TIMEOUT"]) + pause:
    bad.append(f"grace {grace} s does not exceed CQRSD_SHUTDOWN_TIMEOUT {cm['CQRSD_SHUTDOWN_TIMEOUT']} s + preStop {pause} s")
uid = int(re.search(r"--uid (\d+)", open(dockerfile).read()).group(1))
for name, spec in (("Deployment", pod["spec"]), ("Job", one["Job"]["spec"]["template"]["spec"])):
    sc = spec.get("securityContext", {})
    if not sc.get("runAsNonRoot") or sc.get("runAsUser") != uid:
        bad.append(f"{name} pods do not run as the image's user {uid}: {sc}")
envs = sorted(e.get("configMapRef", e.get("secretRef", {})).get("name") for e in c["envFrom"])
if envs != sorted([one["ConfigMap"]["metadata"]["name"], one["Secret"]["metadata"]["name"]]):
    bad.append(f"the Deployment's envFrom {envs} is not the ConfigMap and the Secret")
job = one["Job"]["spec"]["template"]["spec"]["containers"][0]
if job.get("args") != ["migrate"] or job["image"] != c["image"] or job["envFrom"] != c["envFrom"]:
    bad.append("the Job does not run migrate with the Deployment's image and settings")
labels = pod["metadata"]["labels"]
def selects(sel):
    return sel and all(labels.get(k) == v for k, v in sel.items())
if not selects(one["Service"]["spec"]["selector"]):
    bad.append("the Service does not select the Deployment's pods")
if one["Service"]["spec"]["ports"][0]["targetPort"] not in ports:
    bad.append("the Service's targetPort is not a container port")
if dep["spec"]["selector"]["matchLabels"] != one["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]:
    bad.append("the PodDisruptionBudget does not select the Deployment's pods")
hpa = one["HorizontalPodAutoscaler"]["spec"]
if hpa["scaleTargetRef"] != {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}:
    bad.append(f"the HPA targets {hpa['scaleTargetRef']}")
if not any(m.get("resource", {}).get("name") == "cpu" for m in hpa["metrics"]) or "cpu" not in c.get("resources", {}).get("requests", {}):
    bad.append("the HPA needs a CPU metric and the container a CPU request")
if one["PodDisruptionBudget"]["spec"]["minAvailable"] >= hpa["minReplicas"]:
    bad.append("the PDB's minAvailable leaves no pod to disrupt at minReplicas")
if bad:
    print("\n".join(bad)); sys.exit(1)
print(" ".join(f"{k}={v}" for k, v in sorted(cm.items())))
EOF
) || fail "$out"
echo "deploy/k8s: $(ls deploy/k8s | wc -l) files, the kinds and their links hold; ConfigMap: $out"
# the ConfigMap's values, as cqrsd's own checks see them: serve starts
tmp=$(mktemp -d)
env $out CQRSD_AUTH=off CQRSD_HTTP_ADDR=127.0.0.1:18111 "$CQRSD_BIN" serve 2>"$tmp/log" &
pid=$!
for _ in $(seq 100); do curl -fsS -m 1 http://127.0.0.1:18111/healthz >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS -m 1 http://127.0.0.1:18111/healthz >/dev/null 2>&1 || { tail -3 "$tmp/log" >&2; kill $pid 2>/dev/null; rm -rf "$tmp"; fail "serve did not start with the ConfigMap's values"; }
kill -TERM $pid; wait $pid; rc=$?
rm -rf "$tmp"
[ $rc -eq 0 ] || fail "serve with the ConfigMap's values exited $rc after SIGTERM"
echo "cqrsd serve starts with the ConfigMap's values and drains on SIGTERM (exit 0)"
echo "test_k8s: passed"
