#!/usr/bin/env python3
"""Offline checks of the deployment artifacts; run by scripts/validate-deploy.sh.

Subcommands (each exits non-zero with one line per problem):
  chart DIR       lint (strict) and render helm/keepers with the default values and every
                  helm/keepers/ci/*-values.yaml; write manifests under DIR; check the policies the
                  chart promises; check that bad values are refused.
  crds DIR        validate the rendered ServiceMonitor/PrometheusRule against the Prometheus
                  Operator models, unknown fields included.
  rules DIR       the rendered PrometheusRule groups: promtool check rules; with everything
                  enabled they equal deploy/prometheus/keepers-rules.yml (unit-tested as such).
  dashboard       the Grafana dashboards parse and are well formed.
  metrics FILE..  every metric the rules and dashboards query is in the given /metrics scrapes.
  units           the systemd units name real binaries and follow the unit conventions
                  (Type=notify with WatchdogSec, DynamicUser, the mnemonic as a credential, a
                  oneshot backup with a persistent timer); env examples name real settings.
  dockerfile      the Dockerfile parses (BuildKit's parser) and has what the image promises.
  docs            every runbook link resolves to a heading of docs/operations.md; every alert and
                  keeper alert key has a runbook entry; rule names are the keepers' snake_case
                  alert names.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "keepers"
RULES = ROOT / "deploy" / "prometheus" / "keepers-rules.yml"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
DOCS = ROOT / "docs" / "operations.md"
SYSTEMD = ROOT / "systemd"
DOCS_URL = "https://github.com/tonsurance/keepers/blob/main/docs/operations.md"
KUBE_VERSION = "1.37.0"
NAMESPACE = "keepers"
RELEASE = "keepers"
BINARIES = {"pricing-oracle-keeper", "bridge-health-keeper", "db-backup"}

# Environment names the keepers document (README.md, keepers/db-backup/README.md), plus standard
# ones; the code's own `bind("NAME", …)` calls are added at run time.
KNOWN_ENV = set(
    """TON_RPC_URL TON_API_KEY TON_API_KEYS TON_MAX_RPS KEEPER_MNEMONIC KEEPER_MNEMONIC_FILE PRICING_ORACLE_ADDRESS DATABASE_URL
    REDIS_URL UPDATE_INTERVAL SLACK_WEBHOOK_URL ALERT_WEBHOOK_URL BRIDGE_ORACLE_ADDRESS WALLET_VERSION
    TON_NETWORK ETH_RPC_URL COINGECKO_API_KEY COINGECKO_BASE_URL DEFILLAMA_COINS_URL
    DEFILLAMA_BRIDGES_URL DEFILLAMA_API_URL WORMHOLESCAN_URL AXELARSCAN_URL ALERTMANAGER_URL
    PAGERDUTY_ROUTING_KEY METRICS_ADDR LOG_FORMAT RUST_LOG OTEL_EXPORTER_OTLP_ENDPOINT
    PRICE_DEVIATION_BPS PRICE_HEARTBEAT MIN_SOURCES MAX_DEVIATION_BPS STALE_AFTER BRIDGE_HEARTBEAT
    ALERT_RENOTIFY UPDATE_VALUE_TON MESSAGE_TTL DB_SCHEMA BACKUP_DIR BACKUP_S3_URL BACKUP_SCHEDULE
    BACKUP_VERIFY BACKUP_VERIFY_DATABASE_URL BACKUP_KEEP_LOCAL PG_DUMP_PATH PUSHGATEWAY_URL
    METRICS_TEXTFILE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_REGION
    AWS_ENDPOINT_URL TARGET_DATABASE_URL TMPDIR HOME""".split()
)
# Never a plain value in a manifest: these come from Secrets (or, for the mnemonic, a file).
SECRET_ENV = set(
    """TON_API_KEY TON_API_KEYS KEEPER_MNEMONIC DATABASE_URL REDIS_URL SLACK_WEBHOOK_URL ALERT_WEBHOOK_URL
    PAGERDUTY_ROUTING_KEY COINGECKO_API_KEY PYTH_API_KEY ETH_RPC_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
    AWS_SESSION_TOKEN BACKUP_VERIFY_DATABASE_URL BACKUP_RECORDS_URL BACKUP_RECORDS_DATABASE_URL TARGET_DATABASE_URL""".split()
)
KNOWN_ENV |= {f"{n}_FILE" for n in SECRET_ENV}
# Where the chart mounts every secret as a file.
SECRETS_DIR = "/run/secrets/keepers"
# Alert keys the keepers raise themselves; each needs a runbook entry in docs/operations.md.
KEEPER_ALERT_KEYS = [
    "keeper_stale", "oracle_stale", "quorum_lost", "source_divergence", "source_down",
    "wallet_balance_low", "wallet_runway_low", "wallet_unfunded", "update_not_applied",
    "update_failed_onchain",
    "bridge_degraded", "bridge_offline", "bridge_unknown",
    "price_move_held", "clock_skew", "oracle_unreadable",
    "store_degraded", "backup_failed", "backup_stale", "endpoint_down",
]
STANDARD_LABELS = [
    "app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of", "helm.sh/chart",
]

problems: list[str] = []


def fail(msg: str) -> None:
    problems.append(msg)


def check(cond: bool, msg: str) -> bool:
    if not cond:
        fail(msg)
    return cond


def finish(what: str) -> None:
    if problems:
        for p in problems:
            print(f"FAIL {what}: {p}", file=sys.stderr)
        sys.exit(1)
    print(f"ok   {what}")


def code_env_names() -> set[str]:
    """Names the code binds (`bind("NAME", …)`), so new settings need no edit here."""
    names = set()
    for src in list((ROOT / "common").rglob("*.rs")) + list((ROOT / "keepers").rglob("*.rs")):
        text = src.read_text()
        names.update(re.findall(r'bind(?:_secret)?\(\s*"([A-Z][A-Z0-9_]*)"', text))
        # A secret is also read from the file NAME_FILE names.
        names.update(f"{n}_FILE" for n in re.findall(r'bind_secret\(\s*"([A-Z][A-Z0-9_]*)"', text))
    return names


# --- PromQL --------------------------------------------------------------------------------------

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
             "group_right", "offset", "bool", "inf", "nan"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.I)


def promql_metrics(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (Grafana `$vars` allowed)."""
    e = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    e = re.sub(r"\$\{[^}]*\}|\$\w+", "0", e)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = _GROUPING.sub(" ", e)
    names = set()
    for m in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?", e):
        ident, call = m.group(1), m.group(2)
        after = e[m.end():].lstrip()
        if call or ident.lower() in _KEYWORDS:
            continue
        if re.match(r"(by|without)\b", after, re.I) and ident.lower() in {
            "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
            "bottomk", "topk", "quantile", "limitk", "limit_ratio"}:
            continue
        names.add(ident)
    return names


