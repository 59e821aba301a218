#!/usr/bin/env bash
# scripts/test-servers/stop.sh - stop the servers started by scripts/test-servers/start.sh, by PID only.
# Each PID comes from $TEST_SERVERS_DIR/run/NAME.pid and is only signalled if its command line
# still matches what we started (guards against a recycled PID). Installs are kept.
#   --purge   also delete server data (S3/Azurite/SFTP files; GCS keeps none), logs and env.sh
#   NAME...   stop only these servers (s3, abs, sftp, gcs); default: all
set -uo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BASE=${TEST_SERVERS_DIR:-$REPO_ROOT/.test-servers}
PURGE=0; [ "${1:-}" = --purge ] && { PURGE=1; shift; }
ONLY=" $* "
log() { echo "[test-servers] $*" >&2; }

stop_one() {  # stop_one NAME PATTERN
  local name=$1 pat=$2 pf="$BASE/run/$1.pid" pid i
  if [ "$ONLY" != "  " ] && [[ "$ONLY" != *" $name "* ]]; then return 0; fi
  [ -f "$pf" ] || { log "$name: not running (no pid file)"; return 0; }
  pid=$(cat "$pf")
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    log "$name: pid ${pid:-?} not running"; rm -f "$pf"; return 0
  fi
  if ! tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -Eq -- "$pat"; then
    log "$name: pid $pid is not ours (cmdline mismatch), leaving it alone"; rm -f "$pf"; return 0
  fi
  kill -TERM "$pid"
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then log "$name: pid $pid ignored SIGTERM, sending SIGKILL"; kill -KILL "$pid"; fi
  rm -f "$pf"; log "$name: stopped pid $pid"
}

stop_one s3   'moto_server|s3s-fs'
stop_one abs  'azurite-blob'
stop_one sftp 'sshd'
stop_one gcs  'gcp-storage-emulator'

if [ $PURGE = 1 ]; then
  if [ -f "$BASE/run/ssh_base" ]; then
    ssh_base=$(cat "$BASE/run/ssh_base")
    [ -n "$ssh_base" ] && [ "$ssh_base" != "$BASE" ] && rm -rf "$ssh_base/data"
  fi
  rm -rf "$BASE/data" "$BASE/logs" "$BASE/env.sh"
  log "purged $BASE/data, $BASE/logs, $BASE/env.sh"
fi
