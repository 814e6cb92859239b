"""What an agent's imports cost: resident memory after each import step, in a fresh interpreter.

Steps are cumulative and in the order an agent pays for them: the interpreter, then each library,
then murmur's own modules. A library the agent imports lazily (httpx for the CLI,
cryptography for TLS, dnspython for the DNS server) is listed with the cost it adds when used.
No peer: serf is one Go binary (its RSS is in the gossip benchmark).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

NAME = "imports"
DESCRIPTION = "resident memory each import adds to an agent (no peer)"

# (label, module); each runs after all earlier ones in the same interpreter.
STEPS = [("python interpreter", ""), ("trio", "trio"), ("msgpack", "msgpack"), ("h11", "h11"),
         ("pynacl SecretBox", "nacl.secret"), ("sqlite3", "sqlite3"), ("click", "click"),
         ("murmur agent (all of murmur.agent.agent)", "murmur.agent.agent"),
         ("murmur CLI entry point", "murmur.cli.main"),
         ("+ dnspython (DNS server, when enabled)", "dns.message"),
         ("+ httpx (CLI commands; HTTP checks use h11)", "httpx"),
         ("+ prometheus_client (metrics)", "prometheus_client"),
         ("+ cryptography (TLS)", "cryptography.x509")]

PROBE = r"""
import importlib, json, sys
def rss():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
out = []
for label, mod in json.loads(sys.argv[1]):
    if mod:
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            out.append([label, None, str(exc)])
            continue
    out.append([label, rss(), ''])
print(json.dumps(out))
"""


def measure(python: str = sys.executable) -> list[tuple[str, float | None, str]]:
    """[(label, MiB after the step, note)], measured in one fresh interpreter."""
    res = subprocess.run([python, "-c", PROBE, json.dumps(STEPS)], capture_output=True, text=True, timeout=120,
                         check=True)
    rows = []
    for label, kib, extra in json.loads(res.stdout):
        rows.append((label, None if kib is None else kib / 1024, extra))
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    rows = measure()
    print(f"{'import step':<44}{'RSS MiB':>9}{'adds':>8}")
    prev: float | None = None
    for label, mib, note in rows:
        if mib is None:
            print(f"{label:<44}{'-':>9}{'-':>8}  not installed: {note}")
            continue
        adds = "" if prev is None else f"{mib - prev:+.1f}"
        print(f"{label:<44}{mib:>9.1f}{adds:>8}  {note}")
        prev = mib
    agent_row = next((mib for label, mib, _ in rows if label.startswith("murmur CLI")), None)
    print(f"RESULT {json.dumps({'bench': NAME, 'agent_import_rss_mib': agent_row, 'rows': rows})}")
    return 0
