#!/bin/sh
# dllreg post-link hook for a conda package of a native library.
# Ship it as bin/.<PKG_NAME>-post-link.sh (see hooks/README.md). conda runs it after linking the
# package, with PREFIX, PKG_NAME, PKG_VERSION and PKG_BUILDNUM set; it registers the package's
# library files in the dllreg registry of the prefix's Python, so that pip-installed dllreg
# consumers load these files instead of bringing a second copy.

# ---- packager: edit these two lines -----------------------------------------------------------
# The dllreg library name consumers require (as in [tool.dllreg] requires = ["foo>=1.0"]).
DLLREG_NAME="foo"
# The library files relative to PREFIX, space-separated, dependencies first (principal last).
DLLREG_FILES="lib/libfoo.so.1"
# ------------------------------------------------------------------------------------------------

set -f  # the file list is split on spaces, never glob-expanded against the current directory
py="$PREFIX/bin/python"

# dllreg is an optional guest in a conda prefix: without it there is no registry to write to,
# which is not this package's fault, so the transaction must not fail. conda shows
# $PREFIX/.messages.txt to the user after the transaction. -I: no PYTHONPATH, user site or cwd.
if ! "$py" -I -c "import dllreg" >/dev/null 2>&1; then
    cmd="\"$py\" -m dllreg register --name $DLLREG_NAME --version $PKG_VERSION --provider conda"
    cmd="$cmd --prefix \"$PREFIX\" --owner $PKG_NAME"
    for f in $DLLREG_FILES; do
        cmd="$cmd --path \"$PREFIX/$f\""
    done
    echo "dllreg: $PKG_NAME $PKG_VERSION (build $PKG_BUILDNUM) did not register library" \
        "$DLLREG_NAME: $py is missing or has no dllreg; after installing dllreg run: $cmd" \
        >>"$PREFIX/.messages.txt"
    exit 0
fi

set --
for f in $DLLREG_FILES; do
    set -- "$@" --path "$PREFIX/$f"
done
exec "$py" -I -m dllreg register --name "$DLLREG_NAME" --version "$PKG_VERSION" \
    --provider conda --prefix "$PREFIX" --owner "$PKG_NAME" "$@"
