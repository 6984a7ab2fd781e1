#!/usr/bin/env bash
# Clean release build in an empty target dir: prints wall and CPU seconds (user + system) and the
# size of each binary it made. Usage: scripts/bench-build.sh workspace|pricing-oracle-keeper|
# bridge-health-keeper|db-backup. CPU seconds compare across runs on a busy machine; wall time
# only on an idle one.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-workspace}
case "$what" in
  workspace) args=(--workspace) ;;
  pricing-oracle-keeper|bridge-health-keeper|db-backup) args=(-p "$what") ;;
  *) echo "usage: $0 workspace|pricing-oracle-keeper|bridge-health-keeper|db-backup" >&2; exit 2 ;;
esac
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
times=$(mktemp)
log=$(mktemp)
TIMEFORMAT='%R %U %S'
if ! { time env CARGO_TARGET_DIR="$target" cargo build --release --locked "${args[@]}" 2>"$log"; } 2>"$times"; then
  cat "$log" >&2
  exit 1
fi
read -r wall user sys < "$times"
rm -f "$times" "$log"
printf 'build %s: wall %s s, cpu %s s\n' "$what" "$wall" "$(python3 -c "print(round($user + $sys, 1))")"
for b in pricing-oracle-keeper bridge-health-keeper db-backup; do
  [ -f "$target/release/$b" ] && printf '  %s %s bytes\n' "$b" "$(stat -c %s "$target/release/$b")"
done
