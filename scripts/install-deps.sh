#!/usr/bin/env bash
# Installs what building and testing wasockd needs on Debian 12, as root.
# Runs apt-get only when a package is missing, so repeated runs are quick and
# work offline once everything is there.
set -euo pipefail

packages=(
  meson ninja-build gcc pkg-config   # build
  libuv1-dev                         # daemon event loop
  libyaml-dev                        # policy files
  libidn2-dev                        # IDNA for name lookups
  libssl-dev                         # audit hash chain, tokens, TLS
  check libsubunit-dev               # unit and integration tests (Check)
  python3                            # meson itself; the test summary
  socat                              # benchmark baseline (wasock-bench)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
