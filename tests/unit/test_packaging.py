"""Every source folder must be listed as a package, or a non-editable install loses it."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP = ["agent", "gossip", "raft", "catalog", "checks", "cli"]


def test_every_source_folder_is_a_listed_package() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {"murmur"}
    for top in TOP:
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            found.add("murmur." + ".".join(rel.parts))
    missing = found - listed
    assert not missing, f"folders not listed in pyproject packages: {sorted(missing)}"
    for name in listed - {"murmur"}:
        assert cfg["package-dir"][name] == name.removeprefix("murmur.").replace(".", "/")