def rule_groups_metrics(groups: list, where: str) -> dict[str, str]:
    refs = {}
    for g in groups:
        for r in g.get("rules", []):
            names = promql_metrics(str(r["expr"]))
            check(bool(names), f"{where}: rule {r.get('alert') or r.get('record')} selects no metric")
            for n in names:
                refs[n] = f"{where} ({r.get('alert') or r.get('record')})"
    return refs


def dashboard_queries(d) -> list[str]:
    out = []
    if isinstance(d, dict):
        for k, v in d.items():
            if k == "expr" and isinstance(v, str):
                out.append(v)
            elif k == "templating" and isinstance(v, dict):
                for var in v.get("list", []):
                    if var.get("type") != "query":
                        continue
                    q = var.get("query")
                    q = q.get("query", "") if isinstance(q, dict) else (q or "")
                    m = re.match(r"label_values\((.*),\s*\w+\)\s*$", q)
                    out.append(m.group(1) if m else q)
            else:
                out.extend(dashboard_queries(v))
    elif isinstance(d, list):
        for x in d:
            out.extend(dashboard_queries(x))
    return out


# --- chart ---------------------------------------------------------------------------------------

def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def normalize(v):
    """Helm carries every number as a float; the TOML must hold integral ones as integers."""
    if isinstance(v, dict):
        return {k: normalize(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [normalize(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def value_sets() -> list[tuple[str, dict]]:
    sets = [("default", {})]
    for f in sorted((CHART / "ci").glob("*-values.yaml")):
        sets.append((f.name.removesuffix("-values.yaml"), yaml.safe_load(f.read_text()) or {}))
    return sets


def containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("containers", []) + pod_spec.get("initContainers", [])


def pod_spec_of(doc: dict) -> dict | None:
    kind = doc["kind"]
    if kind in ("Deployment", "Job"):
        return doc["spec"]["template"]["spec"]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def check_pod(where: str, spec: dict, known_env: set[str]) -> None:
    psc = spec.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True, f"{where}: pod runAsNonRoot is not true")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: pod seccomp is not RuntimeDefault")
    check(spec.get("automountServiceAccountToken") is False, f"{where}: service account token is mounted")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in containers(spec):
        w = f"{where}/{c['name']}"
        sc = c.get("securityContext", {})
        check(sc.get("allowPrivilegeEscalation") is False, f"{w}: allowPrivilegeEscalation is not false")
        check(sc.get("readOnlyRootFilesystem") is True, f"{w}: root filesystem is writable")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{w}: capabilities are not dropped")
        check(Path(c["command"][0]).name in BINARIES, f"{w}: command {c['command']} is not a keeper binary")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        check("/tmp" in mounts or "/scratch" in mounts, f"{w}: no writable /tmp on a read-only root")
        for m in mounts.values():
            check(m["name"] in volumes, f"{w}: mount of undefined volume {m['name']}")
        names = [e["name"] for e in c.get("env", [])]
        check(len(names) == len(set(names)), f"{w}: duplicate env names {names}")
        for e in c.get("env", []):
            n = e["name"]
            check(n in known_env, f"{w}: env {n} is no setting of the keepers (typo?)")
            check(n not in SECRET_ENV, f"{w}: the secret {n} is in the environment; mount it as a file ({n}_FILE)")
            check("secretKeyRef" not in (e.get("valueFrom") or {}), f"{w}: {n} comes from a Secret through the environment")
            if n.endswith("_FILE") and n[:-5] in SECRET_ENV:
                check(e.get("value", "").startswith(SECRETS_DIR + "/"), f"{w}: {n} does not point into {SECRETS_DIR}")
                m = mounts.get(SECRETS_DIR)
                check(m is not None and m.get("readOnly") is True, f"{w}: {SECRETS_DIR} is not mounted read-only")
                vol = volumes.get((m or {}).get("name"), {}).get("projected", {})
                check(vol.get("defaultMode") == 0o400, f"{w}: secret files are not mode 0400")
                paths = {i["path"] for src in vol.get("sources", []) for i in src.get("secret", {}).get("items", [])}
                check(e.get("value", "").rsplit("/", 1)[-1] in paths, f"{w}: {n} names no file of the secrets volume")
        for v in volumes.values():
            if "emptyDir" in v:
                check("sizeLimit" in v["emptyDir"], f"{where}: emptyDir {v['name']} has no sizeLimit")


def check_rendered(name: str, values: dict, merged: dict, docs: list[dict], known_env: set[str]) -> None:
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        meta = d["metadata"]
        where = f"{name}: {d['kind']}/{meta['name']}"
        labels = meta.get("labels", {})
        for l in STANDARD_LABELS:
            check(l in labels, f"{where}: label {l} missing")
        check(len(meta["name"]) <= 63, f"{where}: name longer than 63")
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            check(meta.get("namespace") == NAMESPACE, f"{where}: namespace is not the release's")
        spec = pod_spec_of(d)
        if spec is not None:
            check_pod(where, spec, known_env)

    # Deployments: one per identity, Recreate, probes, own wallet.
    deployments = by_kind.get("Deployment", [])
    expected = []
    for key, comp in (("pricingOracle", "pricing-oracle"), ("bridgeHealth", "bridge-health")):
        k = merged[key]
        if k["enabled"]:
            expected += [(comp, k, i) for i in k["identities"]]
    check(len(deployments) == len(expected), f"{name}: {len(deployments)} Deployments for {len(expected)} identities")
    wallets = set()
    replicas_of = {}
    for d in deployments:
        w = f"{name}: Deployment/{d['metadata']['name']}"
        check(d["spec"]["strategy"] == {"type": "Recreate"}, f"{w}: strategy is not Recreate")
        sel = d["spec"]["selector"]["matchLabels"]
        tpl = d["spec"]["template"]["metadata"]["labels"]
        check(all(tpl.get(k) == v for k, v in sel.items()), f"{w}: selector does not match the pod labels")
        check("app.kubernetes.io/version" not in sel, f"{w}: selector uses the version label")
        replicas_of[d["metadata"]["name"]] = d["spec"]["replicas"]
        c = d["spec"]["template"]["spec"]["containers"][0]
        check(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", f"{w}: liveness is not /healthz")
        check(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", f"{w}: readiness is not /readyz")
        env = {e["name"]: e for e in c["env"]}
        port = c["ports"][0]["containerPort"]
        check(env.get("METRICS_ADDR", {}).get("value") == f"0.0.0.0:{port}", f"{w}: METRICS_ADDR does not serve the container port")
        check(env.get("KEEPER_MNEMONIC_FILE", {}).get("value") == f"{SECRETS_DIR}/keeper-mnemonic", f"{w}: KEEPER_MNEMONIC_FILE unset")
        # Environment: global < keeper < identity, secrets by reference to the Secrets named in values.
        comp = d["metadata"]["labels"]["app.kubernetes.io/component"]
        ident_name = d["metadata"]["labels"]["keepers.tonsurance.io/identity"]
        key = {"pricing-oracle": "pricingOracle", "bridge-health": "bridgeHealth"}[comp]
        ident = next(i for i in merged[key]["identities"] if i["name"] == ident_name)
        plain = {**(merged.get("env") or {}), **(merged[key].get("env") or {}), **(ident.get("env") or {})}
        refs = {**(merged.get("secretEnv") or {}), **(merged[key].get("secretEnv") or {}), **(ident.get("secretEnv") or {})}
        want_env = {n: str(normalize(v)).lower() if isinstance(v, bool) else str(normalize(v)) for n, v in plain.items() if v is not None}
        want_refs = {n: (r["existingSecret"], r.get("key") or n) for n, r in refs.items() if r.get("existingSecret")}
        want_env |= {"METRICS_ADDR": f"0.0.0.0:{port}", "KEEPER_MNEMONIC_FILE": f"{SECRETS_DIR}/keeper-mnemonic"}
        want_env |= {f"{n}_FILE": f"{SECRETS_DIR}/{n.lower().replace('_', '-')}" for n in want_refs}
        got_env = {n: e["value"] for n, e in env.items() if "value" in e}
        check(got_env == want_env, f"{w}: env {got_env} is not the merged values {want_env}")
        for m in c["volumeMounts"]:
            if m["name"] in ("config", "secrets"):
                check(m.get("readOnly") is True, f"{w}: {m['name']} is mounted writable")
        vols = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        sources = vols.get("secrets", {}).get("projected", {}).get("sources", [])
        files = {i["path"]: (src["secret"]["name"], i["key"]) for src in sources for i in src["secret"]["items"]}
        wallet = files.get("keeper-mnemonic")
        check(wallet == (ident["wallet"]["existingSecret"], ident["wallet"].get("key") or "mnemonic"),
              f"{w}: the mnemonic file {wallet} is not the identity's wallet {ident['wallet']}")
        check(wallet not in wallets, f"{w}: wallet {wallet} is shared with another Deployment")
        wallets.add(wallet)
        want_files = {n.lower().replace("_", "-"): ref for n, ref in want_refs.items()} | {"keeper-mnemonic": wallet}
        check(files == want_files, f"{w}: secret files {files} are not the values' references {want_files}")
        check("checksum/config" in d["spec"]["template"]["metadata"].get("annotations", {}), f"{w}: no config checksum")

    # PodDisruptionBudget exactly where replicas > 1.
    pdbs = {p["metadata"]["name"]: p for p in by_kind.get("PodDisruptionBudget", [])}
    for dep, n in replicas_of.items():
        check((dep in pdbs) == (n > 1), f"{name}: Deployment {dep} has {n} replicas and {'a' if dep in pdbs else 'no'} PDB")
    for p in pdbs.values():
        check("maxUnavailable" in p["spec"] and "minAvailable" not in p["spec"], f"{name}: PDB {p['metadata']['name']} must use maxUnavailable")

    # ConfigMaps: the TOML parses and equals the merged values.
    cms = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    for comp, k, ident in expected:
        cm_name = f"{RELEASE}-{comp}-{ident['name']}"
        if not check(cm_name in cms, f"{name}: ConfigMap {cm_name} missing"):
            continue
        try:
            got = tomllib.loads(cms[cm_name]["data"]["config.toml"])
        except tomllib.TOMLDecodeError as e:
            fail(f"{name}: ConfigMap {cm_name}: config.toml is not TOML: {e}")
            continue
        want = normalize(deep_merge(k.get("config") or {}, ident.get("config") or {}))
        # By JSON text, so that 60.0 (a float) does not pass for 60 (an integer setting).
        check(json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True),
              f"{name}: ConfigMap {cm_name}: TOML {got} differs from values {want}")
    if merged["backup"]["enabled"]:
        got = tomllib.loads(cms[f"{RELEASE}-db-backup"]["data"]["config.toml"])
        want = normalize(merged["backup"].get("config") or {})
        check(json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True), f"{name}: backup TOML {got} differs from values {want}")

    # Backup CronJob.
    cronjobs = by_kind.get("CronJob", [])
    check(len(cronjobs) == (1 if merged["backup"]["enabled"] else 0), f"{name}: {len(cronjobs)} CronJobs")
    for cj in cronjobs:
        s = cj["spec"]
        w = f"{name}: CronJob/{cj['metadata']['name']}"
        check(s.get("concurrencyPolicy") == "Forbid", f"{w}: concurrencyPolicy is not Forbid")
        for f in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
            check(f in s, f"{w}: {f} missing")
        js = s["jobTemplate"]["spec"]
        check("activeDeadlineSeconds" in js and "backoffLimit" in js, f"{w}: job deadline or backoff missing")
        pod = js["template"]["spec"]
        check(pod.get("restartPolicy") == "Never", f"{w}: restartPolicy is not Never")
        check(any("emptyDir" in v and v["emptyDir"].get("sizeLimit") for v in pod["volumes"]), f"{w}: no sized scratch emptyDir")
        c = pod["containers"][0]
        check("--once" in c["args"], f"{w}: the backup does not run --once")
        env = {e["name"]: e for e in c["env"]}
        check("DATABASE_URL_FILE" in env, f"{w}: no DATABASE_URL_FILE")
        check("BACKUP_S3_URL" in env or any("persistentVolumeClaim" in v for v in pod["volumes"]), f"{w}: no destination")

    # Pre-upgrade backup hook: opt-in, runs `--once` before the migrations (lower hook weight).
    def component(o: dict) -> str:
        return o["metadata"]["labels"].get("app.kubernetes.io/component", "")

    hooks = [j for j in by_kind.get("Job", []) if component(j) == "db-backup-pre-upgrade"]
    want_hook = merged["backup"]["enabled"] and merged["backup"]["preUpgradeHook"]["enabled"]
    check(len(hooks) == (1 if want_hook else 0), f"{name}: {len(hooks)} pre-upgrade backup Jobs, expected {int(bool(want_hook))}")
    for j in hooks:
        a = j["metadata"].get("annotations", {})
        w = f"{name}: Job/{j['metadata']['name']}"
        check(a.get("helm.sh/hook") == "pre-upgrade", f"{w}: not a pre-upgrade hook")
        check(int(a.get("helm.sh/hook-weight", "0")) < 0, f"{w}: must run before the migrations hook (weight 0)")
        check("hook-failed" not in a.get("helm.sh/hook-delete-policy", ""), f"{w}: a failed backup Job must stay for its logs")
        js = j["spec"]
        check(js.get("backoffLimit") == 0 and "activeDeadlineSeconds" in js, f"{w}: backoff or deadline")
        pod = js["template"]["spec"]
        c = pod["containers"][0]
        check("--once" in c["args"], f"{w}: the backup does not run --once")
        env = {e["name"] for e in c["env"]}
        check("DATABASE_URL_FILE" in env, f"{w}: no DATABASE_URL_FILE")
        mounts = {m["name"] for m in c.get("volumeMounts", [])}
        check("secrets" in mounts, f"{w}: the secrets volume is not mounted")
        cm = next((v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v), None)
        hook_cm = cms.get(cm or "")
        check(hook_cm is not None and hook_cm["metadata"].get("annotations", {}).get("helm.sh/hook") == "pre-upgrade",
              f"{w}: its ConfigMap {cm} is not a pre-upgrade hook (the release's may not exist yet)")
        if hook_cm is not None:
            got = tomllib.loads(hook_cm["data"]["config.toml"])
            want = normalize(merged["backup"].get("config") or {})
            check(json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True), f"{w}: hook TOML {got} differs from values {want}")

    # Migration hook.
    jobs = [j for j in by_kind.get("Job", []) if component(j) == "migrate"]
    db = any(isinstance(v, dict) and v.get("existingSecret") for k, v in (merged["secretEnv"] or {}).items() if k == "DATABASE_URL")
    want_job = merged["migrations"]["enabled"] and db and (merged["pricingOracle"]["enabled"] or merged["bridgeHealth"]["enabled"])
    check(len(jobs) == (1 if want_job else 0), f"{name}: {len(jobs)} migration Jobs, expected {int(bool(want_job))}")
    for j in jobs:
        a = j["metadata"].get("annotations", {})
        check(a.get("helm.sh/hook") == "pre-install,pre-upgrade", f"{name}: migration Job is not a pre-install/pre-upgrade hook")
        check("migrate" in j["spec"]["template"]["spec"]["containers"][0]["args"], f"{name}: migration Job does not run migrate")

    # NetworkPolicy: DNS to the cluster DNS; HTTPS, PostgreSQL, Redis to public addresses only
    # (no private ranges, no metadata endpoint); only the metrics port in, from named peers.
    nps = by_kind.get("NetworkPolicy", [])
    check(len(nps) == 1, f"{name}: {len(nps)} NetworkPolicies")
    for np in nps:
        egress = np["spec"]["egress"]
        ports = {(p.get("protocol", "TCP"), p["port"]) for r in egress for p in r.get("ports", [])}
        for want in [("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 5432), ("TCP", 6379)]:
            check(want in ports, f"{name}: NetworkPolicy egress lacks {want}")
        for r in egress:
            check(bool(r.get("to")), f"{name}: an egress rule without 'to' allows every destination: {r}")
            blocks = [p["ipBlock"] for p in r.get("to", []) if "ipBlock" in p]
            for b in blocks:
                if b["cidr"] == "0.0.0.0/0":
                    for private in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"):
                        check(private in b.get("except", []), f"{name}: egress to 0.0.0.0/0 does not except {private}")
        ing = np["spec"]["ingress"]
        check(len(ing) == 1 and ing[0]["ports"] == [{"port": "metrics", "protocol": "TCP"}], f"{name}: ingress is not only the metrics port")
        if merged["networkPolicy"]["metricsFrom"]:
            check(ing[0].get("from") == merged["networkPolicy"]["metricsFrom"], f"{name}: ingress is not limited to metricsFrom")
        if merged["backup"]["enabled"] and merged["backup"]["pushgatewayUrl"]:
            check(("TCP", 9091) in ports, f"{name}: NetworkPolicy egress lacks the Pushgateway port")

    # Services, ServiceMonitor, PrometheusRule behind their flags.
    check(len(by_kind.get("Service", [])) == (len(expected) if merged["service"]["enabled"] else 0), f"{name}: Service count")
    for kind, flag in (("ServiceMonitor", "serviceMonitor"), ("PrometheusRule", "prometheusRule")):
        objs = by_kind.get(kind, [])
        on = merged[flag]["enabled"]
        check(len(objs) == (1 if on else 0), f"{name}: {len(objs)} {kind}s with {flag}.enabled={on}")
        for o in objs:
            for k, v in (merged[flag].get("additionalLabels") or {}).items():
                check(o["metadata"]["labels"].get(k) == v, f"{name}: {kind} lacks additional label {k}")
    for sm in by_kind.get("ServiceMonitor", []):
        check(sm["spec"].get("jobLabel") == "app.kubernetes.io/part-of", f"{name}: ServiceMonitor jobLabel must yield job=keepers")
        for svc in by_kind.get("Service", []):
            check(svc["metadata"]["labels"].get("app.kubernetes.io/part-of") == "keepers", f"{name}: Service without part-of=keepers")
            check(all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items()),
                  f"{name}: ServiceMonitor does not select Service {svc['metadata']['name']}")


# Values the chart must refuse, with a piece of the expected message.
BAD_VALUES = [
    ("two replicas without a lease store",
     {"pricingOracle": {"identities": [{"name": "a", "replicas": 2, "wallet": {"existingSecret": "w"}}]}}, "lease"),
    ("the same identity twice",
     {"pricingOracle": {"identities": [{"name": "a", "wallet": {"existingSecret": "w1"}},
                                       {"name": "a", "wallet": {"existingSecret": "w2"}}]}}, "used twice"),
    ("backup without DATABASE_URL",
     {"backup": {"enabled": True, "s3": {"url": "s3://bucket/x"}}}, "DATABASE_URL"),
    ("backup without a destination",
     {"secretEnv": {"DATABASE_URL": {"existingSecret": "db", "key": "url"}}, "backup": {"enabled": True}}, "destination"),
    ("a secret both plain and from a Secret",
     {"env": {"TON_API_KEY": "x"}, "secretEnv": {"TON_API_KEY": {"existingSecret": "s", "key": "k"}}}, "both in env and in secretEnv"),
    ("an identity without a wallet",
     {"pricingOracle": {"identities": [{"name": "a"}]}}, "wallet"),
    ("an upper-case identity name",
     {"pricingOracle": {"identities": [{"name": "A", "wallet": {"existingSecret": "w"}}]}}, "pattern"),
    ("zero replicas", {"bridgeHealth": {"identities": [{"name": "a", "replicas": 0, "wallet": {"existingSecret": "w"}}]}}, "minimum"),
    ("an unknown top-level key", {"replicaCount": 2}, "additional properties"),
    ("a 6-field backup schedule", {"backup": {"schedule": "0 0 */6 * * *"}}, "pattern"),
    ("an enabled keeper without identities", {"bridgeHealth": {"identities": []}}, "minItems"),
    ("ServiceMonitor without Service", {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}, "service.enabled"),
]


def cmd_chart(out: Path) -> None:
    import helm_python as helm

    helm.disable_logging()
    known_env = KNOWN_ENV | code_env_names()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with helm.Chart.load(str(CHART)) as chart:
        for name, values in value_sets():
            rep = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
            for e in rep["errors"]:
                fail(f"{name}: helm lint: {e.strip()}")
            for m in rep["messages"]:
                if m["severity"] >= 2:
                    fail(f"{name}: helm lint {m['path']}: {m['error']}")
            merged = chart.merge_values(values)
            try:
                chart.validate_schema(merged)
                rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            except helm.HelmError as e:
                fail(f"{name}: render: {e}")
                continue
            d = out / name
            d.mkdir()
            docs = []
            for path, text in sorted(rendered.items()):
                if path.endswith("NOTES.txt"):
                    notes = text
                    continue
                parsed = [x for x in yaml.safe_load_all(text) if x]
                if not parsed:
                    continue
                (d / Path(path).name).write_text(text if text.endswith("\n") else text + "\n")
                docs.extend(parsed)
            check_rendered(name, values, merged, docs, known_env)
            for dep in (x for x in docs if x["kind"] == "Deployment"):
                binary = Path(dep["spec"]["template"]["spec"]["containers"][0]["command"][0]).name
                check(f"deploy/{dep['metadata']['name']} -- {binary} wallet" in notes,
                      f"{name}: NOTES.txt does not print the wallet command of {dep['metadata']['name']}")
        for what, values, needle in BAD_VALUES:
            try:
                chart.validate_schema(chart.merge_values(values))
                chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
                fail(f"bad values accepted: {what}")
            except helm.HelmError as e:
                check(needle in str(e), f"bad values ({what}) refused for another reason: {e}")
    finish(f"chart: lint + render of {len(value_sets())} value sets, {len(BAD_VALUES)} bad value sets refused")


# --- CRDs ---------------------------------------------------------------------------------------

def unknown_fields(model_cls, data, path: str) -> list[str]:
    """Keys of `data` the pydantic model does not declare (pydantic ignores them silently)."""
    import typing

    from pydantic import BaseModel

    def models_in(ann):
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return [ann]
        out = []
        for a in typing.get_args(ann):
            out += models_in(a)
        return out

    found = []
    if isinstance(data, list):
        for i, x in enumerate(data):
            found += unknown_fields(model_cls, x, f"{path}[{i}]")
        return found
    if not isinstance(data, dict):
        return found
    fields = {}
    for fname, f in model_cls.model_fields.items():
        fields[f.alias or fname] = f
        fields[fname] = f
    for k, v in data.items():
        if k not in fields:
            found.append(f"{path}.{k}")
            continue
        for sub in models_in(fields[k].annotation)[:1]:
            found += unknown_fields(sub, v, f"{path}.{k}")
    return found


def cmd_crds(out: Path) -> None:
    from cloudcoil.models.prometheus_operator import v1

    models = {"ServiceMonitor": v1.ServiceMonitor, "PrometheusRule": v1.PrometheusRule}
    n = 0
    for f in sorted(out.rglob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if not doc or doc["kind"] not in models:
                continue
            n += 1
            where = f"{f.relative_to(out)}: {doc['kind']}"
            check(doc["apiVersion"] == "monitoring.coreos.com/v1", f"{where}: apiVersion {doc['apiVersion']}")
            try:
                models[doc["kind"]].model_validate(doc)
            except Exception as e:  # pydantic.ValidationError, with every field it rejects
                fail(f"{where}: {e}")
            for u in unknown_fields(models[doc["kind"]], doc, doc["kind"]):
                fail(f"{where}: unknown field {u}")
    check(n >= 2, f"only {n} monitoring objects rendered; the everything value set should have both")
    finish(f"crds: {n} ServiceMonitor/PrometheusRule objects")


# --- rules --------------------------------------------------------------------------------------

def cmd_rules(out: Path) -> None:
    source = yaml.safe_load(RULES.read_text())
    n = 0
    for f in sorted(out.rglob("prometheusrule.yaml")):
        doc = yaml.safe_load(f.read_text())
        groups = doc["spec"]["groups"]
        set_dir = f.parent
        rules_file = set_dir / "rendered-rules" / "keepers-rules.yml"
        rules_file.parent.mkdir(exist_ok=True)
        rules_file.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        r = subprocess.run(["promtool", "check", "rules", str(rules_file)], capture_output=True, text=True)
        check(r.returncode == 0, f"{set_dir.name}: promtool check rules: {r.stdout}{r.stderr}")
        n += 1
        if set_dir.name == "everything":
            # Equal to the unit-tested source, so promtool's unit tests hold for it too.
            check(groups == source["groups"], f"{set_dir.name}: rendered PrometheusRule differs from {RULES.relative_to(ROOT)}")
        else:
            for g in groups:
                for rule in g["rules"]:
                    url = rule.get("annotations", {}).get("runbook_url", "")
                    check(url.startswith("http"), f"{set_dir.name}: {rule.get('alert')} has no runbook link")
    check(n >= 2, f"only {n} rendered PrometheusRules")
    finish(f"rules: {n} rendered PrometheusRules checked by promtool")


# --- dashboard ----------------------------------------------------------------------------------

def cmd_dashboard() -> None:
    check(bool(DASHBOARDS), "no dashboards in deploy/grafana")
    for f in DASHBOARDS:
        try:
            d = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            fail(f"{f.name}: not JSON: {e}")
            continue
        for k in ("uid", "title", "panels", "templating", "schemaVersion"):
            check(k in d, f"{f.name}: no {k}")
        variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
        check(variables.get("datasource", {}).get("type") == "datasource", f"{f.name}: no datasource variable")
        ids, covered = set(), []
        for p in d["panels"]:
            w = f"{f.name}: panel {p.get('id')} {p.get('title')!r}"
            check(p.get("id") not in ids, f"{w}: duplicate id")
            ids.add(p.get("id"))
            g = p.get("gridPos", {})
            check(all(k in g for k in "hwxy") and g["x"] + g["w"] <= 24, f"{w}: bad gridPos {g}")
            if p["type"] == "row":
                continue
            covered.append((g["y"], g["y"] + g["h"], g["x"], g["x"] + g["w"], w))
            check(p.get("datasource", {}).get("uid") == "${datasource}", f"{w}: datasource is not ${{datasource}}")
            targets = p.get("targets", [])
            check(bool(targets), f"{w}: no queries")
            refs = [t.get("refId") for t in targets]
            check(len(refs) == len(set(refs)), f"{w}: duplicate refIds")
            for t in targets:
                check(bool(t.get("expr")), f"{w}: empty query")
                for var in re.findall(r"\$(\w+)", t.get("expr", "")):
                    check(var in variables or var.startswith("__"), f"{w}: unknown variable ${var}")
        for i, a in enumerate(covered):
            for b in covered[i + 1:]:
                if a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]:
                    fail(f"{a[4]} overlaps {b[4]}")
        text = f.read_text()
        for topic, metric in [("oracle freshness", "pricing_oracle_last_update_timestamp"),
                              ("published prices", "pricing_oracle_aggregate_price"),
                              ("source prices", "pricing_oracle_price"),
                              ("cycle outcomes", "keeper_cycles_total"),
                              ("cycle latency", "keeper_cycle_duration_seconds_bucket"),
                              ("TON messages", "keeper_ton_messages_total"),
                              ("wallet balance", "keeper_wallet_balance_ton"),
                              ("bridge scores", "bridge_health_score"),
                              ("backup age", "backup_last_success_timestamp_seconds"),
                              ("backup size", "backup_size_bytes")]:
            check(metric in text, f"{f.name}: no panel for {topic} ({metric})")
    finish(f"dashboard: {len(DASHBOARDS)} dashboard(s)")


# --- metrics ------------------------------------------------------------------------------------

def exported(scrape: str) -> set[str]:
    names = {"up"}
    for line in scrape.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            if kind == "histogram":
                names |= {name + "_bucket", name + "_sum", name + "_count"}
            elif kind == "counter" and not name.endswith("_total"):
                names.add(name + "_total")
            else:
                names.add(name)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def cmd_metrics(scrapes: list[Path]) -> None:
    have = set()
    for s in scrapes:
        have |= exported(s.read_text())
    refs = rule_groups_metrics(yaml.safe_load(RULES.read_text())["groups"], RULES.name)
    for f in DASHBOARDS:
        for q in dashboard_queries(json.loads(f.read_text())):
            for n in promql_metrics(q):
                refs[n] = f.name
    check(len(refs) >= 15, f"only {len(refs)} metrics referenced: {sorted(refs)}")
    for n, where in sorted(refs.items()):
        check(n in have, f"{where} queries {n}, which no keeper exports")
    finish(f"metrics: {len(refs)} metrics referenced by rules and dashboards, all exported")


# --- systemd ------------------------------------------------------------------------------------

def unit_settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        k, _, v = line.partition("=")
        out.setdefault(k.strip(), []).append(v.strip())
    return out


def cargo_bins() -> set[str]:
    bins = set()
    for m in (ROOT / "keepers").glob("*/Cargo.toml"):
        data = tomllib.loads(m.read_text())
        bins |= {b["name"] for b in data.get("bin", [])}
    return bins


def cmd_units() -> None:
    bins = cargo_bins()
    check(BINARIES <= bins, f"Cargo [[bin]] names {sorted(bins)} lack {sorted(BINARIES - bins)}")
    known_env = KNOWN_ENV | code_env_names()
    for daemon, conf in (("pricing-oracle-keeper", "pricing-oracle"), ("bridge-health-keeper", "bridge-health")):
        s = unit_settings(SYSTEMD / f"{daemon}.service")
        w = f"{daemon}.service"
        check(s.get("Type") == ["notify"], f"{w}: Type is not notify")
        check(bool(s.get("WatchdogSec")), f"{w}: no WatchdogSec")
        check(s.get("Restart") == ["on-failure"], f"{w}: Restart is not on-failure")
        check(s.get("DynamicUser") == ["yes"], f"{w}: not DynamicUser")
        creds = s.get("LoadCredential", [])
        check(creds[:1] == [f"keeper-mnemonic:/etc/keepers/{conf}/mnemonic"], f"{w}: LoadCredential {creds}")
        for name in ("TON_API_KEY", "TON_API_KEYS", "DATABASE_URL", "REDIS_URL", "ETH_RPC_URL", "SLACK_WEBHOOK_URL",
                     "ALERT_WEBHOOK_URL", "PAGERDUTY_ROUTING_KEY"):
            check(name.lower().replace("_", "-") in creds, f"{w}: the secret {name} is no credential: {creds}")
        check(s.get("EnvironmentFile") == [f"-/etc/keepers/{conf}/env"], f"{w}: EnvironmentFile {s.get('EnvironmentFile')}")
        check(s["ExecStart"][0].startswith(f"/usr/local/bin/{daemon} "), f"{w}: ExecStart {s['ExecStart']}")
        check("KEEPER_MNEMONIC" not in " ".join(s.get("Environment", [])), f"{w}: mnemonic in Environment=")
    s = unit_settings(SYSTEMD / "db-backup.service")
    check(s.get("Type") == ["oneshot"], "db-backup.service: Type is not oneshot")
    check("--once" in s["ExecStart"][0] and s["ExecStart"][0].startswith("/usr/local/bin/db-backup "), "db-backup.service: ExecStart")
    check(s.get("IOSchedulingClass") == ["idle"] and bool(s.get("Nice")), "db-backup.service: not low CPU and IO priority")
    for name in ("DATABASE_URL", "AWS_SECRET_ACCESS_KEY", "BACKUP_VERIFY_DATABASE_URL"):
        check(name.lower().replace("_", "-") in s.get("LoadCredential", []), f"db-backup.service: the secret {name} is no credential")
    t = unit_settings(SYSTEMD / "db-backup.timer")
    check(bool(t.get("OnCalendar")) and bool(t.get("RandomizedDelaySec")) and t.get("Persistent") == ["true"],
          "db-backup.timer: OnCalendar, RandomizedDelaySec and Persistent=true needed")
    for env in sorted(SYSTEMD.glob("*.env.example")):
        for line in env.read_text().splitlines():
            m = re.match(r"^#?([A-Z][A-Z0-9_]*)=", line)
            if m:
                check(m.group(1) in known_env, f"{env.name}: {m.group(1)} is no setting of the keepers")
            check(not (m and m.group(1) in SECRET_ENV), f"{env.name}: the secret {m and m.group(1)} in an env file; use its credential")
    finish("units: conventions and binary names")


# --- Dockerfile ---------------------------------------------------------------------------------

INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
                "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


def cmd_dockerfile() -> None:
    import dockerfile

    path = ROOT / "Dockerfile"
    try:
        cmds = dockerfile.parse_file(str(path))
    except dockerfile.GoParseError as e:
        fail(f"Dockerfile does not parse: {e}")
        finish("dockerfile")
    for c in cmds:
        check(c.cmd.upper() in INSTRUCTIONS, f"Dockerfile:{c.start_line}: unknown instruction {c.cmd}")
    stages = [c for c in cmds if c.cmd.upper() == "FROM"]
    check(len(stages) >= 2, "Dockerfile is not multi-stage")
    args = {c.value[0].split("=")[0]: (c.value[0].split("=", 1) + [""])[1] for c in cmds if c.cmd.upper() == "ARG" and c.start_line < stages[0].start_line}
    expand = lambda s: re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), s)
    first, last = expand(stages[0].value[0]), expand(stages[-1].value[0])
    check(re.fullmatch(r"rust:1\.\d+-bookworm", first) is not None, f"builder image {first} is not rust:1.x-bookworm")
    check(last == "debian:bookworm-slim", f"runtime image {last} is not debian:bookworm-slim")
    check(bool(args.get("PG_MAJOR", "").isdigit()), "no ARG PG_MAJOR=<major> stating the pg_dump version")
    final = [c for c in cmds if c.start_line > stages[-1].start_line]
    users = [c.value[0] for c in final if c.cmd.upper() == "USER"]
    check(bool(users) and users[-1].split(":")[0] not in ("0", "root"), f"runtime user {users} is root or unset")
    check(not any(c.cmd.upper() == "HEALTHCHECK" for c in cmds), "Dockerfile has a HEALTHCHECK")
    check(not any(c.cmd.upper() == "ADD" for c in cmds), "use COPY, not ADD")
    runs = " ".join(c.value[0] for c in final if c.cmd.upper() == "RUN")
    check("postgresql-client-${PG_MAJOR}" in runs, "runtime does not install postgresql-client-${PG_MAJOR}")
    check("--no-install-recommends" in runs and "rm -rf /var/lib/apt/lists" in runs, "runtime apt layer is not minimal")
    copied = " ".join(" ".join(c.value) for c in final if c.cmd.upper() == "COPY" and any(f.startswith("--from=builder") for f in c.flags))
    for b in BINARIES:
        check(f"/out/{b}" in copied, f"binary {b} is not copied into the runtime image")
    packages = {tomllib.loads(m.read_text())["package"]["name"] for m in (ROOT / "keepers").glob("*/Cargo.toml")}
    build = " ".join(c.value[0] for c in cmds if c.cmd.upper() == "RUN" and stages[0].start_line < c.start_line < stages[1].start_line)
    check("--locked" in build and "--release" in build, "cargo build is not --release --locked")
    for b in sorted(BINARIES):
        check(f"-p {b}" in build and b in packages, f"cargo build does not build package {b} (packages: {sorted(packages)})")
        check(f"target/release/{b}" in build, f"the builder does not collect {b} into /out")
    # Every workspace member and the migrations reach the build context.
    ws = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    sources = {c.value[0].rstrip("/") for c in cmds if c.cmd.upper() == "COPY" and not c.flags}
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for m in ws + ["migrations"]:
        top = m.split("/")[0]
        check(top in sources, f"workspace member {m} is not copied into the build")
        check(f"!{top}/" in ignore, f".dockerignore excludes {top}/")
        check((ROOT / m).exists(), f"{m} does not exist")
    for f in ("Cargo.toml", "Cargo.lock"):
        check(f"!{f}" in ignore, f".dockerignore excludes {f}")
    exposed = {p for c in final if c.cmd.upper() == "EXPOSE" for p in c.value}
    check({"9101", "9102", "9103"} <= exposed, f"EXPOSE {sorted(exposed)} lacks the ops ports")
    finish(f"dockerfile: {len(cmds)} instructions, {len(stages)} stages (structure only: no image build here)")


# --- docs ---------------------------------------------------------------------------------------

def anchors(md: str) -> set[str]:
    out = set()
    for line in md.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if m:
            a = re.sub(r"[^\w\- ]", "", m.group(1).lower().replace("`", "")).replace(" ", "-")
            out.add(a)
    return out


def cmd_docs() -> None:
    if not check(DOCS.exists(), "docs/operations.md is missing"):
        finish("docs")
    md = DOCS.read_text()
    have = anchors(md)
    rules = yaml.safe_load(RULES.read_text())["groups"]
    n = 0
    for g in rules:
        for r in g["rules"]:
            n += 1
            url = r.get("annotations", {}).get("runbook_url", "")
            check(url.startswith(DOCS_URL + "#"), f"{r['alert']}: runbook_url {url!r} does not point into {DOCS_URL}")
            check(url.split("#", 1)[-1] in have, f"{r['alert']}: runbook anchor #{url.split('#', 1)[-1]} is no heading of docs/operations.md")
            for k in ("summary", "description"):
                check(bool(r.get("annotations", {}).get(k)), f"{r['alert']}: no {k}")
            check(r.get("labels", {}).get("severity") in ("critical", "warning"), f"{r['alert']}: severity")
            check(bool(r.get("for")), f"{r['alert']}: no for")
            # The keepers' own alerts use these names too: one name per problem, whichever side
            # raises it (tests/tests/deploy_alerts.rs pairs them with the code).
            check(re.fullmatch(r"[a-z][a-z0-9_]*", r["alert"]) is not None, f"{r['alert']}: alert names are snake_case, as the keepers spell them")
            check(re.search(rf"^#+ .*`{r['alert']}`", md, re.M) is not None, f"{r['alert']}: no runbook heading")
    for link in re.findall(r"\]\(#([^)]+)\)", md):
        check(link in have, f"docs/operations.md links to #{link}, which is no heading")
    for key in KEEPER_ALERT_KEYS:
        check(re.search(rf"^#+ .*`{key}(:\{{\w+\}})?`", md, re.M) is not None, f"no runbook heading for keeper alert `{key}`")
    for section in ("VM (systemd)", "Kubernetes (Helm)", "One-shot runs", "Registering keeper wallets", "Restore"):
        check(re.search(rf"^#+ .*{re.escape(section)}", md, re.M) is not None, f"docs/operations.md has no section on {section}")
    finish(f"docs: {n} runbook links and {len(KEEPER_ALERT_KEYS)} keeper alert keys resolve")


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "chart":
        cmd_chart(Path(rest[0]))
    elif cmd == "crds":
        cmd_crds(Path(rest[0]))
    elif cmd == "rules":
        cmd_rules(Path(rest[0]))
    elif cmd == "dashboard":
        cmd_dashboard()
    elif cmd == "metrics":
        cmd_metrics([Path(p) for p in rest])
    elif cmd == "units":
        cmd_units()
    elif cmd == "dockerfile":
        cmd_dockerfile()
    elif cmd == "docs":
        cmd_docs()
    else:
        sys.exit(f"unknown subcommand {cmd}\n{__doc__}")


if __name__ == "__main__":
    main()
