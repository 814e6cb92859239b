"""Consul's `/v1/operator/keyring`: list, install, use and remove gossip keys cluster-wide
(agent/keyring_ops.py does the work over gossip queries).

`GET` answers Consul's list: one entry per gossip pool (murmur has the LAN pool only) with `Keys`
(base64 key -> members holding it), `PrimaryKeys` (key -> members sealing with it), `NumNodes`
and `Messages` (node -> error). `POST` installs, `PUT` makes primary, `DELETE` removes the key
in the body `{"Key": "<base64>"}` (`?relay-factor=0..5` as Consul; `GET ?local-only` answers
this agent's own ring without a query); 200 with no body when every member did it. A member that
failed or did not answer makes it a 500 naming each node and why; a bad body is a 400; removing
the primary key is refused; with gossip encryption off every method answers 500, as in Consul.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from murmur.gossip import keyring as kr

from ..keyring_ops import KeyringDisabled, KeyringOps
from .server import HTTPError, Request, Response, Router

if TYPE_CHECKING:
    from ..agent import Agent

OPS = {"POST": "install", "PUT": "use", "DELETE": "remove"}


def _ops(agent: Agent) -> KeyringOps:
    ops = getattr(agent, "keyring_ops", None)
    if ops is None:
        ops = agent.keyring_ops = KeyringOps(agent)
    return ops


def _key(req: Request) -> bytes:
    body = req.json()
    if not isinstance(body, dict) or not isinstance(body.get("Key"), str) or not body["Key"]:
        raise HTTPError(400, 'Request decode failed: expected {"Key": "<base64 gossip key>"}')
    try:
        return kr.decode_key(body["Key"], "Key")
    except kr.KeyringError as exc:
        raise HTTPError(400, f"Request decode failed: {exc}") from None


def add_routes(router: Router, agent: Agent) -> None:
    async def keyring(req: Request, m: re.Match[str]) -> Response:
        op = OPS.get(req.method, "list")
        key = _key(req) if op != "list" else None
        try:
            relay = int(req.arg("relay-factor", "0") or 0)
        except ValueError:
            raise HTTPError(400, "Error parsing relay-factor: not a number") from None
        if not 0 <= relay <= 5:
            raise HTTPError(400, "Error parsing relay-factor: must be 0 to 5")
        try:
            if op == "list" and req.flag("local-only"):
                result = _ops(agent).list_local()
            else:
                result = await _ops(agent).run(op, key, relay)
        except KeyringDisabled as exc:
            raise HTTPError(500, str(exc)) from None
        except kr.KeyringError as exc:
            status = 400 if "primary" not in str(exc) else 500
            raise HTTPError(status, str(exc)) from None
        if op == "list":
            return Response.json([{"WAN": False, "Datacenter": agent.cfg.datacenter, "Segment": "",
                                   "Partition": "", "Keys": result.keys, "PrimaryKeys": result.primary,
                                   "NumNodes": result.num_nodes, "Messages": result.messages}])
        if result.num_err:
            raise HTTPError(500, result.error())
        return Response(200)

    router.add("GET POST PUT DELETE", r"/v1/operator/keyring", keyring)
