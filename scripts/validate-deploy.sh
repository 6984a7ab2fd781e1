#!/usr/bin/env bash
# Offline validation of the deployment artifacts (systemd/, helm/, deploy/, Dockerfile, docs/).
# scripts/test.sh runs it after `cargo test`; it also runs alone. Exit status is non-zero on any
# problem.
#
#   alert rules     promtool check rules + promtool test rules (deploy/prometheus)
#   Helm chart      helm lint --strict and render (helm-python-sdk) with the default values and
#                   every helm/keepers/ci/*-values.yaml; policy checks on the manifests; bad values
#                   refused; yamllint; kubernetes-validate --strict (1.29 and 1.37); Prometheus
#                   Operator objects against their models; rendered rules through promtool
#   dashboard       JSON well formed; every metric it and the rules query is in a real /metrics
#                   scrape (written by tests/tests/deploy_metrics.rs), which promtool lints
#   systemd         systemd-analyze verify (no output allowed) and security --offline=yes
#                   --threshold=20 on every unit
#   Dockerfile      BuildKit parser + structure (no Docker engine here: the image is not built)
#   docs            runbook links resolve; every alert and keeper alert key has an entry
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d /tmp/validate-deploy.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
START=$EPOCHREALTIME
FAILED=0

log() { printf '[validate-deploy] %s\n' "$*" >&2; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# Runs one named check, prints its duration, and remembers a failure without stopping, so one
# run reports every broken artifact.
step() {
  local name=$1
  shift
  local t0 t1 rc=0
  t0=$EPOCHREALTIME
  "$@" || rc=$?
  t1=$EPOCHREALTIME
  if [ $rc -eq 0 ]; then
    printf '[validate-deploy] %-28s ok    %5.2fs\n' "$name" "$(elapsed "$t0" "$t1")" >&2
  else
    printf '[validate-deploy] %-28s FAIL  %5.2fs (rc %d)\n' "$name" "$(elapsed "$t0" "$t1")" "$rc" >&2
    FAILED=1
  fi
}

# --- tools --------------------------------------------------------------------------------------
for tool in promtool systemd-analyze; do
  command -v "$tool" >/dev/null || { log "$tool not found: run scripts/test.sh (it installs it) or apt-get install ${tool/systemd-analyze/systemd}"; exit 1; }
done
VENV="$ROOT/.venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# find_spec, not import: the operator models take seconds to import.
if ! "$VENV/bin/python" -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ("helm_python", "kubernetes_validate", "yamllint", "dockerfile", "cloudcoil.models.prometheus_operator")))' 2>/dev/null; then
  log "installing the Python validation tools into .venv"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r scripts/requirements-test.txt
fi
export PATH="$VENV/bin:$PATH"
PY="$VENV/bin/python"
RENDERED="$WORK/rendered"

# Helm's Go SDK logs each symlink it follows (files/keepers-rules.yml is one, on purpose).
quiet_helm() { "$@" 2> >(grep -v 'found symbolic link in path' >&2); }

