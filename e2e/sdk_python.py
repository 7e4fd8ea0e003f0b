#!/usr/bin/env python3
"""The official MCP Python SDK (`mcp` on PyPI) against a running mcp-oauth, end to end.

Usage (run_sdk_e2e.py starts the server and calls this once per case):
    sdk_python.py --issuer http://127.0.0.1:PORT --email E --password P \
        --transport streamable|sse --registration dcr|cimd --access-ttl 5 [--artifacts DIR]

The server must run with a short `tokens.access_ttl` (the value passed as --access-ttl) and,
for --registration cimd, with `cimd.allow_loopback=true`.

One run, with `mcp.client.auth.OAuthClientProvider` doing the OAuth side:
  1. a request without a token is answered 401 with a `resource_metadata` challenge;
  2. the SDK connects (Streamable HTTP at <issuer>/mcp, or the legacy HTTP+SSE transport at
     <issuer>/sse): discovery from the 401 (RFC 9728, then RFC 8414), registration (RFC 7591
     dynamic registration, or a client ID metadata document served by this script on
     127.0.0.1), then the authorization request, which `redirect_handler` completes in headless
     Chromium (browser_login.complete_login: login form, consent), stopping at this script's
     loopback callback, which hands `code` + `state` to `callback_handler`;
  3. `initialize`, `tools/list` (the six tools), `tools/call` add_numbers and whoami;
  4. waits until the access token has expired (server side too: access_ttl + its 5 s leeway),
     checks the server refuses the old token, and calls a tool again: the SDK must refresh
     (new access token, refresh_token grant seen at the token endpoint, no second login);
  5. revokes the refresh token at the `revocation_endpoint` (RFC 7009, with the client's
     credentials); after 1 s the current access token is refused with 401 invalid_token, and
     the SDK's next call fails (it gets a 401 and asks for a new login, which is refused).

Prints `PASS python <transport> <registration>` or `FAIL ...` with the reasons; exit 0 / 1.
"""

import argparse
import asyncio
import base64
import json
import logging
import queue
import sys
import threading
import time
import traceback
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import anyio
import httpx2
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_login import complete_login  # noqa: E402

EXPECTED_TOOLS = {
    "add_numbers",
    "calculate_circle_area",
    "generate_random_number",
    "format_text",
    "check_prime_number",
    "whoami",
}
# The server accepts an access token this long after its `exp` (clock skew).
SERVER_LEEWAY = 5
# Bound on one MCP call, so a hung transport fails the run instead of stalling CI.
CALL_TIMEOUT = 60


class CheckFailed(Exception):
    pass


class LoginRefused(Exception):
    """Raised by redirect_handler once the grant is revoked: no human is there to log in again."""


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def log(msg):
    print(f"[sdk-python] {msg}", flush=True)


# ---- the "client application" on 127.0.0.1: its metadata document and its callback ------


class LoopbackApp:
    """A tiny HTTP server standing in for the client's own web presence: it serves the client
    ID metadata document at /client.json and receives the authorization redirect at /callback.
    """

    def __init__(self):
        self.callbacks = queue.Queue()
        self.document_fetches = 0
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = urlsplit(self.path)
                if path.path == "/client.json":
                    app.document_fetches += 1
                    self.reply(200, "application/json", json.dumps(app.document()))
                elif path.path == "/callback":
                    app.callbacks.put(parse_qs(path.query))
                    self.reply(200, "text/html", "<p>Authorization complete; you can close this tab.</p>")
                else:
                    self.reply(404, "text/plain", "not found")

            def reply(self, status, ctype, body):
                data = body.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Cache-Control", "no-store")
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the browser went away (it is closed as soon as the callback loads)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.callback_url = f"{self.base}/callback"
        self.document_url = f"{self.base}/client.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def document(self):
        return {
            "client_id": self.document_url,
            "client_name": "mcp-oauth e2e (Python SDK, metadata document)",
            "redirect_uris": [self.callback_url],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class MemoryStorage(TokenStorage):
    """In-memory TokenStorage that also keeps every token set it was given, to see refreshes."""

    def __init__(self):
        self.history: list[OAuthToken] = []
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self):
        return self.history[-1] if self.history else None

    async def set_tokens(self, tokens):
        self.history.append(tokens)

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


