"""A throw-away network lab: N hosts as Linux network namespaces on one bridge, with faults.

Each host is a namespace `<prefix>h<i>` with one interface, eth0, addressed 10.99.0.(10+i)/24.
Every eth0 is one end of a veth pair whose other end is a port `h<i>` of a bridge inside a switch
namespace `<prefix>sw`. Nothing is routed out of the lab and the root namespace gets no address
or route for 10.99.0.0/16: lab traffic cannot reach any real network. The prefix carries our PID
(`mmr<pid>-`), so two labs (or another helper's) never share a name.

Faults live in the switch namespace, in one nftables bridge-family table, so frames vanish "on
the wire" and senders see silence, as in a real partition (a drop in a host's own OUTPUT hook
would make sendto() fail with EPERM instead). Per port: `pin_hN`/`pout_hN` hold partition rules,
`lin_hN`/`lout_hN` loss rules (nftables `numgen random`: this kernel has no netem).

The test process talks to a host by entering its namespace in one thread (`enter(ns)`: setns(2)
is per thread), then connecting to 127.0.0.1 there: it never touches the host network.

Needs root, iproute2 and nftables (`apt-get install -y nftables`). `Lab.destroy()` removes
everything and is idempotent; it is also registered with atexit.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

NET = "10.99.0"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class LabError(RuntimeError):
    pass


def available() -> str:
    """"" if a lab can be built here, else why not."""
    if os.geteuid() != 0:
        return "needs root (ip netns, nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} missing (apt-get install -y iproute2 nftables)"
    return ""


def run(*args: str, ns: str | None = None, check: bool = True, inp: str | None = None) -> str:
    cmd = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    p = subprocess.run(cmd, input=inp, capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def setns(ns: str) -> None:
    """Move the calling thread into network namespace `ns` (for good)."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {ns}: {os.strerror(err)}")
    finally:
        os.close(fd)


@contextmanager
def entered(ns: str) -> Iterator[None]:
    """Run the body inside `ns` on this thread, then come back to the namespace we were in."""
    back = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        setns(ns)
        yield
    finally:
        _libc.setns(back, CLONE_NEWNET)
        os.close(back)


