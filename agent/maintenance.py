"""Maintenance mode, as Consul does it: a critical check with the operator's reason as its Notes.

Node maintenance adds `_node_maintenance` (a node check: every service on the node turns
unhealthy); service maintenance adds `_service_maintenance:<id>` to that one service. Both are
ordinary local checks of type "maintenance" that no task runs, so anti-entropy carries them to
the catalog and DNS and `?passing` drop the instances like for any other critical check.

The state is kept in `data_dir/maintenance.json` (written atomically, fsynced) so that an agent
restarted during maintenance stays in maintenance. A service entry whose service is not
registered at start waits in the file until a service of that ID is registered again; turning
maintenance off removes it. Without a data_dir (--dev) it lives in memory only.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from murmur.checks.definitions import CheckDefinition
from murmur.checks.status import CRITICAL

if TYPE_CHECKING:
    from .local_state import LocalState

log = logging.getLogger("murmur.maintenance")

NODE_CHECK_ID = "_node_maintenance"
SERVICE_CHECK_PREFIX = "_service_maintenance:"
NODE_DEFAULT_REASON = "Maintenance mode is enabled for this node, but no reason was provided. This is a default message."
SERVICE_DEFAULT_REASON = ("Maintenance mode is enabled for this service, but no reason was provided. "
                          "This is a default message.")
FILE_NAME = "maintenance.json"
FORMAT = 1


def service_check_id(sid: str) -> str:
    return SERVICE_CHECK_PREFIX + sid


def node_check(reason: str) -> CheckDefinition:
    return CheckDefinition(id=NODE_CHECK_ID, name="Node Maintenance Mode", kind="maintenance",
                           notes=reason or NODE_DEFAULT_REASON, status=CRITICAL)


def service_check(sid: str, reason: str) -> CheckDefinition:
    return CheckDefinition(id=service_check_id(sid), name="Service Maintenance Mode", kind="maintenance",
                           service_id=sid, notes=reason or SERVICE_DEFAULT_REASON, status=CRITICAL)


class MaintenanceError(Exception):
    """The maintenance file cannot be read or written (the message names it and why)."""


class Maintenance:
    """The node's and services' maintenance reasons, mirrored into LocalState and the file."""

    def __init__(self, local: LocalState, data_dir: str) -> None:
        self.local = local
        self.path = Path(data_dir) / FILE_NAME if data_dir else None
        self.node: str | None = None  # the reason while the node is in maintenance
        self.services: dict[str, str] = {}  # service ID -> reason

    # ---- the file -------------------------------------------------------------------------------
    def load(self) -> None:
        """Read the file left by the previous run (a missing file means no maintenance)."""
        if self.path is None or not self.path.exists():
            return
        try:
            data: Any = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise MaintenanceError(f"{self.path}: cannot read maintenance state: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("services", {}), dict):
            raise MaintenanceError(f"{self.path}: not a maintenance state file; remove it to clear maintenance")
        if int(data.get("format", FORMAT)) > FORMAT:
            raise MaintenanceError(f"{self.path}: written by a newer murmur (format {data['format']})")
        node = data.get("node")
        self.node = node if isinstance(node, str) else None
        self.services = {str(k): str(v) for k, v in data.get("services", {}).items()}

    def _save(self, node: str | None, services: dict[str, str]) -> None:
        """Write the new state, then adopt it: a failed write (it raises) changes nothing."""
        if self.path is not None:
            self._write({"format": FORMAT, "node": node, "services": services})
        self.node, self.services = node, services

    def _write(self, data: dict[str, Any]) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())  # an fsync error propagates: the change is not acknowledged
        os.replace(tmp, self.path)

    # ---- applying -------------------------------------------------------------------------------
    def apply(self, now: float) -> None:
        """Put the recorded maintenance checks into LocalState (at start, and after registrations)."""
        if self.node is not None and NODE_CHECK_ID not in self.local.checks:
            self.local.add_check(node_check(self.node), now, "maintenance")
        for sid, reason in self.services.items():
            if sid in self.local.services and service_check_id(sid) not in self.local.checks:
                self.local.add_check(service_check(sid, reason), now, "maintenance")

    def set_node(self, enable: bool, reason: str, now: float) -> None:
        if enable:
            self._save(reason or NODE_DEFAULT_REASON, self.services)
            self.local.add_check(node_check(reason), now, "maintenance")
            log.info("node entered maintenance mode: %s", self.node)
        else:
            was = self.node is not None or NODE_CHECK_ID in self.local.checks
            self._save(None, self.services)
            self.local.remove_check(NODE_CHECK_ID)
            if was:
                log.info("node left maintenance mode")

    def forget_service(self, sid: str) -> None:
        """The service was deregistered: its maintenance ends with it."""
        if sid in self.services:
            self._save(self.node, {k: v for k, v in self.services.items() if k != sid})
            log.info("service %s deregistered: its maintenance mode ends", sid)

    def set_service(self, sid: str, enable: bool, reason: str, now: float) -> bool:
        """False if no service of that ID is registered on this agent."""
        if sid not in self.local.services:
            return False
        if enable:
            self._save(self.node, {**self.services, sid: reason or SERVICE_DEFAULT_REASON})
            self.local.add_check(service_check(sid, reason), now, "maintenance")
            log.info("service %s entered maintenance mode: %s", sid, self.services[sid])
        else:
            was = sid in self.services
            self._save(self.node, {k: v for k, v in self.services.items() if k != sid})
            self.local.remove_check(service_check_id(sid))
            if was:
                log.info("service %s left maintenance mode", sid)
        return True
