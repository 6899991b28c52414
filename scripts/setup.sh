#!/usr/bin/env bash
# The whole set-up on a fresh machine (Debian/Ubuntu with Node.js >= 20, npm,
# Rust via rustup, Python 3 and a C compiler): system packages, the npm
# dependencies, the Python environments of the interop suite, the build tools
# (.venv-build: cargo-zigbuild and zig, for the glibc 2.17 Linux binary), and
# the build (the Rust addon with AWS-LC compiled in, then the TypeScript).
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { printf 'setup: %s\n' "$*" >&2; }

need() {
  command -v "$1" >/dev/null 2>&1 || { log "missing $1: $2"; exit 1; }
}
need node "install Node.js >= 20"
need npm "install npm"
need cargo "install Rust with rustup (the toolchain is pinned by rust-toolchain.toml)"
need python3 "install Python 3"
need cc "install a C compiler (gcc); AWS-LC is built from source (with CMake and libclang)"

# System packages the suites use (the openssl CLI for `openssl speed` in the benchmark and for the TLS tests' certificates).
apt_packages=()
command -v openssl >/dev/null 2>&1 || apt_packages+=(openssl)
command -v cmake >/dev/null 2>&1 || apt_packages+=(cmake)
# AWS-LC's Rust bindings are generated with bindgen, which loads libclang.
# (libclang-cpp, which some images carry, is another library.)
compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null || compgen -G '/usr/lib/*/libclang.so*' >/dev/null \
  || compgen -G '/usr/lib/*/libclang-[0-9]*.so*' >/dev/null || apt_packages+=(libclang-dev)
command -v redis-server >/dev/null 2>&1 || apt_packages+=(redis-server)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || command -v rabbitmq-server >/dev/null 2>&1 || apt_packages+=(rabbitmq-server)
if [ "${#apt_packages[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    log "apt-get install ${apt_packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${apt_packages[@]}" >/dev/null
  else
    log "please install: ${apt_packages[*]}"
    exit 1
  fi
fi

log "npm ci"
npm ci --no-audit --no-fund --loglevel=error

log "Python environments (Celery 5.7 and 5.4)"
bash scripts/setup-python.sh

# The Linux glibc addon is built against glibc 2.17 whatever this machine's
# glibc is (scripts/build-native.mjs): cargo-zigbuild, with zig (ziglang) as
# the C compiler and linker, both pinned, from PyPI, in .venv-build.
BUILD_VENV="$ROOT/.venv-build"
BUILD_PINS="cargo-zigbuild==0.24.1 ziglang==0.14.1"
if [ "$(node -p 'process.platform === "linux" && Boolean(process.report.getReport().header.glibcVersionRuntime)')" = true ]; then
  want="$(printf '%s\n%s\n' "$BUILD_PINS" "$(python3 -c 'import sys; print(sys.version)')" | sha256sum | cut -d' ' -f1)"
  have="$(cat "$BUILD_VENV/.celery-sign-build.sha256" 2>/dev/null || true)"
  if [ "$have" != "$want" ] || ! "$BUILD_VENV/bin/cargo-zigbuild" --version >/dev/null 2>&1 \
     || ! "$BUILD_VENV/bin/python" -m ziglang version >/dev/null 2>&1; then
    log "building .venv-build ($BUILD_PINS)"
    rm -rf "$BUILD_VENV"
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || {
      # Debian splits the venv module out (scripts/setup-python.sh installs it too).
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -qq python3-venv >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq python3-venv >/dev/null; }
    }
    python3 -m venv "$BUILD_VENV"
    # shellcheck disable=SC2086 # the pins are words
    "$BUILD_VENV/bin/python" -m pip install -q --disable-pip-version-check --require-virtualenv $BUILD_PINS
    "$BUILD_VENV/bin/cargo-zigbuild" --version >/dev/null
    printf '%s\n' "$want" >"$BUILD_VENV/.celery-sign-build.sha256"
  fi
fi

log "building the native addon and the TypeScript"
npm run --silent build
log "ready"
