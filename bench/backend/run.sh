#!/usr/bin/env bash
# Builds every crypto-backend variant of bench/backend, checks that each one signs and
# verifies the way Celery does, times them interleaved (round-robin, 5 rounds by default)
# together with the system `openssl speed`, and writes RESULTS.md.
#
#   bench/backend/run.sh [--clean] [--rounds N] [--secs S] [--variants "vendored aws-lc raw-aws-lc system"]
#                        [--quiet-load 0.5] [--max-wait 600] [--run-wait 120] [--retries 3] [--no-install]
#                        [--reuse-samples]
#
#   --clean       delete each variant's target dir first, so the recorded build time is a clean build
#   --quiet-load  before the first measurement wait (up to --max-wait s) for the 1-min load to drop below this
#   --run-wait    before every later run wait (up to this many s) until other processes use < 15% of a core
#   --retries     re-take a sample during which other processes used >= 10% of a core, up to N times
#   --reuse-samples  do not measure: keep out/samples.tsv, speed.tsv, gate.tsv from the last run
#                 (rebuild, re-check and rewrite RESULTS.md only)
#   --no-install  never apt-get install missing build prerequisites (libclang-dev, libssl-dev, pkg-config)
set -euo pipefail
cd "$(dirname "$0")"
HERE=$PWD

CLEAN=0 ROUNDS=5 SECS=1 VARIANTS="vendored aws-lc raw-aws-lc system" QUIET=0.5 MAXWAIT=600 RUNWAIT=120 RETRIES=3 INSTALL=1 REUSE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --clean) CLEAN=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --secs) SECS=$2; shift ;;
    --variants) VARIANTS=$2; shift ;;
    --quiet-load) QUIET=$2; shift ;;
    --max-wait) MAXWAIT=$2; shift ;;
    --run-wait) RUNWAIT=$2; shift ;;
    --retries) RETRIES=$2; shift ;;
    --no-install) INSTALL=0 ;;
    --reuse-samples) REUSE=1 ;;
    *) sed -n '2,18p' "$0"; exit 2 ;;
  esac
  shift
done

OUT=$HERE/out
mkdir -p "$OUT"
rm -f "$OUT"/checks.tsv "$OUT"/info.tsv
[ "$REUSE" = 1 ] || rm -f "$OUT"/samples.tsv "$OUT"/speed.tsv "$OUT"/gate.tsv "$OUT"/speed-raw.txt "$OUT"/run.tsv
rm -rf "$OUT"/xfer "$OUT"/keys
touch "$OUT"/builds.tsv
log() { printf '[run.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---------------------------------------------------------------- prerequisites
have_libclang() { ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; }
need_pkgs=()
case " $VARIANTS " in *" aws-lc "*) have_libclang || need_pkgs+=(libclang-dev) ;; esac
case " $VARIANTS " in *" system "*)
  pkg-config --exists openssl 2>/dev/null || need_pkgs+=(libssl-dev pkg-config) ;; esac
command -v cmake >/dev/null || need_pkgs+=(cmake)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$INSTALL" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing build prerequisites: ${need_pkgs[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    log "missing build prerequisites: ${need_pkgs[*]} (the aws-lc variant needs libclang for bindgen; system needs libssl-dev)"
  fi
fi

# ---------------------------------------------------------------- build
bin() { echo "$HERE/target/$1/release/celery-sign-bench-backend"; }
log "building the report tool (no backend)"
nice -n 10 cargo build --release --quiet --target-dir target/report
REPORT=$(bin report)
BUILT=""
for v in $VARIANTS; do
  [ "$CLEAN" = 1 ] && rm -rf "target/$v"
  kind=incremental
  [ -d "target/$v/release" ] || kind=clean
  load=$(cut -d' ' -f1 /proc/loadavg)
  log "building $v ($kind)"
  t0=$EPOCHREALTIME
  if nice -n 10 cargo build --release --features "$v" --target-dir "target/$v" >"$OUT/build-$v.log" 2>&1; then
    t1=$EPOCHREALTIME
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    size=$(stat -c %s "$(bin "$v")")
    dyn=$(ldd "$(bin "$v")" 2>/dev/null | awk '/libssl|libcrypto/ { printf "%s%s", s, $1; s=" " }')
    links=${dyn:-"static (no libssl/libcrypto .so)"}
    [ -n "$dyn" ] && links="dynamic: $dyn"
    printf 'build\t%s\t%s\t%s\t%s\t%s\t%s\n' "$v" "$secs" "$size" "$kind" "$load" "$links" >>"$OUT/builds.tsv"
    log "built $v in ${secs}s ($kind), $size bytes, $links"
    BUILT="$BUILT $v"
  else
    log "BUILD FAILED for $v (see $OUT/build-$v.log); skipping it"
    tail -20 "$OUT/build-$v.log" >&2
  fi
