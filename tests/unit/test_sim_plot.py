"""`murmur sim`: the spread curves agree with the reported percentiles; --plot draws or says why not."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

from murmur.gossip.sim import scenario
from support.procs import MURMUR, ROOT


def test_curves_match_the_reported_spread() -> None:
    r = scenario(30, 28.0, seed=3, config=None)
    fail = r["curves"]["failure"]
    assert fail and fail[-1][1] == 1.0  # everyone learned of the failure
    half = next(t for t, f in fail if f >= 0.5)
    assert half == r["failure_spread_s"]["50%"]
    assert [t for t, _ in fail] == sorted(t for t, _ in fail)
    assert r["curves"]["join"][-1][0] == r["join_spread_s"]["100%"]


def test_plot_writes_a_png_or_says_matplotlib_is_missing(tmp_path: Path) -> None:
    out = tmp_path / "spread.png"
    res = subprocess.run([*MURMUR, "sim", "-n", "20", "--seconds", "25", "--plot", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    if importlib.util.find_spec("matplotlib") is None:
        assert res.returncode != 0 and "matplotlib" in res.stderr
        assert not out.exists()
    else:
        assert res.returncode == 0, res.stderr
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
