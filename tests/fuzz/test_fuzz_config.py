"""Fuzzing config loading (agent/config.py): TOML and Consul-style JSON files.

Rules: `config.load` returns a RuntimeConfig or raises ConfigError (which names the file, the
key and the reason); `validate_paths` (murmur validate) returns its lists and never raises.

Inputs: the reference files (examples/dev) with every commented-out key switched on and some
values replaced by other TOML literals, lines dropped or repeated; the same configuration as
JSON with fields replaced at any depth; and random text.
"""

from __future__ import annotations

import json
import re
import tempfile
import tomllib
from pathlib import Path

from hypothesis import strategies as st
from murmur.agent import config

from .fuzzing import fuzz, mutated, values

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "dev").glob("*.toml"))
KEY_LINE = re.compile(r"^#\s?([a-z_]+(\.[a-z_]+)*\s*=\s*.*)$")


def _lines(path: Path) -> list[str]:
    """The file's lines, with each commented-out key switched on unless its table sets it already."""
    out: list[str] = []
    seen: set[str] = set()
    for line in path.read_text().splitlines():
        if re.match(r"^# ?\[[a-z_.]+\]\s*$", line):
            line = line.lstrip("# ")
        if line.startswith("["):
            seen = set()
        m = KEY_LINE.match(line)
        key = (m.group(1) if m else line).split("=", 1)[0].strip()
        if m and key not in seen and _parses(m.group(1)):
            line = m.group(1)
        if "=" in line and not line.startswith("#"):
            seen.add(key)
        out.append(line)
    return out if _parses("\n".join(out)) else path.read_text().splitlines()


def _parses(text: str) -> bool:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True


# The reference files as they are, and agent.toml with every documented key switched on.
TOML_LINES = [p.read_text().splitlines() for p in EXAMPLES] + [_lines(ROOT / "examples" / "dev" / "agent.toml")]
PARSED = [tomllib.loads("\n".join(lines)) for lines in TOML_LINES]  # the switched-on files still parse
JSON_DOCS = [json.loads(p.read_text()) for p in sorted((ROOT / "examples" / "dev").glob("*.json"))]

toml_literals = st.one_of(
    st.text(max_size=12).map(json.dumps), st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["-1", "0", "65536", "true", "false", "1.5", "nan", "inf", "1979-05-27", "07:32:00",
                     "[]", "[1, \"a\"]", "{}", "{ a = 1 }", "\"\"", "\"0s\"", "\"-5s\"", "\"10.0.0.1\"",
                     "\"::1\"", "\"not an ip\"", "\"1h\"", "[\"x\", \"\"]", "'''multi\nline'''", "\"\\u0000\"",
                     '"1' + "0" * 400 + 's"', '"99999999999999h"', "1e400", "18446744073709551616"]))


@st.composite
def toml_files(draw: st.DrawFn) -> str:
    lines = list(draw(st.sampled_from(TOML_LINES)))
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.integers(0, 4))
        if op <= 2 and "=" in lines[i] and not lines[i].lstrip().startswith("#"):
            key = lines[i].split("=", 1)[0]
            lines[i] = f"{key}= {draw(toml_literals)}"
        elif op == 3:
            del lines[i]
        else:
            lines.insert(i, lines[draw(st.integers(0, len(lines) - 1))])
    return "\n".join(lines)


json_files = st.one_of(
    st.sampled_from([*PARSED, *JSON_DOCS]).flatmap(mutated).map(lambda v: json.dumps(v, default=repr)),
    values.map(lambda v: json.dumps(v, default=repr)),
    st.sampled_from([*PARSED, *JSON_DOCS]).map(json.dumps).flatmap(
        lambda s: st.integers(0, len(s)).map(lambda n: s[:n])),
)
files = st.one_of(toml_files().map(lambda t: ("toml", t)), json_files.map(lambda t: ("json", t)),
                  st.tuples(st.sampled_from(["toml", "json"]), st.text(max_size=80)))


@fuzz(st.lists(files, min_size=1, max_size=2))
def test_fuzz_config_files(docs: list[tuple[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for i, (ext, text) in enumerate(docs):
            (Path(tmp) / f"{i}.{ext}").write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            cfg = config.load([tmp], dev=True)
        except config.ConfigError as exc:
            assert str(exc)
        else:
            assert isinstance(cfg, config.RuntimeConfig)
        errors, warnings = config.validate_paths([tmp])
        assert isinstance(errors, list) and isinstance(warnings, list)
