#!/usr/bin/env bash
# Installs the system tools `make test` and `make demo` need, on Debian/Ubuntu:
#   redis-server (every test and the demo), kcat (tests/test_kafka_producer.py),
#   promtool from Debian's prometheus package (tests/test_deploy.py), the venv module, make.
# Everything else comes from PyPI into .venv. Without root or password-less sudo it installs
# nothing: it prints the one command to run and exits 1, before any test starts.
# MEMSTREAM_PROVISION_AS_USER=1 behaves as if neither root nor sudo were available.
set -euo pipefail

PY=${PY:-python3}
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v make >/dev/null 2>&1 || missing+=(make)
# Debian's python3 ships without ensurepip; `python3 -m venv` needs python3-venv.
"$PY" -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

# prometheus without its recommends: promtool only, no node exporter or web assets.
install_cmd="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${missing[*]}"

sudo_prefix=none
if [ "${MEMSTREAM_PROVISION_AS_USER:-0}" != 1 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    sudo_prefix=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    sudo_prefix="sudo -n"
  fi
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "memstream needs these tools and apt-get is not here to install them: ${missing[*]}" >&2
  exit 1
fi
if [ "$sudo_prefix" = none ]; then
  {
    echo "memstream needs system packages that are not installed: ${missing[*]}"
    echo "This user cannot install them (no root, no password-less sudo). Run once, then retry:"
    echo
    echo "  sudo sh -c 'apt-get update && apt-get install -y --no-install-recommends ${missing[*]}'"
    echo
  } >&2
  exit 1
fi

echo "provision: installing ${missing[*]}"
$sudo_prefix sh -c "$install_cmd" >/dev/null

for tool in redis-server kcat promtool make; do
  command -v "$tool" >/dev/null 2>&1 || { echo "provision: $tool still missing after install" >&2; exit 1; }
done
"$PY" -c 'import ensurepip' >/dev/null 2>&1 || { echo "provision: python venv support still missing" >&2; exit 1; }
echo "provision: done"
