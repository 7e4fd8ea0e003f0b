#!/usr/bin/env python3
"""Run the official MCP conformance suite's `authorization` command against mcp-oauth.

Usage (from the repo root, after .ci/install-tools.sh and `cargo build`):
    .ci/tools/venv/bin/python e2e/conformance_authorization.py \
        --binary target/debug/mcp-oauth --database sqlite
    .ci/tools/venv/bin/python e2e/conformance_authorization.py \
        --binary target/debug/mcp-oauth --database postgres://postgres@127.0.0.1:5432/postgres

For --database postgres://..., the URL names an existing database to connect to
for CREATE/DROP DATABASE; the server gets a fresh database with a unique name,
dropped at the end. For `sqlite`, the server gets a new file in a temp dir.

What it does:
  1. fresh database, `mcp-oauth migrate`, one admin user, two clients (public
     and confidential) whose redirect URI is the conformance callback server;
  2. `mcp-oauth serve` on a free loopback port, wait for /healthz;
  3. for each client: `conformance authorization --url <issuer> --client-id ..
     [--client-secret ..] --port <callback port> [--resource <issuer>/mcp] -o DIR`,
     read the authorization URL it prints, complete the login + consent in
     headless Chromium (browser_login.py), and require exit 0 plus every check
     in DIR/*/checks.json to be SUCCESS (WARNING is reported, not fatal);
  4. stop the server, drop the database, print a summary.

The conformance command waits up to 5 minutes for a human; here the browser
does the human's part, and we give the whole run a much shorter deadline.
"""

import argparse
import base64
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / ".ci" / "tools"
HERE = Path(__file__).resolve().parent

# The conformance runner prints this line, then the URL on the next line
# (src/scenarios/authorization-server/authorization-code-grant.ts).
URL_MARKER = "Access the following URL in your browser"
EMAIL = "e2e-admin@example.com"
# Each `conformance authorization` run should finish in seconds; these bound a hang.
BROWSER_TIMEOUT = 60
CONFORMANCE_TIMEOUT = 180


def log(msg):
    print(f"[e2e] {msg}", flush=True)


def free_port():
    # Small race (the port could be taken before the child binds it), acceptable on a CI box.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Failure(Exception):
    pass


