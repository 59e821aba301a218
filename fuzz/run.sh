#!/usr/bin/env bash
# fuzz/run.sh - build and run the fuzz targets on the stable toolchain (no cargo-fuzz needed:
# libfuzzer-sys with SanitizerCoverage flags), seeded from fixtures/ and deploy/.
#
#   bash fuzz/run.sh SECONDS [TARGET...]   # each target for SECONDS (default: all targets)
#
# Every run is bounded: -rss_limit_mb=256, -timeout=10 (a single input taking longer is a
# hang), -max_total_time=SECONDS. Crashes land in fuzz/artifacts/TARGET/. Exit status is
# non-zero if any target found a crash, a hang or an RSS over 256 MB.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
SECS=${1:-5}
shift || true
TARGETS=${*:-lz4_frame wal_segment config replica_url restore flags ltx}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps RUSTFLAGS off build scripts and proc macros.
cargo build --release --bins --target "$TRIPLE"

seed() {  # seed TARGET: fill corpus/TARGET once from the repository's real inputs
  local dir="corpus/$1"
  [ -d "$dir" ] && return 0
  mkdir -p "$dir"
  case "$1" in
    lz4_frame|wal_segment|restore)
      find ../fixtures -name '*.lz4' -size -256k | head -200 | while read -r f; do
        cp "$f" "$dir/$(echo "$f" | tr '/' '_')"; done ;;
    config)
      for f in ../deploy/*/litestream.yml; do cp "$f" "$dir/$(echo "$f" | tr '/' '_')"; done ;;
    replica_url)
      i=0; for u in file:///data/r s3://b/p 's3://b.localhost:9000/p?forcePathStyle=true' \
        abs://acct@c/p sftp://u:pw@h:22/p 'gcs://b/p' 'file:///data/%41'; do
        i=$((i+1)); printf '%s' "$u" > "$dir/$i"; done ;;
    flags)  # NUL-separated argument vectors: the README's command lines, Go-style cases
      i=0
      { grep -ohE 'litestream (restore|replicate|generations|snapshots|wal|ltx|databases) [^`|;)"<]*' \
          ../README.md | sed 's/^litestream //'
        printf '%s\n' 'restore -o=/tmp/x.db -parallelism=8 -index=0000000a file:///r' \
          'restore --if-db-not-exists=false -txid 0000000000000002 -- -o' \
          'restore -timestamp 2024-01-02T03:04:05.123Z -generation 0123456789abcdef /db' \
          'ltx -level all -json s3://b/p' 'wal -replica r1 -generation 0123456789abcdef db' \
          'replicate -exec sleep -config /etc/l.yml' 'databases -no-expand-env -h' \
          'restore -x' 'restore -o' 'restore ---o' 'restore -=v' 'restore -parallelism 2305843009213693952 d'
      } | while IFS= read -r line; do
        i=$((i+1)); printf '%s' "$line" | tr ' ' '\0' > "$dir/$i"; done
      printf 'restore\0-o\0\377out.db\0file:///r' > "$dir/non-utf8" ;;
    ltx)
      find ../fixtures -name '*.ltx' | while read -r f; do
        cp "$f" "$dir/$(echo "$f" | tr '/' '_')"; done ;;
  esac
}

status=0
for t in $TARGETS; do
  seed "$t"
  mkdir -p "artifacts/$t"
  echo "[fuzz] $t for ${SECS}s" >&2
  if ! "target/$TRIPLE/release/$t" "corpus/$t" -max_total_time="$SECS" -rss_limit_mb=256 \
      -timeout=10 -artifact_prefix="artifacts/$t/" -print_final_stats=1 2> "artifacts/$t.log"; then
    echo "[fuzz] $t FAILED (see fuzz/artifacts/$t.log and fuzz/artifacts/$t/)" >&2
    status=1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "artifacts/$t.log" >&2 || true
done
exit "$status"
