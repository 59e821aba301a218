#!/usr/bin/env bash
# scripts/test-servers/start.sh - install (idempotently) and start REAL local test servers on loopback:
#   S3         moto[server] (PyPI)            127.0.0.1:${S3_PORT:-9000}   (S3_SERVER=s3s -> s3s-fs from crates.io)
#   Azure Blob azurite-blob (npm)             127.0.0.1:${ABS_PORT:-10000}
#   SFTP       Debian openssh-server (sshd)   127.0.0.1:${SFTP_PORT:-2022}
#   GCS        gcp-storage-emulator (PyPI)    127.0.0.1:${GCS_PORT:-4443}    (JSON API; what real Litestream v0.3.13 works with)
#
# Usage:   eval "$(bash scripts/test-servers/start.sh)"   # or: bash scripts/test-servers/start.sh && . .test-servers/env.sh
# stdout:  only `export VAR=...` lines (safe to eval); progress + timings go to stderr.
# Also writes the same lines to $TEST_SERVERS_DIR/env.sh.  Stop with scripts/test-servers/stop.sh.
# Needs: root (apt-get, useradd, sshd), python3, node+npm, curl; cargo only for S3_SERVER=s3s.
# Everything (venv, node_modules, keys, data, logs, pid files) lives under $TEST_SERVERS_DIR
# (default: <repo root>/.test-servers, gitignored). Adapted from shared/test-servers/start.sh.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BASE=${TEST_SERVERS_DIR:-$REPO_ROOT/.test-servers}
mkdir -p "$BASE"; BASE=$(cd "$BASE" && pwd)   # absolute (sshd, litestream configs need absolute paths)
S3_SERVER=${S3_SERVER:-moto}          # moto | s3s
S3_PORT=${S3_PORT:-9000}
ABS_PORT=${ABS_PORT:-10000}
SFTP_PORT=${SFTP_PORT:-2022}
GCS_PORT=${GCS_PORT:-4443}
BUCKET=${TEST_BUCKET:-ls-test}        # S3 bucket, Azure container and GCS bucket created at start
# TEST_SERVERS: which servers to install and start (default all). The printed env always has
# every variable; only the listed servers are up. E.g. TEST_SERVERS=gcs GCS_PORT=24443.
SERVERS=" ${TEST_SERVERS:-s3 abs sftp gcs} "
want() { [[ "$SERVERS" == *" $1 "* ]]; }
KEEP_DATA=${KEEP_DATA:-0}             # 1 = keep old server data when (re)starting a server
READY_TIMEOUT=${READY_TIMEOUT:-60}    # seconds per server

MOTO_VERSION=5.2.5
AZURITE_VERSION=3.35.0
GCS_EMULATOR_VERSION=2026.7.19        # gcp-storage-emulator; single-threaded, HTTP/1.0
S3S_FS_VERSION=0.14.1                 # s3s-fs 0.17.0 needs rustc >= 1.96; this machine has 1.95

S3_KEY=test S3_SECRET=testtest        # s3s-fs enforces SigV4 with these; moto: an IAM user's key (below)
AZ_ACCOUNT=devstoreaccount1           # Azurite's well-known development account + key
AZ_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
SFTP_USER=${SFTP_USER:-lstest}
SFTP_PASS=${SFTP_PASS:-lstest-pass}

