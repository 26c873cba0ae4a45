#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Checks the Rust definitions of the C API against hmm_rs.h.

The functions hmm_rs.h declares are defined in Rust (c_api.rs, #[no_mangle])
and exported by hmm_rs_api.c; nothing else compares the Rust signatures with
the C prototypes (the C compiler never sees the Rust ones, the linker and
modpost match names only). This script does: every function exported by
hmm_rs_api.c must be declared in hmm_rs.h and defined in c_api.rs with the
same number of parameters, each of the Rust type that stands for the C one
(TYPES below); the same for the walk callbacks' typedefs and their Rust
aliases, and for the members of the structures c_api.rs copies (the
callbacks' signatures included). The layouts the C compiler gives the
structures are checked at run time, by the hmm_rs_c_header KUnit suite.

    check-c-api.py HMM_RS_H C_API_RS HMM_RS_API_C

With --driver, the other side: the Rust driver API (rust/hmm_rs_driver.rs)
declares hmm_rs.h's functions, structures and constants again for driver
crates, spelled as in C (extern "C" block, #[repr(C)] copies, consts).
Each function it declares must be in hmm_rs.h with the same parameters,
each copied structure must have the header's members and types; and the
layout numbers it asserts (check_size!, check_offset!, check_value!) must
be exactly those its C half asserts on the header (HMM_RS_DRV_SIZE,
_OFFSET, _VALUE in rust/hmm_rs_driver_helpers.c), which must cover every
member of every copy and every constant:

    check-c-api.py --driver HMM_RS_H HMM_RS_DRIVER_RS HMM_RS_DRIVER_HELPERS_C

Exits 1 and names each difference if they do not match.
"""
import re
import sys

# C type (whitespace-normalised) -> the Rust types that stand for it, with
# the kernel::ffi::, core::ffi:: and bindings:: prefixes removed.
TYPES = {
    "void": [""],
    "int": ["c_int"],
    "long": ["c_long"],
    "unsigned int": ["c_uint"],
    "unsigned long": ["c_ulong"],
    "bool": ["bool"],
    "u32": ["u32"],
    "s32": ["i32"],
    "u64": ["u64"],
    "phys_addr_t": ["phys_addr_t"],
    "enum hmm_rs_event_type": ["u32"],
    "void *": ["*mut c_void"],
    "u32 *": ["*mut u32"],
    "unsigned long *": ["*mut c_ulong"],
    "hmm_rs_walk_fn": ["Option<CWalkFn>"],
    "hmm_rs_dma_walk_fn": ["Option<CDmaWalkFn>"],
}
# struct X * -> the Rust type behind it.
STRUCTS = {
    "hmm_rs_device": "CDevice",
    "hmm_rs_device_ops": "CDeviceOps",
    "hmm_rs_mirror": "HmmMirror",
    "hmm_rs_devmem": "DevMem",
    "hmm_rs_devmem_ops": "CDevMemOps",
    "mm_struct": "mm_struct",
    "device": "device",
    "page": "page",
    "hmm_rs_event": "CEvent",
    "hmm_rs_fault_req": "CFaultReq",
}
# C callback typedef -> its Rust alias in c_api.rs.
TYPEDEFS = {"hmm_rs_walk_fn": "CWalkFn", "hmm_rs_dma_walk_fn": "CDmaWalkFn"}
# C struct -> its #[repr(C)] copy in c_api.rs; C member names Rust spells
# otherwise.
COPIES = {
    "hmm_rs_event": "CEvent",
    "hmm_rs_device_ops": "CDeviceOps",
    "hmm_rs_devmem_ops": "CDevMemOps",
    "hmm_rs_fault_req": "CFaultReq",
}
MEMBERS = {"type": "ty"}


def rust_types(c):
    """The Rust types that may stand for C type @c."""
    c = " ".join(c.replace("*", " * ").split()).replace(" *", "*").replace("*", " *")
    if c in TYPES:
        return TYPES[c]
    m = re.fullmatch(r"(const )?struct (\w+) \*", c)
    if m and m.group(2) in STRUCTS:
        t = STRUCTS[m.group(2)]
        # A const pointer must stay const; an opaque handle may be either.
        return [f"*const {t}"] if m.group(1) else [f"*mut {t}", f"*const {t}"]
    return []


def split_params(s):
    """Splits a parameter list at the commas outside brackets."""
    out, depth, cur = [], 0, ""
    for i, ch in enumerate(s):
        if ch in "(<[":
            depth += 1
        elif ch in ")]" or (ch == ">" and s[i - 1 : i] != "-"):
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return [p.strip() for p in out]


def c_param_type(p):
    """The type of C parameter @p (its name removed)."""
    p = " ".join(p.split())
    if p == "void":
        return None
    m = re.fullmatch(r"(.*?[\s*])(\w+)", p)
    return m.group(1).strip() if m else p


def norm_rust(t):
    t = re.sub(r"\b(kernel::ffi|core::ffi|bindings)::", "", t)
    return " ".join(t.replace("*", " *").split()).replace("* ", "*")


def parse_c(header):
    text = re.sub(r"/\*.*?\*/", " ", header, flags=re.S)
    text = re.sub(r"^\s*#.*$", " ", text, flags=re.M)
    text = " ".join(text.split())
    protos = {}
    for m in re.finditer(r"([\w\s*]+?)\b(hmm_rs_\w+)\s*\(([^()]*)\)\s*;", text):
        ret = m.group(1).strip()
        ret = ret.split(";")[-1].split("}")[-1].strip()
        params = [c_param_type(p) for p in split_params(m.group(3))]
        protos[m.group(2)] = (ret, [p for p in params if p is not None])
    typedefs = {}
    for m in re.finditer(r"typedef ([\w\s*]+?)\s*\(\s*\*\s*(\w+)\s*\)\s*\(([^()]*)\)\s*;", text):
        params = [c_param_type(p) for p in split_params(m.group(3))]
        typedefs[m.group(2)] = (m.group(1).strip(), [p for p in params if p is not None])
    structs = {}
    for m in re.finditer(r"struct (\w+) \{(.*?)\};", text):
        members = {}
        for decl in filter(None, (d.strip() for d in m.group(2).split(";"))):
            f = re.fullmatch(r"([\w\s*]+?)\s*\(\s*\*\s*(\w+)\s*\)\s*\((.*)\)", decl)
            if f:
                params = [c_param_type(p) for p in split_params(f.group(3))]
                members[f.group(2)] = ("fn", f.group(1).strip(), [p for p in params if p])
            else:
                members[decl.split()[-1]] = ("data", c_param_type(decl))
        structs[m.group(1)] = members
    return protos, typedefs, structs


def parse_fns(text, pat):
    """Name -> (return type, parameter types) of the functions @pat finds."""
    fns = {}
    for m in re.finditer(pat, text, flags=re.S):
        params = [norm_rust(p.split(":", 1)[1]) for p in split_params(m.group(2))]
        fns[m.group(1)] = (norm_rust(m.group(3) or ""), params)
    return fns


def parse_aliases(text):
    """The `type X = unsafe extern "C" fn(...)` aliases of @text."""
    aliases = {}
    pat = r'type (\w+)\s*=\s*unsafe extern "C" fn\s*\((.*?)\)\s*(?:->\s*([^;]+?))?\s*;'
    for m in re.finditer(pat, text, flags=re.S):
        params = [norm_rust(p) for p in split_params(m.group(2))]
        aliases[m.group(1)] = (norm_rust(m.group(3) or ""), params)
    return aliases


def parse_rust(src):
    text = re.sub(r"//.*$", "", src, flags=re.M)
    pat = r'#\[no_mangle\]\s*(?:pub(?:\([\w:]+\))?\s+)?unsafe extern "C" fn (\w+)\s*\((.*?)\)\s*(?:->\s*([^{]+?))?\s*\{'
    fns = parse_fns(text, pat)
    aliases = parse_aliases(text)
    structs = {}
    for m in re.finditer(r"struct (\w+) \{(.*?)\n\}", text, flags=re.S):
        structs[m.group(1)] = parse_members(m.group(2), aliases)
    return fns, aliases, structs


def parse_members(body, aliases):
    """Member -> ("fn", return, parameters) or ("data", type) of a struct
    body; members named _* (padding, opaque markers) are left out."""
    members = {}
    for field in split_params(body):
        name, ty = (x.strip() for x in field.split(":", 1))
        if name.startswith("_"):
            continue
        f = re.fullmatch(r'Option<\s*unsafe extern "C" fn\s*\((.*)\)\s*(?:->\s*(.+?))?\s*,?\s*>', ty, re.S)
        a = re.fullmatch(r"Option<\s*(\w+)\s*>", ty)
        if f:
            params = [norm_rust(p) for p in split_params(f.group(1))]
            members[name] = ("fn", norm_rust(f.group(2) or ""), params)
        elif a and a.group(1) in aliases:
            members[name] = ("fn",) + aliases[a.group(1)]
        else:
            members[name] = ("data", norm_rust(ty))
    return members


def compare(what, c, rust, errors):
    (c_ret, c_params), (r_ret, r_params) = c, rust
    if r_ret not in rust_types(c_ret):
        errors.append(f"{what}: returns {c_ret} in C, {r_ret or '()'} in Rust")
    if len(c_params) != len(r_params):
        errors.append(f"{what}: {len(c_params)} parameters in C, {len(r_params)} in Rust")
        return
    for i, (cp, rp) in enumerate(zip(c_params, r_params)):
        allowed = rust_types(cp)
        if not allowed:
            errors.append(f"{what}: parameter {i + 1}: no Rust type known for C {cp}")
        elif rp not in allowed:
            errors.append(f"{what}: parameter {i + 1}: {cp} in C, {rp} in Rust")


def compare_struct(c_name, c_members, r_members, where, errors):
    """A struct of hmm_rs.h against its Rust copy: members, in order, with
    the Rust types that stand for the C ones."""
    if c_members is None or r_members is None:
        errors.append(f"struct {c_name}: missing in hmm_rs.h, or {where}")
        return
    c_names = [MEMBERS.get(n, n) for n in c_members]
    if c_names != list(r_members):
        errors.append(f"struct {c_name}: members {c_names} in C, {list(r_members)} in Rust")
        return
    for (n, c), r in zip(c_members.items(), r_members.values()):
        what = f"struct {c_name}.{n}"
        if c[0] != r[0]:
            errors.append(f"{what}: a function pointer on one side only")
        elif c[0] == "fn":
            compare(what, c[1:], r[1:], errors)
        elif r[1] not in rust_types(c[1]):
            errors.append(f"{what}: {c[1]} in C, {r[1]} in Rust")


def parse_driver(src):
    """The driver API's extern functions, structures, walk alias, consts."""
    text = re.sub(r"//.*$", "", src, flags=re.M)
    # The C API's functions; the helpers (hmm_rs_drv_*) are not in hmm_rs.h.
    pat = r"pub\(super\) fn (hmm_rs_(?!drv_)\w+)\s*\((.*?)\)\s*(?:->\s*([^;]+?))?\s*;"
    fns = parse_fns(text, pat)
    aliases = parse_aliases(text)
    structs = {}
    for m in re.finditer(r"struct (hmm_rs_\w+) \{(.*?)\n    \}", text, flags=re.S):
        members = parse_members(m.group(2).replace("pub(super) ", ""), aliases)
        if members:
            structs[m.group(1)] = members
    consts = {}
    for m in re.finditer(r"pub\(super\) const (HMM_RS_\w+): \w+ = (\d+);", text):
        consts[m.group(1)] = int(m.group(2))
    return fns, aliases, structs, consts


def layout_lines(text, size, offset, value):
    """The (kind, names..., number) lines of one side of the layout check."""
    lines = set()
    for m in re.finditer(size + r"\((\w+), (\d+)\);", text):
        lines.add(("size", m.group(1), int(m.group(2))))
    for m in re.finditer(offset + r"\((\w+), (\w+), (\d+)\);", text):
        lines.add(("offset", m.group(1), MEMBERS.get(m.group(2), m.group(2)), int(m.group(3))))
    for m in re.finditer(value + r"\((HMM_RS_\w+), (\d+)\);", text):
        lines.add(("value", m.group(1), int(m.group(2))))
    return lines


def main_driver(header, rust, helpers):
    global STRUCTS, TYPEDEFS, MEMBERS
    protos, typedefs, c_structs = parse_c(header)
    fns, aliases, r_structs, consts = parse_driver(rust)
    # The driver API spells C's names as C does.
    STRUCTS = {k: k for k in STRUCTS}
    TYPES["hmm_rs_walk_fn"] = ["Option<hmm_rs_walk_fn>"]
    MEMBERS = {"type": "type_"}
    errors = []
    if not fns:
        errors.append("no hmm_rs_* function declared in the driver API")
    for name, sig in fns.items():
        if name not in protos:
            errors.append(f"{name}: declared in the driver API, not in hmm_rs.h")
        else:
            compare(name, protos[name], sig, errors)
    if "hmm_rs_walk_fn" not in aliases:
        errors.append("hmm_rs_walk_fn: no alias in the driver API")
    else:
        compare("hmm_rs_walk_fn", typedefs["hmm_rs_walk_fn"], aliases["hmm_rs_walk_fn"], errors)
    for c_name in COPIES:
        compare_struct(c_name, c_structs.get(c_name), r_structs.get(c_name),
                       "in the driver API", errors)
    r_lines = layout_lines(rust, "check_size!", "check_offset!", "check_value!")
    c_lines = layout_lines(helpers, "HMM_RS_DRV_SIZE", "HMM_RS_DRV_OFFSET", "HMM_RS_DRV_VALUE")
    for line in sorted(c_lines - r_lines, key=str):
        errors.append(f"layout: {line} asserted in C only")
    for line in sorted(r_lines - c_lines, key=str):
        errors.append(f"layout: {line} asserted in Rust only")
    for c_name in COPIES:
        if ("size", c_name) not in {l[:2] for l in c_lines}:
            errors.append(f"layout: no size of struct {c_name}")
        for n in c_structs.get(c_name, {}):
            if not any(l[:3] == ("offset", c_name, MEMBERS.get(n, n)) for l in c_lines):
                errors.append(f"layout: no offset of struct {c_name}.{n}")
    for name, v in consts.items():
        if ("value", name, v) not in c_lines:
            errors.append(f"{name}: {v} in the driver API, not asserted so on hmm_rs.h")
    return errors


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--driver":
        errors = main_driver(*(open(f, encoding="utf-8").read() for f in sys.argv[2:]))
        for e in errors:
            print(f"check-c-api --driver: {e}", file=sys.stderr)
        sys.exit(1 if errors else 0)
    if len(sys.argv) != 4:
        sys.exit(__doc__.split("\n\n")[2])
    header, rust, api = (open(f, encoding="utf-8").read() for f in sys.argv[1:])
    protos, typedefs, c_structs = parse_c(header)
    fns, aliases, r_structs = parse_rust(rust)
    exports = re.findall(r"^HMM_RS_EXPORT\((\w+)\);", api, flags=re.M)
    errors = []
    for name in exports:
        if name not in protos:
            errors.append(f"{name}: exported, but not declared in hmm_rs.h")
        elif name not in fns:
            errors.append(f"{name}: exported, but not defined in c_api.rs")
        else:
            compare(name, protos[name], fns[name], errors)
    for name in protos:
        if name not in exports:
            errors.append(f"{name}: declared in hmm_rs.h, but not exported")
    for c_name, r_name in TYPEDEFS.items():
        if c_name not in typedefs or r_name not in aliases:
            errors.append(f"{c_name}: missing in hmm_rs.h, or {r_name} in c_api.rs")
        else:
            compare(f"{c_name} ({r_name})", typedefs[c_name], aliases[r_name], errors)
    for c_name, r_name in COPIES.items():
        compare_struct(c_name, c_structs.get(c_name), r_structs.get(r_name),
                       f"{r_name} in c_api.rs", errors)
    for e in errors:
        print(f"check-c-api: {e}", file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
