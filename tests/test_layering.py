"""The import rules of the architecture: cli -> agent -> {gossip, raft, catalog, checks}.

The four cores are pure: they import none of each other, nor agent or cli, nor anything that
touches the world (trio, socket, time, os, the global random generator, ...). checks/probes.py is
the one async module the rule exempts.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORES = ("gossip", "raft", "catalog", "checks")
# Modules a pure core must never import: I/O, clocks, processes and global randomness.
IMPURE = {"trio", "socket", "time", "os", "asyncio", "subprocess", "threading", "select", "selectors",
          "httpx", "h11", "signal", "shutil", "pathlib", "datetime"}
EXEMPT = {Path("checks/probes.py")}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """Every module a source file imports, with its line, resolving `from . import`s into murmur."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append((node.lineno, "." * node.level + (node.module or "")))
            elif node.module:
                found.append((node.lineno, node.module))
                if node.module == "random":
                    # `from random import random/choice/...` reaches the global generator.
                    found.extend((node.lineno, f"random.{a.name}") for a in node.names if a.name != "Random")
    return found


def violations(core: str, relpath: str, source: str) -> list[str]:
    """Why a core module breaks the rules, one line per offending import."""
    bad = []
    depth = relpath.count("/")  # e.g. "catalog/store.py" is 1 deep inside murmur
    for line, mod in imported_modules(source):
        if mod.startswith("."):
            level = len(mod) - len(mod.lstrip("."))
            rest = mod.lstrip(".")
            if level > depth:  # climbs out of the core: ..agent, ..gossip
                target = rest.split(".")[0] if rest else ""
                if target != core:
                    bad.append(f"{relpath}:{line}: relative import {mod} leaves {core}/")
            continue
        top = mod.split(".")[0]
        if top in IMPURE or mod.startswith("random.") or (top == "random" and mod != "random"):
            bad.append(f"{relpath}:{line}: imports {mod}, which is I/O, a clock or global state")
        if top == "murmur":
            sub = mod.split(".")[1] if "." in mod else ""
            if sub != core:
                bad.append(f"{relpath}:{line}: imports {mod}; cores import only themselves")
        if top in CORES + ("agent", "cli") and top != core:
            bad.append(f"{relpath}:{line}: imports {mod}; cores import only themselves")
    return bad


def uses_global_random(source: str) -> list[int]:
    """Lines calling the module-level random functions (random.random(), random.choice(), ...)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "random" and node.attr != "Random"):
            lines.append(node.lineno)
    return lines


def test_cores_are_pure_and_independent() -> None:
    problems: list[str] = []
    for core in CORES:
        for path in sorted((ROOT / core).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel in EXEMPT:
                continue
            src = path.read_text()
            problems += violations(core, rel.as_posix(), src)
            problems += [f"{rel}:{ln}: uses the global random generator" for ln in uses_global_random(src)]
    assert problems == [], "\n".join(problems)


def test_agent_does_not_import_cli() -> None:
    problems = []
    for path in sorted((ROOT / "agent").rglob("*.py")):
        for line, mod in imported_modules(path.read_text()):
            if mod.startswith("murmur.cli") or mod.lstrip(".").startswith("cli"):
                problems.append(f"{path.relative_to(ROOT)}:{line}: agent imports {mod}")
    assert problems == []


def test_checker_catches_violations() -> None:
    """The scanner must fail on the imports it forbids, or it proves nothing."""
    bad_src = (
        "import trio\nfrom time import monotonic\nfrom ..agent import config\n"
        "from murmur.gossip import membership\nimport random\nx = random.random()\n"
        "from random import choice\n"
    )
    found = violations("catalog", "catalog/bad.py", bad_src)
    assert any("imports trio" in f for f in found)
    assert any("imports time" in f for f in found)
    assert any("leaves catalog/" in f for f in found)
    assert any("murmur.gossip" in f for f in found)
    assert any("random.choice" in f for f in found)
    assert uses_global_random(bad_src) == [6]
    # Positive control: a clean core module passes.
    good_src = "import random\nfrom dataclasses import dataclass\nfrom .commands import Register\nr = random.Random(1)\n"
    assert violations("catalog", "catalog/good.py", good_src) == []
    assert uses_global_random(good_src) == []
