#!/usr/bin/env python3
"""End-to-end runs of the official MCP SDK clients and the conformance `server` scenarios.

Usage (from the repo root, after .ci/install-tools.sh and `cargo build`):
    .ci/tools/venv/bin/python e2e/run_sdk_e2e.py --binary target/debug/mcp-oauth --database sqlite
    .ci/tools/venv/bin/python e2e/run_sdk_e2e.py --binary target/debug/mcp-oauth \
        --database postgres://postgres@127.0.0.1:5432/postgres
    [--only python,typescript,conformance]

Same database and server handling as conformance_authorization.py (whose Harness it uses):
a fresh database per server, `mcp-oauth migrate`, `mcp-oauth serve` on a free loopback port.

1. The SDK server: one user, `tokens.access_ttl` = ACCESS_TTL seconds (so the clients see
   their access token expire), `cimd.allow_loopback` (the tests serve client ID metadata
   documents on 127.0.0.1). Against it:
     - sdk_python.py (PyPI `mcp`, OAuthClientProvider) over Streamable HTTP (/mcp) and the
       legacy HTTP+SSE transport (/sse), each with dynamic registration and with a metadata
       document: four runs;
     - sdk_typescript.mjs (npm `@modelcontextprotocol/sdk`, auth() + StreamableHTTPClient-
       Transport) with dynamic registration and with a metadata document: two runs.
   Each run: 401 → discovery → registration → browser login + consent → tools/list →
   tools/call → refresh after expiry → revocation → 401 (see the scripts' docstrings).
2. The open server (`mcp.open`, loopback only, no authentication): `conformance server
   --url <issuer>/mcp` for the active suite and for the 2026-07-28 requirement set, each
   with e2e/conformance-server-baseline.yml as the expected failures; any other failure, or
   a baselined check that passes, fails the run.

Prints PASS/FAIL per case, the conformance scenarios that passed, a RESULT line, and
"N passed, N failed". Logs go to target/e2e-artifacts/sdk-<sqlite|postgres>/.
"""

import argparse
import copy
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from conformance_authorization import EMAIL, TOOLS, Failure, Harness, log  # noqa: E402

ACCESS_TTL = 5
CASE_TIMEOUT = 240  # one SDK run takes 20-45 s
CONFORMANCE_TIMEOUT = 600
BASELINE = HERE / "conformance-server-baseline.yml"
NODE = TOOLS / "npm" / "node_modules" / ".bin" / "node"
CONFORMANCE = TOOLS / "npm" / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"

PYTHON_CASES = [(t, r) for t in ("streamable", "sse") for r in ("dcr", "cimd")]
TYPESCRIPT_CASES = ["dcr", "cimd"]
# (label, extra conformance arguments)
CONFORMANCE_RUNS = [
    ("active suite", []),
    ("requirements 2026-07-28", ["--requirements", "2026-07-28"]),
]


def run_case(label, argv, log_path, timeout=CASE_TIMEOUT, calls=None):
    """Run one client script; its output goes to the console and to log_path. [] if it passed.
    The successful tool calls it reports (`CALLS {json}`) are added to `calls`."""
    log(f"[{label}] $ {' '.join(str(a) for a in argv)}")
    with open(log_path, "w") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1,
                                start_new_session=True)
        deadline = time.monotonic() + timeout
        last = ""
        try:
            for line in proc.stdout:
                out.write(line)
                print(f"  {label}| {line.rstrip()}", flush=True)
                if line.startswith(("PASS ", "FAIL ")):
                    last = line.strip()
                if line.startswith("CALLS ") and calls is not None:
                    for name, n in json.loads(line[len("CALLS "):]).items():
                        calls[name] = calls.get(name, 0) + n
                if time.monotonic() > deadline:
                    break
            proc.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return [f"timed out after {timeout} s (log: {log_path})"]
    if proc.returncode == 0 and last.startswith("PASS"):
        return []
    return [last or f"exited {proc.returncode} without a verdict (log: {log_path})"]


