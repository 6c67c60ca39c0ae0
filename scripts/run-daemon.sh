#!/usr/bin/env bash
# The README's first command: install dependencies, build, and run wasockd in
# the foreground with the built-in default policy (tenant "default" for the
# invoking user and root, loopback only). Ctrl-C stops it.
#
#   WASOCK_SOCKET=/path/to.sock  listen elsewhere (default /run/wasockd/wasockd.sock)
#   WASOCKD_ARGS="--policy f.yaml --log-level debug"  extra daemon options
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null

sock=${WASOCK_SOCKET:-/run/wasockd/wasockd.sock}
mkdir -p "$(dirname "$sock")"

cat >&2 <<MSG

wasockd is starting on $sock. Try it from another terminal:

  # a loopback server through the daemon, and a client to it
  ./build/client/wasock-nc -S $sock -l 127.0.0.1:7000
  echo hello | ./build/client/wasock-nc -S $sock 127.0.0.1:7000

  # refused by the default policy (loopback only): prints access-denied
  ./build/client/wasock-nc -S $sock -v 192.0.2.1:80

MSG
# shellcheck disable=SC2086  # WASOCKD_ARGS is a list of options
exec ./build/daemon/wasockd --socket "$sock" ${WASOCKD_ARGS:-}
