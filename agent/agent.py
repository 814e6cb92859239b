"""The agent: wires the cores to the world and runs them in one trio nursery.

Start order (nested like hypercorn's serve): state and write path first, then the check runner,
then the listeners (HTTP, DNS). Shutdown is the reverse, by cancelling the nursery. In `--dev`
the agent is also the single server: its writes go through the local sequencer into the store.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio
from murmur import CONSUL_COMPAT_VERSION, __version__
from murmur.catalog import commands
from murmur.catalog.store import StateStore
from murmur.checks.definitions import CheckDefinition, DefinitionError, from_api
from murmur.checks.durations import parse_duration
from murmur.gossip.config import GossipConfig
from murmur.gossip.membership import EventKind, MemberEvent, Membership, State

from . import config as config_mod
from . import conflicts, failpoints, systemd, telemetry
from .checks_runner import CheckRunner
from .config import RuntimeConfig
from .definitions import ServiceDefinition, parse_service, sidecar_definition
from .drivers.gossip import GossipDriver
from .events import UserEvents
from .gossip_keyring import KeyringFileError, load_keyring
from .local_state import LocalState, NodeInfo
from .loop_watch import LoopWatch
from .maintenance import Maintenance, MaintenanceError
from .member_snapshot import MemberSnapshot
from .monitor import LogHub
from .node_sync import client_sync, client_sync_interval
from .persisted import PersistedRegistrations
from .protocol import protocol_tags
from .reconcile import MemberView, log_reconcile, reconcile_commands
from .remote import ClientWriter, Remote
from .server import ServerRuntime
from .watch import ChangeFeed
from .writer import ServerWriter, WriteFailed, Writer

log = logging.getLogger("murmur.agent")


def node_id_for(data_dir: str) -> str:
    """A random UUID made once per data dir and kept (cloned VM images must not share IDs)."""
    if not data_dir:
        return str(uuid.uuid4())
    path = Path(data_dir) / "node-id"
    if path.exists():
        text = path.read_text().strip()
        try:
            return str(uuid.UUID(text))
        except ValueError as exc:
            raise SystemExit(f"{path}: not a UUID ({text!r}); remove it to get a new node ID") from exc
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    nid = str(uuid.uuid4())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(nid + "\n")
    os.replace(tmp, path)
    return nid


def pick_address(cfg: RuntimeConfig) -> str:
    """The address others reach this node at: advertise_addr, else bind_addr, else a local one."""
    for addr in (cfg.advertise_addr, cfg.bind_addr):
        if addr and addr not in ("0.0.0.0", "::"):
            return addr
    if cfg.dev:
        return "127.0.0.1"
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


LEAVE_TIMEOUT = 5.0  # seconds a graceful leave waits for its broadcast to go out
ANTI_ENTROPY_INTERVAL = 1.0  # seconds between anti-entropy passes (a diff; writes only on change)
ALIAS_WAIT = 30.0  # seconds an alias check's blocking read of another node waits for a change
REAP_INTERVAL = 30.0  # seconds between reaper passes (Consul's; deregister_critical_service_after is >= 1m)
RECONCILE_INTERVAL = 1.0  # seconds between the leader's member-list reconcile passes
# Seconds an API change (a service or check registered or removed, maintenance set) waits for
# its catalog sync before answering anyway. Long enough that a catalog read right after the answer
# sees the change on a healthy cluster (py-consul's tests read back at once); short enough that a
# client agent cut off from its servers still answers, as Consul's does (it answers at once and
# syncs in the background). The sync goes on after the answer; anti-entropy retries it.
REQUEST_SYNC_WAIT = 3.0


def gossip_config_from(cfg: RuntimeConfig) -> GossipConfig:
    """The preset named by gossip_lan.preset, refined by Consul's gossip_lan keys."""
    g = cfg.gossip_lan
    base = {"lan": GossipConfig.lan, "wan": GossipConfig.wan, "local": GossipConfig.local}[g.preset]()
    changes: dict[str, Any] = {"reconnect_timeout": parse_duration(cfg.reconnect_timeout)}
    for key in ("gossip_interval", "probe_interval", "probe_timeout"):
        if getattr(g, key):
            changes[key] = parse_duration(getattr(g, key))
    for key in ("gossip_nodes", "retransmit_mult", "suspicion_mult"):
        if getattr(g, key):
            changes[key] = getattr(g, key)
    from dataclasses import replace

    out = replace(base, **changes)
    out.validate()
    return out


