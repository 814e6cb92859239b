"""`murmur lock PREFIX CHILD...` (Consul's `consul lock`, single-holder mode): hold a KV lock
while a child process runs.

1. Create a session (TTL, released on invalidation, Consul's default lock delay) and keep it
   renewed at half its TTL.
2. Acquire `PREFIX/.lock` with it, waiting with blocking reads while another session holds it.
3. Run CHILD (through `sh -c` unless -shell=false). If the lock is lost (the key's Session is no
   longer ours: the session expired, was destroyed, or its node failed), the child is sent
   SIGTERM (its whole process group), then SIGKILL after -kill-grace; the command exits 1.
4. When the child exits: release the lock, destroy the session, exit with the child's status.

The lock is advisory: it only excludes other `murmur lock` (or Consul-lock-style) holders. Use
the key's LockIndex as a fencing token (docs/operations.md) where that matters.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any
from urllib.parse import quote

import click

from .client import APIError, Client, fail, http_options

RENEW_FRACTION = 0.5  # renew the session at this fraction of its TTL


def _key(prefix: str) -> str:
    return "/v1/kv/" + quote(prefix.rstrip("/") + "/.lock", safe="/")


class _Holder:
    """The session, its renewals, and watching that the lock stays ours (in threads)."""

    def __init__(self, client: Client, key: str, ttl: float, name: str) -> None:
        self.client, self.key, self.ttl = client, key, ttl
        self.sid: str = client.call("PUT", "/v1/session/create", json={
            "Name": name, "TTL": f"{int(ttl)}s", "Behavior": "release"})["ID"]
        self.lost = threading.Event()
        self.done = threading.Event()

    def acquire(self, deadline: float) -> bool:
        index = 0
        while time.monotonic() < deadline and not self.done.is_set():
            if self.client.call("PUT", f"{self.key}?acquire={self.sid}", content=b"") is True:
                return True
            # Held by someone else (or in its lock delay): wait for the key to change.
            _, index, _ = self.client.blocking_get(self.key, index, "15s")
            time.sleep(0.05)  # a lock delay answers at once with the same index: do not spin
        return False

    def renew(self) -> None:
        while not self.done.wait(self.ttl * RENEW_FRACTION):
            try:
                self.client.call("PUT", f"/v1/session/renew/{self.sid}")
            except APIError:
                self.lost.set()  # a 404: the session is gone, and the lock with it
                return

    def watch(self) -> None:
        index = 0
        while not self.done.is_set():
            try:
                data, index, status = self.client.blocking_get(self.key, index, "5s")
            except APIError:
                time.sleep(1.0)
                continue
            held = status == 200 and isinstance(data, list) and data and data[0].get("Session") == self.sid
            if not held:
                self.lost.set()
                return

    def release(self) -> None:
        self.done.set()
        for method, path in (("PUT", f"{self.key}?release={self.sid}"), ("PUT", f"/v1/session/destroy/{self.sid}")):
            try:
                self.client.call(method, path)
            except APIError:
                pass


@click.command()
@click.argument("prefix")
@click.argument("child", nargs=-1, required=True)
@click.option("-name", "--name", "name", default="", help="Session name (default: murmur lock on HOST).")
@click.option("-timeout", "--timeout", "timeout", type=float, default=0.0,
              help="Seconds to wait for the lock (0: forever).")
@click.option("-ttl", "--ttl", "ttl", type=click.IntRange(10, 86400), default=15, show_default=True,
              help="Session TTL in seconds (renewed at half of it).")
@click.option("-shell/-no-shell", "--shell/--no-shell", "shell", default=True, help="Run CHILD through sh -c.")
@click.option("-kill-grace", "--kill-grace", "grace", type=float, default=5.0, show_default=True,
              help="Seconds between SIGTERM and SIGKILL when the lock is lost.")
@http_options
def lock(prefix: str, child: tuple[str, ...], name: str, timeout: float, ttl: int, shell: bool, grace: float,
         http_addr: str | None, token: str | None) -> None:
    """Hold the lock PREFIX/.lock while CHILD runs; exit with CHILD's status."""
    client = Client(http_addr, token, timeout=60.0)
    try:
        holder = _Holder(client, _key(prefix), float(ttl), name or f"murmur lock on {socket.gethostname()}")
    except APIError as exc:
        fail(f"cannot create a session: {exc}")
        return
    threads: list[threading.Thread] = []
    try:
        renewer = threading.Thread(target=holder.renew, daemon=True)
        renewer.start()
        threads.append(renewer)
        deadline = time.monotonic() + (timeout if timeout > 0 else 10 * 365 * 86400.0)
        try:
            if not holder.acquire(deadline):
                fail(f"timed out waiting for the lock on {prefix}")
        except APIError as exc:
            fail(f"cannot acquire the lock: {exc}")
        click.echo(f"Lock acquired on {prefix} (session {holder.sid})", err=True)
        watcher = threading.Thread(target=holder.watch, daemon=True)
        watcher.start()
        threads.append(watcher)
        argv: Any = " ".join(child) if shell else list(child)
        proc = subprocess.Popen(argv, shell=shell, start_new_session=True)  # its own group: stop it whole
        while proc.poll() is None:
            if holder.lost.wait(0.2):
                click.echo(f"Lock lost on {prefix}: stopping the child", err=True)
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
                sys.exit(1)
        sys.exit(proc.returncode)
    finally:
        holder.release()
