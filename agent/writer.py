"""The write path: every catalog change is a command applied through here.

`apply(command)` returns the command's result once it is committed and applied. Servers (and
`--dev`, a single-voter server) write through Raft (`ServerWriter`; a follower forwards to the
leader under a request ID); client agents send their writes to a server over RPC
(`agent/remote.py:ClientWriter`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from murmur.catalog import commands

if TYPE_CHECKING:
    from .server import ServerRuntime


class WriteFailed(Exception):
    """A write could not be made: no leader, forwarding failed, or the outcome is unknown.
    HTTP answers 500 with this message, as Consul does ("No cluster leader")."""


class ACLRefused(WriteFailed):
    """A server refused the write for its token: HTTP answers 403 with this message."""


class Writer(Protocol):
    async def apply(self, cmd: commands.Command) -> Any: ...


class ServerWriter:
    """Writes through Raft (followers forward to the leader). Failures become WriteFailed."""

    def __init__(self, server: ServerRuntime) -> None:
        self.server = server

    async def apply(self, cmd: commands.Command) -> Any:
        from murmur.raft.core import ProposalDropped

        from .drivers.raft import NotLeader, OutcomeUnknown
        from .rpc.protocol import RPCError
        from .server import NoLeader

        try:
            return await self.server.apply(cmd)
        except RPCError as exc:
            if exc.kind in ("permission_denied", "acl_not_found"):
                raise ACLRefused(str(exc)) from exc
            raise WriteFailed("No cluster leader" if exc.kind in ("not_leader", "no_leader") else str(exc)) from exc
        except (NoLeader, NotLeader) as exc:
            raise WriteFailed("No cluster leader") from exc
        except OutcomeUnknown as exc:
            raise WriteFailed(f"leadership lost while writing; the write may or may not be applied: {exc}") from exc
        except ProposalDropped as exc:
            raise WriteFailed(f"write dropped: {exc}") from exc

