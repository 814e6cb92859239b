"""Run py-consul 1.8.0's own test suite (from its PyPI sdist) against `murmur agent --dev`.

    python tests/pyconsul/run.py [MODULE ...]     # default: agent catalog health status kv session txn
    python tests/pyconsul/run.py --acl            # the modules whose tests need an ACL-enabled agent

1. Downloads the sdist with pip into build/pyconsul (once; its sha256 is pinned) and unpacks a
   fresh copy, replacing its Docker-based root conftest.py with tests/pyconsul/shim_conftest.py.
2. Runs each test module serially, each in its own pytest process inside a fresh network
   namespace (`unshare -rn`, loopback brought up), because the tests assume an agent on
   127.0.0.1:8500; the shim starts a fresh agent per test, each in a network namespace of its
   own (unshare(CLONE_NEWNET) inside that user namespace). Every wait is bounded.
3. Reports passed / failed / excepted per module. Tests listed in tests/pyconsul/exceptions.txt
   (a later issue's feature) are run as non-strict expected failures. Exit status 1 if any
   other test fails or a module's run breaks; an excepted test that passes is reported so the
   list can shrink.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BUILD = ROOT / "build" / "pyconsul"
VERSION = "1.8.0"
SDIST = f"py_consul-{VERSION}.tar.gz"
SHA256 = "ed9ab0adb335d33ea84f7622f372411f8e288bb09aee5e7632264d28d285a52c"
MODULES = ["agent", "catalog", "health", "status", "kv", "session", "txn"]
# Modules whose tests use the `acl_consul` fixture (an agent with acl.enabled and an initial
# management token, as py-consul's Docker fixture makes); test_agent's one such test runs with
# the default modules.
ACL_MODULES = ["acl", "acl_templated_policy", "snapshot", "connect"]
MODULE_TIMEOUT = 240.0  # seconds for one module's pytest run; the seven together take 1-3 minutes


def fetch_sdist() -> Path:
    path = BUILD / SDIST
    if not path.exists():
        BUILD.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
                        f"py-consul=={VERSION}", "-d", str(BUILD)], check=True, timeout=300)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHA256:
        path.unlink()
        raise SystemExit(f"{SDIST}: sha256 {digest} is not the pinned {SHA256}; removed it, run again")
    return path


def unpack(sdist: Path) -> Path:
    src = BUILD / f"py_consul-{VERSION}"
    if src.exists():
        shutil.rmtree(src)
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():  # the pinned hash vouches for it; still, nothing outside BUILD
            if member.name.startswith("/") or ".." in Path(member.name).parts or member.issym() or member.islnk():
                raise SystemExit(f"{SDIST}: unexpected member {member.name!r}")
        tar.extractall(BUILD)  # noqa: S202 - members checked above (no `filter=` before Python 3.11.4)
    shutil.copyfile(HERE / "shim_conftest.py", src / "conftest.py")
    return src


def check_tools() -> None:
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: install util-linux and iproute2 (make apt)")


def run_module(src: Path, module: str) -> tuple[list[dict[str, str]], str, int]:
    results = BUILD / f"results-{module}.jsonl"
    results.unlink(missing_ok=True)
    logs = BUILD / "logs" / module
    shutil.rmtree(logs, ignore_errors=True)
    env_vars = {"PYCONSUL_RESULTS": str(results), "PYCONSUL_EXCEPTIONS": str(HERE / "exceptions.txt"),
                "PYCONSUL_LOGS": str(logs), "PYTHONDONTWRITEBYTECODE": "1", "PYCONSUL_NETNS_PER_TEST": "1"}
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:trio",
              "-o", "addopts=", "-o", "asyncio_mode=strict", "-W", "ignore::pytest.PytestConfigWarning",
              "-rfE", f"tests/api/test_{module}.py"]
    # A private network namespace: its own loopback, so 127.0.0.1:8500 is ours alone.
    cmd = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
           "env", *(f"{k}={v}" for k, v in env_vars.items()), *pytest]
    try:
        proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=MODULE_TIMEOUT)
        output, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        output, rc = f"{exc.stdout or ''}{exc.stderr or ''}\nTIMED OUT after {MODULE_TIMEOUT}s", -1
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    return rows, output, rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", default=None)
    ap.add_argument("--acl", action="store_true", help="run the ACL modules (" + " ".join(ACL_MODULES) + ")")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each module's pytest output")
    opts = ap.parse_args()
    if not opts.modules:
        opts.modules = ACL_MODULES if opts.acl else MODULES
    check_tools()
    src = unpack(fetch_sdist())
    t0 = time.monotonic()
    bad = False
    totals = {"passed": 0, "failed": 0, "excepted": 0, "excepted-but-passed": 0}
    for module in opts.modules:
        t1 = time.monotonic()
        rows, output, rc = run_module(src, module)
        counts = {"passed": 0, "failed": 0, "excepted": 0, "excepted-but-passed": 0}
        failed = []
        for r in rows:
            key = {"passed": "passed", "xfailed": "excepted", "xpassed": "excepted-but-passed"}.get(r["outcome"],
                                                                                                   "failed")
            counts[key] += 1
            if key == "failed":
                failed.append(r["test"])
            elif key == "excepted-but-passed":
                print(f"  note: {r['test']} is listed in exceptions.txt but passed")
        broken = not rows or rc not in (0, 1)  # 1: some tests failed; anything else: the run broke
        for k, v in counts.items():
            totals[k] += v
        summary = ", ".join(f"{v} {k}" for k, v in counts.items())
        print(f"test_{module}: {summary} ({time.monotonic() - t1:.1f} s)")
        for t in failed:
            print(f"  FAILED {t}")
        if failed or broken or opts.verbose:
            if broken and not failed:
                print(f"  the run of test_{module} broke:")
            print("\n".join("    " + line for line in output.splitlines()[-60:]))
        bad = bad or bool(failed) or broken
    print(f"py-consul {VERSION}: " + ", ".join(f"{v} {k}" for k, v in totals.items())
          + f" in {time.monotonic() - t0:.1f} s; agent logs in {BUILD / 'logs'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