done
BUILT=${BUILT# }
[ -n "$BUILT" ] || { log "nothing built"; exit 1; }

# ---------------------------------------------------------------- correctness
log "correctness checks"
FAILED=0
XF=$OUT/xfer
for v in $BUILT; do
  "$(bin "$v")" info | sed 's/^/info\t/' >>"$OUT/info.tsv"
  "$(bin "$v")" check --export "$XF/$v" >>"$OUT/checks.tsv" || FAILED=1
done
# The system openssl CLI and Python `cryptography` (what Celery uses) make signatures too.
CLI=$XF/openssl-cli
mkdir -p "$CLI"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$CLI/key.pem" 2>/dev/null
openssl pkey -in "$CLI/key.pem" -pubout -outform DER -out "$CLI/spki.der"
head -c 512 /dev/urandom >"$CLI/msg.bin"
for s in max 32; do
  openssl dgst -sha256 -sign "$CLI/key.pem" -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:$s \
    -sigopt rsa_mgf1_md:sha256 -out "$CLI/sig-$s.bin" "$CLI/msg.bin"
done
PY=""
if python3 -c 'import cryptography' 2>/dev/null; then PY=python3; fi
pycheck() {
  "$PY" - "$@" <<'PYEOF'
import glob, os, sys
import cryptography
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
xfer, mode = sys.argv[1], sys.argv[2]
# Exactly Celery's call (celery/security/serialization.py + utils): PSS, MGF1(digest), PSS.MAX_LENGTH.
pss = lambda s: padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=s)
if mode == "sign":
    d = os.path.join(xfer, "python-cryptography")
    os.makedirs(d, exist_ok=True)
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    msg = os.urandom(512)
    open(d + "/spki.der", "wb").write(k.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    open(d + "/msg.bin", "wb").write(msg)
    open(d + "/sig-max.bin", "wb").write(k.sign(msg, pss(padding.PSS.MAX_LENGTH), hashes.SHA256()))
    open(d + "/sig-32.bin", "wb").write(k.sign(msg, pss(32), hashes.SHA256()))
else:
    bad = 0
    for d in sorted(glob.glob(xfer + "/*/")):
        name = os.path.basename(d.rstrip("/"))
        if name == "python-cryptography":
            continue
        pub = serialization.load_der_public_key(open(d + "spki.der", "rb").read())
        msg = open(d + "msg.bin", "rb").read()
        for s in ("sig-max.bin", "sig-32.bin"):
            try:
                pub.verify(open(d + s, "rb").read(), msg, pss(padding.PSS.MAX_LENGTH), hashes.SHA256())
                r = "true ok"
            except InvalidSignature:
                r, bad = "false FAIL", bad + 1
            print(f"extcheck\tpython cryptography {cryptography.__version__} verify(PSS.MAX_LENGTH) (Celery)\t{name}/{s}\t{r}")
    sys.exit(1 if bad else 0)
PYEOF
}
[ -n "$PY" ] && pycheck "$XF" sign
for v in $BUILT; do "$(bin "$v")" import "$XF" >>"$OUT/checks.tsv" || FAILED=1; done
[ -n "$PY" ] && { pycheck "$XF" verify >>"$OUT/checks.tsv" || FAILED=1; }
# openssl CLI verifies every backend's signatures: auto, explicit 222 (must pass for sig-max, fail for sig-32).
for d in "$XF"/*/; do
  name=$(basename "$d")
  [ "$name" = openssl-cli ] && continue
  openssl pkey -pubin -inform DER -in "$d/spki.der" -out "$d/pub.pem"
  for s in max 32; do
    for mode in auto 222; do
      want=ok
      [ "$s" = 32 ] && [ "$mode" = 222 ] && want=fail
      if openssl dgst -sha256 -verify "$d/pub.pem" -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:$mode \
        -sigopt rsa_mgf1_md:sha256 -signature "$d/sig-$s.bin" "$d/msg.bin" >/dev/null 2>&1; then got=ok; else got=fail; fi
      verdict=ok; [ "$got" = "$want" ] || { verdict=FAIL; FAILED=1; }
      printf 'extcheck\topenssl %s dgst -verify rsa_pss_saltlen:%s\t%s/sig-%s.bin\t%s (want %s) %s\n' \
        "$(openssl version | cut -d' ' -f2)" "$mode" "$name" "$s" "$got" "$want" "$verdict" >>"$OUT/checks.tsv"
    done
  done
done
# Key formats the product must read (DESIGN.md "Keys"): every backend loads each PEM and signs with it.
K=$OUT/keys
mkdir -p "$K"
openssl genrsa -traditional -out "$K/cli-pkcs1.pem" 2048 2>/dev/null
openssl pkey -in "$K/cli-pkcs1.pem" -out "$K/cli-pkcs8.pem"
openssl pkcs8 -topk8 -in "$K/cli-pkcs1.pem" -v2 aes-256-cbc -v2prf hmacWithSHA256 -passout pass:secret -out "$K/cli-pkcs8-pbes2-aes256.pem"
openssl rsa -in "$K/cli-pkcs1.pem" -traditional -aes256 -passout pass:secret -out "$K/cli-legacy-aes256.pem" 2>/dev/null
openssl rsa -in "$K/cli-pkcs1.pem" -traditional -des3 -passout pass:secret -out "$K/cli-legacy-des3.pem" 2>/dev/null
openssl pkey -in "$K/cli-pkcs1.pem" -pubout -outform DER -out "$K/cli-pkcs1.spki.der"
for f in cli-pkcs8 cli-pkcs8-pbes2-aes256 cli-legacy-aes256 cli-legacy-des3; do cp "$K/cli-pkcs1.spki.der" "$K/$f.spki.der"; done
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$K/refuse-ec-p256.pem" 2>/dev/null
if [ -n "$PY" ]; then
  "$PY" - "$K" <<'PYEOF'
import sys
from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric import rsa
d = sys.argv[1]
k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pub = k.public_key().public_bytes(s.Encoding.DER, s.PublicFormat.SubjectPublicKeyInfo)
for name, fmt in (("python-pkcs8-encrypted", s.PrivateFormat.PKCS8), ("python-traditional-encrypted", s.PrivateFormat.TraditionalOpenSSL)):
    open(f"{d}/{name}.pem", "wb").write(k.private_bytes(s.Encoding.PEM, fmt, s.BestAvailableEncryption(b"secret")))
    open(f"{d}/{name}.spki.der", "wb").write(pub)
PYEOF
fi
for v in $BUILT; do "$(bin "$v")" keys "$K" >>"$OUT/checks.tsv" || FAILED=1; done

if [ "$FAILED" = 1 ]; then
  log "CORRECTNESS FAILURES:"; grep -P '\tFAIL$|FAIL$' "$OUT/checks.tsv" >&2 || true
fi

# ---------------------------------------------------------------- quiet machine
cpu_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
foreign_pct() { # CPU use of all processes over 3 s, % of one core (nothing of ours runs meanwhile)
  local a b; a=$(cpu_busy); sleep 3; b=$(cpu_busy); awk -v a="$a" -v b="$b" 'BEGIN { printf "%.0f", (b - a) / 3 }'
}
GATE_FIRST=1
gate() { # $1 round, $2 run name
  local waited=0 t0=$SECONDS f
  if [ "$GATE_FIRST" = 1 ]; then
    GATE_FIRST=0
    while awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v q="$QUIET" 'BEGIN { exit !(l >= q) }' && [ $((SECONDS - t0)) -lt "$MAXWAIT" ]; do
      sleep 10
    done
  fi
  while f=$(foreign_pct); [ "$f" -ge 15 ] && [ $((SECONDS - t0)) -lt "$RUNWAIT" ]; do sleep 5; done
  waited=$((SECONDS - t0))
  printf 'gate\t%s\t%s\t%s\t%ss\t%s%%\n' "$1" "$2" "$(cut -d' ' -f1-3 /proc/loadavg)" "$waited" "$f" >>"$OUT/gate.tsv"
  log "round $1 $2: load $(cut -d' ' -f1-3 /proc/loadavg), waited ${waited}s, others used ${f}% of a core"
}

# ---------------------------------------------------------------- measure, interleaved
read -r -a V <<<"$BUILT"
n=${#V[@]}
speed() { # $1 round, $2.. openssl speed args
  local r=$1; shift
  local name="openssl speed -seconds 3 $*"
  gate "$r" "$name"
  local o; o=$(openssl speed -seconds 3 "$@" rsa2048 2>/dev/null)
  printf '## round %s: %s\n%s\n\n' "$r" "$name" "$o" >>"$OUT/speed-raw.txt"
  echo "$o" | awk -v n="$name rsa2048" -v r="$r" '/^rsa 2048 bits/ { s=$6; v=$7 } END { printf "speed\t%s\t%s\t%s\t%s\n", n, s, v, r }' >>"$OUT/speed.tsv"
}
[ "$REUSE" = 1 ] && ROUNDS=0
[ "$REUSE" = 1 ] || printf 'rounds\t%s\t%s\t%s\t%s\n' "$ROUNDS" "$SECS" "$RETRIES" "$(date -u '+%Y-%m-%d %H:%M UTC')" >"$OUT/run.tsv"
for r in $(seq 1 "$ROUNDS"); do
  for i in $(seq 0 $((n - 1))); do
    v=${V[$(((i + r - 1) % n))]} # rotate the order every round
    gate "$r" "$v"
    "$(bin "$v")" bench --round "$r" --secs "$SECS" --retries "$RETRIES" >>"$OUT/samples.tsv"
  done
  speed "$r"
  speed "$r" -multi 2
done

# ---------------------------------------------------------------- RESULTS.md
{
  echo "# Crypto backend measurement (bench/backend)"
  echo
  read -r _ MROUNDS MSECS MRETRIES MDATE <"$OUT/run.tsv" || true
  echo "Generated by \`bench/backend/run.sh\`; measured ${MDATE:-?}, written $(date -u '+%Y-%m-%d %H:%M UTC')."
  echo
  echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; AVX-512 IFMA: $(grep -q avx512ifma /proc/cpuinfo && echo yes || echo no); $(lscpu | sed -n 's/^Hypervisor vendor: *//p' | sed 's/^\(.\)/hypervisor \1/')"
  echo "- Kernel $(uname -r); $(rustc --version); system $(openssl version)"
  echo "- Crates: $(awk '/^name = "(openssl|openssl-sys|openssl-src|aws-lc-sys)"/ { gsub(/"/, "", $3); n=$3 } /^version/ && n { gsub(/"/, "", $3); printf "%s%s %s", s, n, $3; s=", "; n="" }' Cargo.lock)"
  echo "- Message: 512 bytes; PSS with MGF1 = message digest; sign salt = max (-2), verify salt = auto (-2); e = 65537"
  echo "- Rounds: ${MROUNDS:-?}, ~${MSECS:-?} s per sample (a noisy sample re-taken up to ${MRETRIES:-?} times), variants run round-robin (order rotated each round), then \`openssl speed\` in the same round"
  echo "- Load when this file was written: $(uptime | sed 's/.*load average/load average/') (loads during the measurement: see Noise)"
  echo
  "$REPORT" report "$OUT"
  echo
  echo "## Raw \`openssl speed\` output (last round)"
  echo
  echo '```'
  awk -v r="${MROUNDS:-0}" '/^## round/ { p = ($3 == r ":") } p' "$OUT/speed-raw.txt" | grep -v '^compiler:\|^built on\|^options:\|^CPUINFO\|^version:\|^$' || true
  echo '```'
} >"$HERE/RESULTS.md"
log "wrote $HERE/RESULTS.md"
[ "$FAILED" = 0 ] || { log "some correctness checks FAILED (see RESULTS.md)"; exit 1; }
