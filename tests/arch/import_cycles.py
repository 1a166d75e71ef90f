#!/usr/bin/env python3
"""Fail when the modules of a crate import each other in a loop.

Usage: import_cycles.py CRATE_SRC_DIR...  (e.g. node/src fs/src)

A module is a file (`a/b.rs` or `a/b/mod.rs` is `a::b`). It depends on another when its code
(outside comments and its `#[cfg(test)] mod tests`) names a path into it: `crate::x::y`,
`super::x`, `self::x`, also inside `use` groups. Declaring a child (`mod x;`) is not a
dependency. Strongly connected components of more than one module are reported with the
edges that close them. Written here rather than taken from a crate: the `cargo-modules`
style tools need a full compiler front end and network installs; this needs python3 only.
"""
import os
import re
import sys

PATH = re.compile(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE = re.compile(r"use\s+((?:crate|super|self)::[^;]*);", re.S)
TESTS = re.compile(r"#\[cfg\(test\)\]\s*mod tests")


def module_name(root, path):
    parts = os.path.relpath(path, root)[:-3].split("/")
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts)


def resolve(modules, current, path):
    parts = path.split("::")
    if parts[0] == "crate":
        parts = parts[1:]
    elif parts[0] == "super":
        base = current.split("::") if current else []
        while parts and parts[0] == "super":
            base, parts = base[:-1], parts[1:]
        parts = base + parts
    elif parts[0] == "self":
        parts = (current.split("::") if current else []) + parts[1:]
    for i in range(len(parts), 0, -1):
        name = "::".join(parts[:i])
        if name in modules:
            return name
    return None


def edges_of(root):
    files = [
        os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".rs")
    ]
    modules = {module_name(root, f): f for f in files}
    edges = {m: set() for m in modules}
    for m, f in modules.items():
        with open(f, encoding="utf-8") as fh:
            src = TESTS.split(fh.read())[0]
        src = re.sub(r"//[^\n]*", "", src)
        paths = set(PATH.findall(src))
        for use in USE.findall(src):
            use = re.sub(r"\s+", "", use)
            group = re.match(r"(.*)::\{(.*)\}$", use)
            if group:
                for item in group.group(2).split(","):
                    if item:
                        paths.add(group.group(1) + "::" + item.split("::{")[0])
        for p in paths:
            target = resolve(modules, m, p)
            if target and target != m:
                edges[m].add(target)
    return edges


def cycles(edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    failed = False
    for root in sys.argv[1:]:
        edges = edges_of(root)
        found = cycles(edges)
        for comp in found:
            print(f"{root}: {len(comp)} modules import each other in a loop:")
            for m in comp:
                print(f"  {m or '(crate root)'} -> {', '.join(sorted(edges[m] & set(comp)))}")
        if not found:
            print(f"{root}: no import cycles among {len(edges)} modules")
        failed |= bool(found)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