class Lab:
    def __init__(self, n: int, prefix: str | None = None) -> None:
        if not 1 <= n <= 200:
            raise ValueError("1 <= n <= 200 hosts")
        self.n = n
        self.prefix = prefix or f"mmr{os.getpid() % 100000}-"
        self.switch = f"{self.prefix}sw"
        self.hosts = [f"{self.prefix}h{i}" for i in range(1, n + 1)]
        self.built = False
        self.faults: dict[str, set[str]] = {}  # host -> faults applied (for status and heal)
        atexit.register(self.destroy)

    # ---- names -----------------------------------------------------------------------------------
    def ip(self, host: str) -> str:
        return f"{NET}.{10 + self.index(host)}"

    def index(self, host: str) -> int:
        return self.hosts.index(host) + 1

    def port(self, host: str) -> str:
        return f"h{self.index(host)}"

    def host_of_ip(self, ip: str) -> str | None:
        for h in self.hosts:
            if self.ip(h) == ip:
                return h
        return None

    # ---- build / destroy -------------------------------------------------------------------------
    def build(self) -> Lab:
        why = available()
        if why:
            raise LabError(why)
        existing = run("ip", "netns", "list")
        if any(line.startswith(self.prefix) for line in existing.splitlines()):
            raise LabError(f"namespaces with prefix {self.prefix} exist already")
        self.built = True
        run("ip", "netns", "add", self.switch)
        run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", ns=self.switch)
        run("ip", "link", "add", "br0", "type", "bridge", ns=self.switch)
        run("ip", "link", "set", "br0", "up", ns=self.switch)
        tag = self.prefix.strip("-")[-8:]
        for i, h in enumerate(self.hosts, 1):
            run("ip", "netns", "add", h)
            run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", ns=h)
            a, b = f"v{tag}x{i}a", f"v{tag}x{i}b"  # temporary names, unique in the root namespace
            run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            run("ip", "link", "set", a, "netns", h)
            run("ip", "link", "set", b, "netns", self.switch)
            run("ip", "link", "set", a, "name", "eth0", ns=h)
            run("ip", "link", "set", b, "name", f"h{i}", ns=self.switch)
            run("ip", "link", "set", f"h{i}", "master", "br0", "up", ns=self.switch)
            run("ip", "addr", "add", f"{NET}.{10 + i}/24", "dev", "eth0", ns=h)
            run("ip", "link", "set", "lo", "up", ns=h)
            run("ip", "link", "set", "eth0", "up", ns=h)
            self.faults[h] = set()
        chains, jumps = [], []
        for i in range(1, self.n + 1):
            p = f"h{i}"
            chains += [f"  chain pin_{p} {{ }}", f"  chain pout_{p} {{ }}", f"  chain lin_{p} {{ }}",
                       f"  chain lout_{p} {{ }}"]
            jumps += [f'    iifname "{p}" jump pout_{p}', f'    oifname "{p}" jump pin_{p}',
                      f'    iifname "{p}" jump lout_{p}', f'    oifname "{p}" jump lin_{p}']
        table = ("table bridge labfault {\n" + "\n".join(chains) + "\n  chain forward {\n"
                 "    type filter hook forward priority -10; policy accept;\n" + "\n".join(jumps) + "\n  }\n}\n")
        run("nft", "-f", "-", ns=self.switch, inp=table)
        return self

    def pids(self, ns: str) -> list[int]:
        out = run("ip", "netns", "pids", ns, check=False)
        return [int(x) for x in out.split() if x.isdigit()]

    def destroy(self) -> None:
        """Kill whatever still runs in the lab's namespaces (by PID), then delete them. Idempotent."""
        if not self.built:
            return
        names = [*self.hosts, self.switch]
        present = set(run("ip", "netns", "list", check=False).split())
        names = [ns for ns in names if ns in present]
        for sig in (signal.SIGCONT, signal.SIGKILL):
            for ns in names:
                for pid in self.pids(ns):
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
        for _ in range(50):  # bounded: the kernel reaps killed processes quickly
            if not any(self.pids(ns) for ns in names):
                break
            time.sleep(0.1)
        for ns in names:
            run("ip", "netns", "del", ns, check=False)
        self.built = False

    # ---- network faults --------------------------------------------------------------------------
    # Each call is one `nft -f` transaction (one process): a fault lands on all its rules at once,
    # and a busy machine does not stretch a heal over seconds of separate nft runs.
    def _nft(self, lines: list[str]) -> None:
        if lines:
            run("nft", "-f", "-", ns=self.switch, inp="".join(f"{line}\n" for line in lines))

    def partition(self, host: str, peers: list[str] | None = None) -> None:
        """Cut `host` off from the whole lab, or only from `peers` (both directions)."""
        self._nft(self._partition_rules(host, peers))
        self.faults[host].add("partition")

    def _partition_rules(self, host: str, peers: list[str] | None) -> list[str]:
        p = self.port(host)
        if not peers:
            return [f"add rule bridge labfault pin_{p} drop", f"add rule bridge labfault pout_{p} drop"]
        out = []
        for peer in peers:
            q = self.port(peer)
            out += [f'add rule bridge labfault pin_{p} iifname "{q}" drop',
                    f'add rule bridge labfault pout_{p} oifname "{q}" drop']
        return out

    def split(self, side_a: list[str], side_b: list[str]) -> None:
        """Two sides that cannot talk to each other (each side still talks within itself)."""
        self._nft([rule for h in side_a for rule in self._partition_rules(h, side_b)])
        for h in side_a:
            self.faults[h].add("partition")

    def oneway(self, src: str, dst: str) -> None:
        """Drop frames from `src` to `dst`; `dst` -> `src` still flows."""
        s, d = self.port(src), self.port(dst)
        self._nft([f'add rule bridge labfault pout_{s} oifname "{d}" drop'])
        self.faults[src].add("oneway")

    def loss(self, host: str, percent: int) -> None:
        """Drop `percent`% of the IPv4 frames `host` sends and, independently, of those it receives."""
        if not 0 <= percent <= 100:
            raise ValueError("percent must be 0..100")
        p = self.port(host)
        lines = [f"flush chain bridge labfault lin_{p}", f"flush chain bridge labfault lout_{p}"]
        if percent:  # IPv4 only: ARP keeps resolving (a lossy path, not a dead link)
            lines += [f"add rule bridge labfault {c}_{p} ether type ip numgen random mod 100 < {percent} drop"
                      for c in ("lin", "lout")]
        self._nft(lines)
        if percent:
            self.faults[host].add("loss")
        else:
            self.faults[host].discard("loss")

    def heal(self, host: str | None = None) -> None:
        """Remove every network fault on `host` (or on every host)."""
        hosts = [host] if host else [h for h in self.hosts if self.faults[h]]
        self._nft([f"flush chain bridge labfault {c}_{self.port(h)}" for h in hosts
                   for c in ("pin", "pout", "lin", "lout")])
        for h in hosts:
            self.faults[h] -= {"partition", "oneway", "loss"}

    def rules(self) -> str:
        return run("nft", "list", "table", "bridge", "labfault", ns=self.switch, check=False)
