#!/usr/bin/env python3
"""Fails when a workspace member declares a dependency its sources never name.

For each member's Cargo.toml, every dependency's crate name (the key with dashes as underscores,
so a `package =` rename counts by its new name; a path dependency's `[lib] name` when it sets
one) must appear as a path (`name::`, `use name`, `extern crate name`) in the member's sources:
build.rs for [build-dependencies]; src/, build.rs, tests/, benches/ and examples/ otherwise (a
normal dependency only the tests use is misplaced, not unused: not this script's concern). A dependency kept only for a feature it turns on
goes in `[package.metadata.cargo-machete] ignored = ["name"]` with a comment saying why.

Cheaper than cargo-machete or cargo-udeps in CI: no build, stdlib only. Usage:
    scripts/check-unused-deps.py [WORKSPACE_ROOT]
"""

import re
import sys
import tomllib
from pathlib import Path

EVERYWHERE = ("src", "build.rs", "tests", "benches", "examples")
SECTIONS = {
    "dependencies": EVERYWHERE,
    "build-dependencies": ("build.rs",),
    "dev-dependencies": EVERYWHERE,
}


def members(root: Path) -> list[Path]:
    manifest = tomllib.loads((root / "Cargo.toml").read_text())
    out = []
    for pattern in manifest.get("workspace", {}).get("members", []):
        out.extend(sorted(p for p in root.glob(pattern) if (p / "Cargo.toml").is_file()))
    return out


def sources(member: Path, places: tuple[str, ...]) -> str:
    text = []
    for place in places:
        p = member / place
        files = [p] if p.is_file() else sorted(p.rglob("*.rs")) if p.is_dir() else []
        text.extend(f.read_text(errors="replace") for f in files)
    return "\n".join(text)


def used(name: str, text: str) -> bool:
    ident = re.escape(name)
    pattern = rf"(?<![\w:]){ident}\s*::|\buse\s+{ident}\b|\bextern\s+crate\s+{ident}\b"
    return re.search(pattern, text) is not None


def crate_name(key: str, spec, member: Path, root: Path, workspace_deps: dict) -> str:
    """The name the code uses for dependency `key`."""
    path = None
    if isinstance(spec, dict):
        if "path" in spec:
            path = member / spec["path"]
        elif spec.get("workspace") and isinstance(workspace_deps.get(key), dict):
            if "path" in workspace_deps[key]:
                path = root / workspace_deps[key]["path"]
        if "package" in spec:
            return key.replace("-", "_")
    if path is not None and (path / "Cargo.toml").is_file():
        lib = tomllib.loads((path / "Cargo.toml").read_text()).get("lib", {})
        if "name" in lib:
            return lib["name"]
    return key.replace("-", "_")


def check(member: Path, root: Path, workspace_deps: dict) -> list[str]:
    manifest = tomllib.loads((member / "Cargo.toml").read_text())
    meta = manifest.get("package", {}).get("metadata", {}).get("cargo-machete", {})
    ignored = set(meta.get("ignored", []))
    problems = []
    cache: dict[tuple[str, ...], str] = {}
    for section, places in SECTIONS.items():
        for key, spec in manifest.get(section, {}).items():
            crate = crate_name(key, spec, member, root, workspace_deps)
            if key in ignored or crate in ignored:
                continue
            if places not in cache:
                cache[places] = sources(member, places)
            if not used(crate, cache[places]):
                problems.append(f"{member.relative_to(root)}/Cargo.toml: [{section}] {key} is never used")
    return problems


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    workspace_deps = (
        tomllib.loads((root / "Cargo.toml").read_text())
        .get("workspace", {})
        .get("dependencies", {})
    )
    problems = [p for m in members(root) for p in check(m, root, workspace_deps)]
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} unused dependencies (remove them, or list a feature-only one "
              "under [package.metadata.cargo-machete] ignored)", file=sys.stderr)
        return 1
    print("no unused dependencies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
