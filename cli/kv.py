"""`murmur kv get|put|delete|export|import`: Consul's `consul kv` commands over /v1/kv.

Flags take Consul's single-dash spellings (`-recurse`, `-cas -modify-index=N`, ...) and the
double-dash ones. Output and exit codes follow Consul: a missing key is an error (exit 1), a CAS
that does not match is an error, `export` prints a JSON array of {"key", "flags", "value"} with
base64 values, which `import` reads back (from an argument, `@file`, or `-` for stdin).
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from typing import Any
from urllib.parse import quote

import click

from .client import APIError, Client, fail, http_options


@click.group()
def kv() -> None:
    """Read and write the KV store."""


def _path(key: str) -> str:
    return "/v1/kv/" + quote(key, safe="/")


def _get(client: Client, key: str, params: dict[str, str]) -> tuple[int, Any]:
    """(status, decoded JSON or None): a 404 is an answer here, not an error."""
    try:
        resp = client.http.get(_path(key), params=params)
    except client._error as exc:
        raise APIError(f"cannot reach the agent at {client.base}: {exc}") from exc
    if resp.status_code == 404:
        return 404, None
    if resp.status_code >= 400:
        raise APIError(f"GET {_path(key)}: {resp.status_code} {resp.text.strip()}")
    return resp.status_code, resp.json() if resp.content else None


def _value(entry: dict[str, Any], as_b64: bool) -> str:
    raw = base64.b64decode(entry.get("Value") or "")
    if as_b64:
        return base64.b64encode(raw).decode()
    return raw.decode(errors="replace")


def _detailed(entry: dict[str, Any], as_b64: bool) -> str:
    rows = [("CreateIndex", str(entry.get("CreateIndex", 0))), ("Flags", str(entry.get("Flags", 0))),
            ("Key", str(entry.get("Key", ""))), ("LockIndex", str(entry.get("LockIndex", 0))),
            ("ModifyIndex", str(entry.get("ModifyIndex", 0))), ("Session", entry.get("Session") or "-"),
            ("Value", _value(entry, as_b64))]
    width = max(len(k) for k, _ in rows) + 5
    return "\n".join(f"{k.ljust(width)}{v}" for k, v in rows)


@kv.command("get")
@click.argument("key", required=False, default="")
@click.option("-recurse", "--recurse", is_flag=True, help="Every key under KEY (a prefix).")
@click.option("-keys", "--keys", "keys_only", is_flag=True, help="Key names under the prefix, not their values.")
@click.option("-separator", "--separator", default="/", show_default=True,
              help="With -keys: list only up to this separator (\"\" for all keys).")
@click.option("-detailed", "--detailed", is_flag=True, help="Show the indexes, flags and session too.")
@click.option("-base64", "--base64", "as_b64", is_flag=True, help="Print values base64-encoded.")
@click.option("-stale", "--stale", is_flag=True, help="Any server may answer (may be stale).")
@http_options
def get(key: str, recurse: bool, keys_only: bool, separator: str, detailed: bool, as_b64: bool, stale: bool,
        http_addr: str | None, token: str | None) -> None:
    """Print the value at KEY (or the keys and values under it)."""
    if not key and not (recurse or keys_only):
        fail("Missing KEY argument")
    if key.startswith("/"):
        fail("Invalid key name: keys must not begin with a '/'")
    client = Client(http_addr, token)
    params: dict[str, str] = {"stale": ""} if stale else {}
    try:
        if keys_only:
            params["keys"] = ""
            if separator:
                params["separator"] = separator
            _, names = _get(client, key, params)
            for name in names or []:
                click.echo(name)
            return
        if recurse:
            params["recurse"] = ""
            _, entries = _get(client, key, params)
            for i, e in enumerate(entries or []):
                if detailed:
                    click.echo(("\n" if i else "") + _detailed(e, as_b64))
                else:
                    click.echo(f"{e.get('Key', '')}:{_value(e, as_b64)}")
            return
        status, entries = _get(client, key, params)
    except APIError as exc:
        fail(str(exc))
        return
    if status == 404 or not entries:
        fail(f"No key exists at: {key}")
        return
    entry = entries[0]
    if detailed:
        click.echo(_detailed(entry, as_b64))
    else:
        click.echo(_value(entry, as_b64))


def _read_data(data: str | None, what: str) -> bytes:
    """DATA as given, `@path` for a file's contents, `-` (or nothing, for import) for stdin."""
    if data is None or data == "-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        try:
            with open(data[1:], "rb") as f:
                return f.read()
        except OSError as exc:
            fail(f"Failed to read {what} file: {exc}")
    return data.encode()


@kv.command("put")
@click.argument("key")
@click.argument("data", required=False, default=None)
@click.option("-flags", "--flags", type=click.IntRange(0, (1 << 64) - 1), default=0,
              help="Unsigned integer stored with the value (for clients; murmur ignores it).")
@click.option("-cas", "--cas", is_flag=True, help="Check-and-set: write only if -modify-index still matches.")
@click.option("-modify-index", "--modify-index", type=click.IntRange(0, (1 << 63) - 1), default=None,
              help="With -cas: the key's ModifyIndex it must still have (0: only if the key does not exist).")
