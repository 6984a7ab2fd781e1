#!/usr/bin/env bash
# The test command (README, .ci/run): on a fresh Debian machine it installs what the suite needs,
# starts throwaway PostgreSQL, Redis and S3 (moto) servers on free loopback ports, runs
# fmt, clippy and every test, and stops what it started. Exit status is non-zero on any failure.
#
# Use existing servers instead by exporting KEEPERS_TEST_PG_URL / KEEPERS_TEST_REDIS_URL /
# KEEPERS_TEST_S3_URL before running it. SKIP_LINT=1 skips fmt and clippy (for quick loops).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d /tmp/keepers-test.XXXXXX)
chmod 755 "$WORK"
PIDS=()
PG_DATA=""

log() { printf '[test.sh] %s\n' "$*" >&2; }

cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$PG_DATA" ] && [ -d "$PG_DATA" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

APT_UPDATED=0
apt_install() {
  if ! command -v apt-get >/dev/null; then log "apt-get not found: install $* yourself"; return 1; fi
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ $APT_UPDATED -eq 0 ]; then $sudo apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- tools ------------------------------------------------------------------------------------
need_pkgs=()
command -v python3 >/dev/null || need_pkgs+=(python3 python3-venv)
command -v curl >/dev/null || need_pkgs+=(curl ca-certificates)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need_pkgs+=(postgresql postgresql-client)
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
command -v promtool >/dev/null || need_pkgs+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need_pkgs+=(prometheus-alertmanager)
command -v systemd-analyze >/dev/null || need_pkgs+=(systemd)
if [ ${#need_pkgs[@]} -gt 0 ]; then log "installing ${need_pkgs[*]}"; apt_install "${need_pkgs[@]}"; fi
# Debian's packages start their own servers on the default ports where systemd runs; ours use
# other ports, so they do not collide.

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
export PATH="$PG_BIN:$PATH"

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/moto_server" ] || [ ! -f "$VENV/.deps-v1" ]; then
  log "creating Python virtualenv with test tools"
  python3 -m venv "$VENV" || { apt_install python3-venv; python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install -q --disable-pip-version-check -r scripts/requirements-test.txt
  touch "$VENV/.deps-v1"
fi
export PATH="$VENV/bin:$PATH"

# --- servers ----------------------------------------------------------------------------------
if [ -z "${KEEPERS_TEST_PG_URL:-}" ]; then
  PG_PORT=$(free_port)
  PG_DATA="$WORK/pg"
  mkdir -p "$PG_DATA"
  [ "$(id -u)" -eq 0 ] && chown postgres "$PG_DATA" "$WORK"
  as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/log" -w start \
    -o "-p $PG_PORT -k $PG_DATA -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" >/dev/null
  export KEEPERS_TEST_PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  log "PostgreSQL on $PG_PORT"
fi

if [ -z "${KEEPERS_TEST_REDIS_URL:-}" ]; then
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK" --logfile "$WORK/redis.log" &
  PIDS+=($!)
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  export KEEPERS_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  log "Redis on $REDIS_PORT"
fi

if [ -z "${KEEPERS_TEST_S3_URL:-}" ]; then
  S3_PORT=$(free_port)
  moto_server -H 127.0.0.1 -p "$S3_PORT" >"$WORK/moto.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$S3_PORT/" >/dev/null 2>&1 && break; sleep 0.1; done
  export KEEPERS_TEST_S3_URL="http://127.0.0.1:$S3_PORT"
  log "S3 (moto) on $S3_PORT"
fi
export KEEPERS_TEST_REDIS_SERVER=$(command -v redis-server)

# --- checks -----------------------------------------------------------------------------------
if [ "${SKIP_LINT:-0}" != 1 ]; then
  log "cargo fmt --check"
  cargo fmt --all -- --check
  log "cargo clippy"
  cargo clippy --workspace --all-targets --locked -- -D warnings
  log "module cycles"
  python3 scripts/check-module-cycles.py --allow scripts/module-cycles.allow
  log "unused dependencies"
  python3 scripts/check-unused-deps.py
fi

log "cargo test"
cargo build --workspace --bins --locked
cargo test --workspace --locked --no-fail-fast -- "$@"

if [ -x scripts/validate-deploy.sh ]; then
  log "deployment artifacts"
  scripts/validate-deploy.sh
fi
log "all checks passed"
