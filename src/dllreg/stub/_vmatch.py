# Import-free PEP 440 specifier matching, pasted verbatim into the runtime stub (stub.py).
# spec_contains(spec, version) == packaging 26.2's SpecifierSet(spec).contains(version,
# prereleases=True), quirks included; all other names start with _vm_ to avoid clashes.

_vm_D = "0123456789"
_vm_SEP = (".", "_", "-")
_vm_PRE = (("alpha", 0), ("a", 0), ("beta", 1), ("b", 1),  # longest spelling first
           ("preview", 2), ("pre", 2), ("c", 2), ("rc", 2))
_vm_OPS = ("===", "==", "!=", "~=", "<=", ">=", "<", ">")
_vm_SUF = ("dev", "a", "b", "rc", "post")
_vm_cache = {}
# Parsed version p = (key, epoch, release, pre, post, dev, local); clause = (test, q, x).
_vm_TEST = {
    "==": lambda p, q, x: (p[0] if q[6] else p[0][:3]) == q[0],
    "!=": lambda p, q, x: (p[0] if q[6] else p[0][:3]) != q[0],
    "<=": lambda p, q, x: p[0][:3] <= q[0],
    ">=": lambda p, q, x: p[0][:3] >= q[0],
    # <V excludes V's pre-releases unless V is one (x: V.dev0, V's earliest pre-release)
    "<": lambda p, q, x: p[0] < q[0] and (bool(q[3] or q[5]) or p[0] < x or not (p[3] or p[5])),
    # >V excludes V+local, and V's post-releases unless V is one
    ">": lambda p, q, x: p[0] > q[0] and (p[6] is None or p[0][:3] != q[0]) and bool(
        q[4] or not p[4] or _vm_key(p[1], p[2], p[3], None, None, None) != q[0]),
    # prefix match: q = (split of the prefix, its numeric length, negate)
    "*": lambda p, q, x: (_vm_parts(p, q[1])[:len(q[0])] == q[0]) != q[2],
}


def _vm_seg(s, i, names):  # [._-]? NAME [._-]? [0-9]*  ->  ((rank, number), end) or (None, i)
    j = i + (s[i:i + 1] in _vm_SEP)
    for name, rank in names:
        if s.startswith(name, j):
            j += len(name)
            j += s[j:j + 1] in _vm_SEP
            k = len(s) - len(s[j:].lstrip(_vm_D))
            return (rank, int(s[j:k] or 0)), k
    return None, i


def _vm_key(e, rel, pre, post, dev, lt):  # packaging.version._cmpkey; post=(1, n), dev=(0, n)
    while rel and not rel[-1]:
        rel = rel[:-1]
    pre = pre or ((-1, 0) if post is None and dev else (3, 0))
    k = (e, rel, (*pre, *(post or (0, 0)), *(dev or (1, 0))))
    return k if lt is None else (*k, lt)


def _vm_parse(s):  # -> (key, epoch, release, pre, post, dev, local), or None if invalid
    s = s.strip()
    if not s.isascii():
        return None
    s, plus, lt = s.lower().removeprefix("v").partition("+")
    e, bang, s = s.rpartition("!")
    i = len(s) - len(s.lstrip("0123456789."))
    i -= s[i - 1:i] == "."
    rel = s[:i].split(".")  # digits only, so just reject empty parts
    if "" in rel or (bang and not e.isdigit()):
        return None
    pre = post = dev = None
    if i < len(s):
        pre, i = _vm_seg(s, i, _vm_PRE)
        if s[i:i + 1] == "-" and s[i + 1:i + 2].isdigit():
            s = s[:i] + "r" + s[i:]  # 1.0-3 is 1.0r-3
        post, i = _vm_seg(s, i, (("post", 1), ("rev", 1), ("r", 1)))
        dev, i = _vm_seg(s, i, (("dev", 0),))
        if i < len(s):
            return None
    if plus:
        lt = lt.replace("-", ".").replace("_", ".").split(".")
        if not all(map(str.isalnum, lt)):
            return None
    lt = tuple((int(x), "") if x.isdigit() else (-1, x) for x in lt) if plus else None
    e, rel = int(e or 0), tuple(map(int, rel))
    return _vm_key(e, rel, pre, post, dev, lt), e, rel, pre, post, dev, lt


def _vm_parts(p, n):  # packaging's _version_split(str(public p)), release 0-padded to n - 1
    x = [str(p[1]), *map(str, p[2]), *["0"] * (n - len(p[2]) - 1)]
    for tag, seg in (("", p[3]), ("post", p[4]), ("dev", p[5])):
        if seg:
            x.append((tag or ("a", "b", "rc")[seg[0]]) + str(seg[1]))
    return x


def _vm_vsplit(s):  # packaging.specifiers._version_split of a raw string
    e, _, s = s.rpartition("!")
    out = [e or "0"]
    for it in s.split("."):
        t = it.lstrip(_vm_D)
        k = 2 if t[:2] == "rc" else int(t[:1] in ("a", "b", "c"))
        out += [it[:len(it) - len(t)], t] if t != it and k and t[k:].isdigit() else [it]
    return out


def _vm_wild(w, neg):  # clause for ==w.* / !=w.*, split like canonicalize_version(w)
    q = _vm_parse(w)
    sp = _vm_vsplit(w) if q is None else _vm_parts(q, 0)
    n = next((i for i, x in enumerate(sp) if not x.isdigit()), len(sp))
    return _vm_TEST["*"], (sp, n, neg), None


def _vm_compile(spec):
    out = []
    for item in filter(None, map(str.strip, spec.split(","))):
        op = next((o for o in _vm_OPS if item.startswith(o)), "")
        v = item[len(op):].strip()
        w = op in ("==", "!=") and v[-2:] == ".*"
        q = _vm_parse(v[:-2] if w else v) if op in _vm_OPS[1:] and v.split() == [v] else None
        if op == "===" and ";" not in v and ")" not in v and len(v.split()) < 2:
            out.append((None, v.lower(), None))
        elif (op == "===" or q is None or (w and q[3:] != (None,) * 4)
              or (q[6] is not None and op not in ("==", "!=")) or (op == "~=" and len(q[2]) < 2)):
            raise ValueError(f"Invalid specifier: {item!r}")
        elif w:
            out.append(_vm_wild(v[:-2], op == "!="))
        else:  # ~=V is >=V plus ==P.*, P = V's normalized release without its last part
            x = _vm_key(q[1], q[2], None, q[4], (0, 0), None)
            out.append((_vm_TEST[">=" if op == "~=" else op], q, x))
            if op == "~=":
                out.append(_vm_wild(f"{q[1]}!" + ".".join(map(str, q[2][:-1])), False))
    return out


def spec_contains(spec: str, version: str) -> bool:
    cs = _vm_cache.get(spec)
    if cs is None:
        if len(_vm_cache) > 999:
            _vm_cache.clear()
        cs = _vm_cache[spec] = _vm_compile(spec)
    p = _vm_parse(version) if cs else None
    for test, q, x in cs:
        if test is None:  # ===: case-insensitive match of the raw string, valid or not
            if version.lower() != q:
                return False
        elif p is None or not test(p, q, x):
            return False
    return True
