#!/usr/bin/env bash
# The README's second command (and CI's): install dependencies, then build and
# run the whole test suite twice, once plainly and once under ASan+UBSan, and
# end with one line "N passed, N failed" counted from the test results.
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh || exit 1

status=0
run_suite() {   # run_suite BUILD_DIR [meson setup options...]
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
  fi
  ninja -C "$dir" || return 1
  meson test -C "$dir" --print-errorlogs --num-processes 2 || status=1
}

# ASan: leak detection on, abort on the first error so a finding fails its test.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_suite build || status=1
run_suite build-asan -Db_sanitize=address,undefined -Db_lundef=false || status=1

python3 scripts/test-summary.py build/meson-logs/testlog.json \
                                build-asan/meson-logs/testlog.json || status=1
exit $status
