#!/usr/bin/env bash
# Backup benchmark: on one realistic ~650 MB database, compare in one run
#   1. db-backup --once            (pg_dump -Fc -Z0 → zstd -T → sha256 → fsync'd file + manifest)
#   2. the seed procedure          pg_dump "$DATABASE_URL" | gzip > f && sha256sum f
#   3. plain                       pg_dump -Fc -f f
#   4. the floor                   pg_dump -Fc -Z0 > /dev/null
# and print wall time, output size and peak RSS of each (GNU time; for pipelines the largest
# process of the pipeline, which is how a container memory limit sees a single process).
#
# Usage: BENCH_PG_URL=postgres://postgres@127.0.0.1:5432/postgres scripts/bench-backup.sh
#   (defaults to KEEPERS_TEST_PG_URL). BENCH_ROWS (default 2500000) sizes the table;
#   BENCH_KEEP_DB=1 keeps the database between runs (it is reused when it already exists);
#   BENCH_REPEAT (default 1) repeats each procedure and reports every run;
#   BENCH_SEED_ONLY=1 only creates the database.
# Needs: a PostgreSQL superuser URL, pg_dump/gzip/sha256sum/GNU time, a release build of db-backup.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ADMIN_URL=${BENCH_PG_URL:-${KEEPERS_TEST_PG_URL:?set BENCH_PG_URL or KEEPERS_TEST_PG_URL to a superuser URL}}
ROWS=${BENCH_ROWS:-2500000}
REPEAT=${BENCH_REPEAT:-1}
DB=${BENCH_DB:-keepers_bench_backup}
# Same server, the benchmark database instead of the maintenance one.
DB_URL=$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$ADMIN_URL" "$DB")
OUT=${BENCH_OUT:-$(mktemp -d /tmp/bench-backup.XXXXXX)}
mkdir -p "$OUT"
TIME=/usr/bin/time
[ -x "$TIME" ] || { echo "GNU time (/usr/bin/time) is needed: apt-get install time" >&2; exit 2; }

log() { printf '[bench] %s\n' "$*" >&2; }

exists=$(psql "$ADMIN_URL" -Atc "SELECT 1 FROM pg_database WHERE datname = '$DB'")
if [ "$exists" != 1 ]; then
  log "creating $DB with $ROWS rows (hashes, decimals, timestamps, jsonb)"
  psql "$ADMIN_URL" -q -c "CREATE DATABASE $DB"
  # Realistic entropy: hex digests (~50% compressible), random decimals and times, and jsonb
  # with repeated keys but random values; not pgbench's tables, which compress 50x.
  psql "$DB_URL" -q -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE claims (
  id          bigint PRIMARY KEY,
  policy_hash text        NOT NULL,
  tx_hash     text        NOT NULL,
  amount      numeric(20,8) NOT NULL,
  created_at  timestamptz NOT NULL,
  details     jsonb       NOT NULL
);
INSERT INTO claims
SELECT g,
       md5(g::text || 'p'),
       encode(sha256(g::text::bytea), 'hex'),
       round((random() * 1000000)::numeric, 8),
       timestamptz '2024-01-01' + random() * interval '700 days',
       jsonb_build_object(
         'asset', (ARRAY['USDT','USDC','DAI','USDD','TUSD','FDUSD'])[1 + (g % 6)],
         'bridge_id', 1 + (g % 4),
         'payout_micro', (random() * 1e12)::bigint,
         'status', (ARRAY['open','approved','paid','rejected'])[1 + (g % 4)],
         'score', round(random()::numeric, 4))
FROM generate_series(1, $ROWS) AS g;
CREATE TABLE events (
  id bigserial PRIMARY KEY, claim_id bigint NOT NULL, kind text NOT NULL, at timestamptz NOT NULL);
INSERT INTO events (claim_id, kind, at)
SELECT 1 + (random() * ($ROWS - 1))::bigint, (ARRAY['filed','reviewed','paid'])[1 + (g % 3)],
       timestamptz '2024-01-01' + random() * interval '700 days'
FROM generate_series(1, $ROWS / 10) AS g;
VACUUM ANALYZE;
SQL
fi
size=$(psql "$DB_URL" -Atc "SELECT pg_size_pretty(pg_database_size(current_database()))")
log "database $DB: $size"
[ "${BENCH_SEED_ONLY:-0}" = 1 ] && exit 0

