"""User events (Consul's `/v1/event/*`) and murmur's query route (`/v1/internal/query/<name>`).

`PUT /v1/event/fire/<name>`: the body is the payload; `?node=`, `?service=`, `?tag=` are regexes
the receivers apply. Answers the event as JSON. An event over the size limit is a 413.

`GET /v1/event/list`: the agent's ring of recent events (256), optionally `?name=`; a blocking
query on `X-Consul-Index`, which (as in Consul) is derived from the last event's ID.

`POST` (or `PUT`) `/v1/internal/query/<name>`: murmur's own (Consul has no public query API).
Body, all optional, keys in any case: `{"Payload": base64, "FilterNodes": [names],
"FilterTags": {tag: regex}, "RequestAck": bool, "RelayFactor": 0..5, "Timeout": "3s" or ns}`.
Waits until the query's deadline, then answers `{"Name", "ID", "LTime", "Timeout" (seconds),
"Acks": [node...], "Responses": [{"From", "Payload" (base64)}], "Duplicates", "Late"}`.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
from typing import TYPE_CHECKING, Any

from murmur.checks.durations import parse_duration
from murmur.gossip.userevents import UserMessageTooLarge

from ..events import EventError, UserEvents, event_index
from .common import DEFAULT_WAIT, MAX_WAIT, check_dc
from .server import HTTPError, Request, Response, Router

_jitter = random.Random()  # spreads the wake-ups of blocking lists, as Consul's wait jitter does

if TYPE_CHECKING:
    from ..agent import Agent


def _events(agent: Agent) -> UserEvents:
    if agent.user_events is None:
        raise HTTPError(500, "User events need gossip, which is disabled on this agent (ports.serf_lan = -1)")
    return agent.user_events


def _wait_arg(req: Request) -> float:
    raw = req.arg("wait")
    if not raw:
        return DEFAULT_WAIT
    try:
        wait = parse_duration(raw if not raw.isdigit() else raw + "s")
    except ValueError as exc:
        raise HTTPError(400, f"Invalid wait time {raw!r}: {exc}") from exc
    return min(wait, MAX_WAIT)


def _field(body: dict[str, Any], name: str) -> Any:
    """A body field by case-insensitive name (Consul's lenient decoding)."""
    want = name.lower()
    for k, v in body.items():
        if k.lower() == want:
            return v
    return None


def _query_params(body: Any) -> dict[str, Any]:
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise HTTPError(400, "Request decode failed: the body must be a JSON object")
    out: dict[str, Any] = {}
    payload = _field(body, "Payload")
    if payload is None:
        out["payload"] = b""
    elif isinstance(payload, str):
        try:
            out["payload"] = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise HTTPError(400, f"Payload must be base64: {exc}") from exc
    else:
        raise HTTPError(400, "Payload must be a base64 string")
    nodes = _field(body, "FilterNodes") or []
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise HTTPError(400, "FilterNodes must be a list of node names")
    tags = _field(body, "FilterTags") or {}
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise HTTPError(400, "FilterTags must map tag names to regexes")
    for tag, rx in tags.items():
        try:
            re.compile(rx)
        except re.error as exc:
            raise HTTPError(400, f"Invalid regex for tag {tag!r}: {exc}") from exc
    relay = _field(body, "RelayFactor") or 0
    if not isinstance(relay, int) or isinstance(relay, bool) or not 0 <= relay <= 5:
        raise HTTPError(400, "RelayFactor must be an integer from 0 to 5")
    timeout = _field(body, "Timeout")
    if timeout not in (None, "", 0):  # absent: Serf's default for the cluster's size
        try:
            out["timeout"] = parse_duration(timeout)
        except ValueError as exc:
            raise HTTPError(400, f"Invalid Timeout: {exc}") from exc
        if not 0 < out["timeout"] <= MAX_WAIT:
            raise HTTPError(400, f"Timeout must be between 0 and {MAX_WAIT:g}s")
    out.update(filter_nodes=nodes, filter_tags=tags, want_ack=bool(_field(body, "RequestAck")), relay_factor=relay)
    return out


def add_routes(router: Router, agent: Agent) -> None:
    async def fire(req: Request, m: re.Match[str]) -> Response:
        check_dc(agent, req)
        ue = _events(agent)
        try:
            ev = ue.fire(m["name"], req.body, req.arg("node") or "", req.arg("service") or "", req.arg("tag") or "")
        except EventError as exc:
            raise HTTPError(400, str(exc)) from exc
        except UserMessageTooLarge as exc:
            raise HTTPError(413, str(exc)) from exc
        return Response.json(ev.to_json(), pretty="pretty" in req.query)

    async def list_events(req: Request, m: re.Match[str]) -> Response:
        check_dc(agent, req)
        ue = _events(agent)
        name = req.arg("name") or None
        raw = req.arg("index")
        if raw:
            try:
                index = int(raw)
            except ValueError as exc:
                raise HTTPError(400, f"Invalid index {raw!r}") from exc
            wait = _wait_arg(req)
            await ue.wait_change(name, index, wait + _jitter.uniform(0, wait / 16))
        events = ue.events(name)
        # The list is this agent's own: no server, so a leader is "known" and contact is now.
        headers = [("X-Consul-Index", str(event_index(events))), ("X-Consul-KnownLeader", "true"),
                   ("X-Consul-LastContact", "0")]
        return Response.json([e.to_json() for e in events], 200, headers, pretty="pretty" in req.query)

    async def query(req: Request, m: re.Match[str]) -> Response:
        check_dc(agent, req)
        ue = _events(agent)
        params = _query_params(req.json())
        try:
            st = await ue.query(m["name"], **params)
        except UserMessageTooLarge as exc:
            raise HTTPError(413, str(exc)) from exc
        responses = [{"From": n, "Payload": base64.b64encode(p).decode()}
                     for n, (p, _t) in sorted(st.responses.items())]
        return Response.json({"Name": st.name, "ID": st.id, "LTime": st.ltime,
                              "Timeout": round(st.deadline - st.start, 6), "Acks": sorted(st.acks),
                              "Responses": responses, "Duplicates": st.duplicates, "Late": st.late},
                             pretty="pretty" in req.query)

    router.add("PUT", r"/v1/event/fire/(?P<name>.+)", fire)
    router.add("GET", r"/v1/event/list", list_events)
    router.add("POST PUT", r"/v1/internal/query/(?P<name>.+)", query)
