"""Gossip encryption at the socket boundary: seal what the core sends, open what arrives.

The core (`gossip.membership`) only ever sees clear packets; the driver calls `outgoing` on each
datagram and stream-frame payload before it leaves, and `incoming` on each one that arrives.
What cannot be opened is dropped and counted in the driver's stats (and so in
`/v1/agent/self` → `Stats.serf_lan`):

| counter | what was dropped |
|---|---|
| `encrypt_clear_dropped` | a clear packet while `encrypt_verify_incoming` is on |
| `encrypt_forged` | sealed, but no key opens it (another key, tampered, truncated) |
| `encrypt_label_mismatch` | opened, but sealed for another cluster label |
| `encrypt_unknown_format` | a sealed format this version does not know |

`encrypt_clear_accepted` counts clear packets let through during a rollout
(`encrypt_verify_incoming = false`): when it stops growing, every agent sends sealed packets
and verify_incoming can be turned on.

The rollout switches behave as Consul's: `encrypt_verify_outgoing = false` sends in clear,
`encrypt_verify_incoming = false` accepts clear packets as well as sealed ones. A sealed packet is
always opened (and dropped if it cannot be), whatever the switches say.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from murmur.gossip import keyring as kr

COUNTERS = ("encrypt_clear_dropped", "encrypt_forged", "encrypt_label_mismatch", "encrypt_unknown_format",
            "encrypt_clear_accepted")


class GossipCrypto:
    def __init__(self, keyring: kr.Keyring, stats: dict[str, int], verify_incoming: bool = True,
                 verify_outgoing: bool = True, nonce: Callable[[int], bytes] = os.urandom) -> None:
        self.keyring = keyring
        self.verify_incoming = verify_incoming
        self.verify_outgoing = verify_outgoing
        self.nonce = nonce
        self.stats = stats
        for k in COUNTERS:
            stats.setdefault(k, 0)

    def outgoing(self, data: bytes) -> bytes:
        """A datagram or frame payload as it goes on the wire."""
        if not self.verify_outgoing:
            return data
        return self.keyring.seal(data, self.nonce(kr.NONCE_SIZE))

    def outgoing_frame(self, frame: bytes) -> bytes:
        """A whole stream frame (4-byte length, payload) as it goes on the wire."""
        if not self.verify_outgoing:
            return frame
        payload = self.outgoing(frame[4:])
        return struct.pack("!I", len(payload)) + payload

    def incoming(self, data: bytes) -> bytes | None:
        """The clear bytes of a received datagram or frame payload, or None (dropped, counted)."""
        if not kr.is_sealed(data):
            if self.verify_incoming:
                self.stats["encrypt_clear_dropped"] += 1
                return None
            self.stats["encrypt_clear_accepted"] += 1
            return data
        try:
            return self.keyring.open(data)
        except kr.LabelMismatch:
            self.stats["encrypt_label_mismatch"] += 1
        except kr.UnknownFormat:
            self.stats["encrypt_unknown_format"] += 1
        except kr.SealError:
            self.stats["encrypt_forged"] += 1
        return None