BIN="$ROOT/target/release/db-backup"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building db-backup (release)"
  cargo build --release -p db-backup --bin db-backup >&2
fi

server_version=$(psql "$DB_URL" -Atc "SHOW server_version")
pg_dump_version=$(pg_dump --version)
log "server $server_version, $pg_dump_version, $(nproc) cores"

results="$OUT/results.tsv"
: >"$results"
# run NAME OUTPUT_FILE COMMAND...: wall seconds, output bytes, peak RSS (KiB) of the largest process
run() {
  local name=$1 output=$2; shift 2
  sync
  local t0 t1
  t0=$(date +%s.%N)
  "$TIME" -f '%M' -o "$OUT/$name.rss" "$@" >"$OUT/$name.stdout" 2>"$OUT/$name.stderr" || {
    log "$name failed:"; cat "$OUT/$name.stderr" >&2; exit 1; }
  t1=$(date +%s.%N)
  local bytes=0
  if [ "$output" != - ]; then bytes=$(stat -c %s $output); fi
  printf '%s\t%.2f\t%s\t%s\n' "$name" "$(echo "$t1 - $t0" | bc)" "$bytes" "$(tail -1 "$OUT/$name.rss")" >>"$results"
}

export DATABASE_URL="$DB_URL"
for i in $(seq "$REPEAT"); do
  rm -rf "$OUT/dbb" && mkdir -p "$OUT/dbb"
  # db-backup: records off (the benchmark measures the backup, not the bookkeeping).
  run db-backup "$OUT/dbb/*.dump.zst" env BACKUP_DIR="$OUT/dbb" BACKUP_RECORDS=false \
    BACKUP_VERIFY=none "$BIN" --once
  # For information: the same with the default verification (re-read, decompress, TOC).
  rm -rf "$OUT/dbb" && mkdir -p "$OUT/dbb"
  run db-backup+verify "$OUT/dbb/*.dump.zst" env BACKUP_DIR="$OUT/dbb" BACKUP_RECORDS=false \
    BACKUP_VERIFY=list "$BIN" --once
  # GNU time measures `bash -c` and its largest child for the pipelines.
  run seed-gzip "$OUT/seed.sql.gz" bash -c 'set -o pipefail; pg_dump "$DATABASE_URL" | gzip > "$0/seed.sql.gz" && sha256sum "$0/seed.sql.gz" >/dev/null' "$OUT"
  run pg_dump-Fc "$OUT/plain.dump" pg_dump -Fc -f "$OUT/plain.dump" "$DATABASE_URL"
  run floor-Z0 - bash -c 'pg_dump -Fc -Z0 "$DATABASE_URL" > /dev/null'
  rm -f "$OUT/seed.sql.gz" "$OUT/plain.dump"
done

echo
printf '%-17s %8s %14s %10s\n' procedure wall_s size_bytes rss_MiB
while IFS=$'\t' read -r name wall bytes rss; do
  printf '%-17s %8s %14s %10.1f\n' "$name" "$wall" "$bytes" "$(echo "$rss / 1024" | bc -l)"
done <"$results"
python3 - "$results" <<'PY'
import sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    n, w, b, r = line.rstrip("\n").split("\t")
    rows[n].append((float(w), int(b), int(r)))
print()
for i, (d, s, f) in enumerate(zip(rows["db-backup"], rows["seed-gzip"], rows["floor-Z0"]), 1):
    print(f"round {i}: db-backup/seed = {d[0] / s[0]:.2f}, db-backup/floor = {d[0] / f[0]:.2f}")
best = {n: min(v) for n, v in rows.items()}
d, s, f = best["db-backup"], best["seed-gzip"], best["floor-Z0"]
print(f"best of each: db-backup / seed wall  = {d[0] / s[0]:.2f}  (target <= 0.35)")
print(f"best of each: db-backup / floor wall = {d[0] / f[0]:.2f}  (target <= 1.6)")
print(f"db-backup size / seed size = {d[1] / s[1]:.3f}  (target <= 1)")
print(f"db-backup peak RSS = {max(r for _, _, r in rows['db-backup']) / 1024:.1f} MiB  (target <= 64)")
PY
if [ "${BENCH_KEEP_DB:-1}" != 1 ]; then psql "$ADMIN_URL" -q -c "DROP DATABASE $DB"; fi
log "outputs in $OUT"
