"""`murmur kv export/import` documents: Consul's shape both ways, and every malformed entry named."""

from __future__ import annotations

import base64
import json

import pytest
from murmur.cli.kv import export_entries, parse_import


def test_export_shape_and_import_round_trip() -> None:
    api = [{"Key": "a/b", "Flags": 7, "Value": base64.b64encode(b"\x00hi").decode(), "CreateIndex": 3},
           {"Key": "a/empty", "Flags": 0, "Value": None}]
    doc = export_entries(api)
    assert doc == [{"key": "a/b", "flags": 7, "value": "AGhp"}, {"key": "a/empty", "flags": 0, "value": ""}]
    assert parse_import(json.dumps(doc).encode()) == [("a/b", 7, b"\x00hi"), ("a/empty", 0, b"")]


@pytest.mark.parametrize(("doc", "needle"), [
    ("{", "unmarshal"),
    ('{"key": "a"}', "array"),
    ('[{"flags": 0, "value": ""}]', "key"),
    ('[{"key": "", "value": ""}]', "key"),
    ('[{"key": "a", "flags": -1, "value": ""}]', "flags"),
    ('[{"key": "a", "flags": true, "value": ""}]', "flags"),
    ('[{"key": "a", "flags": 0, "value": 5}]', "value"),
    ('[{"key": "a", "flags": 0, "value": "!!!"}]', "base64"),
])
def test_malformed_documents_are_refused_with_the_reason(doc: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_import(doc.encode())