def analytics_problems(h, calls):
    """What the analytics summary got wrong about the SDK runs against `h`'s server: every
    successful tool call the clients reported is counted exactly once, as a success, and
    every run shows up as a session, a refresh and a revocation."""
    problems = []
    summary = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        summary = json.loads(h.cli("analytics", "summary"))
        counted = {t["name"]: t["successes"] for t in summary["tools"]}
        if all(counted.get(name) == n for name, n in calls.items()):
            break
        time.sleep(0.5)
    counted = {t["name"]: t["successes"] for t in summary.get("tools", [])}
    for name, n in sorted(calls.items()):
        if counted.get(name) != n:
            problems.append(f"tool {name}: the clients made {n} successful calls, the summary counts {counted.get(name)}")
    if not calls:
        problems.append("the SDK runs reported no tool calls")
    oauth = summary.get("oauth", {})
    runs = len(PYTHON_CASES) + len(TYPESCRIPT_CASES)
    for key in ("refresh_grants", "tokens_revoked"):
        if oauth.get(key, 0) < 1:
            problems.append(f"oauth.{key} is {oauth.get(key)}")
    if summary.get("mcp", {}).get("sessions", 0) < 1:
        problems.append("no MCP session was counted")
    if summary.get("dropped_events") != 0:
        problems.append(f"{summary.get('dropped_events')} events were dropped")
    log(f"analytics after {runs} SDK runs: tools {counted}, oauth {oauth}")
    return problems


class Suite:
    def __init__(self, args):
        self.args = args
        self.artifacts = Path(args.artifacts)
        self.results = []  # (label, problems)
        self.conformance_passed = {}  # run label -> [scenario]

    def harness(self, name, extra_env):
        sub = copy.copy(self.args)
        sub.artifacts = str(self.artifacts / name)
        os.makedirs(sub.artifacts, exist_ok=True)
        h = Harness(sub)
        h.env.update(extra_env)
        return h

    def record(self, label, problems):
        self.results.append((label, problems))
        print(f"{'PASS' if not problems else 'FAIL'}  {label}", flush=True)

    # ---- 1: SDK clients --------------------------------------------------------------------

    def sdk_clients(self, want):
        h = self.harness("sdk-server", {
            "MCP_OAUTH_TOKENS__ACCESS_TTL": str(ACCESS_TTL),
            "MCP_OAUTH_CIMD__ALLOW_LOOPBACK": "true",
            # Stored within 100 ms, so the analytics check need not wait long.
            "MCP_OAUTH_ANALYTICS__FLUSH_INTERVAL_MS": "100",
        })
        try:
            log(f"SDK server database: {h.env['MCP_OAUTH_DATABASE_URL']}")
            h.cli("migrate")
            h.cli("user", "add", EMAIL, "--admin", stdin=h.password + "\n")
            h.start_server()
            common = ["--issuer", h.issuer, "--email", EMAIL, "--password", h.password,
                      "--access-ttl", str(ACCESS_TTL)]
            calls = {}
            if "python" in want:
                for transport, reg in PYTHON_CASES:
                    label = f"python {transport} {reg}"
                    art = self.artifacts / "sdk-python" / f"{transport}-{reg}"
                    art.mkdir(parents=True, exist_ok=True)
                    argv = [sys.executable, str(HERE / "sdk_python.py"), *common,
                            "--transport", transport, "--registration", reg, "--artifacts", str(art)]
                    self.record(label, run_case(label, argv, art / "run.log", calls=calls))
            if "typescript" in want:
                for reg in TYPESCRIPT_CASES:
                    label = f"typescript streamable {reg}"
                    art = self.artifacts / "sdk-typescript" / reg
                    art.mkdir(parents=True, exist_ok=True)
                    argv = [str(NODE), str(HERE / "sdk_typescript.mjs"), *common,
                            "--registration", reg, "--python", sys.executable,
                            "--node-modules", str(TOOLS / "npm" / "node_modules"),
                            "--artifacts", str(art)]
                    self.record(label, run_case(label, argv, art / "run.log", calls=calls))
            self.record("analytics of the SDK runs", analytics_problems(h, calls))
        finally:
            h.cleanup()

    # ---- 2: conformance server scenarios --------------------------------------------------

    def conformance(self):
        h = self.harness("open-server", {"MCP_OAUTH_MCP__OPEN": "true"})
        try:
            log(f"open server database: {h.env['MCP_OAUTH_DATABASE_URL']}")
            h.cli("migrate")
            h.start_server()
            url = f"{h.issuer}/mcp"
            for label, extra in CONFORMANCE_RUNS:
                out_dir = self.artifacts / "conformance-server" / re.sub(r"\W+", "-", label)
                shutil.rmtree(out_dir, ignore_errors=True)
                argv = [str(NODE), str(CONFORMANCE), "server", "--url", url, *extra,
                        "--expected-failures", str(BASELINE), "-o", str(out_dir)]
                name = f"conformance server ({label})"
                problems = run_conformance(name, argv, out_dir / "console.log", out_dir)
                self.conformance_passed[label] = passed_scenarios(out_dir)
                self.record(name, problems)
        finally:
            h.cleanup()


