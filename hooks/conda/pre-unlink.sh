#!/bin/sh
# dllreg pre-unlink hook for a conda package of a native library.
# Ship it as bin/.<PKG_NAME>-pre-unlink.sh next to the post-link hook (see hooks/README.md). conda
# runs it before removing the package's files, also on upgrade (the old version's pre-unlink runs,
# then the new version's post-link), so the registry never points at files that are gone. The
# registration is removed only if this package made it (--owner).

# ---- packager: edit these two lines (the same values as in post-link.sh) ---------------------
DLLREG_NAME="foo"
DLLREG_FILES="lib/libfoo.so.1"
# ------------------------------------------------------------------------------------------------

py="$PREFIX/bin/python"

# Without dllreg in the prefix there is no registry to remove from: say so, never fail.
if ! "$py" -I -c "import dllreg" >/dev/null 2>&1; then
    echo "dllreg: $PKG_NAME $PKG_VERSION (build $PKG_BUILDNUM) did not unregister library" \
        "$DLLREG_NAME ($DLLREG_FILES): $py is missing or has no dllreg" >>"$PREFIX/.messages.txt"
    exit 0
fi
exec "$py" -I -m dllreg unregister --name "$DLLREG_NAME" --provider conda --owner "$PKG_NAME"
