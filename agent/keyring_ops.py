"""Gossip key rotation, cluster-wide, over internal gossip queries (Serf's key manager).

`/v1/operator/keyring` and `murmur keyring` call `KeyringOps.run(op, key)`. It sends one query,
`_murmur_keyring-<op>` (install, use, remove, list), to every member, ourselves included. Each
member applies the change to its own ring (gossip/keyring.py: install_key, use_key, remove_key),
writes data_dir/serf/keyring (0600) before it swaps the ring in, and answers `{"ok", "err"}`
(`list` also answers its keys and primary). The origin waits until every live member answered or
the query's deadline passed; a member that did not answer counts as an error, like Serf's
"NumResp < NumNodes".

The query and its answers travel inside sealed gossip, so key material in them is never in clear
on the wire; it is never logged. A rotation never drops a member: `install` adds a key every
member can open with but nobody seals with yet, `use` switches sealing to a key everybody already
holds, and `remove` takes out a key nobody seals with any more. Removing the primary key is
refused by every member (and checked first at the origin).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack
import trio
from murmur.gossip import keyring as kr
from murmur.gossip.userevents import IncomingQuery, UserMessageTooLarge

from .gossip_keyring import KeyringFileError, keyring_path, write_keyring

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("murmur.keyring")

OPS = ("install", "use", "remove", "list")
QUERY_PREFIX = "_murmur_keyring-"
POLL = 0.02  # seconds between looks at the answers collected so far


class KeyringDisabled(Exception):
    """Gossip encryption is off: there is no keyring to operate on."""


@dataclass
class KeyringResult:
    op: str
    num_nodes: int
    num_resp: int = 0
    messages: dict[str, str] = field(default_factory=dict)  # node -> error
    keys: dict[str, int] = field(default_factory=dict)  # base64 key -> members holding it (list)
    primary: dict[str, int] = field(default_factory=dict)  # base64 key -> members sealing with it

    @property
    def num_err(self) -> int:
        return len(self.messages) + max(0, self.num_nodes - self.num_resp)

    def error(self) -> str:
        """"" when every member answered and succeeded; otherwise what went wrong, per node."""
        if not self.num_err:
            return ""
        parts = [f"{self.num_err}/{self.num_nodes} nodes reported failure"]
        parts += [f"{node}: {msg}" for node, msg in sorted(self.messages.items())]
        if self.num_resp < self.num_nodes:
            parts.append(f"{self.num_nodes - self.num_resp} node(s) did not answer before the query deadline")
        return "; ".join(parts)


def encode_answer(ok: bool, err: str = "", ring: kr.Keyring | None = None) -> bytes:
    body: dict[str, Any] = {"ok": ok, "err": err}
    if ring is not None:
        body["keys"] = list(ring.keys)
        body["primary"] = ring.primary
    return bytes(msgpack.packb(body))


def decode_answer(data: bytes) -> dict[str, Any]:
    try:
        body = msgpack.unpackb(data, raw=False)
    except Exception:
        return {"ok": False, "err": "undecodable answer"}
    if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
        return {"ok": False, "err": "undecodable answer"}
    return body


class KeyringOps:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.lock = trio.Lock()
        self.stats = {"keyring_changes": 0, "keyring_errors": 0}

    def attach(self) -> None:
        """Register the member side of the four queries (called once gossip runs)."""
        ue = self.agent.user_events
        assert ue is not None
        for op in OPS:
            ue.register_handler(QUERY_PREFIX + op, self._handler(op))

    # ---- every member -------------------------------------------------------------------------
    def _handler(self, op: str):  # type: ignore[no-untyped-def]
        def answer(q: IncomingQuery) -> bytes:
            return self.apply_local(op, q.payload)

        return answer

    def apply_local(self, op: str, payload: bytes) -> bytes:
        """Apply one operation to this member's ring; the encoded answer."""
        gossip = self.agent.gossip
        crypto = gossip.crypto if gossip is not None else None
        if crypto is None:
            return encode_answer(False, "gossip encryption is not enabled on this agent")
        ring = crypto.keyring
        if op == "list":
            return encode_answer(True, ring=ring)
        try:
            body = msgpack.unpackb(payload, raw=False)
            key = body["k"] if isinstance(body, dict) else None
            if not isinstance(key, bytes) or len(key) != kr.KEY_SIZE:
                return encode_answer(False, "malformed keyring query")
            new = {"install": kr.install_key, "use": kr.use_key, "remove": kr.remove_key}[op](ring, key)
        except kr.KeyringError as exc:
            return encode_answer(False, str(exc))
        except Exception:
            return encode_answer(False, "malformed keyring query")
        if new is ring:
            return encode_answer(True)
        try:
            if self.agent.cfg.data_dir:
                write_keyring(keyring_path(self.agent.cfg.data_dir), list(new.keys))
        except KeyringFileError as exc:
            self.stats["keyring_errors"] += 1
            log.error("%s", exc)
            return encode_answer(False, "cannot persist the keyring; see the agent log")
        crypto.keyring = new
        self.stats["keyring_changes"] += 1
        log.info("gossip keyring: %s done, %d key(s) now", op, len(new.keys))
        return encode_answer(True)

    # ---- the origin ---------------------------------------------------------------------------
    def list_local(self) -> KeyringResult:
        """`?local-only`: this agent's own ring, no query (KeyringDisabled when encryption is off)."""
        gossip = self.agent.gossip
        if gossip is None or gossip.crypto is None:
            raise KeyringDisabled("Keyring operations are unavailable: gossip encryption is not enabled")
        ring = gossip.crypto.keyring
        return KeyringResult("list", 1, 1, keys={kr.encode_key(k): 1 for k in ring.keys},
                             primary={kr.encode_key(ring.primary): 1})

    async def run(self, op: str, key: bytes | None = None, relay_factor: int = 0) -> KeyringResult:
        """Run `op` on every live member and collect the answers (KeyringDisabled, KeyringError)."""
        if op not in OPS:
            raise ValueError(f"unknown keyring operation {op!r}")
        gossip, ue, membership = self.agent.gossip, self.agent.user_events, self.agent.membership
        if gossip is None or gossip.crypto is None or ue is None or membership is None:
            raise KeyringDisabled("Keyring operations are unavailable: gossip encryption is not enabled")
        if op != "list":
            if key is None or len(key) != kr.KEY_SIZE:
                raise kr.KeyringError(f"gossip keys are {kr.KEY_SIZE} bytes")
            if op == "remove" and key == gossip.crypto.keyring.primary:
                raise kr.KeyringError("removing the primary key is not allowed")
        payload = bytes(msgpack.packb({"k": key})) if op != "list" else b""
        async with self.lock:
            expected = membership.live_count()
            try:
                state = ue.layer.query(QUERY_PREFIX + op, payload, trio.current_time(), relay_factor=relay_factor)
            except UserMessageTooLarge as exc:
                raise kr.KeyringError(str(exc)) from None
            gossip.flush()
            try:
                while len(state.responses) < expected and trio.current_time() < state.deadline:
                    await trio.sleep(POLL)
            finally:
                ue.layer.finish(state)
        result = KeyringResult(op, max(expected, len(state.responses)), len(state.responses))
        for node, (data, _) in state.responses.items():
            body = decode_answer(data)
            if not body["ok"]:
                result.messages[node] = str(body.get("err", ""))
                continue
            if op == "list":
                keys = body.get("keys") or []
                for k in keys:
                    if isinstance(k, bytes):
                        enc = kr.encode_key(k)
                        result.keys[enc] = result.keys.get(enc, 0) + 1
                if isinstance(body.get("primary"), bytes):
                    enc = kr.encode_key(body["primary"])
                    result.primary[enc] = result.primary.get(enc, 0) + 1
        if result.num_err:
            log.warning("gossip keyring %s: %s", op, result.error())
        return result