class StartError(Exception):
    """The agent cannot start (a port is taken, no join target answered): a message, no traceback."""


@contextmanager
def listening(what: str, host: str, port: int) -> Iterator[None]:
    """Turn a failed bind into a StartError that names the listener, address and reason."""
    try:
        yield
    except OSError as exc:
        raise StartError(f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}") from exc


async def serve_on_each(nursery: trio.Nursery, what: str, serve: Callable[..., Awaitable[None]], hosts: str,
                        port: int) -> int:
    """Start `serve` on every address of a space-separated list (Consul's client_addr and
    addresses.* may name several, e.g. "127.0.0.1 ::1"), all on one port: with port 0 the first
    bind picks it and the others reuse it. Returns the port."""
    for host in hosts.split() or [""]:
        with listening(what, host, port):
            port = await nursery.start(serve, host, port)
    return port


class Agent:
    def __init__(self, cfg: RuntimeConfig, config_paths: list[str] | None = None,
                 overrides: dict[str, Any] | None = None, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.config_paths = list(config_paths or [])
        self.overrides = dict(overrides or {})
        self.rng = rng or random.Random()
        self.store = StateStore()
        self.feed = ChangeFeed()
        from murmur.catalog.sessions import LockDelays

        self.lock_delays = LockDelays()  # on servers: lock-delay deadlines, started as they apply
        self.feed.listeners.append(lambda: self.lock_delays.observe(self.store, trio.current_time()))
        node = NodeInfo(name=cfg.node_name or socket.gethostname(), id=cfg.node_id or node_id_for(cfg.data_dir),
                        address=pick_address(cfg), datacenter=cfg.datacenter,
                        meta=tuple(sorted(cfg.node_meta.items())))
        self.local = LocalState(node, check_update_interval=parse_duration(cfg.check_update_interval))
        self.maintenance = Maintenance(self.local, cfg.data_dir if not cfg.dev else "")
        # API registrations survive a restart (agent/persisted.py); --dev keeps nothing, as Consul.
        self.persisted = PersistedRegistrations(cfg.data_dir) if cfg.data_dir and not cfg.dev else None
        self.server: ServerRuntime | None = ServerRuntime(self) if cfg.server else None
        from .autopilot import AutopilotConfig

        self.autopilot = AutopilotConfig(self)
        self.remote = Remote(self)  # a client's way to the servers (agent/remote.py)
        from .acl import ACLRuntime

        self.acl = ACLRuntime(self)  # tokens and enforcement (agent/acl.py)
        self.writer: Writer = ServerWriter(self.server) if self.server else ClientWriter(self.remote)
        self.sync_lock = trio.Lock()
        self.sync_wanted = trio.Event()  # set by a check's change; _sync_on_request runs one pass for many
        self._nursery: trio.Nursery | None = None  # the agent's own, while it runs
        self.checks = CheckRunner(self.local, self._check_changed, self.rng)
        self.metrics = telemetry.install(self)
        self.checks.read_node_checks = self._read_node_checks
        self.log_hub = LogHub()  # installed on the root logger by the first /v1/agent/monitor client
        self.http_port = 0
        self.dns_port = 0
        self.started_at = 0.0
        self.loop_watch = LoopWatch()
        self.shutdown = trio.Event()
        self.stats: dict[str, int] = {"dns_dropped": 0, "dns_formerr": 0, "sync_errors": 0}
        self.gossip_config = gossip_config_from(cfg)
        self.gossip: GossipDriver | None = None
        self.membership: Membership | None = None
        self.member_snapshot: MemberSnapshot | None = None
        self.user_events: UserEvents | None = None
        self.leaving = False
        self.stopping_notified = False
        self.server_port_bound = 0
        self.https_port = 0
        self.tls: Any = None  # agent/tls.py TLSManager, made when run() starts

    # ---- write path ----------------------------------------------------------------------------
    async def sync(self) -> bool:
        """Anti-entropy: write whatever the catalog lacks of this agent's state. False if a write
        could not be made now (no leader yet, say); the periodic pass retries."""
        self.checks.poke()  # local alias checks follow local changes at once
        if self.server is None:
            from .acl import REQUEST_TOKEN

            # Anti-entropy writes with the agent's own token, even when an HTTP request (with
            # its caller's token) triggered it.
            reset = REQUEST_TOKEN.set(None)
            try:
                return await client_sync(self)
            finally:
                REQUEST_TOKEN.reset(reset)
        try:
            for cmd in self.local.sync_commands(self.store, trio.current_time()):
                result = await self.writer.apply(cmd)
                if isinstance(result, commands.ApplyError):
                    self.stats["sync_errors"] += 1
                    log.warning("sync: %s", result.message)
        except WriteFailed as exc:
            self.stats["sync_errors"] += 1
            log.debug("sync deferred: %s", exc)
            return False
        return True

    async def sync_for_request(self, wait: float = REQUEST_SYNC_WAIT) -> None:
        """Sync after an API change, answering after at most `wait` seconds: the pass runs in the
        agent's nursery, so a caller that stops waiting does not cancel a write in flight."""
        if self._nursery is None:
            await self.sync()
            return
        done = trio.Event()

        async def one_pass() -> None:
            try:
                await self.sync()
            finally:
                done.set()

        self._nursery.start_soon(one_pass)
        with trio.move_on_after(wait):
            await done.wait()

    async def _check_changed(self) -> None:
        """A check's status or output changed: local aliases follow at once, and the catalog on the
        next sync pass. Changes that arrive while a pass runs are coalesced into the following one,
        so 2,000 checks turning passing at start cost a few passes, not 2,000."""
        self.checks.poke()
        self.sync_wanted.set()

    async def _sync_on_request(self) -> None:
        while True:
            await self.sync_wanted.wait()
            self.sync_wanted = trio.Event()
            await self.sync()

    async def _anti_entropy(self) -> None:
        """Keep syncing: cheap when nothing changed (a diff, no writes)."""
        while True:
            await trio.sleep(ANTI_ENTROPY_INTERVAL if self.server is not None else client_sync_interval(self))
            await self.sync()

    async def _read_node_checks(self, node: str, index: int) -> tuple[int, list[dict[str, Any]]]:
        """A node's checks from the catalog, as a blocking read past `index` (alias checks)."""
        from .reads import execute

        if self.server is not None:
            res = await execute(self, "health.node", {"node": node}, "stale", index, ALIAS_WAIT)
        else:
            res = await self.remote.read("health.node", {"node": node}, "stale", index, ALIAS_WAIT)
        return res.index, list(res.data)

    async def _reap_loop(self) -> None:
        """Consul's reaper: every REAP_INTERVAL, deregister services whose check has been critical
        for its deregister_critical_service_after."""
        while True:
            await trio.sleep(REAP_INTERVAL)
            gone = [sid for sid in self.local.reap(trio.current_time()) if self.remove_service(sid)]
            for sid in gone:
                log.info("deregistered service %s: critical for longer than its deregister_critical_service_after", sid)
            if gone:
                await self.sync()

    async def _reconcile_loop(self) -> None:
        """On the Raft leader only: make the catalog follow the member list (clients never do)."""
        while True:
            if self.server is not None and self.server.driver is not None and self.server.driver.is_leader:
                try:
                    for cmd in reconcile_commands(self.store, self.member_views(), self.cfg.datacenter):
                        log_reconcile(cmd)
                        await self.writer.apply(cmd)
                except WriteFailed as exc:
                    log.debug("reconcile deferred: %s", exc)
            await trio.sleep(RECONCILE_INTERVAL)

    def member_views(self) -> list[MemberView]:
        """Gossip members as reconcile sees them (only ourselves when gossip is off; a client
        agent's own store tracks only itself)."""
        n = self.local.node
        me = MemberView(n.name, n.address, n.id, self.cfg.datacenter, True, False,
                        self.server_port if self.cfg.server else 0)
        if self.membership is None or self.server is None:
            return [me]
        out = []
        for m in self.membership.members.values():
            if m.name == n.name:
                out.append(me)
                continue
            is_server = m.tags.get("role") == "consul"
            port = int(m.tags.get("port", "0") or 0) if is_server else 0
            out.append(MemberView(m.name, m.addr, m.tags.get("id", ""), m.tags.get("dc", ""),
                                  m.state in (State.ALIVE, State.SUSPECT), m.state == State.LEFT, port))
        return out

    @property
    def server_port(self) -> int:
        if self.server_port_bound:
            return self.server_port_bound
        return self.cfg.ports.server if self.cfg.ports.server > 0 else 8300

    # ---- local registrations ------------------------------------------------------------------
    def add_service(self, sdef: ServiceDefinition, source: str = "api", replace_existing_checks: bool = False
                    ) -> None:
        if sdef.sidecar is not None:  # Connect sidecar_service: registered as a service of its own
            own = f"{sdef.spec.id}-sidecar-proxy"
            used = {s.port for sid, s in self.local.services.items() if sid != own}
            sidecar = sidecar_definition(sdef, used, allow_scripts=bool(self.cfg.enable_script_checks))
            self._add_one_service(sdef, source, replace_existing_checks)
            self._add_one_service(sidecar, source, replace_existing_checks)
            self.maintenance.apply(trio.current_time())
            self.checks.reconcile()
            return
        self._add_one_service(sdef, source, replace_existing_checks)
        self.maintenance.apply(trio.current_time())  # a service registered again keeps its maintenance
        self.checks.reconcile()

    def _add_one_service(self, sdef: ServiceDefinition, source: str, replace_existing_checks: bool) -> None:
        old_checks = [cid for cid, c in self.local.checks.items() if c.defn.service_id == sdef.spec.id]
        self.local.add_service(sdef.spec, source)
        now = trio.current_time()
        new_ids = {c.id for c in sdef.checks}
        for defn in sdef.checks:
            self.local.add_check(defn, now, source)
        if replace_existing_checks or source == "config":
            for cid in old_checks:
                if cid not in new_ids:
                    self.local.remove_check(cid)

    def add_check(self, defn: CheckDefinition, source: str = "api") -> None:
        if defn.service_id and defn.service_id not in self.local.services:
            raise DefinitionError(f"ServiceID \"{defn.service_id}\" does not exist")
        self.local.add_check(defn, trio.current_time(), source)
        self.checks.reconcile()

    def remove_service(self, sid: str) -> bool:
        if sid not in self.local.services:
            return False
        gone = self.local.remove_service(sid)
        self.maintenance.forget_service(sid)  # as Consul: its maintenance goes with it
        sidecar = self.local.services.get(f"{sid}-sidecar-proxy")
        if sidecar is not None and sidecar.kind == "connect-proxy":  # as Consul: it goes with its parent
            gone += self.local.remove_service(sidecar.id)
        if self.persisted is not None:
            self.persisted.drop("services", sid)
            for cid in gone:
                self.persisted.drop("checks", cid)
        self.checks.reconcile()
        return True

    def remove_check(self, cid: str) -> bool:
        ok = self.local.remove_check(cid)
        if self.persisted is not None:
            self.persisted.drop("checks", cid)
        self.checks.reconcile()
        return ok

    def persist(self, kind: str, rid: str, body: Any) -> None:
        """Keep an accepted API registration's body for the next start (no-op without a data dir)."""
        if self.persisted is not None:
            self.persisted.save(kind, rid, body)

    def load_persisted_registrations(self) -> None:
        """Replay the API registrations of earlier runs. One a config file now defines is dropped
        (the config owns that ID); one that no longer parses is skipped with a warning, never fatal."""
        if self.persisted is None:
            return
        for sid, body in self.persisted.load("services"):
            if self.local.service_source.get(sid) == "config":
                self.persisted.drop("services", sid)
                continue
            try:
                self.add_service(parse_service(body, allow_scripts=bool(self.cfg.enable_script_checks)), "api")
            except (DefinitionError, TypeError, ValueError) as exc:
                log.warning("persisted service %r not restored: %s", sid, exc)
        for cid, body in self.persisted.load("checks"):
            held = self.local.checks.get(cid)
            if held is not None and held.source == "config":
                self.persisted.drop("checks", cid)
                continue
            try:
                self.add_check(from_api(body, allow_scripts=bool(self.cfg.enable_script_checks)), "api")
            except (DefinitionError, TypeError, ValueError) as exc:
                log.warning("persisted check %r not restored: %s", cid, exc)

    def update_check(self, cid: str, status: str, output: str) -> bool:
        """TTL-style update (`check/pass|warn|fail|update`). False if the check is unknown."""
        check = self.local.checks.get(cid)
        if check is None:
            return False
        check.machine.force(status, output)
        if check.ttl is not None:
            check.ttl.refresh(trio.current_time())
            self.checks.refreshed(cid)
        return True

    def load_config_registrations(self, cfg: RuntimeConfig) -> None:
        """Install the config's services and checks; drop config ones that are gone (reload)."""
        allow = cfg.enable_script_checks or cfg.enable_local_script_checks
        services = [parse_service(s, allow_scripts=allow) for s in cfg.services]
        checks = [from_api(c, allow_scripts=allow) for c in cfg.checks]
        keep_services = {s.spec.id for s in services}
        keep_checks = {c.id for s in services for c in s.checks} | {c.id for c in checks}
        for sid, src in list(self.local.service_source.items()):
            if src == "config" and sid not in keep_services:
                self.local.remove_service(sid)
        for cid, chk in list(self.local.checks.items()):
            if chk.source == "config" and cid not in keep_checks:
                self.local.remove_check(cid)
        for sdef in services:
            self.add_service(sdef, "config")
        for defn in checks:
            self.add_check(defn, "config")

    async def reload(self) -> None:
        """Re-read the config files (SIGHUP, `PUT /v1/agent/reload`). A bad config keeps the old one."""
        try:
            cfg = config_mod.load(self.config_paths, overrides=self.overrides, dev=self.cfg.dev)
            self.load_config_registrations(cfg)
        except (config_mod.ConfigError, DefinitionError) as exc:
            log.error("reload failed, keeping the running config: %s", exc)
            raise
        for w in cfg.warnings:
            log.warning("%s", w)
        self.cfg = cfg
        self.local.check_update_interval = parse_duration(cfg.check_update_interval)
        if self.tls is not None:
            self.tls.reload(cfg)  # new certificates for new connections; an error keeps the old ones
        await self.sync()
        log.info("reloaded configuration from %s", ", ".join(self.config_paths) or "(none)")

    # ---- running ------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from .dns.server import DNSServer
        from .http.api import build_router
        from .http.server import HTTPServer

        self.started_at = trio.current_time()
        self._setup_tls()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._signals, nursery.cancel_scope)
            nursery.start_soon(self.loop_watch.run)
            if failpoints.LAB_FILE:
                nursery.start_soon(failpoints.watch_file, failpoints.LAB_FILE)
            await nursery.start(self.checks.serve)
            if self.server is not None:
                with listening("server RPC", self.cfg.bind_addr, self.cfg.ports.server):
                    self.server_port_bound = await nursery.start(self.server.serve)
            if self.cfg.ports.serf_lan >= 0:
                await self._start_gossip(nursery)
            self.load_config_registrations(self.cfg)
            self.load_persisted_registrations()
            try:
                self.maintenance.load()
            except MaintenanceError as exc:
                raise StartError(str(exc)) from None
            self.maintenance.apply(trio.current_time())
            if self.cfg.dev and self.server is not None:
                await self._await_dev_leader()
            if self.server is not None and self.acl.enabled:
                await self.acl.init_once()  # --dev: the built-ins exist before the API opens
                nursery.start_soon(self.acl.leader_loop)
            if self.server is not None:
                nursery.start_soon(self._reconcile_loop)
                from .sessions import leader_clocks

                nursery.start_soon(leader_clocks, self)
            nursery.start_soon(self._anti_entropy)
            nursery.start_soon(self._sync_on_request)
            nursery.start_soon(self._reap_loop)
            if self.server is None:
                nursery.start_soon(self.sync)  # reaches the servers once gossip has found them
            elif self.cfg.dev:
                await self._first_sync()
            http_host = self.cfg.addresses.http or self.cfg.client_addr
            if self.cfg.ports.http >= 0:
                router = build_router(self)
                telemetry.watch_http(self.metrics, router)
                server = HTTPServer(router, self.cfg.limits.http_max_conns_per_client)
                self.apply_http_limits(server)
                self.http_port = await serve_on_each(nursery, "HTTP", server.serve, http_host, self.cfg.ports.http)
                log.info("HTTP API on %s port %d", http_host, self.http_port)
            await self._start_https(nursery, http_host)
            if self.cfg.ports.dns >= 0:
                dns_host = self.cfg.addresses.dns or self.cfg.client_addr
                self.dns = DNSServer(self)
                self.dns_port = await serve_on_each(nursery, "DNS", self.dns.serve, dns_host, self.cfg.ports.dns)
                log.info("DNS on %s port %d (udp+tcp), domain %s.", dns_host, self.dns_port, self.cfg.domain)
            log.info("agent %s (%s) started: node %s, datacenter %s", __version__, CONSUL_COMPAT_VERSION,
                     self.local.node.name, self.cfg.datacenter)
            task_status.started()
            systemd.notify("READY=1")
            await self.shutdown.wait()
            self._stopping()
            nursery.cancel_scope.cancel()
        log.info("agent stopped")

    def _setup_tls(self) -> None:
        """TLS for server RPC and HTTPS from the tls.* keys (agent/tls.py); StartError if unusable."""
        from . import tls as tls_mod

        try:
            self.tls = tls_mod.TLSManager(self.cfg)
        except tls_mod.TLSConfigError as exc:
            raise StartError(str(exc)) from None
        tls_mod.ACTIVE = self.tls
        if self.server is not None and (self.tls.enabled or self.tls.verify_incoming):
            self.server.port.tls = self.tls
        if self.tls.enabled:
            log.info("TLS on: server RPC accepts TLS%s; outgoing RPC %s", " only" if self.tls.verify_incoming else
                     " and plaintext", "verified TLS" if self.tls.verify_outgoing else "plaintext")

    async def _start_https(self, nursery: trio.Nursery, host: str) -> None:
        from .http.api import build_router
        from .http.server import HTTPServer

        if self.cfg.ports.https < 0:
            return
        if self.tls is None or not self.tls.enabled:
            raise StartError("ports.https is set but TLS has no certificate (tls.defaults.cert_file, key_file)")
        router = build_router(self)
        telemetry.watch_http(self.metrics, router)
        server = HTTPServer(router, self.cfg.limits.http_max_conns_per_client, tls=self.tls)
        self.apply_http_limits(server)
        self.https_port = await serve_on_each(nursery, "HTTPS", server.serve, host, self.cfg.ports.https)
        log.info("HTTPS API on %s port %d", host, self.https_port)

    def apply_http_limits(self, server: Any) -> None:
        from murmur.checks.durations import parse_duration

        lim = self.cfg.limits
        server.read_timeout = parse_duration(lim.http_read_timeout)
        server.idle_timeout = parse_duration(lim.http_idle_timeout)
        server.max_body = lim.http_max_body_bytes

    async def _await_dev_leader(self) -> None:
        """--dev is its own single-voter Raft: it leads within a moment of starting."""
        assert self.server is not None
        with trio.move_on_after(10):
            await self.server.ready.wait()
            driver = self.server.driver
            assert driver is not None
            while not driver.is_leader:
                await driver.leader_changed.wait()

    async def _first_sync(self) -> None:
        """Register ourselves and our services before the API opens, so a client that finds the
        port open also finds the catalog filled in."""
        try:
            for cmd in reconcile_commands(self.store, self.member_views(), self.cfg.datacenter):
                await self.writer.apply(cmd)
        except WriteFailed as exc:
            log.debug("first reconcile deferred: %s", exc)
        await self.sync()

    # ---- gossip ---------------------------------------------------------------------------------
    def member_tags(self) -> dict[str, str]:
        n = self.local.node
        tags = {"role": "consul" if self.cfg.server else "node", "dc": self.cfg.datacenter, "id": n.id,
                "port": str(self.server_port), "build": f"{CONSUL_COMPAT_VERSION}:murmur-{__version__}",
                **protocol_tags(self.cfg.protocol)}
        if self.cfg.server:
            tags["expect"] = str(self.cfg.bootstrap_expect or 1)
        return tags

    async def _start_gossip(self, nursery: trio.Nursery) -> None:
        bind = self.cfg.bind_addr
        n = self.local.node
        port = self.cfg.ports.serf_lan
        self.gossip = GossipDriver(bind, port)
        gossip_config = self.gossip_config
        try:  # the label stays "": murmur has no config key for memberlist's label (docs/operations.md)
            keyring = load_keyring(self.cfg.data_dir, self.cfg.encrypt)
        except KeyringFileError as exc:
            raise StartError(str(exc)) from None
        if keyring is not None:
            self.gossip.enable_encryption(keyring, self.cfg.encrypt_verify_incoming, self.cfg.encrypt_verify_outgoing)
            # Sealing adds bytes: keep sealed datagrams within the size the core aims for.
            gossip_config = dataclasses.replace(gossip_config, udp_buffer_size=gossip_config.udp_buffer_size - keyring.overhead)
        # Bind first: with port 0 the advertised port is the one the OS picked.
        with listening("gossip", bind, port):
            bound = self.gossip.bind()
        membership = Membership(gossip_config, n.name, n.address, bound, self.rng, trio.current_time(),
                                tags=self.member_tags(), unique_tag="id")
        self.gossip.attach(membership)
        self.membership = membership
        telemetry.watch_gossip(self.metrics, membership)
        self.user_events = UserEvents(self.gossip, membership, self.local)
        self.user_events.register_handler(conflicts.CONFLICT_QUERY, conflicts.conflict_query_handler(membership))
        self.gossip.on_user = self.user_events.pump
        from .keyring_ops import KeyringOps

        self.keyring_ops = KeyringOps(self)
        self.keyring_ops.attach()
        nursery.start_soon(self.user_events.run)
        await nursery.start(self.gossip.serve)
        log.info("gossip on %s:%d (udp+tcp), advertising %s:%d", bind, bound, n.address, bound)
        nursery.start_soon(self._report_conflicts, self.gossip.subscribe())
        if self.cfg.data_dir:
            self._open_member_snapshot(nursery)
        if self.cfg.start_join:
            ok, errors = await self.gossip.join(self.cfg.start_join, 8301)
            if not ok:
                raise StartError(f"could not join any of {', '.join(self.cfg.start_join)}: {'; '.join(errors)}")
            log.info("joined %d of %d start_join addresses", ok, len(self.cfg.start_join))
        if self.cfg.retry_join:
            nursery.start_soon(self._retry_join)

    def _open_member_snapshot(self, nursery: trio.Nursery) -> None:
        """Keep data_dir/serf/local.snapshot current, and rejoin the members it lists (Serf's rule)."""
        assert self.gossip is not None
        snap = MemberSnapshot(self.cfg.data_dir, self.local.node.name)
        previous = snap.open()
        self.member_snapshot = snap
        nursery.start_soon(self._record_members, snap, self.gossip.subscribe())
        addrs = sorted(previous.alive.values())
        if not addrs:
            return
        if previous.left and not self.cfg.rejoin_after_leave:
            log.info("not rejoining the %d members of the snapshot: this agent left the cluster "
                     "(set rejoin_after_leave to rejoin anyway)", len(addrs))
            return
        nursery.start_soon(self._rejoin, addrs)

    async def _record_members(self, snap: MemberSnapshot, events: trio.MemoryReceiveChannel[MemberEvent]) -> None:
        try:
            async for ev in events:
                if ev.kind in (EventKind.JOIN, EventKind.UPDATE):
                    snap.member_alive(ev.name, ev.addr, ev.port)
                elif ev.kind in (EventKind.LEAVE, EventKind.FAILED, EventKind.REAP):
                    snap.member_gone(ev.name)
        finally:
            snap.close()

    async def _report_conflicts(self, events: trio.MemoryReceiveChannel[MemberEvent]) -> None:
        """Log what a CONFLICT means; a claim on our own name is settled by asking the cluster."""
        resolving = False
        async for ev in events:
            if ev.kind != EventKind.CONFLICT:
                continue
            members = self.membership.members.values() if self.membership else []
            log.error("%s", conflicts.describe(ev, self.local.node.name, self.local.node.id, members))
            if ev.name == self.local.node.name and not resolving:
                resolving = True
                await self._settle_name_conflict(ev)
                resolving = False

    async def _settle_name_conflict(self, ev: MemberEvent) -> None:
        """Serf's rule: keep our name if most members that know it know it at our address."""
        if self.user_events is None or self.membership is None:
            return
        state = await self.user_events.query(conflicts.CONFLICT_QUERY, self.local.node.name.encode())
        verdict = conflicts.tally((payload for payload, _ in state.responses.values()),
                                  conflicts.address_of(self.membership.me))
        if verdict.keep:
            log.warning("name conflict over %r settled in our favour: %d of %d members know it at our address",
                        self.local.node.name, verdict.matches, verdict.answers)
            return
        raise conflicts.NameConflictLost(
            f"node name {self.local.node.name!r} belongs to the agent at {ev.addr}:{ev.port} for "
            f"{verdict.answers - verdict.matches} of {verdict.answers} members; stopping this agent. "
            "Give it a unique node_name and start it again.")

    async def _rejoin(self, addrs: list[str]) -> None:
        assert self.gossip is not None
        ok, errors = await self.gossip.join(addrs, 8301)
        if ok:
            log.info("rejoined: reached %d of %d members from the member snapshot", ok, len(addrs))
        else:
            log.warning("could not rejoin any of the %d members from the member snapshot: %s",
                        len(addrs), "; ".join(errors[:3]))

    async def _retry_join(self) -> None:
        assert self.gossip is not None
        interval = parse_duration(self.cfg.retry_interval)
        attempt = 0
        while True:
            attempt += 1
            ok, errors = await self.gossip.join(self.cfg.retry_join, 8301)
            if ok:
                log.info("retry_join: joined %d of %d addresses", ok, len(self.cfg.retry_join))
                return
            log.warning("retry_join: attempt %d failed: %s", attempt, "; ".join(errors))
            if self.cfg.retry_max and attempt >= self.cfg.retry_max:
                log.error("retry_join: giving up after %d attempts", attempt)
                return
            await trio.sleep(interval)

    def exit_soon(self, delay: float = 0.2) -> None:
        """Stop the process shortly (after `PUT /v1/agent/leave` has been answered)."""
        async def later() -> None:
            await trio.sleep(delay)
            self.shutdown.set()

        trio.lowlevel.spawn_system_task(later)

    async def leave(self) -> None:
        """Graceful leave: tell the cluster, wait (bounded) for the news to go out."""
        if self.leaving:
            return
        self.leaving = True
        if self.member_snapshot is not None:
            self.member_snapshot.left()
        if self.gossip is not None:
            log.info("leaving the cluster")
            await self.gossip.leave(LEAVE_TIMEOUT)
        if self.server is not None and not self.cfg.dev:
            await self._leave_raft()

    async def _leave_raft(self) -> None:
        """A server leaving gracefully takes itself out of the Raft configuration (through the
        leader; a leader hands over and steps down once the change commits), so the cluster's
        quorum shrinks with it. Bounded: if it fails, the leader removes us when gossip says we left."""
        from .operator import OperatorError, run_on_leader

        srv = self.server
        if srv is None or srv.driver is None or srv.id not in srv.driver.node.raft.voters \
                or len(srv.driver.node.raft.voters) < 2:
            return
        with trio.move_on_after(LEAVE_TIMEOUT * 2):
            try:
                await run_on_leader(srv, "remove", {"target": srv.id, "leaving": True})
                log.info("left the raft configuration")
            except OperatorError as exc:
                log.warning("could not leave the raft configuration (the leader removes us later): %s", exc)

    async def _signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for sig in signals:
                if sig == signal.SIGHUP:
                    try:
                        await self.reload()
                    except (config_mod.ConfigError, DefinitionError):
                        pass
                else:
                    log.info("caught %s, shutting down", signal.Signals(sig).name)
                    self._stopping()
                    if self._leave_on(sig):
                        await self.leave()
                    self.shutdown.set()

    def _stopping(self) -> None:
        """Tell systemd we are stopping (once, however many signals arrive)."""
        if not self.stopping_notified:
            self.stopping_notified = True
            systemd.notify("STOPPING=1")

    def _leave_on(self, sig: int) -> bool:
        """Consul's rules: SIGTERM leaves if leave_on_terminate (default: clients yes, servers no);
        SIGINT leaves unless skip_leave_on_interrupt (default: servers skip, clients leave)."""
        if sig == signal.SIGTERM:
            lot = self.cfg.leave_on_terminate
            return (not self.cfg.server) if lot is None else lot
        skip = self.cfg.skip_leave_on_interrupt
        return not (self.cfg.server if skip is None else skip)
