"""Conflicting claims on a node name or node ID: what they mean, and who keeps a contested name.

The gossip core refuses a claimant (see CONFLICT in gossip/membership.py) and reports it once.
This module turns that into something an operator can act on, and settles the one case that
needs settling: another agent claiming OUR name. As Serf does, we ask every member, by a query,
at which address it knows that name. If a majority of the answers name our address we keep it;
otherwise the other claimant is the one the cluster knows, and this agent stops with an error
rather than fight over the name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from murmur.gossip.membership import Member, MemberEvent, Membership
from murmur.gossip.userevents import IncomingQuery

CONFLICT_QUERY = "_murmur_conflict"  # payload: the contested name; answer: b"host:port" or b""


class NameConflictLost(Exception):
    """The cluster sides with the other claimant of our name: this agent must stop."""


def address_of(m: Member) -> bytes:
    return f"{m.addr}:{m.port}".encode()


def conflict_query_handler(membership: Membership) -> Callable[[IncomingQuery], bytes | None]:
    """Answer CONFLICT_QUERY with the address at which we know the named member ("" if unknown)."""
    def answer(q: IncomingQuery) -> bytes | None:
        m = membership.members.get(q.payload.decode("utf-8", "replace"))
        return address_of(m) if m is not None else b""

    return answer


@dataclass(frozen=True)
class Verdict:
    matches: int  # answers naming our address
    answers: int  # answers from members that know the name at all

    @property
    def keep(self) -> bool:
        """A strict majority of informed answers for us; no information keeps the status quo."""
        return self.answers == 0 or self.matches >= self.answers // 2 + 1


def tally(answers: Iterable[bytes], ours: bytes) -> Verdict:
    informed = [a for a in answers if a]
    return Verdict(sum(1 for a in informed if a == ours), len(informed))


def describe(ev: MemberEvent, own_name: str, own_id: str, members: Iterable[Member]) -> str:
    """One log line saying what the conflict is and what to do about it."""
    where = f"{ev.addr}:{ev.port}"
    claimed_id = ev.tags.get("id", "")
    if ev.name == own_name:
        return (f"another agent at {where} claims this agent's node name {own_name!r}; names must be unique "
                "(set node_name on one of them). Asking the cluster which one it knows.")
    if claimed_id and claimed_id == own_id:
        return (f"member {ev.name!r} at {where} has this agent's node ID {claimed_id}: one VM looks like a "
                "clone of the other, with a copied data dir. On the clone, stop the agent, delete "
                "data_dir/node-id and start it again. Until then the two cannot see each other.")
    holder = next((m for m in members if claimed_id and m.tags.get("id") == claimed_id and m.name != ev.name), None)
    if holder is not None:
        return (f"member {ev.name!r} at {where} claims node ID {claimed_id}, which {holder.name!r} at "
                f"{holder.addr}:{holder.port} holds (a cloned VM with a copied data dir?); refused")
    return f"member name {ev.name!r} is claimed from {where} while another member holds it; refused"