@click.option("-base64", "--base64", "as_b64", is_flag=True, help="DATA is base64: decode it before writing.")
@http_options
def put(key: str, data: str | None, flags: int, cas: bool, modify_index: int | None, as_b64: bool,
        http_addr: str | None, token: str | None) -> None:
    """Write DATA at KEY (`@file` reads a file, `-` reads stdin; no DATA writes an empty value)."""
    if key.startswith("/"):
        fail("Invalid key name: keys must not begin with a '/'")
    if cas and modify_index is None:
        fail("Must specify -modify-index with -cas!")
    body = b"" if data is None else _read_data(data, "data")
    if as_b64:
        try:
            body = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            fail(f"Failed to base64 decode data: {exc}")
    params = {"flags": str(flags)}
    if cas:
        params["cas"] = str(modify_index)
    try:
        ok = Client(http_addr, token).call("PUT", _path(key), params=params, content=body)
    except APIError as exc:
        fail(f"Failed writing data: {exc}")
        return
    if ok is not True:
        fail(f"Did not write to {key}: CAS failed")
    click.echo(f"Success! Data written to: {key}")


@kv.command("delete")
@click.argument("key", required=False, default="")
@click.option("-recurse", "--recurse", is_flag=True, help="Delete every key under KEY (a prefix).")
@click.option("-cas", "--cas", is_flag=True, help="Delete only if -modify-index still matches.")
@click.option("-modify-index", "--modify-index", type=click.IntRange(0, (1 << 63) - 1), default=None,
              help="With -cas: the key's ModifyIndex it must still have.")
@http_options
def delete(key: str, recurse: bool, cas: bool, modify_index: int | None, http_addr: str | None,
           token: str | None) -> None:
    """Delete KEY (or, with -recurse, every key under the prefix KEY)."""
    if not key and not recurse:
        fail("Missing KEY argument")
    if cas and modify_index is None:
        fail("Must specify -modify-index with -cas!")
    if cas and recurse:
        fail("Cannot specify both -cas and -recurse!")
    params: dict[str, str] = {}
    if recurse:
        params["recurse"] = ""
    if cas:
        params["cas"] = str(modify_index)
    try:
        ok = Client(http_addr, token).call("DELETE", _path(key), params=params)
    except APIError as exc:
        fail(f"Error deleting key {key}: {exc}")
        return
    if ok is not True:
        fail(f"Did not delete key {key}: CAS failed")
    if recurse:
        click.echo(f"Success! Deleted keys with prefix: {key}")
    else:
        click.echo(f"Success! Deleted key: {key}")


def export_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """/v1/kv?recurse records -> Consul's export records (key, flags, base64 value)."""
    return [{"key": e.get("Key", ""), "flags": int(e.get("Flags") or 0), "value": e.get("Value") or ""}
            for e in entries]


def parse_import(raw: bytes) -> list[tuple[str, int, bytes]]:
    """An export document -> (key, flags, value); ValueError says what is wrong with it."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"Cannot unmarshal data: {exc}") from exc
    if not isinstance(doc, list):
        raise ValueError("Cannot unmarshal data: expected a JSON array of {\"key\", \"flags\", \"value\"}")
    out = []
    for i, e in enumerate(doc):
        if not isinstance(e, dict) or not isinstance(e.get("key"), str) or not e["key"]:
            raise ValueError(f"entry {i}: needs a non-empty string \"key\"")
        flags = e.get("flags", 0)
        if not isinstance(flags, int) or isinstance(flags, bool) or not 0 <= flags < 1 << 64:
            raise ValueError(f"entry {i} ({e['key']}): \"flags\" must be an unsigned integer")
        value = e.get("value") or ""
        if not isinstance(value, str):
            raise ValueError(f"entry {i} ({e['key']}): \"value\" must be a base64 string")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"entry {i} ({e['key']}): value is not valid base64: {exc}") from exc
        out.append((e["key"], flags, data))
    return out


@kv.command("export")
@click.argument("prefix", required=False, default="")
@http_options
def export(prefix: str, http_addr: str | None, token: str | None) -> None:
    """Print every key under PREFIX as JSON (values base64), for `murmur kv import`."""
    try:
        _, entries = _get(Client(http_addr, token), prefix, {"recurse": ""})
    except APIError as exc:
        fail(f"Error querying Consul agent: {exc}")
        return
    click.echo(json.dumps(export_entries(entries or []), indent="\t"))


@kv.command("import")
@click.argument("data", required=False, default=None)
@click.option("-prefix", "--prefix", default="", help="Put every imported key under this prefix.")
@http_options
def import_(data: str | None, prefix: str, http_addr: str | None, token: str | None) -> None:
    """Write the keys of an export document: DATA, `@file`, or `-`/nothing for stdin."""
    try:
        entries = parse_import(_read_data(data, "import"))
    except ValueError as exc:
        fail(str(exc))
        return
    client = Client(http_addr, token)
    for key, flags, value in entries:
        full = prefix + key
        try:
            ok = client.call("PUT", _path(full), params={"flags": str(flags)}, content=value)
        except APIError as exc:
            fail(f"Error! Failed writing data for key {full}: {exc}")
            return
        if ok is not True:
            fail(f"Error! Failed writing data for key {full}")
        click.echo(f"Imported: {full}")
