#!/usr/bin/env bash
# System packages the tests and the demo need: a C compiler, binutils, pkg-config, make, venv, openssl,
# and for the Windows tests the mingw-w64 cross compiler and a headless Wine.
# Installs only what is missing (as root with apt-get); prints what it would need otherwise.
set -euo pipefail
need=()
command -v gcc >/dev/null || need+=(gcc)
command -v make >/dev/null || need+=(make)
command -v readelf >/dev/null || need+=(binutils)
command -v pkg-config >/dev/null || need+=(pkgconf)
command -v openssl >/dev/null || need+=(openssl)  # a CA for the TLS loopback test
python3 -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
command -v x86_64-w64-mingw32-gcc >/dev/null || need+=(gcc-mingw-w64-x86-64)
command -v wine >/dev/null || need+=(wine wine64)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
else
  echo "dllreg needs: ${need[*]} (install them with your package manager)" >&2; exit 1
fi
