#!/usr/bin/env bash
# `make demo`: package the real OpenBLAS from PyPI's scipy-openblas32 wheel as a dllreg library
# wheel, build two C-extension consumers against it, install both into a fresh venv and show
# that one copy on disk and in memory serves both. Idempotent; everything lands in demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${DLLREG_DEMO_PYTHON:-$ROOT/.venv/bin/python}  # the dev venv (`make venv`), dllreg editable
DOWNLOADS=$ROOT/.cache/downloads
OUT=${DLLREG_DEMO_OUT:-$ROOT/demo-out}  # the tests put it in a temp dir
WH=$OUT/wheelhouse
VENV=$OUT/venv
SECONDS=0

step() { printf '\n== %s\n' "$*"; }

BUILD=$OUT/build

# Wipe everything the demo produces (the download cache stays).
rm -rf "$VENV" "$WH" "$BUILD"
mkdir -p "$DOWNLOADS" "$WH" "$BUILD"

step "1. scipy-openblas32 wheel (cached in .cache/downloads)"
shopt -s nullglob
pattern=("$DOWNLOADS"/scipy_openblas32-*-py3-none-manylinux*_"$(uname -m)".whl)
if [ ${#pattern[@]} -eq 0 ]; then
  echo "downloading from PyPI"
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$DOWNLOADS" scipy-openblas32
  pattern=("$DOWNLOADS"/scipy_openblas32-*-py3-none-manylinux*_"$(uname -m)".whl)
else
  echo "cached, no download"
fi
shopt -u nullglob
[ ${#pattern[@]} -gt 0 ] || { echo "no manylinux scipy-openblas32 wheel in $DOWNLOADS" >&2; exit 1; }
source_wheel=$(printf '%s\n' "${pattern[@]}" | sort -V | tail -n 1)
version=$(basename "$source_wheel" | cut -d- -f2)
echo "$(basename "$source_wheel") (OpenBLAS wheel version $version)"

step "2. dllreg package-lib openblas"
"$PY" -m dllreg package-lib openblas --version "$version" --from "$source_wheel" -o "$WH"

step "3. build a dllreg wheel, then the consumers blasdot and blasgemm (isolated builds)"
# setuptools builds in the source tree and never prunes its build/ directory; keep these
# builds out of the repository and fresh: dllreg's through setuptools' DIST_EXTRA_CONFIG, the
# examples' by building copies.
printf '[build]\nbuild_base = %s\n[egg_info]\negg_base = %s\n' "$BUILD/dllreg" "$BUILD" \
  > "$BUILD/dllreg.cfg"
DIST_EXTRA_CONFIG=$BUILD/dllreg.cfg "$PY" -m pip wheel -q --no-deps -w "$WH" .
cp -r examples/blasdot examples/blasgemm "$BUILD"/
rm -rf "$BUILD"/blas*/build "$BUILD"/blas*/src/*.egg-info  # left by any in-tree build
# The isolated builds install dllreg and dllreg-lib-openblas from the wheelhouse.
PIP_FIND_LINKS="$WH${PIP_FIND_LINKS:+ $PIP_FIND_LINKS}" \
  "$PY" -m pip wheel -q --no-deps -w "$WH" "$BUILD/blasdot" "$BUILD/blasgemm"
ls -1 "$WH"

step "4. fresh venv demo-out/venv; install both consumers (pip pulls dllreg-lib-openblas)"
"$PY" -m venv "$VENV"
VPY=$VENV/bin/python
# By file, so no same-named project on an index can stand in; their dependency comes from the
# wheelhouse only.
"$VPY" -m pip install -q --no-index --find-links "$WH" "$WH"/blasdot-*.whl "$WH"/blasgemm-*.whl
"$VPY" -m pip list --format=freeze --exclude pip --exclude setuptools
echo "-- blasdot alone:"
"$VPY" -c 'import blasdot; from blasdot import _dlls
print("  dot([1, 2, 3], [4, 5, 6]) =", blasdot.dot([1, 2, 3], [4, 5, 6]))
print("  OpenBLAS config:", blasdot.config())
print("  loaded", _dlls.path("openblas"))'
echo "-- blasgemm alone:"
"$VPY" -c 'import blasgemm; from blasgemm import _dlls
print("  matmul([[1, 2], [3, 4]], [[5, 6], [7, 8]]) =",
      blasgemm.matmul([[1, 2], [3, 4]], [[5, 6], [7, 8]]))
print("  OpenBLAS threads:", blasgemm.threads())
print("  loaded", _dlls.path("openblas"))'
echo "-- both in one process (examples/run_both.py):"
"$VPY" examples/run_both.py

step "5. python -m dllreg list (dllreg installed into demo-out/venv just for this)"
"$VPY" -m pip install -q --find-links "$WH" dllreg
"$VPY" -m dllreg list

step "6. disk"
"$VPY" - "$VENV" "$WH" <<'EOF'
import sys
from pathlib import Path

venv, wh = map(Path, sys.argv[1:])
libs = sorted(p for p in venv.rglob("*openblas*.so*") if p.is_file())
size = sum(p.stat().st_size for p in libs)
for p in libs:
    print(f"OpenBLAS in demo-out/venv: {p.stat().st_size:>12,} bytes  {p.relative_to(venv)}")
print(f"one shared copy:           {size:>12,} bytes")
print(f"vendored into both:        {2 * size:>12,} bytes  (2 x the library file; "
      f"saves {size:,} bytes)")
for w in sorted(wh.glob("*.whl")):
    print(f"wheel {w.name}: {w.stat().st_size:,} bytes")
if len(libs) != 1:
    sys.exit(f"expected exactly one OpenBLAS file in {venv}, found {len(libs)}")
EOF

printf '\n== done in %ss\n' "$SECONDS"
