"""agent/monitor.py: levels, formats, a slow subscriber's drops, and the root level restored."""

from __future__ import annotations

import json
import logging

import pytest
import trio
from murmur.agent import monitor
from murmur.agent.monitor import LogHub, parse_level


def test_parse_level() -> None:
    assert parse_level("WARN") == logging.WARNING and parse_level("trace") == logging.DEBUG
    with pytest.raises(ValueError, match="Unknown log level: loud"):
        parse_level("loud")


def test_hub_levels_drops_and_restore(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    old_level, old_handlers = root.level, list(root.handlers)
    other = logging.StreamHandler()
    root.handlers = [other]
    root.setLevel(logging.INFO)
    monkeypatch.setattr(monitor, "QUEUE_LINES", 3)
    log = logging.getLogger("murmur.test")
    try:
        async def main() -> None:
            hub = LogHub()
            hub.install()
            text = hub.subscribe(logging.DEBUG, False)
            js = hub.subscribe(logging.WARNING, True)
            assert root.level == logging.DEBUG and other.level == logging.INFO  # stderr keeps info
            log.debug("d1")
            log.warning("w1 %s", "x")
            chunk = await text.next_chunk()
            assert "[DEBUG] murmur.test: d1" in chunk and "[WARN] murmur.test: w1 x" in chunk
            rec = json.loads((await js.next_chunk()).strip())
            assert (rec["@level"], rec["@message"], rec["@module"]) == ("warn", "w1 x", "murmur.test")
            for i in range(5):
                log.info("i%d", i)
            chunk = await text.next_chunk()
            assert "dropped 2 log lines" in chunk and "i2" in chunk and "i3" not in chunk
            hub.unsubscribe(text)
            assert root.level == logging.INFO  # only the warn subscriber: back to the agent's level
            hub.unsubscribe(js)
            assert root.level == logging.INFO
            hub.uninstall()
            assert hub not in root.handlers

        trio.run(main)
    finally:
        root.handlers = old_handlers
        root.setLevel(old_level)
