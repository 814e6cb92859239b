"""Golden-transcript Raft scenarios: one test per file in testdata/ (format: support/raftscript.py).

RAFT_REWRITE=1 pytest tests/raft/test_transcripts.py regenerates the expected outputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.raftscript import run_script

DATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(DATA.glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_transcript(path: Path) -> None:
    problems = run_script(path, rewrite=os.environ.get("RAFT_REWRITE") == "1")
    assert not problems, "\n\n".join(problems)