# --- alert rules --------------------------------------------------------------------------------
rules_source() {
  promtool check rules deploy/prometheus/keepers-rules.yml >/dev/null
  promtool test rules deploy/prometheus/*.test.yml >"$WORK/promtool-test.log" 2>&1 \
    || { cat "$WORK/promtool-test.log" >&2; return 1; }
  # The chart ships the same file through a symlink.
  [ "$(readlink helm/keepers/files/keepers-rules.yml)" = "../../../deploy/prometheus/keepers-rules.yml" ] \
    || { log "helm/keepers/files/keepers-rules.yml must be a symlink to deploy/prometheus/keepers-rules.yml"; return 1; }
}
step "rules: promtool" rules_source

# --- Helm chart -----------------------------------------------------------------------------------
step "chart: lint+render+policy" quiet_helm "$PY" deploy/validate.py chart "$RENDERED"

yaml_lint() {
  yamllint --strict -c deploy/yamllint.yml -f parsable \
    helm/keepers/Chart.yaml helm/keepers/values.yaml helm/keepers/ci deploy/prometheus deploy/yamllint.yml "$RENDERED"
}
step "chart: yamllint" yaml_lint

kube_validate() {
  local v out rc=0
  for v in 1.29.0 1.37.0; do
    out=$(kubernetes-validate --strict --quiet -k "$v" "$RENDERED"/*/*.yaml 2>&1) || rc=1
    # The Prometheus Operator kinds have no schema there (checked by `crds` instead); any other
    # warning or error fails.
    if printf '%s\n' "$out" | grep -v -E "^WARN .* Couldn't find schema for kind (ServiceMonitor|PrometheusRule) with api version monitoring.coreos.com/v1" | grep -q .; then
      printf '%s\n' "$out" >&2
      rc=1
    fi
  done
  return $rc
}
step "chart: kubernetes-validate" kube_validate
step "chart: operator objects" "$PY" deploy/validate.py crds "$RENDERED"
step "chart: rendered rules" "$PY" deploy/validate.py rules "$RENDERED"

# --- dashboard and metric names -------------------------------------------------------------------
step "dashboard: structure" "$PY" deploy/validate.py dashboard

metrics() {
  local dir="${CARGO_TARGET_DIR:-$ROOT/target}/tmp" f
  local scrapes=("$dir"/deploy-metrics-pricing-oracle.prom "$dir"/deploy-metrics-bridge-health.prom "$dir"/deploy-metrics-db-backup.prom)
  for f in "${scrapes[@]}"; do
    if [ ! -f "$f" ]; then
      log "no $f yet: running the test that scrapes the keepers' /metrics"
      cargo test --locked -q -p keeper-tests --test deploy_metrics >&2
      break
    fi
  done
  for f in "${scrapes[@]}"; do
    promtool check metrics <"$f" || { log "promtool check metrics: $f"; return 1; }
  done
  "$PY" deploy/validate.py metrics "${scrapes[@]}"
}
step "metrics: rules+dashboard" metrics

# --- systemd --------------------------------------------------------------------------------------
units_verify() {
  # verify insists that ExecStart= exists: check copies whose /usr/local/bin points at stand-in
  # executables, leaving the real units untouched. Unknown keys only warn, so any output fails.
  local d="$WORK/systemd" b u out
  mkdir -p "$d/bin"
  for b in pricing-oracle-keeper bridge-health-keeper db-backup; do
    printf '#!/bin/sh\nexit 0\n' >"$d/bin/$b"
    chmod 755 "$d/bin/$b"
  done
  for u in systemd/*.service systemd/*.timer; do
    sed "s#/usr/local/bin/#$d/bin/#g" "$u" >"$d/$(basename "$u")"
  done
  out=$(cd "$d" && systemd-analyze verify ./*.service ./*.timer 2>&1) || { printf '%s\n' "$out" >&2; return 1; }
  [ -z "$out" ] || { printf '%s\n' "$out" >&2; return 1; }
}
units_security() {
  local u score rc=0
  for u in systemd/*.service; do
    score=$(systemd-analyze security --offline=yes --threshold=20 --no-pager "./$u" 2>&1) || rc=1
    log "  $(printf '%s\n' "$score" | grep 'Overall exposure level' | sed 's/^→ //')"
  done
  return $rc
}
step "systemd: conventions" "$PY" deploy/validate.py units
step "systemd: verify" units_verify
step "systemd: security <= 2.0" units_security

# --- Dockerfile and docs --------------------------------------------------------------------------
step "dockerfile: structure" "$PY" deploy/validate.py dockerfile
step "docs: runbooks" "$PY" deploy/validate.py docs

TOTAL=$(elapsed "$START" "$EPOCHREALTIME")
if [ $FAILED -ne 0 ]; then
  log "deployment artifacts: FAILED (${TOTAL}s)"
  exit 1
fi
log "deployment artifacts: all checks passed (${TOTAL}s)"