log() { echo "[test-servers] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
ts() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1fs", e-s}'; }

mkdir -p "$BASE"/{run,logs,data,bin}
T0=$(ts)

# --- helpers ---------------------------------------------------------------------------------
# alive PIDFILE PATTERN: pid in file is running and its command line contains PATTERN
alive() {
  local pf=$1 pat=$2 pid
  [ -f "$pf" ] || return 1
  pid=$(cat "$pf" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pat"
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }
# wait_ready NAME PIDFILE PATTERN CHECK_CMD...
wait_ready() {
  local name=$1 pf=$2 pat=$3; shift 3
  local start; start=$(ts)
  local deadline=$((SECONDS + READY_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    # Just spawned by us (or checked by `alive` before): only whether it still runs matters
    # here; its command line may not be the final one yet (nohup has not exec'd).
    if ! kill -0 "$(cat "$pf" 2>/dev/null)" 2>/dev/null; then
      log "$name exited during start-up; log tail:"; tail -n 20 "$BASE/logs/$name.log" >&2; return 1
    fi
    if "$@"; then log "$name ready (waited $(since "$start"))"; return 0; fi
    sleep 0.1
  done
  log "$name not ready after ${READY_TIMEOUT}s; log tail:"; tail -n 20 "$BASE/logs/$name.log" >&2; return 1
}
check_http() { local c; c=$(http_code "$1"); [ -n "$c" ] && [ "$c" != 000 ]; }
check_ssh() { local b; b=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; head -c 7 <&3" 2>/dev/null || true); [ "$b" = "SSH-2.0" ]; }
# spawn NAME CMD...: start in background, detached from our stdout (so `eval "$(...)"` returns)
spawn() {
  local name=$1; shift
  nohup "$@" </dev/null >"$BASE/logs/$name.log" 2>&1 &
  echo $! > "$BASE/run/$name.pid"
}
ensure_port_free() { if port_open "$1"; then die "port 127.0.0.1:$1 already in use by another process (not ours)"; fi; }

# --- ports: refuse to start anything if a port is held by a process that is not ours -------------
if [ "$S3_SERVER" = moto ]; then S3_PAT=moto_server; else S3_PAT=s3s-fs; fi
! want s3   || alive "$BASE/run/s3.pid" "$S3_PAT"   || ensure_port_free "$S3_PORT"
! want abs  || alive "$BASE/run/abs.pid" azurite-blob || ensure_port_free "$ABS_PORT"
! want sftp || alive "$BASE/run/sftp.pid" sshd       || ensure_port_free "$SFTP_PORT"
! want gcs  || alive "$BASE/run/gcs.pid" gcp-storage-emulator || ensure_port_free "$GCS_PORT"

# --- install (idempotent; the three installs run in parallel) --------------------------------
install_sshd() {
  # busybox: the image's /bin/sh (ash) for the compose tests (bin/litestream/tests/cli/compose_deploy.rs)
  if [ -x /usr/sbin/sshd ] && command -v busybox >/dev/null; then return 0; fi
  [ "$(id -u)" = 0 ] || die "openssh-server or busybox missing and not root"
  # DPkg::Lock::Timeout: wait (instead of failing at once) if another apt/dpkg holds the lock
  apt-get -o DPkg::Lock::Timeout=300 update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends openssh-server busybox
}
install_moto() {
  if "$BASE/venv/bin/python" -c 'import moto.server, flask' 2>/dev/null; then return 0; fi
  python3 -m venv "$BASE/venv" &&
    "$BASE/venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
}
install_s3s() {
  if [ -x "$BASE/cargo/bin/s3s-fs" ]; then return 0; fi
  cargo install "s3s-fs@$S3S_FS_VERSION" --features binary --locked --root "$BASE/cargo"
}
install_gcs() {  # own venv: pip must not run twice at once in moto's
  if "$BASE/venv-gcs/bin/python" -c 'import gcp_storage_emulator' 2>/dev/null; then return 0; fi
  python3 -m venv "$BASE/venv-gcs" &&
    "$BASE/venv-gcs/bin/pip" install -q --disable-pip-version-check "gcp-storage-emulator==$GCS_EMULATOR_VERSION"
}
install_azurite() {
  if [ -x "$BASE/node/node_modules/.bin/azurite-blob" ]; then return 0; fi
  mkdir -p "$BASE/node" &&
    npm install --prefix "$BASE/node" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION"
}
run_install() {  # run_install NAME FUNC : background install with its own log + timing
  local name=$1 fn=$2
  ( s=$(ts); if $fn >"$BASE/logs/install-$name.log" 2>&1; then log "install $name ok ($(since "$s"))";
    else log "install $name FAILED:"; tail -n 30 "$BASE/logs/install-$name.log" >&2; exit 1; fi ) &
}
TI=$(ts)
if want s3; then
  case "$S3_SERVER" in
    moto) run_install moto install_moto ;;
    s3s)  run_install s3s-fs install_s3s ;;
    *) die "S3_SERVER must be moto or s3s" ;;
  esac
fi
! want abs  || run_install azurite install_azurite
! want sftp || run_install openssh-server install_sshd
! want gcs  || run_install gcp-storage-emulator install_gcs
fail=0; for j in $(jobs -p); do wait "$j" || fail=1; done
[ $fail = 0 ] || die "install failed"
log "installs done ($(since "$TI"))"

# --- S3 --------------------------------------------------------------------------------------
TS=$(ts)
if ! want s3; then
  :
elif alive "$BASE/run/s3.pid" "$S3_PAT"; then
  log "s3 ($S3_SERVER) already running, pid $(cat "$BASE/run/s3.pid")"
else
  ensure_port_free "$S3_PORT"
  if [ "$S3_SERVER" = moto ]; then
    # moto keeps everything in memory: a restart always starts empty. IAM auth is on from the
    # first request (INITIAL_NO_AUTH_ACTION_COUNT=0): every request must carry a valid SigV4
    # signature of a known access key; the key is created below.
    rm -f "$BASE/run/s3-credentials"
    INITIAL_NO_AUTH_ACTION_COUNT=0 spawn s3 "$BASE/venv/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT"
  else
    [ "$KEEP_DATA" = 1 ] || rm -rf "$BASE/data/s3s"
    mkdir -p "$BASE/data/s3s/$BUCKET"            # s3s-fs: a bucket is a directory under its root
    spawn s3 "$BASE/cargo/bin/s3s-fs" --host 127.0.0.1 --port "$S3_PORT" \
      --access-key "$S3_KEY" --secret-key "$S3_SECRET" "$BASE/data/s3s"
  fi
fi

# --- Azure Blob (Azurite, blob service only) -------------------------------------------------
if ! want abs; then
  :
elif alive "$BASE/run/abs.pid" azurite-blob; then
  log "abs (azurite) already running, pid $(cat "$BASE/run/abs.pid")"
else
  ensure_port_free "$ABS_PORT"
  [ "$KEEP_DATA" = 1 ] || rm -rf "$BASE/data/azurite"
  mkdir -p "$BASE/data/azurite"
  spawn abs "$BASE/node/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$ABS_PORT" \
    --location "$BASE/data/azurite" --skipApiVersionCheck --loose --disableTelemetry
fi

# --- SFTP (OpenSSH sshd, foreground mode, own config/keys/user) ------------------------------
start_sftp() {
# sshd reads authorized_keys and internal-sftp serves files with the *user's* privileges, so the
# system user $SFTP_USER must be able to traverse every ancestor of these directories. If $BASE sits
# below a directory without o+x (e.g. a checkout under /root), keep the sshd/SFTP parts in a
# world-traversable fallback directory instead.
others_can_traverse() {  # others_can_traverse DIR: every ancestor (and DIR) has the o+x bit
  local d=$1 m
  while :; do
    m=$(stat -c %A "$d") || return 1
    [ "${m:9:1}" = x ] || [ "${m:9:1}" = t ] || return 1
    [ "$d" = / ] && return 0
    d=$(dirname "$d")
  done
}
SSH_BASE=$BASE
if ! others_can_traverse "$BASE"; then
  SSH_BASE=${TMPDIR:-/tmp}/litestream-rs-test-servers-$(printf '%s' "$BASE" | cksum | cut -d' ' -f1)
  mkdir -p "$SSH_BASE"; chmod 755 "$SSH_BASE"
  others_can_traverse "$SSH_BASE" || die "no world-traversable directory for sshd files ($SSH_BASE)"
  log "$BASE is not traversable by user $SFTP_USER; using $SSH_BASE for sshd keys and SFTP data"
fi
echo "$SSH_BASE" > "$BASE/run/ssh_base"     # for stop.sh --purge
SSHD_DIR="$SSH_BASE/sshd"; SFTP_ROOT="$SSH_BASE/data/sftp"
mkdir -p "$SSHD_DIR/authorized_keys"
[ -f "$SSHD_DIR/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$SSHD_DIR/ssh_host_ed25519_key"
[ -f "$SSHD_DIR/client_ed25519" ]       || ssh-keygen -q -t ed25519 -N '' -C lstest-ed25519 -f "$SSHD_DIR/client_ed25519"
[ -f "$SSHD_DIR/client_rsa" ]           || ssh-keygen -q -t rsa -b 3072 -m PEM -N '' -C lstest-rsa -f "$SSHD_DIR/client_rsa"
cat "$SSHD_DIR/client_ed25519.pub" "$SSHD_DIR/client_rsa.pub" > "$SSHD_DIR/authorized_keys/$SFTP_USER"
if ! id "$SFTP_USER" >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir "$SFTP_ROOT" --shell /usr/sbin/nologin "$SFTP_USER"
elif [ "$(getent passwd "$SFTP_USER" | cut -d: -f6)" != "$SFTP_ROOT" ]; then
  usermod --home "$SFTP_ROOT" "$SFTP_USER"
fi
echo "$SFTP_USER:$SFTP_PASS" | chpasswd
cat > "$SSHD_DIR/sshd_config" <<EOF
# generated by scripts/test-servers/start.sh - loopback-only SFTP for tests
Port $SFTP_PORT
ListenAddress 127.0.0.1
# one host key only: Go's x/crypto/ssh prefers RSA over ed25519, so with two host keys a client
# that pins the ed25519 key (litestream 0.5 host-key:) gets "host key mismatch"
HostKey $SSHD_DIR/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile $SSHD_DIR/authorized_keys/%u
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
AllowUsers $SFTP_USER
DisableForwarding yes
PermitTTY no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
LogLevel VERBOSE
EOF
if alive "$BASE/run/sftp.pid" sshd; then
  log "sftp (sshd) already running, pid $(cat "$BASE/run/sftp.pid")"
else
  ensure_port_free "$SFTP_PORT"
  [ "$KEEP_DATA" = 1 ] || rm -rf "$SFTP_ROOT"
  mkdir -p "$SFTP_ROOT"; chown "$SFTP_USER:" "$SFTP_ROOT"; chmod 755 "$SFTP_ROOT"
  mkdir -p /run/sshd                      # privilege-separation dir; sshd refuses to start without it
  /usr/sbin/sshd -t -f "$SSHD_DIR/sshd_config" || die "sshd config test failed"
  spawn sftp /usr/sbin/sshd -D -e -f "$SSHD_DIR/sshd_config"   # absolute path required (re-exec)
fi
}
if want sftp; then start_sftp; else SSHD_DIR=""; SFTP_ROOT=""; fi

# --- GCS (gcp-storage-emulator, in memory: a restart starts empty) --------------------------
if ! want gcs; then
  :
elif alive "$BASE/run/gcs.pid" gcp-storage-emulator; then
  log "gcs (gcp-storage-emulator) already running, pid $(cat "$BASE/run/gcs.pid")"
else
  ensure_port_free "$GCS_PORT"
  # The emulator serves one connection at a time. Litestream v0.3.13's restore opens the next
  # WAL segment's download before it reads the previous one's body: once a segment is larger
  # than the socket buffers (~4 MB), the emulator blocks writing it while the client waits for
  # the next answer, forever (seen: `ss` showed the emulator's send queue full, the Go client in
  # roundTrip). Real GCS serves connections in parallel, so this launcher does too: a thread per
  # connection, with the emulator's handlers (its storage is not thread-safe) run one at a time
  # under a lock and only the response write outside it.
  cat > "$BASE/bin/gcp-storage-emulator-threaded.py" <<'PYEOF'
import sys
import threading
from http import server

from gcp_storage_emulator import server as emulator


class ThreadedServer(server.ThreadingHTTPServer):
    daemon_threads = True


server.HTTPServer = ThreadedServer  # looked up when the emulator starts its API thread

_handlers = threading.Lock()
_pending = threading.local()
_write_response = emulator.Response.close
_route = emulator.Router.handle


def _defer_write(response):
    _pending.response = response


def _handle(router, method):
    _pending.response = None
    with _handlers:
        _route(router, method)
    if _pending.response is not None:
        _write_response(_pending.response)


emulator.Response.close = _defer_write
emulator.Router.handle = _handle

from gcp_storage_emulator.__main__ import main  # noqa: E402

sys.exit(main())
PYEOF
  spawn gcs "$BASE/venv-gcs/bin/python" "$BASE/bin/gcp-storage-emulator-threaded.py" start \
    --host 127.0.0.1 --port "$GCS_PORT" --default-bucket "$BUCKET" --in-memory
fi

# --- readiness -------------------------------------------------------------------------------
! want s3   || wait_ready s3   "$BASE/run/s3.pid"   "$S3_PAT"     check_http "http://127.0.0.1:$S3_PORT/" || die "s3 failed"
! want abs  || wait_ready abs  "$BASE/run/abs.pid"  azurite-blob  check_http "http://127.0.0.1:$ABS_PORT/$AZ_ACCOUNT?comp=list" || die "abs failed"
! want sftp || wait_ready sftp "$BASE/run/sftp.pid" sshd          check_ssh "$SFTP_PORT" || die "sftp failed"
! want gcs  || wait_ready gcs  "$BASE/run/gcs.pid"  gcp-storage-emulator check_http "http://127.0.0.1:$GCS_PORT/" || die "gcs failed"

# --- bucket / container ------------------------------------------------------------------------
if want s3 && [ "$S3_SERVER" = moto ]; then
  # moto with IAM auth: an IAM user with an allow-all policy, its access key and the bucket are
  # created through moto's reset-auth window of exactly 4 unauthenticated actions (CreateUser,
  # PutUserPolicy, CreateAccessKey, CreateBucket); afterwards a wrong key or secret gets 403.
  # The key is kept in run/s3-credentials for later runs while this moto lives.
  if [ ! -s "$BASE/run/s3-credentials" ]; then
    c=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: text/plain' --data-binary 4 "http://127.0.0.1:$S3_PORT/moto-api/reset-auth")
    [ "$c" = 200 ] || die "moto reset-auth: HTTP $c"
    "$BASE/venv/bin/python" - "http://127.0.0.1:$S3_PORT" "$BUCKET" > "$BASE/run/s3-credentials.tmp" <<'PYEOF' || die "moto IAM setup failed"
import json, sys
import boto3
ep, bucket = sys.argv[1], sys.argv[2]
kw = dict(endpoint_url=ep, region_name="us-east-1",
          aws_access_key_id="setup", aws_secret_access_key="setup")  # unchecked in the window
iam = boto3.client("iam", **kw)
iam.create_user(UserName="litestream-test")
iam.put_user_policy(UserName="litestream-test", PolicyName="all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
k = iam.create_access_key(UserName="litestream-test")["AccessKey"]
boto3.client("s3", **kw).create_bucket(Bucket=bucket)
print(k["AccessKeyId"], k["SecretAccessKey"])
PYEOF
    mv "$BASE/run/s3-credentials.tmp" "$BASE/run/s3-credentials"
  fi
  read -r S3_KEY S3_SECRET < "$BASE/run/s3-credentials"
  # auth is on: the key works, a wrong secret is refused (else the S3 tests would prove nothing)
  "$BASE/venv/bin/python" - "http://127.0.0.1:$S3_PORT" "$BUCKET" "$S3_KEY" "$S3_SECRET" <<'PYEOF' >&2 || die "moto auth check failed"
import sys
import boto3, botocore.exceptions
ep, bucket, key, secret = sys.argv[1:]
def s3(sec):
    return boto3.client("s3", endpoint_url=ep, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=sec)
s3(secret).head_bucket(Bucket=bucket)
try:
    s3(secret + "x").head_bucket(Bucket=bucket)
    sys.exit("moto accepted a wrong secret key: IAM auth is off")
except botocore.exceptions.ClientError as e:
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403, e
print("[test-servers] moto: IAM auth on (wrong secret refused with 403)")
PYEOF
fi
cat > "$BASE/bin/azcontainer.py" <<'PYEOF'
#!/usr/bin/env python3
"""Create (idempotently) a blob container with SharedKey auth, stdlib only.
usage: azcontainer.py ENDPOINT CONTAINER  (ENDPOINT like http://127.0.0.1:10000/devstoreaccount1)
env: AZURE_ACCOUNT, AZURE_KEY"""
import base64, hashlib, hmac, os, sys, urllib.request, urllib.error, urllib.parse
from email.utils import formatdate
acct, key = os.environ["AZURE_ACCOUNT"], os.environ["AZURE_KEY"]
ep, container = sys.argv[1].rstrip("/"), sys.argv[2]
url = f"{ep}/{container}?restype=container"
path = urllib.parse.urlparse(url).path
ctype = "application/octet-stream"
hdrs = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2021-08-06"}
canon_h = "".join(f"{k}:{v}\n" for k, v in sorted(hdrs.items()))
# VERB, Content-Encoding, -Language, -Length(empty for 0), -MD5, Content-Type, Date, If-*(4), Range
sts = "PUT\n\n\n\n\n" + ctype + "\n" + "\n" * 6 + canon_h + f"/{acct}{path}\nrestype:container"
sig = base64.b64encode(hmac.new(base64.b64decode(key), sts.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(url, method="PUT", data=b"", headers={**hdrs, "Content-Type": ctype,
      "Content-Length": "0", "Authorization": f"SharedKey {acct}:{sig}"})
try:
    urllib.request.urlopen(req, timeout=10); print("created", container)
except urllib.error.HTTPError as e:
    if e.code == 409: print("exists", container)
    else: print("error", e.code, e.read()[:400].decode(errors="replace")); sys.exit(1)
PYEOF
if want abs; then
  AZURE_ACCOUNT=$AZ_ACCOUNT AZURE_KEY=$AZ_KEY python3 "$BASE/bin/azcontainer.py" \
    "http://127.0.0.1:$ABS_PORT/$AZ_ACCOUNT" "$BUCKET" >&2 || die "create azure container failed"
fi
if want gcs; then
  # --default-bucket creates it; make sure (an emulator that kept running may have been wiped)
  c=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$GCS_PORT/storage/v1/b/$BUCKET")
  if [ "$c" != 200 ]; then
    c=$(curl -s -o /dev/null -m 5 -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
      --data "{\"name\":\"$BUCKET\"}" "http://127.0.0.1:$GCS_PORT/storage/v1/b?project=test")
    case "$c" in 200|409) ;; *) die "create gcs bucket: HTTP $c (log: $BASE/logs/gcs.log)" ;; esac
  fi
fi
log "all servers ready; start phase $(since "$TS"), total $(since "$T0")"

# --- environment for tests ---------------------------------------------------------------------
HOST_KEY=""
if want sftp; then
  HOST_KEY=$(cut -d' ' -f1,2 "$SSHD_DIR/ssh_host_ed25519_key.pub")
  echo "[127.0.0.1]:$SFTP_PORT $HOST_KEY" > "$SSHD_DIR/known_hosts"
fi
{
  e() { printf 'export %s=%q\n' "$1" "$2"; }
  echo "# generated by scripts/test-servers/start.sh"
  e TEST_SERVERS_DIR "$BASE"
  e TEST_S3_SERVER "$S3_SERVER"
  e TEST_S3_ENDPOINT "http://127.0.0.1:$S3_PORT"
  e TEST_S3_BUCKET "$BUCKET"
  e TEST_S3_REGION us-east-1
  e TEST_S3_ACCESS_KEY_ID "$S3_KEY"
  e TEST_S3_SECRET_ACCESS_KEY "$S3_SECRET"
  e TEST_ABS_ENDPOINT "http://127.0.0.1:$ABS_PORT/$AZ_ACCOUNT"
  e TEST_ABS_ACCOUNT_NAME "$AZ_ACCOUNT"
  e TEST_ABS_ACCOUNT_KEY "$AZ_KEY"
  e TEST_ABS_CONTAINER "$BUCKET"
  e LITESTREAM_AZURE_ACCOUNT_KEY "$AZ_KEY"
  e AZURE_STORAGE_CONNECTION_STRING "DefaultEndpointsProtocol=http;AccountName=$AZ_ACCOUNT;AccountKey=$AZ_KEY;BlobEndpoint=http://127.0.0.1:$ABS_PORT/$AZ_ACCOUNT;"
  e TEST_SFTP_HOST 127.0.0.1
  e TEST_SFTP_PORT "$SFTP_PORT"
  e TEST_SFTP_ADDR "127.0.0.1:$SFTP_PORT"
  e TEST_SFTP_USER "$SFTP_USER"
  e TEST_SFTP_PASSWORD "$SFTP_PASS"
  e TEST_SFTP_KEY_PATH "$SSHD_DIR/client_ed25519"
  e TEST_SFTP_RSA_KEY_PATH "$SSHD_DIR/client_rsa"
  e TEST_SFTP_HOST_KEY "$HOST_KEY"
  e TEST_SFTP_KNOWN_HOSTS "$SSHD_DIR/known_hosts"
  e TEST_SFTP_ROOT "$SFTP_ROOT"
  # Google's clients (Litestream's too) read STORAGE_EMULATOR_HOST; tests set it per process
  e TEST_GCS_EMULATOR_HOST "127.0.0.1:$GCS_PORT"
  e TEST_GCS_BUCKET "$BUCKET"
  echo "# litestream >= 0.5 (aws-sdk-go-v2) fails with 'unable to add custom RootCAs' when AWS_CA_BUNDLE is set"
  echo "unset AWS_CA_BUNDLE"
} > "$BASE/env.sh"
cat "$BASE/env.sh"
