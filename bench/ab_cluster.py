"""Request-level interleaved A/B of two murmur builds (for a noisy box).

    python -m bench.ab_cluster old=/path/to/murmur-old new=.venv/bin/murmur --seconds 30

Both 3-server clusters (as `python -m bench cluster` starts them) are up at once, and one client
alternates single requests between their leaders (A B, B A, A B, ...), so both builds see the
same load from moment to moment; whole-run A/B on a box at load 20 swings more than the effect
being measured. Phases: single-client PUT, then single-client GET ?consistent. Prints p50, p90
and mean latency per build. Never recorded in docs/benchmarks.md by itself.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench import cluster as c
from bench import harness as h


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("builds", nargs=2, metavar="LABEL=MURMUR", help="two builds: a label and a murmur executable")
    p.add_argument("--seconds", type=float, default=30.0, help="seconds per phase")
    p.add_argument("--warmup", type=int, default=100, help="sequential writes per cluster before measuring")
    args = p.parse_args(argv)
    builds = [tuple(b.split("=", 1)) for b in args.builds]
    if any(len(b) != 2 for b in builds) or builds[0][0] == builds[1][0]:
        p.error("give two builds as LABEL=MURMUR with different labels")
    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="murmur-bench-ab-"))
    with h.ProcessGroup() as pg:
        ports = h.free_ports(18)
        clients: dict[str, httpx.Client] = {}
        for k, (label, murmur) in enumerate(builds):
            d = tmp / label
            d.mkdir()
            exe = str(Path(murmur).resolve()) if Path(murmur).exists() else shutil.which(murmur)
            if exe is None:
                print(f"{label}: murmur not found: {murmur}")
                return 2
            cl = c.MurmurCluster(d, exe, "warn", ports[9 * k: 9 * k + 9])
            cl.start(pg)
            c.warm_up(cl, args.warmup)
            leader = cl.leader()
            if leader is None:
                print(f"{label}: no leader")
                return 1
            clients[label] = httpx.Client(base_url=leader.base, timeout=c.REQUEST_TIMEOUT_S)
        labels = list(clients)
        for kind in ("put", "get-lin"):
            lats: dict[str, list[float]] = {label: [] for label in labels}
            errors = 0
            stop = time.monotonic() + args.seconds
            i = 0
            while time.monotonic() < stop and i < c.MAX_OPS_PER_PHASE:
                for label in labels if i % 2 == 0 else labels[::-1]:
                    method, path, body, hdrs = c.make_request("ours", kind, 1000 + i)
                    t0 = time.perf_counter()
                    r = clients[label].request(method, path, content=body, headers=hdrs)
                    dt = time.perf_counter() - t0
                    if c.answer_ok("ours", kind, r.status_code, r.content):
                        lats[label].append(dt * 1000.0)
                    else:
                        errors += 1
                i += 1
            out = []
            for label, xs in lats.items():
                xs.sort()
                if xs:
                    out.append(f"{label}: n={len(xs)} p50={xs[len(xs) // 2]:.2f} p90={xs[int(len(xs) * 0.9)]:.2f} "
                               f"mean={statistics.mean(xs):.2f} ms")
            print(f"{kind:8s} load={h.loadavg()} errors={errors} | " + " | ".join(out), flush=True)
        for client in clients.values():
            client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
