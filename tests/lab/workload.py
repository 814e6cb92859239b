"""Client workloads for the fault lab, each thread living in one lab host's namespace.

- `RegisterClient`: get / put / cas on a few registers with unique values, recorded as
  `support.lincheck.Op`s (invoke and completion times on this process's monotonic clock). A
  write whose answer never came (timeout, 5xx, a cut connection) is recorded as unknown: it may
  or may not have been applied. A write refused before it was sent (connection refused) and a
  read without an answer are not recorded (they say nothing).
- `AckWriter`: writes unique keys under `ack/`; the ones acknowledged (200 true) must all be
  there at the end.
- `MemberWatch`: polls one agent's `/v1/agent/members` and records every alive -> failed
  transition it sees (for the false-dead checker).
- `CatalogClient`: registers and deregisters services at a client agent's local API; after each
  heal the runner holds it still and times how long the catalog takes to hold exactly the
  client's local services (the catalog-convergence checker).

Every loop is bounded by a stop event, a maximum count and per-request timeouts.
"""

from __future__ import annotations

import base64
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from support.lincheck import CAS, GET, PUT, Op

from .cluster import HTTP, LabAgent
from .netns import setns

TIMEOUT = 2.0  # per request; longer than a healthy write (tens of ms) by far, short enough to move on
MAX_OPS = 1_000_000


class _Thread:
    def __init__(self, agent: LabAgent, name: str) -> None:
        self.agent = agent
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True, name=name)
        self.error: BaseException | None = None

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> None:
        self.stop.set()
        self.thread.join(timeout)

    def _main(self) -> None:
        try:
            setns(self.agent.host)
            with httpx.Client(base_url=HTTP, timeout=TIMEOUT) as c:
                self.run(c)
        except BaseException as exc:  # noqa: BLE001 - reported by the runner
            self.error = exc

    def run(self, c: httpx.Client) -> None:
        raise NotImplementedError


class RegisterClient(_Thread):
    def __init__(self, agent: LabAgent, cid: int, keys: Callable[[], list[str]], seed: int,
                 pause: float = 0.01) -> None:
        super().__init__(agent, f"reg-{cid}")
        self.cid = cid
        self.keys = keys
        self.rng = random.Random(seed)
        self.ops: list[Op] = []
        self.pause = pause
        self.seen: dict[str, tuple[object, int]] = {}  # key -> (value, ModifyIndex) last read

    def run(self, c: httpx.Client) -> None:
        for n in range(MAX_OPS):
            if self.stop.is_set():
                return
            key = self.rng.choice(self.keys())
            kind = self.rng.choices((GET, PUT, CAS), (5, 3, 2))[0]
            if kind == CAS and key not in self.seen:
                kind = GET
            if kind == GET:
                self._get(c, key)
            elif kind == PUT:
                self._put(c, key, f"c{self.cid}-{n}")
            else:
                self._cas(c, key, f"c{self.cid}-{n}")
            time.sleep(self.pause)

    def _get(self, c: httpx.Client, key: str) -> None:
        q = "?consistent" if self.rng.random() < 0.3 else ""
        t0 = time.monotonic()
        try:
            r = c.get(f"/v1/kv/{key}{q}")
        except httpx.HTTPError:
            return
        t1 = time.monotonic()
        if r.status_code == 404:
            value, idx = None, 0
        elif r.status_code == 200:
            e = r.json()[0]
            value, idx = base64.b64decode(e["Value"] or "").decode(), int(e["ModifyIndex"])
        else:
            return
        self.seen[key] = (value, idx)
        self.ops.append(Op(self.cid, GET, key, None, value, t0, t1))

    def _write(self, c: httpx.Client, key: str, value: str, q: str) -> tuple[float, float, object]:
        t0 = time.monotonic()
        try:
            r = c.put(f"/v1/kv/{key}{q}", content=value)
        except httpx.ConnectError:
            return t0, -1.0, None  # never sent
        except httpx.HTTPError:
            return t0, math.inf, None
        t1 = time.monotonic()
        if r.status_code == 200 and r.json() in (True, False):
            return t0, t1, r.json()
        return t0, math.inf, None  # 5xx: no leader, forwarding cut: the outcome is unknown

    def _put(self, c: httpx.Client, key: str, value: str) -> None:
        t0, t1, out = self._write(c, key, value, "")
        if t1 < 0:
            return
        if t1 != math.inf and out is not True:
            t1 = math.inf
        self.ops.append(Op(self.cid, PUT, key, value, None, t0, t1))

    def _cas(self, c: httpx.Client, key: str, value: str) -> None:
        expected, idx = self.seen[key]
        t0, t1, out = self._write(c, key, value, f"?cas={idx}")
        if t1 < 0:
            return
        self.ops.append(Op(self.cid, CAS, key, (expected, value), out if t1 != math.inf else None, t0, t1))


