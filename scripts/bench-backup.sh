#!/usr/bin/env bash
# Backup benchmark: on one realistic ~650 MB database, compare in one run
#   1. db-backup --once            (pg_dump -Fc -Z0 → zstd -T → sha256 → fsync'd file + manifest,
#                                   plus the cluster globals), without and with age encryption
#   2. the seed procedure          pg_dump "$DATABASE_URL" | gzip > f && sha256sum f
#   3. plain                       pg_dump -Fc -f f
#   4. the floor                   pg_dump -Fc -Z0 > /dev/null
#   5. restores into a new database: db-backup restore (checksum, one transaction, row counts
#      checked before commit), without and with encryption, against pg_restore of an
#      uncompressed (-Z0) dump, plain and with --single-transaction
# and print wall time, output size and peak RSS of each (GNU time; for pipelines the largest
# process of the pipeline, which is how a container memory limit sees a single process).
#
# Expected duration on a 2-core host: about 3.5 min for the release build, 3 min to create the
# database (once), then about 5 min per round (BENCH_REPEAT=3: about 20 min in all). It uses the
# whole machine: do not run it next to other builds if the figures are to be published.
#
# Usage: BENCH_PG_URL=postgres://postgres@127.0.0.1:5432/postgres scripts/bench-backup.sh
#   (defaults to KEEPERS_TEST_PG_URL). BENCH_ROWS (default 2500000) sizes the table;
#   BENCH_KEEP_DB=1 keeps the database between runs (it is reused when it already exists);
#   BENCH_REPEAT (default 1) repeats each procedure and reports every run;
#   BENCH_SEED_ONLY=1 only creates the database; BENCH_BIN and BENCH_SKIP_BUILD=1 use another
#   db-backup binary (a smoke run of the script: BENCH_ROWS=2000 BENCH_SKIP_BUILD=1
#   BENCH_BIN=target/debug/db-backup BENCH_DB=bench_smoke BENCH_KEEP_DB=0).
# Needs: a PostgreSQL superuser URL, pg_dump/pg_restore/psql/gzip/sha256sum/GNU time,
# ssh-keygen (the age recipient is an ed25519 SSH key), a release build of db-backup.
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

BIN=${BENCH_BIN:-$ROOT/target/release/db-backup}
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

# The encryption key: an unencrypted ed25519 SSH key (age accepts SSH recipients and identities).
rm -f "$OUT/age_key" "$OUT/age_key.pub"
ssh-keygen -q -t ed25519 -N '' -C bench -f "$OUT/age_key"
AGE_RECIPIENT=$(cat "$OUT/age_key.pub")

RESTORE_DB=${DB}_restore
RESTORE_URL=$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$ADMIN_URL" "$RESTORE_DB")
fresh_restore_db() {
  psql "$ADMIN_URL" -q -c "DROP DATABASE IF EXISTS $RESTORE_DB WITH (FORCE)" -c "CREATE DATABASE $RESTORE_DB"
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
  # Restore of that (unencrypted) backup into a new database.
  fresh_restore_db
  run restore-dbb - env BACKUP_DIR="$OUT/dbb" BACKUP_RECORDS=false \
    TARGET_DATABASE_URL="$RESTORE_URL" "$BIN" restore --from latest
  # Encrypted: same pipeline with age between zstd and the checksum, and its restore.
  rm -rf "$OUT/dbb" && mkdir -p "$OUT/dbb"
  run db-backup+age "$OUT/dbb/*.dump.zst.age" env BACKUP_DIR="$OUT/dbb" BACKUP_RECORDS=false \
    BACKUP_VERIFY=none BACKUP_AGE_RECIPIENTS="$AGE_RECIPIENT" "$BIN" --once
  fresh_restore_db
  run restore-dbb+age - env BACKUP_DIR="$OUT/dbb" BACKUP_RECORDS=false \
    TARGET_DATABASE_URL="$RESTORE_URL" BACKUP_AGE_IDENTITY_FILE="$OUT/age_key" "$BIN" restore --from latest
  # The restore baseline: pg_restore of an uncompressed custom dump.
  pg_dump -Fc -Z0 -f "$OUT/plain-z0.dump" "$DATABASE_URL"
  fresh_restore_db
  run pg_restore-Z0 - pg_restore --no-password -d "$RESTORE_URL" "$OUT/plain-z0.dump"
  fresh_restore_db
  run pg_restore-Z0-1 - pg_restore --no-password --single-transaction -d "$RESTORE_URL" "$OUT/plain-z0.dump"
  rm -f "$OUT/plain-z0.dump"
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
s, f = best["seed-gzip"], best["floor-Z0"]
for name in ("db-backup", "db-backup+age"):
    d = best[name]
    print(f"best of each: {name} / seed wall  = {d[0] / s[0]:.2f}  (target <= 0.35)")
    print(f"best of each: {name} / floor wall = {d[0] / f[0]:.2f}  (target <= 1.3)")
    print(f"{name} size / seed size = {d[1] / s[1]:.3f}  (target <= 1)")
for name in ("restore-dbb", "restore-dbb+age"):
    r = best[name]
    print(f"best of each: {name} / pg_restore -Z0 wall = {r[0] / best['pg_restore-Z0'][0]:.2f}  (target <= 1.2)"
          f"; / pg_restore -Z0 --single-transaction = {r[0] / best['pg_restore-Z0-1'][0]:.2f}")
ours = [n for n in rows if n.startswith(("db-backup", "restore-dbb"))]
peak = max(r for n in ours for _, _, r in rows[n])
print(f"db-backup peak RSS (backups and restores) = {peak / 1024:.1f} MiB  (target <= 64)")
PY
psql "$ADMIN_URL" -q -c "DROP DATABASE IF EXISTS $RESTORE_DB WITH (FORCE)"
if [ "${BENCH_KEEP_DB:-1}" != 1 ]; then psql "$ADMIN_URL" -q -c "DROP DATABASE $DB"; fi
log "outputs in $OUT"
