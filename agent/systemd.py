"""systemd's readiness protocol (sd_notify): READY=1 once the agent serves, STOPPING=1 as it stops.

Only when systemd asked for it (NOTIFY_SOCKET is set, `Type=notify` units); otherwise nothing is
sent. A failure to notify is logged, never fatal: the agent works the same without systemd.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("murmur.agent")


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1") to systemd. True if it was sent."""
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr.startswith("@"):  # an abstract socket
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("sd_notify %s to %s failed: %s", state, os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True