class Harness:
    def __init__(self, args):
        self.args = args
        self.binary = str(Path(args.binary).resolve())
        self.tmp = Path(tempfile.mkdtemp(prefix="mcp-oauth-e2e-"))
        self.artifacts = Path(args.artifacts).resolve()
        self.server = None
        self.server_log = None
        self.pg_admin_url = None
        self.pg_db = None
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(18)
        self.env = dict(os.environ)
        self.env.update(
            MCP_OAUTH_LISTEN=f"127.0.0.1:{self.port}",
            MCP_OAUTH_PUBLIC_URL=self.issuer,
            MCP_OAUTH_DATABASE_URL=self.create_database(args.database),
        )
        if self.pg_db:
            # PostgreSQL needs a key to encrypt the signing keys at rest (SQLite generates
            # one next to its database file, in self.tmp).
            self.env["MCP_OAUTH_KEYS__ENCRYPTION_KEY"] = base64.b64encode(
                secrets.token_bytes(32)
            ).decode()

    # ---- database ---------------------------------------------------------

    def create_database(self, spec):
        if spec == "sqlite":
            return f"sqlite://{self.tmp / 'mcp-oauth.db'}?mode=rwc"
        if spec.startswith(("postgres://", "postgresql://")):
            # Unique per run so parallel or crashed runs never collide.
            self.pg_db = f"mcp_oauth_e2e_{int(time.time())}_{secrets.token_hex(3)}"
            self.pg_admin_url = spec
            self.psql(f'CREATE DATABASE "{self.pg_db}"')
            base = spec.rsplit("/", 1)[0] if spec.count("/") > 2 else spec
            return f"{base}/{self.pg_db}"
        raise Failure(f"--database must be 'sqlite' or a postgres:// URL, got {spec!r}")

    def psql(self, sql):
        subprocess.run(
            ["psql", self.pg_admin_url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
            check=True,
        )

    # ---- mcp-oauth CLI ----------------------------------------------------

    def cli(self, *argv, stdin=None):
        log(f"$ mcp-oauth {' '.join(argv)}")
        res = subprocess.run(
            [self.binary, *argv],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise Failure(
                f"mcp-oauth {' '.join(argv)} exited {res.returncode}\n"
                f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}"
            )
        return res.stdout

    def add_client(self, name, callback_port, confidential):
        argv = ["client", "add", "--name", name,
                "--redirect-uri", f"http://127.0.0.1:{callback_port}/callback", "--json"]
        if confidential:
            argv.append("--confidential")
        out = self.cli(*argv)
        # The contract is one JSON line; tolerate log lines around it.
        for line in reversed(out.splitlines()):
            if line.strip().startswith("{"):
                return json.loads(line)
        raise Failure(f"client add printed no JSON line:\n{out}")

    # ---- server -----------------------------------------------------------

    def start_server(self):
        self.server_log = open(self.artifacts / "server.log", "w")
        log(f"starting mcp-oauth serve on {self.issuer} (log: {self.server_log.name})")
        self.server = subprocess.Popen(
            [self.binary, "serve"], env=self.env,
            stdin=subprocess.DEVNULL, stdout=self.server_log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise Failure(f"server exited with {self.server.returncode} before /healthz answered")
            try:
                with urllib.request.urlopen(f"{self.issuer}/healthz", timeout=2) as r:
                    if r.status == 200:
                        log("server is up")
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise Failure("server did not answer /healthz within 30 s")

    def stop_server(self):
        if self.server and self.server.poll() is None:
            # SIGTERM first: the server promises a graceful shutdown on it.
            self.server.terminate()
            try:
                self.server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log("server ignored SIGTERM for 10 s; killing it")
                self.server.kill()
                self.server.wait()
        if self.server_log:
            self.server_log.close()

    def cleanup(self):
        self.stop_server()
        if self.pg_db:
            try:
                self.psql(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)')
            except subprocess.CalledProcessError:
                log(f"warning: could not drop database {self.pg_db}")
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- conformance ------------------------------------------------------

    def token_auth_methods(self):
        """token_endpoint_auth_methods_supported from the AS metadata (RFC 8414 default if absent)."""
        for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
            try:
                with urllib.request.urlopen(self.issuer + path, timeout=5) as r:
                    md = json.load(r)
                    return md.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
            except (OSError, ValueError):
                continue
        return None  # let the conformance run report the missing metadata

    def conformance_cmd(self):
        node = TOOLS / "npm" / "node_modules" / ".bin" / "node"
        script = TOOLS / "npm" / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
        # conformance >= 0.1.14 needs Node 22; the system node is 20.
        return [str(node), str(script)]

    def supports_resource_flag(self):
        out = subprocess.run(
            [*self.conformance_cmd(), "authorization", "--help"],
            capture_output=True, text=True, check=True,
        ).stdout
        return "--resource" in out

    def run_conformance(self, label, client, callback_port, resource):
        out_dir = self.artifacts / f"conformance-{label}"
        shutil.rmtree(out_dir, ignore_errors=True)
        argv = [*self.conformance_cmd(), "authorization",
                "--url", self.issuer,
                "--client-id", client["client_id"],
                "--port", str(callback_port),
                "-o", str(out_dir)]
        if client.get("client_secret"):
            argv += ["--client-secret", client["client_secret"]]
        if resource:
            argv += ["--resource", f"{self.issuer}/mcp"]
        log(f"[{label}] $ conformance authorization --url {self.issuer} --client-id {client['client_id']}"
            f"{' --client-secret ***' if client.get('client_secret') else ''} --port {callback_port}"
            f"{' --resource ' + self.issuer + '/mcp' if resource else ''} -o {out_dir}")

        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1,
        )
        # Read the child's output on a thread, so it never blocks on a full
        # pipe while the browser runs; hand the authorization URL over.
        url_box, url_seen = [], threading.Event()

        def reader():
            want_url = False
            for line in proc.stdout:
                line = line.rstrip("\n")
                print(f"  conformance| {line}", flush=True)
                if want_url and line.strip():
                    url_box.append(line.strip())
                    url_seen.set()
                    want_url = False
                if URL_MARKER in line:
                    want_url = True
            url_seen.set()  # EOF: wake the waiter even if no URL came

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            url_seen.wait(CONFORMANCE_TIMEOUT)
            browser_ok = None
            if not url_box and proc.poll() is None:
                proc.kill()  # no URL within the deadline and still running: hung
            if url_box:
                browser_ok = self.browser_login(url_box[0], label) == 0
                if not browser_ok:
                    # The conformance run would wait 5 minutes for a callback that is not coming.
                    proc.terminate()
            proc.wait(timeout=CONFORMANCE_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise Failure(f"[{label}] conformance did not finish within {CONFORMANCE_TIMEOUT} s")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            t.join(5)

        problems = []
        if not url_box:
            problems.append("conformance printed no authorization URL (did the metadata scenario fail?)")
        elif not browser_ok:
            problems.append("the browser did not complete login/consent (see browser_login output above)")
        if proc.returncode != 0:
            problems.append(f"conformance exited {proc.returncode}")
        problems += self.check_results(out_dir)
        return problems

    def browser_login(self, url, label):
        log(f"[{label}] completing the login in headless Chromium")
        return subprocess.run(
            [sys.executable, str(HERE / "browser_login.py"), url,
             "--email", EMAIL, "--password", self.password,
             "--timeout", str(BROWSER_TIMEOUT),
             "--artifacts", str(self.artifacts / f"browser-{label}")],
        ).returncode

    @staticmethod
    def check_results(out_dir):
        """Every check must be SUCCESS, except WARNINGs (SHOULDs), which are listed.

        The command's own console output in "all scenarios" mode only has the
        summary counts, and a SKIPPED check counts as neither passed nor failed,
        so we read the per-check results it saved with -o instead.
        """
        problems, seen = [], set()
        for path in sorted(glob.glob(str(out_dir / "*" / "checks.json"))):
            scenario = Path(path).parent.name
            for check in json.load(open(path)):
                seen.add(check["id"])
                status, msg = check["status"], check.get("errorMessage") or ""
                line = f"{scenario}: {check['id']} {status} {msg}".rstrip()
                if status == "SUCCESS":
                    log(f"  ok   {line}")
                elif status in ("WARNING", "INFO"):
                    log(f"  warn {line}")
                else:
                    problems.append(line)
        for required in ("authorization-server-metadata", "authorization-code-grant"):
            if required not in seen:
                problems.append(f"check {required!r} was not run (no result in {out_dir})")
        return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=str(REPO / "target" / "debug" / "mcp-oauth"))
    ap.add_argument("--database", default="sqlite",
                    help="'sqlite' or a postgres:// URL of an existing database (used for CREATE DATABASE)")
    ap.add_argument("--artifacts", default=str(REPO / "target" / "e2e-artifacts"),
                    help="logs, conformance results and failure screenshots (default target/e2e-artifacts)")
    args = ap.parse_args()

    kind = "sqlite" if args.database == "sqlite" else "postgres"
    args.artifacts = str(Path(args.artifacts) / kind)
    shutil.rmtree(args.artifacts, ignore_errors=True)
    os.makedirs(args.artifacts)

    # CI kills a job with SIGTERM: turn it into an exception so the finally
    # below still stops the server and drops the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    harness = None
    results = {}
    try:
        harness = Harness(args)
        log(f"database: {harness.env['MCP_OAUTH_DATABASE_URL']}")
        harness.cli("migrate")
        harness.cli("user", "add", EMAIL, "--admin", stdin=harness.password + "\n")
        runs = []
        for label, confidential in (("public", False), ("confidential", True)):
            cb = free_port()
            runs.append((label, harness.add_client(f"conformance-{label}", cb, confidential), cb))
        harness.start_server()
        resource = harness.supports_resource_flag()
        log(f"conformance --resource flag: {'used' if resource else 'not supported by this version'}")
        methods = harness.token_auth_methods()
        for label, client, cb in runs:
            if client.get("client_secret") and methods and "none" in methods:
                # conformance (selectTokenAuthMethod in authorization-code-grant.ts)
                # uses token auth "none" whenever the AS lists it, even with
                # --client-secret; a correct AS must then refuse the confidential
                # client, so this run could only fail. Secret auth is untested.
                results[label] = None
                continue
            results[label] = harness.run_conformance(label, client, cb, resource)
    except (Failure, subprocess.CalledProcessError, OSError) as e:
        results["setup"] = [str(e)]
    finally:
        if harness:
            harness.cleanup()

    print(f"\n===== conformance authorization on {kind}: summary =====", flush=True)
    failed = False
    for label in ("setup", "public", "confidential"):
        if label not in results:
            continue
        problems = results[label]
        if problems is None:
            print(f"SKIP  {label}: the AS lists token auth 'none', so conformance would not send the"
                  " client secret (it always prefers 'none'); client_secret_post/basic untested")
            continue
        failed |= bool(problems)
        print(f"{'PASS' if not problems else 'FAIL'}  {label}")
        for p in problems:
            print(f"      - {p}")
    if "public" not in results or "confidential" not in results:
        failed = True
    if failed:
        print(f"artifacts (server log, checks.json, screenshots): {args.artifacts}")
        log_path = Path(args.artifacts) / "server.log"
        if log_path.exists():
            print("----- last 40 lines of the server log -----")
            print("\n".join(log_path.read_text(errors="replace").splitlines()[-40:]))
    print("RESULT:", "FAIL" if failed else "PASS", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
