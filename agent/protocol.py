"""The cluster protocol version: what lets agents of version N and N-1 share a cluster.

Every agent advertises in its gossip tags the protocol it speaks (`vsn`) and the range it
understands (`vsn_min`..`vsn_max`), as Consul does. A server writes a log entry in a newer
format only when every server of its datacenter that gossip knows (alive or failed, not left)
speaks a protocol that has it, so an N-1 server never meets an entry it cannot apply; the
check runs at proposal time, so the switch happens by itself once the last old server is
upgraded (or removed).

    2   catalog commands REGISTER, DEREGISTER and KV, sent bare.
    3   client writes carry request IDs: the REQUEST wrapper (catalog/commands.py), so a retry
        after an unknown outcome is applied once; sessions and locks (SESSION, KV LOCK, UNLOCK
        and REAP), transactions (TXN) and snapshot restore (RESTORE).
    4   ACL tokens, policies and roles (the ACL command); RPC requests carry the caller's token.

A new command type or wire change bumps PROTOCOL_MAX and gets a line here and a gate where it
is written (`required_protocol`): a write that needs a newer protocol than the cluster speaks
is refused with a clear error rather than stopping the old servers. `--protocol 2` (hidden) pins an agent to the older behaviour, including refusing
entries that protocol does not know, which is what the upgrade test relies on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from murmur.catalog import commands

PROTOCOL_MIN = 2  # the oldest protocol this build can speak and apply
PROTOCOL_MAX = 4  # the newest; the default
REQUEST_IDS = 3  # first protocol with the REQUEST wrapper
ACLS = 4  # first protocol with the ACL command


def protocol_tags(protocol: int) -> dict[str, str]:
    return {"vsn": str(protocol), "vsn_min": str(PROTOCOL_MIN), "vsn_max": str(PROTOCOL_MAX)}


def spoken(tags: Mapping[str, str]) -> int:
    """The protocol a member speaks, from its tags; a member without the tag counts as the oldest."""
    try:
        return int(tags.get("vsn", PROTOCOL_MIN))
    except ValueError:
        return PROTOCOL_MIN


def cluster_protocol(own: int, servers: Iterable[Mapping[str, str]]) -> int:
    """What every server understands: the lowest protocol among ourselves and `servers`."""
    return min([own, *(spoken(t) for t in servers)])


_NEW_IN_3 = frozenset({commands.CommandType.REQUEST, commands.CommandType.SESSION, commands.CommandType.TXN,
                       commands.CommandType.RESTORE})


def required_protocol(data: bytes) -> int:
    """The oldest protocol that can apply this encoded command (agent/protocol.py's table)."""
    if not data:
        return PROTOCOL_MIN
    if data[0] == commands.CommandType.ACL:
        return ACLS
    if data[0] == commands.CommandType.REQUEST:
        try:
            _, inner = commands.unwrap_request(data)
        except commands.CommandError:
            return REQUEST_IDS
        return max(REQUEST_IDS, required_protocol(inner))
    if data[0] in _NEW_IN_3:
        return REQUEST_IDS
    if data[0] == commands.CommandType.KV:
        try:
            cmd = commands.decode(data)
        except commands.CommandError:
            return PROTOCOL_MIN  # refused later as malformed, whatever the protocol
        if isinstance(cmd, commands.KV) and (cmd.op > commands.KVOp.DELETE_TREE or cmd.session or cmd.seen):
            return REQUEST_IDS
    return PROTOCOL_MIN


def too_old(need: int, cluster: int) -> str:
    """The error for a write the cluster cannot take yet."""
    return (f"this write needs cluster protocol {need}, but a server of this datacenter speaks {cluster}: "
            "finish upgrading the servers first")
