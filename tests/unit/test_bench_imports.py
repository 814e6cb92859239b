"""The import-cost benchmark measures a real interpreter, and the agent does not import httpx."""

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root holds bench/

from bench import imports  # noqa: E402


def test_steps_are_measured_and_grow() -> None:
    rows = imports.measure()
    sizes = [mib for _, mib, _ in rows if mib is not None]
    assert len(sizes) >= 8
    assert all(b >= a - 0.5 for a, b in zip(sizes, sizes[1:], strict=False))  # cumulative
    assert sizes[0] > 1


def test_the_agent_does_not_import_httpx_or_cryptography() -> None:
    code = "import sys, murmur.cli.main, murmur.agent.agent; print(sorted({'httpx', 'cryptography'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