class AckWriter(_Thread):
    def __init__(self, agent: LabAgent, wid: int, pause: float = 0.02) -> None:
        super().__init__(agent, f"ack-{wid}")
        self.wid = wid
        self.acked: dict[str, str] = {}
        self.unknown = 0
        self.pause = pause

    def run(self, c: httpx.Client) -> None:
        for n in range(MAX_OPS):
            if self.stop.is_set():
                return
            key, value = f"ack/w{self.wid}/{n:07d}", f"w{self.wid}-{n}"
            try:
                r = c.put(f"/v1/kv/{key}", content=value)
                if r.status_code == 200 and r.json() is True:
                    self.acked[key] = value
                else:
                    self.unknown += 1
            except httpx.ConnectError:
                pass
            except httpx.HTTPError:
                self.unknown += 1
            time.sleep(self.pause)


ALIVE, FAILED = 1, 4  # Serf status codes in /v1/agent/members


@dataclass(frozen=True)
class DeadVerdict:
    t: float
    observer: str
    member: str


class MemberWatch(_Thread):
    def __init__(self, agent: LabAgent, interval: float = 0.5) -> None:
        super().__init__(agent, f"watch-{agent.name}")
        self.interval = interval
        self.verdicts: list[DeadVerdict] = []

    def run(self, c: httpx.Client) -> None:
        last: dict[str, int] = {}
        starts = self.agent.starts
        for _ in range(MAX_OPS):
            if self.stop.wait(self.interval):
                return
            if self.agent.starts != starts:  # a restarted observer starts a new view
                last, starts = {}, self.agent.starts
            if not self.agent.running or self.agent.paused:
                continue
            try:
                r = c.get("/v1/agent/members", timeout=1.0)
                t = time.monotonic()
                if r.status_code != 200:
                    continue
                view = {m["Name"]: int(m["Status"]) for m in r.json()}
            except (httpx.HTTPError, ValueError, KeyError):
                continue
            for name, status in view.items():
                if status == FAILED and last.get(name) == ALIVE:
                    self.verdicts.append(DeadVerdict(t, self.agent.name, name))
            last = view


CATALOG_SERVICE = "lab-cat"  # the name of every service the catalog workload registers


class CatalogClient(_Thread):
    """Registers and deregisters services (all named CATALOG_SERVICE) at one client agent's
    local API, a change every `pause` seconds, at most `keep` at a time. `hold` pauses it (the
    runner holds it still while it measures how long the catalog takes to catch up)."""

    def __init__(self, agent: LabAgent, cid: int, seed: int, pause: float = 0.15, keep: int = 12) -> None:
        super().__init__(agent, f"cat-{agent.name}")
        self.rng = random.Random(seed)
        self.pause, self.keep = pause, keep
        self.hold = threading.Event()
        self.idle = threading.Event()  # set while held and no request is in flight
        self.changes = 0

    def run(self, c: httpx.Client) -> None:
        mine: list[str] = []
        for n in range(MAX_OPS):
            if self.stop.wait(self.pause):
                return
            if self.hold.is_set():
                self.idle.set()
                continue
            self.idle.clear()
            if not self.agent.running or self.agent.paused:
                continue
            try:
                if mine and (len(mine) >= self.keep or self.rng.random() < 0.3):
                    sid = mine.pop(self.rng.randrange(len(mine)))
                    r = c.put(f"/v1/agent/service/deregister/{sid}")
                else:
                    sid = f"{CATALOG_SERVICE}-{self.agent.name}-{n}"
                    r = c.put("/v1/agent/service/register", json={"ID": sid, "Name": CATALOG_SERVICE, "Port": n % 60000})
                    if r.status_code == 200:
                        mine.append(sid)
                self.changes += r.status_code == 200
            except httpx.HTTPError:
                pass  # the agent is restarting: its persisted state is what counts

    def quiesce(self, timeout: float) -> None:
        """Hold, and wait (bounded) until no request is in flight."""
        self.idle.clear()
        self.hold.set()
        if self.thread.is_alive():
            self.idle.wait(timeout)

    def resume(self) -> None:
        self.hold.clear()


def local_catalog_services(c: httpx.Client) -> set[str] | None:
    """The CATALOG_SERVICE instances this agent holds locally (its own API), or None if unknown."""
    try:
        r = c.get("/v1/agent/services", timeout=2.0)
        if r.status_code != 200:
            return None
        return {sid for sid, s in r.json().items() if s.get("Service") == CATALOG_SERVICE}
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def catalog_node_services(c: httpx.Client, node: str) -> set[str] | None:
    """The CATALOG_SERVICE instances the catalog holds for `node` (a consistent read), or None."""
    try:
        r = c.get(f"/v1/catalog/node/{node}", timeout=2.0)
        if r.status_code == 404:
            return set()
        if r.status_code != 200:
            return None
        body = r.json() or {}
        return {sid for sid, s in (body.get("Services") or {}).items() if s.get("Service") == CATALOG_SERVICE}
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
