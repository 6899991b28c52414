#!/usr/bin/env bash
# The fuzz step of CI: builds the cargo-fuzz targets of crates/core
# (crates/core/fuzz, README there) with the nightly toolchain and runs each
# for a bounded time from its committed seed corpus.
#
#   bash scripts/fuzz.sh [TARGET...]     default: every target in crates/core/fuzz/Cargo.toml
#
# Environment: FUZZ_SECONDS  seconds per target (default 60)
#              FUZZ_KEEP=DIR keep the grown corpora in DIR/<target> (default: a
#                            temporary directory, removed at the end)
#
# Needs the nightly toolchain (rustup toolchain install nightly): without it
# this fails, never skips. Installs cargo-fuzz (pinned) when it is missing.
# A crash, a panic, a sanitizer report, a timeout or an out-of-memory fails the
# step and prints the reproducer's path and bytes; `cargo +nightly fuzz run
# TARGET PATH` (from crates/core) replays it. Builds into
# crates/core/fuzz/target only: the addon's and the core tests' target
# directories are left alone.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CORE="$ROOT/crates/core"
FUZZ="$CORE/fuzz"
CARGO_FUZZ_VERSION=0.13.2
SECONDS_EACH="${FUZZ_SECONDS:-60}"
log() { printf 'fuzz: %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

command -v rustup >/dev/null 2>&1 || die "rustup is missing (the fuzz targets need the nightly toolchain)"
rustc +nightly --version >/dev/null 2>&1 \
  || die "the nightly toolchain is missing: rustup toolchain install nightly --profile minimal"
if [ "$(cargo +nightly fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo +nightly install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --force --quiet
fi

declare -A MAX_LEN=([envelope]=16384 [certificate]=8192 [key]=8192 [jsonscan]=32768)
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cd "$CORE" && cargo +nightly fuzz list)
fi
[ "${#targets[@]}" -gt 0 ] || die "no fuzz target found in $FUZZ/Cargo.toml"

cd "$CORE"
build_start=$(date +%s)
log "$(rustc +nightly --version); building ${targets[*]}"
if [ "$#" -gt 0 ]; then
  for t in "${targets[@]}"; do
    cargo +nightly fuzz build --target-dir fuzz/target "$t" || die "the build of $t failed"
  done
else
  cargo +nightly fuzz build --target-dir fuzz/target || die "the build failed"
fi
build_s=$(( $(date +%s) - build_start ))
log "built in ${build_s} s"

work="${FUZZ_KEEP:-}"
if [ -z "$work" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
logs="$FUZZ/target/logs"
mkdir -p "$logs"
passed=0
failed=0
summary=()
for t in "${targets[@]}"; do
  seeds="$FUZZ/corpus/$t"
  [ -d "$seeds" ] || die "$t has no seed corpus ($seeds)"
  mkdir -p "$work/$t" "$FUZZ/artifacts/$t"
  log "running $t for ${SECONDS_EACH} s ($(find "$seeds" -type f | wc -l) seeds)"
  run_log="$logs/$t.log"
  status=0
  # The first corpus directory receives new inputs; the seeds are only read.
  cargo +nightly fuzz run --target-dir fuzz/target "$t" "$work/$t" "$seeds" -- \
    -max_total_time="$SECONDS_EACH" -max_len="${MAX_LEN[$t]:-16384}" -timeout=30 \
    -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$FUZZ/artifacts/$t/" \
    >"$run_log" 2>&1 || status=$?
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$run_log" | tail -1)"
  corpus="$(find "$work/$t" -type f | wc -l)"
  if [ "$status" -eq 0 ]; then
    passed=$((passed + 1))
    summary+=("$(printf '%-12s ok      %10s executions in %s s, grown corpus %s files' "$t" "${execs:-?}" "$SECONDS_EACH" "$corpus")")
  else
    failed=$((failed + 1))
    summary+=("$(printf '%-12s FAILED  %10s executions (exit %s)' "$t" "${execs:-?}" "$status")")
    log "$t FAILED (exit $status); from its log ($run_log):"
    grep -A 3 -E "panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)" "$run_log" | head -n 40 >&2 || true
    grep -E "^SUMMARY: " "$run_log" >&2 || true
    grep -v -E '^#[0-9]+' "$run_log" | tail -n 12 >&2 || true
    for unit in $(sed -n "s/.*Test unit written to \(.*\)$/\1/p" "$run_log"); do
      log "reproducer: $unit ($(wc -c <"$unit") bytes)"
      log "replay: (cd crates/core && cargo +nightly fuzz run --target-dir fuzz/target $t $unit)"
      log "hex: $(head -c 4096 "$unit" | od -An -v -tx1 | tr -d ' \n')"
    done
  fi
done

log "summary (build ${build_s} s, $(rustc +nightly --version)):"
for line in "${summary[@]}"; do
  log "  $line"
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