# ---- the run --------------------------------------------------------------------------


class Run:
    def __init__(self, args):
        self.args = args
        self.issuer = args.issuer.rstrip("/")
        self.endpoint = f"{self.issuer}/{'mcp' if args.transport == 'streamable' else 'sse'}"
        self.app = LoopbackApp()
        self.storage = MemoryStorage()
        self.logins = 0  # authorization requests the SDK sent the "user" to
        self.login_allowed = True
        self.exchanges: list[tuple[str, str, int, str]] = []  # method, url, status, form body

        metadata = OAuthClientMetadata(
            client_name="mcp-oauth e2e (Python SDK)",
            redirect_uris=[self.app.callback_url],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        )
        self.provider = OAuthClientProvider(
            server_url=self.endpoint,
            client_metadata=metadata,
            storage=self.storage,
            redirect_handler=self.redirect_handler,
            callback_handler=self.callback_handler,
        )
        if args.registration == "cimd":
            # The SDK's constructor only accepts https document URLs; a test on loopback has no
            # trusted certificate, and the server fetches http://127.0.0.1 documents only with
            # cimd.allow_loopback. So the URL is set after validation: from here on the SDK's
            # own logic decides to use it (the AS must advertise
            # client_id_metadata_document_supported) and sends it as the client_id.
            self.provider.context.client_metadata_url = self.app.document_url

    async def redirect_handler(self, url):
        self.logins += 1
        if not self.login_allowed:
            raise LoginRefused("the SDK asked for a new browser login (expected after revocation)")
        log(f"redirect_handler: browser login #{self.logins}")
        q = parse_qs(urlsplit(url).query)
        expected_client = self.app.document_url if self.args.registration == "cimd" else None
        if expected_client:
            check(q.get("client_id") == [expected_client],
                  f"authorization request client_id is {q.get('client_id')}, expected the document URL")
        check(q.get("code_challenge_method") == ["S256"], "authorization request without S256 PKCE")
        check(q.get("resource") == [self.endpoint],
              f"authorization request resource {q.get('resource')} != {self.endpoint}")
        rc = await asyncio.to_thread(
            complete_login, url, self.args.email, self.args.password,
            self.app.callback_url, 60, str(Path(self.args.artifacts) / "browser"),
        )
        check(rc == 0, "the browser did not complete login + consent")

    async def callback_handler(self):
        try:
            params = await asyncio.to_thread(self.app.callbacks.get, True, 30)
        except queue.Empty:
            raise CheckFailed("no request reached the callback within 30 s") from None
        check("error" not in params, f"authorization error at the callback: {params}")
        return AuthorizationCodeResult(
            code=params["code"][0],
            state=params.get("state", [None])[0],
            iss=params.get("iss", [None])[0],
        )

    def record(self, response):
        req = response.request
        body = ""
        if req.method == "POST" and req.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            body = req.content.decode(errors="replace")
        self.exchanges.append((req.method, str(req.url), response.status_code, body))

    def http_client(self, headers=None, timeout=None, auth=None):
        client = create_mcp_http_client(headers=headers, timeout=timeout, auth=auth)

        async def hook(response):
            self.record(response)

        client.event_hooks["response"].append(hook)
        return client

    # -- raw HTTP checks (no SDK) --

    async def raw_status(self, token=None):
        """Status and WWW-Authenticate of an MCP request made with `token` (or none)."""
        headers = {"Accept": "application/json, text/event-stream"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with httpx2.AsyncClient(timeout=10) as c:
            if self.args.transport == "streamable":
                body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
                r = await c.post(self.endpoint, json=body,
                                 headers={**headers, "Content-Type": "application/json"})
                return r.status_code, r.headers.get("www-authenticate", "")
            async with c.stream("GET", self.endpoint, headers={"Accept": "text/event-stream",
                                                                **({"Authorization": headers["Authorization"]} if token else {})}) as r:
                return r.status_code, r.headers.get("www-authenticate", "")

    # -- MCP over the SDK --

    def connect(self):
        if self.args.transport == "streamable":
            return _streamable(self)
        return sse_client(self.endpoint, auth=self.provider, httpx_client_factory=self.http_client)

    async def call(self, session, name, arguments, timeout=CALL_TIMEOUT):
        with anyio.fail_after(timeout):
            result = await session.call_tool(name, arguments)
        check(not result.is_error, f"tools/call {name} returned isError: {result.content}")
        CALLS[name] = CALLS.get(name, 0) + 1
        return "".join(getattr(c, "text", "") for c in result.content)

    async def revoke(self, refresh_token):
        md = self.provider.context.oauth_metadata
        check(md is not None and md.revocation_endpoint is not None,
              "the SDK found no revocation_endpoint in the AS metadata")
        info = self.storage.client_info
        data = {"token": refresh_token, "token_type_hint": "refresh_token"}
        headers = {}
        method = info.token_endpoint_auth_method or "client_secret_basic"
        if method == "client_secret_basic" and info.client_secret:
            cred = f"{quote(info.client_id, safe='')}:{quote(info.client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
        elif method == "client_secret_post" and info.client_secret:
            data.update(client_id=info.client_id, client_secret=info.client_secret)
        else:
            data["client_id"] = info.client_id
        async with httpx2.AsyncClient(timeout=10) as c:
            r = await c.post(str(md.revocation_endpoint), data=data, headers=headers)
        log(f"revocation ({method}) at {md.revocation_endpoint}: HTTP {r.status_code}")
        check(r.status_code == 200, f"revocation answered {r.status_code}: {r.text}")

    async def main(self):
        args = self.args
        status, challenge = await self.raw_status()
        check(status == 401, f"unauthenticated request answered {status}, not 401")
        check("resource_metadata=" in challenge, f"401 without resource_metadata: {challenge!r}")
        log(f"no token -> 401, {challenge}")

        async with self.connect() as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                with anyio.fail_after(CALL_TIMEOUT):
                    init = await session.initialize()
                log(f"initialized: server {init.server_info.name} {init.server_info.version}, "
                    f"protocol {init.protocol_version}")
                check(self.logins == 1, f"{self.logins} browser logins for the first connection")
                info = self.storage.client_info
                check(info is not None, "no client registered")
                if args.registration == "cimd":
                    check(info.client_id == self.app.document_url,
                          f"client_id {info.client_id} is not the metadata document URL")
                    check(self.app.document_fetches >= 1, "the server never fetched the metadata document")
                    check(not any(u.endswith("/register") for _, u, _, _ in self.exchanges),
                          "a dynamic registration was made in the metadata document run")
                else:
                    check(any(m == "POST" and u.endswith("/register") and s in (200, 201)
                              for m, u, s, _ in self.exchanges), "no dynamic registration was made")
                log(f"client_id {info.client_id} (auth {info.token_endpoint_auth_method})")

                with anyio.fail_after(CALL_TIMEOUT):
                    tools = await session.list_tools()
                names = {t.name for t in tools.tools}
                check(names == EXPECTED_TOOLS, f"tools/list gave {sorted(names)}")
                log(f"tools/list: {sorted(names)}")

                text = await self.call(session, "add_numbers", {"a": 2, "b": 3})
                check("is 5" in text, f"add_numbers(2, 3) said {text!r}")
                who = json.loads(await self.call(session, "whoami", {}))
                check(who.get("authenticated") is True and who.get("subject"), f"whoami said {who}")
                check(who.get("client_id") == info.client_id,
                      f"whoami client_id {who.get('client_id')} != {info.client_id}")
                check("mcp" in who.get("scopes", []), f"whoami scopes {who.get('scopes')} lack mcp")
                log(f"tools/call add_numbers -> {text!r}; whoami -> {who}")

                first = self.storage.history[-1]
                check(first.refresh_token, "the token response carried no refresh token")
                check(len(self.storage.history) == 1, f"{len(self.storage.history)} token sets before expiry")

                wait = args.access_ttl + SERVER_LEEWAY + 1
                log(f"waiting {wait} s for the access token to expire (ttl {args.access_ttl} s + leeway)")
                await anyio.sleep(wait)
                status, challenge = await self.raw_status(first.access_token)
                check(status == 401 and 'error="invalid_token"' in challenge,
                      f"expired access token answered {status} {challenge!r}")
                log("expired access token -> 401 invalid_token")

                text = await self.call(session, "add_numbers", {"a": 40, "b": 2})
                check("is 42" in text, f"add_numbers(40, 2) after expiry said {text!r}")
                current = self.storage.history[-1]
                check(current.access_token != first.access_token, "the access token did not change")
                check(any("grant_type=refresh_token" in body and s == 200
                          for _, _, s, body in self.exchanges), "no successful refresh_token grant was seen")
                check(self.logins == 1, f"{self.logins} browser logins: the refresh needed a new login")
                who2 = json.loads(await self.call(session, "whoami", {}))
                check(who2.get("subject") == who.get("subject"), "whoami subject changed after refresh")
                log(f"after expiry: refreshed (refresh token {'rotated' if current.refresh_token != first.refresh_token else 'kept'}), "
                    f"tools/call ok, still 1 browser login")

                await self.revoke(current.refresh_token)
                await anyio.sleep(1.1)
                status, challenge = await self.raw_status(current.access_token)
                check(status == 401 and 'error="invalid_token"' in challenge,
                      f"after revocation the access token got {status} {challenge!r}, not 401 invalid_token")
                log(f"after revocation: access token -> 401 ({challenge})")

                self.login_allowed = False
                # The SDK logs the refused login with a traceback; that is expected from here on.
                logging.getLogger("mcp.client.auth.oauth2").setLevel(logging.CRITICAL)
                self.exchanges_before_revoked_call = len(self.exchanges)
                # The SDK gets a 401, starts a new authorization, and redirect_handler refuses:
                # over Streamable HTTP that error tears down the transport's task group, over
                # SSE the transport only logs it and the call times out.
                await self.call(session, "add_numbers", {"a": 1, "b": 1}, timeout=15)
                raise CheckFailed("a tools/call succeeded after the grant was revoked")

    def verify_after_revocation(self, error):
        log(f"SDK call after revocation failed as expected: {type(error).__name__}: {error}")
        after = self.exchanges[self.exchanges_before_revoked_call:]
        refused = [(m, u, s) for m, u, s, _ in after if s in (400, 401)]
        check(refused, f"no 401/400 from the server after revocation: {after}")
        check(self.logins == 2, "the SDK did not ask for a new login after the 401")
        log(f"server refusals after revocation: {refused}")


@asynccontextmanager
async def _streamable(run):
    """streamable_http_client with an httpx2 client carrying the provider and our hook."""
    async with run.http_client(auth=run.provider) as client:
        async with streamable_http_client(run.endpoint, http_client=client) as streams:
            yield streams


def _unwrap(exc):
    """The interesting exception inside anyio's exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = next((e for e in exc.exceptions if isinstance(e, (CheckFailed, LoginRefused))),
                   exc.exceptions[0])
    return exc


# Successful tool calls, printed as `CALLS {json}` for the runner's analytics check.
CALLS = {}


async def amain(args):
    run = Run(args)
    try:
        await run.main()
    except BaseException as e:  # noqa: BLE001
        inner = _unwrap(e)
        if isinstance(inner, CheckFailed) or run.login_allowed:
            raise inner from None
        run.verify_after_revocation(inner)
    finally:
        run.app.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--email", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--transport", choices=["streamable", "sse"], default="streamable")
    ap.add_argument("--registration", choices=["dcr", "cimd"], default="dcr")
    ap.add_argument("--access-ttl", type=int, required=True, help="the server's tokens.access_ttl, seconds")
    ap.add_argument("--artifacts", default="target/e2e-artifacts/sdk-python")
    ap.add_argument("--debug", action="store_true", help="SDK debug logging")
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="[sdk-python] %(levelname)s %(name)s: %(message)s")
    label = f"python {args.transport} {args.registration}"
    try:
        anyio.run(amain, args)
    except CheckFailed as e:
        print(f"FAIL {label}: {e}", flush=True)
        return 1
    except Exception as e:  # noqa: BLE001
        traceback.print_exception(e)
        print(f"FAIL {label}: {type(e).__name__}: {e}", flush=True)
        return 1
    print(f"CALLS {json.dumps(CALLS, sort_keys=True)}", flush=True)
    print(f"PASS {label}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
