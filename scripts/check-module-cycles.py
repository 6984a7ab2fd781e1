#!/usr/bin/env python3
"""Fails when modules of one crate depend on each other in a cycle.

For every library or binary crate of the workspace it maps each source file to its module path
(`src/a.rs` and `src/a/mod.rs` are `a`, `src/a/b.rs` is `a::b`, `#[path]` and inline `mod x {}`
honoured), collects the `crate::…`, `super::…` and `self::…` paths each module names (grouped
`use crate::{a, b::c}` too), and draws an edge between the two sibling modules under the paths'
common parent: at the top level that is between top-level modules, inside a folder between its
submodules. A strongly connected group of siblings is a cycle: shared types belong in a module
below both, not in either.

Usage: scripts/check-module-cycles.py [--allow FILE] [WORKSPACE_ROOT]
FILE lists known cycles, one per line, exactly as this script prints them (`#` comments); they
are reported but do not fail the check.
"""

import re
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

TOKEN = re.compile(
    r"(?P<path>(?<![\w$])(?:crate|super|self)(?:\s*::\s*(?:\w+|\{))+)"
    r"|(?P<pathattr>#\[path\s*=\s*\"(?P<pathfile>[^\"]+)\"\])"
    r"|(?P<mod>\bmod\s+(?P<modname>\w+)\s*(?P<modend>[;{]))"
    r"|(?P<open>\{)|(?P<close>\})"
)


