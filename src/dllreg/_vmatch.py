"""Import-free PEP 440 specifier matching, pasted verbatim into the runtime stub.

``spec_contains(spec, version)`` agrees with packaging 26.2's
``SpecifierSet(spec).contains(version, prereleases=True)``, quirks included.
Every other name starts with ``_vm_`` so the body can be pasted into any module.
"""

_vm_D = "0123456789"
_vm_SEP = (".", "_", "-")
_vm_PRE = (("alpha", 0), ("a", 0), ("beta", 1), ("b", 1),
           ("preview", 2), ("pre", 2), ("c", 2), ("rc", 2))
_vm_POST = (("post", 0), ("rev", 0), ("r", 0))
_vm_DEV = (("dev", 0),)
_vm_SUF = ("dev", "a", "b", "rc", "post")
_vm_OPS = ("===", "==", "!=", "~=", "<=", ">=", "<", ">")
_vm_cache = {}


def _vm_seg(s, i, names):
    # [._-]? NAME [._-]? [0-9]*  ->  ((rank, number), end) or (None, i)
    j = i + 1 if s[i:i + 1] in _vm_SEP else i
    for name, rank in names:
        if s.startswith(name, j):
            j += len(name)
            if s[j:j + 1] in _vm_SEP:
                j += 1
            k = len(s) - len(s[j:].lstrip(_vm_D))
            return (rank, int(s[j:k] or 0)), k
    return None, i


def _vm_key(e, rel, pre, post, dev, loc):
    # packaging.version._cmpkey
    i = len(rel)
    while i and not rel[i - 1]:
        i -= 1
    if pre is None:
        pre = (-1, 0) if post is None and dev is not None else (3, 0)
    suf = (*pre, *((0, 0) if post is None else (1, post)), *((1, 0) if dev is None else (0, dev)))
    return (e, rel[:i], suf) if loc is None else (e, rel[:i], suf, loc)


def _vm_parse(s):
    # -> (key, epoch, release, pre, post, dev, local) or None when not a valid version
    s = s.strip()
    if not s.isascii():
        return None
    s = s.lower()
    if s[:1] == "v":
        s = s[1:]
    s, plus, loc = s.partition("+")
    e = 0
    if "!" in s:
        es, _, s = s.partition("!")
        if not es.isdigit():
            return None
        e = int(es)
    i = len(s) - len(s.lstrip("0123456789."))
    if i and s[i - 1] == ".":
        i -= 1
    rel = s[:i].split(".")
    for x in rel:
        if not x.isdigit():
            return None
    rel = tuple(map(int, rel))
    pre = post = dev = lt = None
    if i < len(s):
        pre, i = _vm_seg(s, i, _vm_PRE)
        if s[i:i + 1] == "-" and s[i + 1:i + 2].isdigit():
            k = len(s) - len(s[i + 1:].lstrip(_vm_D))
            post, i = int(s[i + 1:k]), k
        else:
            post, i = _vm_seg(s, i, _vm_POST)
            post = post and post[1]
        dev, i = _vm_seg(s, i, _vm_DEV)
        dev = dev and dev[1]
        if i != len(s):
            return None
    if plus:
        lt = loc.replace("-", ".").replace("_", ".").split(".")
        for x in lt:
            if not x.isalnum():
                return None
        lt = tuple((int(x), "") if x.isdigit() else (-1, x) for x in lt)
    return _vm_key(e, rel, pre, post, dev, lt), e, rel, pre, post, dev, lt


def _vm_parts(p):
    # packaging.specifiers._version_split(str(public version))
    x = [str(p[1]), *map(str, p[2])]
    if p[3] is not None:
        x.append(("a", "b", "rc")[p[3][0]] + str(p[3][1]))
    if p[4] is not None:
        x.append(f"post{p[4]}")
    if p[5] is not None:
        x.append(f"dev{p[5]}")
    return x


def _vm_vsplit(s):
    # packaging.specifiers._version_split on a raw string
    e, _, s = s.rpartition("!")
    out = [e or "0"]
    for it in s.split("."):
        t = it.lstrip(_vm_D)
        k = 2 if t[:2] == "rc" else int(t[:1] in ("a", "b", "c"))
        out += [it[:len(it) - len(t)], t] if t != it and k and t[k:].isdigit() else [it]
    return out


def _vm_wsplit(w):
    # Specifier._get_wildcard_split: split of canonicalize_version(w) + numeric prefix length
    q = _vm_parse(w)
    sp = _vm_vsplit(w) if q is None else _vm_parts(q)
    n = 0
    while n < len(sp) and sp[n].isdigit():
        n += 1
    return sp, n


def _vm_wild(p, w):
    # prefix match (==X.*): zero-pad the release, compare the leading segments
    sp, n = w
    x = _vm_parts(p)
    m = len(p[2]) + 1
    if m < n:
        x[m:m] = ["0"] * (n - m)
    return x[:len(sp)] == sp


def _vm_compile(spec):
    out = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        op = next((o for o in _vm_OPS if item.startswith(o)), "")
        v = item[len(op):].strip()
        if op == "===":
            if ";" in v or ")" in v or len(v.split()) > 1:
                raise ValueError(f"Invalid specifier: {item!r}")
            out.append((op, v.lower(), None))
            continue
        w = op in ("==", "!=") and v[-2:] == ".*"
        q = _vm_parse(v[:-2] if w else v) if op and v.split() == [v] else None
        if (q is None or (w and q[3:] != (None, None, None, None))
                or (q[6] is not None and op not in ("==", "!="))
                or (op == "~=" and len(q[2]) < 2)):
            raise ValueError(f"Invalid specifier: {item!r}")
        x = None
        if w:
            op, q = op + "*", _vm_wsplit(v[:-2])
        elif op == "~=":
            kept = []
            for it in _vm_vsplit(v):
                if it.startswith(_vm_SUF):
                    break
                kept.append(it)
            x = _vm_wsplit(kept[0] + "!" + ".".join(kept[1:-1]))
        elif op == "<":
            x = _vm_key(q[1], q[2], None, q[4], 0, None)
        out.append((op, q, x))
    return out


def spec_contains(spec: str, version: str) -> bool:
    cs = _vm_cache.get(spec)
    if cs is None:
        cs = _vm_cache[spec] = _vm_compile(spec)
    p = _vm_parse(version) if cs else None
    for op, q, x in cs:
        if op == "===":
            ok = version.lower() == q
        elif p is None:
            return False
        elif op in ("==*", "!=*"):
            ok = _vm_wild(p, q) != (op == "!=*")
        elif op in ("==", "!="):
            ok = ((p[0] if q[6] is not None else p[0][:3]) == q[0]) != (op == "!=")
        elif op == "<=":
            ok = p[0][:3] <= q[0]
        elif op == ">=":
            ok = p[0][:3] >= q[0]
        elif op == "~=":
            ok = p[0][:3] >= q[0] and _vm_wild(p, x)
        elif op == "<":
            ok = p[0] < q[0] and not (q[3] is None and q[5] is None and p[0] >= x
                                      and (p[3] is not None or p[5] is not None))
        else:
            ok = p[0] > q[0] and not (
                (q[4] is None and p[4] is not None
                 and _vm_key(p[1], p[2], p[3], None, None, None) == q[0])
                or (p[6] is not None and p[0][:3] == q[0]))
        if not ok:
            return False
    return True