def run_conformance(label, argv, log_path, out_dir):
    log(f"[{label}] $ {' '.join(argv)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=CONFORMANCE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return [f"timed out after {CONFORMANCE_TIMEOUT} s"]
    log_path.write_text(res.stdout + res.stderr)
    # The per-scenario progress lines are noise here; show the summary and the verdict.
    text = res.stdout + res.stderr
    tail = text[text.find("=== SUMMARY ==="):] if "=== SUMMARY ===" in text else text[-4000:]
    for line in tail.splitlines():
        # Keep the suite's "Total: N passed, N failed" (failures include baselined ones) from
        # reading like this run's own closing count.
        line = re.sub(r"^Total: (\d+) passed, (\d+) failed",
                      r"checks in total: \1 succeeded, \2 did not (see the baseline verdict below)", line)
        print(f"  conformance| {line}", flush=True)
    if res.returncode != 0:
        # The baseline verdict lists "Unexpected failures" (✗ lines) and "Stale baseline
        # entries" (✓ lines); report those entries.
        verdict = text[text.find("Expected failures (in baseline)"):] if "Expected failures" in text else tail
        flagged = [l.strip() for l in verdict.splitlines() if l.startswith(("  ✗ ", "  ✓ "))]
        return [f"conformance exited {res.returncode}: unexpected failures or stale baseline entries"
                f" (log: {log_path})", *flagged]
    return []


def passed_scenarios(out_dir):
    """Scenarios with at least one check and every check SUCCESS (from their checks.json)."""
    passed = []
    for path in sorted(glob.glob(str(out_dir / "*" / "checks.json"))):
        name = re.sub(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z$", "", Path(path).parent.name)
        name = name.removeprefix("server-")
        statuses = [c["status"] for c in json.load(open(path))]
        if "SUCCESS" in statuses and all(s in ("SUCCESS", "INFO", "SKIPPED") for s in statuses):
            passed.append(name)
    return passed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=str(HERE.parent / "target" / "debug" / "mcp-oauth"))
    ap.add_argument("--database", default="sqlite",
                    help="'sqlite' or a postgres:// URL of an existing database (used for CREATE DATABASE)")
    ap.add_argument("--artifacts", default=str(HERE.parent / "target" / "e2e-artifacts"))
    ap.add_argument("--only", default="python,typescript,conformance",
                    help="comma-separated subset of python,typescript,conformance")
    args = ap.parse_args()
    want = set(args.only.split(","))
    unknown = want - {"python", "typescript", "conformance"}
    if unknown:
        ap.error(f"--only: unknown {sorted(unknown)}")

    kind = "sqlite" if args.database == "sqlite" else "postgres"
    args.artifacts = str(Path(args.artifacts) / f"sdk-{kind}")
    shutil.rmtree(args.artifacts, ignore_errors=True)
    os.makedirs(args.artifacts)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    suite = Suite(args)
    try:
        if want & {"python", "typescript"}:
            suite.sdk_clients(want)
        if "conformance" in want:
            suite.conformance()
    except (Failure, subprocess.CalledProcessError, OSError) as e:
        suite.results.append(("setup", [str(e)]))

    print(f"\n===== SDK clients and conformance server on {kind}: summary =====", flush=True)
    failed = 0
    for label, problems in suite.results:
        print(f"{'PASS' if not problems else 'FAIL'}  {label}")
        for p in problems:
            print(f"      - {p}")
        failed += bool(problems)
    for label, scenarios in suite.conformance_passed.items():
        print(f"conformance server ({label}): {len(scenarios)} scenarios pass every check: "
              f"{', '.join(scenarios)}")
    if failed:
        print(f"artifacts (server logs, client logs, checks.json, screenshots): {args.artifacts}")
        for log_path in sorted(Path(args.artifacts).glob("*/server.log")):
            print(f"----- last 30 lines of {log_path} -----")
            print("\n".join(log_path.read_text(errors="replace").splitlines()[-30:]))
    passed = len(suite.results) - failed
    print("RESULT:", "FAIL" if failed or not suite.results else "PASS")
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed or not suite.results else 0


if __name__ == "__main__":
    sys.exit(main())