def strip(text: str) -> str:
    """Blanks out comments and string/char literals, keeping offsets and newlines."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            j = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            # Keep `#[path = "…"]` readable.
            if re.search(r"#\[path\s*=\s*$", text[max(0, i - 40):i]):
                out.append(text[i:j])
            else:
                out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]) or c == "'" and re.match(r"'\\u\{[0-9a-fA-F]+\}'", text[i:]):
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def group_heads(text: str, start: int) -> tuple[list[list[str]], int]:
    """The paths inside a `{…}` use-group starting after `start` (the `{`), and where it ends."""
    depth, i, item, items = 1, start, "", []
    while i < len(text) and depth:
        c = text[i]
        if c == "{":
            depth += 1
            item += c
        elif c == "}":
            depth -= 1
            if depth:
                item += c
        elif c == "," and depth == 1:
            items.append(item)
            item = ""
        else:
            item += c
        i += 1
    items.append(item)
    paths = []
    for it in items:
        head = re.match(r"\s*((?:\w+\s*::\s*)*\w+)", it)
        if head and head.group(1).split("::")[0].strip() not in ("self", ""):
            paths.append([p.strip() for p in head.group(1).split("::")])
    return paths, i


class Crate:
    def __init__(self, name: str, root_file: Path, root: Path):
        self.root = root
        self.name = name
        self.modules: set[tuple[str, ...]] = {()}
        # (from module, to path, file, line)
        self.refs: list[tuple[tuple[str, ...], list[str], Path, int]] = []
        self.seen: set[Path] = set()
        self.load(root_file, (), is_root=True)

    def load(self, file: Path, module: tuple[str, ...], is_root: bool = False):
        if file in self.seen or not file.is_file():
            return
        self.seen.add(file)
        self.modules.add(module)
        text = strip(file.read_text(errors="replace"))
        # Where child files of this file's module live.
        if is_root or file.name == "mod.rs":
            child_dir = file.parent
        else:
            child_dir = file.parent / file.stem
        stack: list[tuple[tuple[str, ...], int]] = [(module, 0)]
        depth = 0
        pending_path = None
        pos = 0
        while True:
            m = TOKEN.search(text, pos)
            if not m:
                break
            pos = m.end()
            current = stack[-1][0]
            line = text.count("\n", 0, m.start()) + 1
            if m.group("open"):
                depth += 1
            elif m.group("close"):
                depth -= 1
                if len(stack) > 1 and depth < stack[-1][1]:
                    stack.pop()
            elif m.group("pathattr"):
                pending_path = m.group("pathfile")
            elif m.group("mod"):
                name = m.group("modname")
                sub = current + (name,)
                self.modules.add(sub)
                if m.group("modend") == "{":
                    depth += 1
                    stack.append((sub, depth))
                else:
                    if pending_path:
                        self.load(file.parent / pending_path, sub)
                    elif current == module:
                        for cand in (child_dir / f"{name}.rs", child_dir / name / "mod.rs"):
                            if cand.is_file():
                                self.load(cand, sub)
                                break
                pending_path = None
            elif m.group("path"):
                parts = [p.strip() for p in m.group("path").split("::")]
                base: list[str]
                if parts[0] == "crate":
                    base, parts = [], parts[1:]
                else:
                    base = list(current)
                    while parts and parts[0] in ("super", "self"):
                        if parts[0] == "super":
                            base = base[:-1]
                        parts = parts[1:]
                if parts and parts[-1] == "{":
                    heads, end = group_heads(text, m.end())
                    pos = end
                    prefix = base + parts[:-1]
                    for h in heads:
                        self.refs.append((current, prefix + h, file, line))
                else:
                    self.refs.append((current, base + parts, file, line))

    def resolve(self, path: list[str]) -> tuple[str, ...]:
        """The longest prefix of `path` that is a module."""
        for n in range(len(path), -1, -1):
            if tuple(path[:n]) in self.modules:
                return tuple(path[:n])
        return ()

    def cycles(self) -> list[tuple[str, list[str], list[str]]]:
        # parent module → sibling graph, with one example per edge.
        graphs: dict[tuple[str, ...], dict[str, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))
        for src, path, file, line in self.refs:
            dst = self.resolve(path)
            k = 0
            while k < len(src) and k < len(dst) and src[k] == dst[k]:
                k += 1
            if k < len(src) and k < len(dst):
                edges = graphs[src[:k]][src[k]]
                edges.setdefault(dst[k], f"{file.relative_to(self.root)}:{line}")
        found = []
        for parent, graph in sorted(graphs.items()):
            for scc in sccs(graph):
                if len(scc) > 1:
                    level = "::".join(parent) or "crate"
                    members = sorted(scc)
                    evidence = [
                        f"{a} -> {b} ({graph[a][b]})"
                        for a in members
                        for b in sorted(graph[a])
                        if b in scc
                    ]
                    found.append((f"{self.name} [{level}]: {', '.join(members)}", evidence, members))
        return found


def sccs(graph: dict[str, dict[str, str]]) -> list[set[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []
    counter = [0]
    nodes = set(graph) | {b for a in graph for b in graph[a]}

    def visit(v: str):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            out.append(comp)

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def crates(root: Path) -> list[Crate]:
    manifest = tomllib.loads((root / "Cargo.toml").read_text())
    out = []
    for pattern in manifest.get("workspace", {}).get("members", []):
        for member in sorted(root.glob(pattern)):
            cargo = member / "Cargo.toml"
            if not cargo.is_file():
                continue
            pkg = tomllib.loads(cargo.read_text())
            lib = member / pkg.get("lib", {}).get("path", "src/lib.rs")
            if lib.is_file():
                out.append(Crate(str(member.relative_to(root)), lib, root))
            mains = [member / "src/main.rs"] + sorted((member / "src/bin").glob("*.rs"))
            mains += [member / b["path"] for b in pkg.get("bin", []) if "path" in b]
            for main in dict.fromkeys(mains):
                if main.is_file():
                    out.append(Crate(f"{member.relative_to(root)} ({main.relative_to(member)})", main, root))
    return out


def main() -> int:
    args = sys.argv[1:]
    allowed: set[str] = set()
    if args[:1] == ["--allow"]:
        for line in Path(args[1]).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                allowed.add(line)
        args = args[2:]
    root = Path(args[0] if args else Path(__file__).resolve().parent.parent).resolve()
    failed = 0
    seen: set[str] = set()
    for crate in crates(root):
        for title, evidence, _ in crate.cycles():
            seen.add(title)
            known = title in allowed
            print(("allowed: " if known else "cycle: ") + title)
            for e in evidence:
                print(f"    {e}")
            failed += 0 if known else 1
    for stale in sorted(allowed - seen):
        print(f"gone (remove it from the allow-list): {stale}")
    if failed:
        print(f"{failed} module cycle(s): move what both sides use into a module below them",
              file=sys.stderr)
        return 1
    print("no module cycles" + (" outside the allow-list" if seen & allowed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
