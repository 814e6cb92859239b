"""The agent: wires the cores to the world and runs them in one trio nursery.

Start order (nested like hypercorn's serve): state and write path first, then the check runner,
then the listeners (HTTP, DNS). Shutdown is the reverse, by cancelling the nursery. In `--dev`
the agent is also the single server: its writes go through the local sequencer into the store.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import uuid
from pathlib import Path
from typing import Any

import trio
from murmur import CONSUL_COMPAT_VERSION, __version__
from murmur.catalog import commands
from murmur.catalog.commands import CheckSpec, Register, ServiceSpec
from murmur.catalog.store import StateStore
from murmur.checks.definitions import CheckDefinition, DefinitionError, from_api

from . import config as config_mod
from .checks_runner import CheckRunner
from .config import RuntimeConfig
from .definitions import ServiceDefinition, parse_service
from .local_state import LocalState, NodeInfo
from .watch import ChangeFeed
from .writer import LocalSequencer

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


class Agent:
    def __init__(self, cfg: RuntimeConfig, config_paths: list[str] | None = None,
                 overrides: dict[str, Any] | None = None, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.config_paths = list(config_paths or [])
        self.overrides = dict(overrides or {})
        self.rng = rng or random.Random()
        self.store = StateStore()
        self.feed = ChangeFeed()
        self.writer = LocalSequencer(self.store, self.feed)
        node = NodeInfo(name=cfg.node_name or socket.gethostname(), id=cfg.node_id or node_id_for(cfg.data_dir),
                        address=pick_address(cfg), datacenter=cfg.datacenter,
                        meta=tuple(sorted(cfg.node_meta.items())))
        self.local = LocalState(node)
        self.checks = CheckRunner(self.local, self.sync, self.rng)
        self.http_port = 0
        self.dns_port = 0
        self.started_at = 0.0
        self.shutdown = trio.Event()
        self.stats: dict[str, int] = {"dns_dropped": 0, "dns_formerr": 0, "sync_errors": 0}

    # ---- write path ----------------------------------------------------------------------------
    async def sync(self) -> None:
        """Anti-entropy: write whatever the catalog lacks of this agent's state."""
        for cmd in self.local.sync_commands(self.store):
            result = await self.writer.apply(cmd)
            if isinstance(result, commands.ApplyError):
                self.stats["sync_errors"] += 1
                log.warning("sync: %s", result.message)

    async def register_server_node(self) -> None:
        """What a Consul server records for itself: its node, serfHealth and the `consul` service."""
        n = self.local.node
        await self.writer.apply(Register(
            node=n.name, address=n.address, node_id=n.id, datacenter=n.datacenter, node_meta=n.meta,
            service=ServiceSpec(id="consul", name="consul", port=self.server_port),
            checks=(CheckSpec(check_id="serfHealth", name="Serf Health Status", status="passing",
                              output="Agent alive and reachable", type=""),)))

    @property
    def server_port(self) -> int:
        return self.cfg.ports.server if self.cfg.ports.server > 0 else 8300

    # ---- local registrations ------------------------------------------------------------------
    def add_service(self, sdef: ServiceDefinition, source: str = "api", replace_existing_checks: bool = False
                    ) -> None:
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
        self.checks.reconcile()

    def add_check(self, defn: CheckDefinition, source: str = "api") -> None:
        if defn.service_id and defn.service_id not in self.local.services:
            raise DefinitionError(f"ServiceID \"{defn.service_id}\" does not exist")
        self.local.add_check(defn, trio.current_time(), source)
        self.checks.reconcile()

    def remove_service(self, sid: str) -> bool:
        if sid not in self.local.services:
            return False
        self.local.remove_service(sid)
        self.checks.reconcile()
        return True

    def remove_check(self, cid: str) -> bool:
        ok = self.local.remove_check(cid)
        self.checks.reconcile()
        return ok

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
        await self.sync()
        log.info("reloaded configuration from %s", ", ".join(self.config_paths) or "(none)")

    # ---- running ------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from .dns.server import DNSServer
        from .http.api import build_router
        from .http.server import HTTPServer

        self.started_at = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._signals, nursery.cancel_scope)
            await nursery.start(self.checks.serve)
            await self.register_server_node()
            self.load_config_registrations(self.cfg)
            await self.sync()
            http_host = self.cfg.addresses.http or self.cfg.client_addr
            if self.cfg.ports.http > 0 or self.cfg.ports.http == 0:
                server = HTTPServer(build_router(self), self.cfg.limits.http_max_conns_per_client)
                self.http_port = await nursery.start(server.serve, http_host, self.cfg.ports.http)
                log.info("HTTP API on %s:%d", http_host, self.http_port)
            if self.cfg.ports.dns >= 0:
                dns_host = self.cfg.addresses.dns or self.cfg.client_addr
                self.dns = DNSServer(self)
                self.dns_port = await nursery.start(self.dns.serve, dns_host, self.cfg.ports.dns)
                log.info("DNS on %s:%d (udp+tcp), domain %s.", dns_host, self.dns_port, self.cfg.domain)
            log.info("agent %s (%s) started: node %s, datacenter %s", __version__, CONSUL_COMPAT_VERSION,
                     self.local.node.name, self.cfg.datacenter)
            task_status.started()
            await self.shutdown.wait()
            nursery.cancel_scope.cancel()
        log.info("agent stopped")

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
                    self.shutdown.set()
