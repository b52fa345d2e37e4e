# The stub's error messages (part of the _dlls.py runtime, docs/stub.md). Compiled only when
# an import fails, so it must be self-contained: everything arrives as arguments.
import os


def _fix(name, spec, pip=""):
    # pip: the requirement the consumer's stub names (a PyPI provider's, docs/registry.md)
    return 'pip install "%s"' % pip if pip else 'pip install "dllreg-lib-%s%s"' % (name, spec)


def _listing(directory):
    try:
        return {n.lower() for n in os.listdir(directory)}
    except OSError:
        return set()


def _missing_imports(path, needed, loaded):
    # Windows error 126 for a DLL that exists means one of *its* imports was not found: name
    # them, which is what the original bpo-35688 report could not get from Windows.
    have = {os.path.basename(p).lower() for r in loaded.values() for p in r["paths"]}
    have |= _listing(os.path.dirname(path))
    have |= _listing(os.path.join(os.environ.get("SYSTEMROOT", "C:\\Windows"), "System32"))
    return [n for n in needed if n and n.lower() not in have
            and not n.lower().startswith(("api-ms-", "ext-ms-"))]  # API sets are virtual


def describe_failure(kind, user, name, spec, **facts):
    head = "%s requires native library %s%s" % (user, name, spec)
    if kind == "conflict":
        rec = facts["loaded"]
        others = ", ".join("%s (%s%s)" % (u, name, s) for u, s in rec["users"].items())
        return ("%s, but %s %s is already loaded in this process from %s for %s; one process "
                "cannot hold two versions of a library. Install versions of these packages "
                "that agree on %s." % (head, name, rec["version"], rec["dir"], others, name))
    if kind == "duplicate":
        return ("%s, but loading %s would map a second copy of %s, already loaded in this "
                "process from %s; one process must not hold two copies of one library name. "
                "Uninstall one of the libraries that ship %s." % (
                    head, facts["path"], facts["runtime_name"], facts["other"],
                    facts["runtime_name"]))
    if kind == "integrity":
        return ("%s, but %s does not match the sha256 in its manifest (modified, truncated or "
                "replaced after install; DLLREG_VERIFY=1). Reinstall it: %s --force-reinstall" % (
                    head, facts["path"], _fix(name, spec, facts.get("pip"))))
    if kind == "cycle":
        return "native library requirements form a cycle: %s" % " -> ".join(facts["chain"])
    if kind == "unreadable":
        return "%s, but its manifest %s is unreadable (%s). Reinstall it: %s --force-reinstall" % (
            head, facts["manifest"], facts["error"], _fix(name, spec, facts.get("pip")))
    if kind == "load":
        error, path = facts["error"], facts["path"]
        detail = str(error)
        code = getattr(error, "winerror", None)
        if facts.get("windows") and code == 126 and os.path.exists(path):
            absent = _missing_imports(path, facts["needed"], facts["loaded"])
            detail += "; %s imports %s, which %s not found (not loaded, not next to it, not in " \
                      "System32)" % (os.path.basename(path), ", ".join(absent) or "nothing missing",
                                     "was" if len(absent) == 1 else "were")
        elif code == 193:
            detail += "; the file is not a DLL for this Python's architecture"
        return "%s: loading %s failed: %s. Reinstall it: %s --force-reinstall" % (
            head, path, detail, _fix(name, spec, facts.get("pip")))
    seen, dirs = facts["seen"], facts["dirs"]
    if seen:
        found = "found only %s, which does not satisfy %s" % (
            "; ".join("%s %s at %s" % (name, v, d) for v, d in seen), spec or "any version")
    else:
        found = "it is not installed"
    where = "dllreg.libs/%s/MANIFEST" % name
    if facts.get("pip"):
        where += " or the files of %s" % facts["pip"].split(";")[0]
    return "%s, but %s (looked for %s in: %s). Fix: %s" % (
        head, found, where, ", ".join(dirs) or "-", _fix(name, spec, facts.get("pip")))
