"""The fault lab's delay hook (agent/labdelay.py): off without its variable, re-read at most once a second."""

from __future__ import annotations

from pathlib import Path

import pytest
from murmur.agent import labdelay
from murmur.agent.labdelay import LabDelay


def test_without_a_file_there_is_no_delay() -> None:
    assert LabDelay("").seconds() == 0.0
    assert LabDelay("/nonexistent/delay").seconds() == 0.0


def test_the_file_sets_a_range_in_ms_re_read_at_most_once_a_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(labdelay.time, "monotonic", lambda: now[0])
    f = tmp_path / "delay"
    f.write_text("100 400\n")
    d = LabDelay(str(f))
    xs = [d.seconds() for _ in range(200)]
    assert all(0.1 <= x <= 0.4 for x in xs) and max(xs) - min(xs) > 0.1
    f.unlink()
    now[0] += 0.5
    assert 0.1 <= d.seconds() <= 0.4  # not re-read yet
    now[0] += 0.6
    assert d.seconds() == 0.0
    f.write_text("250")
    now[0] += 1.0
    assert d.seconds() == 0.25
    f.write_text("garbage")
    now[0] += 1.0
    assert d.seconds() == 0.0
    f.write_text("500 99999999")  # capped at 10 s
    now[0] += 1.0
    assert 0.5 <= d.seconds() <= 10.0
