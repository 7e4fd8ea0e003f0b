#!/usr/bin/env python3
"""The analytics dashboard in headless Chromium, as an administrator uses it.

Usage (from the repo root, after .ci/install-tools.sh and `cargo build`):
    .ci/tools/venv/bin/python e2e/dashboard_browser.py --binary target/debug/mcp-oauth \
        --database sqlite|postgres://… [--screenshots docs/screenshots]

Against a fresh server (the Harness of conformance_authorization.py):
  1. traffic through the real endpoints: a user signs in and approves a client in the
     browser, the client exchanges the code (PKCE) and calls tools over MCP;
  2. a non-admin who opens /analytics gets 403; an anonymous visitor the sign-in page;
  3. the admin signs in, opens every page (overview, OAuth, tools, users, events), each
     with no serious or critical axe-core violation, and a screenshot of each is saved;
  4. the admin switches ranges (every preset and a custom range) and each page answers;
  5. with the overview open, a new tool call appears without a reload (SSE);
  6. the security page: a non-admin gets 403; the admin sees a failed sign-in and a probe,
     filters them, watches a new probe arrive live, lifts a block, acknowledges and resolves
     an event with a note, and revokes every token of the user (whose token then fails),
     each page with no serious or critical axe-core violation.

Prints PASS or FAIL with the reasons; exit 0 / 1. Artifacts in target/e2e-artifacts/dashboard.
"""

import argparse
import base64
import hashlib
import json
import secrets
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from browser_login import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from conformance_authorization import EMAIL, TOOLS, Failure, Harness, free_port, log  # noqa: E402

AXE = TOOLS / "npm" / "node_modules" / "axe-core" / "axe.min.js"
USER = "user@example.com"
PAGES = ["", "/oauth", "/tools", "/users", "/events"]
RANGES = ["1h", "6h", "24h", "7d", "30d"]


def http_json(method, url, body=None, headers=None, form=False):
    data = None
    headers = dict(headers or {})
    if body is not None:
        if form:
            data = urllib.parse.urlencode(body).encode()
            headers["content-type"] = "application/x-www-form-urlencoded"
        else:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


class Dashboard:
    def __init__(self, args):
        self.args = args
        self.h = Harness(args)
        self.h.env["MCP_OAUTH_ANALYTICS__FLUSH_INTERVAL_MS"] = "100"
        self.problems = []
        self.art = Path(args.artifacts)
        self.art.mkdir(parents=True, exist_ok=True)
        self.user_password = secrets.token_urlsafe(18)

    def check(self, cond, msg):
        if not cond:
            self.problems.append(msg)
            log(f"PROBLEM: {msg}")
        return cond

    # ---- traffic through the real endpoints ----------------------------------------------

    def token_for_user(self, browser):
        """Register a client, authorize it as USER in the browser, exchange the code."""
        issuer = self.h.issuer
        callback = f"http://127.0.0.1:{free_port()}/cb"
        status, _, body = http_json("POST", f"{issuer}/register", {
            "client_name": "Dashboard test client",
            "redirect_uris": [callback],
            "token_endpoint_auth_method": "none",
        })
        if status != 201:
            raise Failure(f"registration answered {status}: {body}")
        client_id = json.loads(body)["client_id"]
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        url = f"{issuer}/authorize?" + urllib.parse.urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": callback,
            "code_challenge": challenge, "code_challenge_method": "S256", "state": "s",
            "resource": f"{issuer}/mcp", "scope": "mcp",
        })
        context = browser.new_context()
        page = context.new_page()
        captured = {}

        def on_callback(route):
            captured["url"] = route.request.url
            route.fulfill(status=200, body="ok")

        page.route(f"{callback}**", on_callback)
        page.goto(url)
        page.fill("#email", USER)
        page.fill("#password", self.user_password)
        page.click("#login")
        page.wait_for_selector("#allow")
        page.click("#allow")
        deadline = time.monotonic() + 15
        while "url" not in captured and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        context.close()
        if "url" not in captured:
            raise Failure("the authorization never reached the callback")
        code = urllib.parse.parse_qs(urllib.parse.urlsplit(captured["url"]).query)["code"][0]
        status, _, body = http_json("POST", f"{issuer}/token", {
            "grant_type": "authorization_code", "code": code, "redirect_uri": callback,
            "client_id": client_id, "code_verifier": verifier,
        }, form=True)
        if status != 200:
            raise Failure(f"the code exchange answered {status}: {body}")
        return json.loads(body)["access_token"]

    def mcp(self, token, message, session=None):
        headers = {"authorization": f"Bearer {token}", "accept": "application/json, text/event-stream"}
        if session:
            headers["mcp-session-id"] = session
        status, resp_headers, body = http_json("POST", f"{self.h.issuer}/mcp", message, headers)
        if status not in (200, 202):
            raise Failure(f"MCP {message.get('method')} answered {status}: {body}")
        return resp_headers.get("mcp-session-id") or resp_headers.get("Mcp-Session-Id"), body

    def open_session(self, token):
        session, _ = self.mcp(token, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "dashboard-e2e", "version": "1"}}})
        self.mcp(token, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
        return session

    def call(self, token, session, name, arguments, id_=2):
        self.mcp(token, {"jsonrpc": "2.0", "id": id_, "method": "tools/call",
                         "params": {"name": name, "arguments": arguments}}, session)

    # ---- the dashboard ----------------------------------------------------------------------

    def sign_in(self, page, email, password, path="/analytics"):
        page.goto(f"{self.h.issuer}{path}")
        page.fill("#email", email)
        page.fill("#password", password)
        page.click("#login")
        page.wait_for_load_state()

    def axe(self, page, label):
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
        serious = [v for v in result["violations"] if v.get("impact") in ("serious", "critical")]
        for v in serious:
            targets = [n["target"] for n in v["nodes"]][:3]
            self.check(False, f"{label}: axe {v['impact']} {v['id']}: {v['help']} at {targets}")
        minor = [v["id"] for v in result["violations"] if v not in serious]
        if minor:
            log(f"{label}: minor axe findings: {minor}")

    def run(self):
        h = self.h
        h.cli("migrate")
        h.cli("user", "add", EMAIL, "--admin", stdin=h.password + "\n")
        h.cli("user", "add", USER, stdin=self.user_password + "\n")
        h.start_server()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                self.scenario(browser)
            finally:
                browser.close()

    def scenario(self, browser):
        issuer = self.h.issuer
        token = self.token_for_user(browser)
        session = self.open_session(token)
        for i in range(3):
            self.call(token, session, "add_numbers", {"a": i, "b": 1}, 10 + i)
        self.call(token, session, "calculate_circle_area", {"radius": -1}, 20)
        self.call(token, session, "check_prime_number", {"number": 7919}, 21)

        # Strangers: the sign-in page; non-admins: 403.
        anonymous = browser.new_context()
        page = anonymous.new_page()
        page.goto(f"{issuer}/analytics")
        self.check("/login" in page.url, f"an anonymous visitor ended at {page.url}")
        anonymous.close()
        user = browser.new_context()
        page = user.new_page()
        self.sign_in(page, USER, self.user_password, "/login")
        resp = page.goto(f"{issuer}/analytics")
        self.check(resp.status == 403, f"a non-admin got {resp.status} for /analytics")
        user.close()

        # The admin: every page, accessible, with a screenshot. axe is injected, so this
        # context lets the test's own script past the page's CSP.
        admin = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
        page = admin.new_page()
        self.sign_in(page, EMAIL, self.h.password)
        self.check(page.url.startswith(f"{issuer}/analytics"), f"after sign-in the admin is at {page.url}")
        shots = Path(self.args.screenshots) if self.args.screenshots else self.art
        shots.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            page.goto(f"{issuer}/analytics/tools?range=1h")
            if page.locator("#tools td.calls").count() >= 3:
                break
            page.wait_for_timeout(200)
        for path in PAGES:
            resp = page.goto(f"{issuer}/analytics{path}?range=1h")
            label = f"/analytics{path}"
            if not self.check(resp.status == 200, f"{label} answered {resp.status}"):
                continue
            self.axe(page, label)
            name = (path.strip("/") or "overview")
            page.screenshot(path=str(shots / f"analytics-{name}.png"), full_page=True)
        tools = page.goto(f"{issuer}/analytics/tools?range=1h")
        text = page.inner_text("#tools")
        for tool in ("add_numbers", "calculate_circle_area", "check_prime_number"):
            self.check(tool in text, f"the tools table lacks {tool}: {text!r}")

        # Ranges: each preset link, then a custom range through the form.
        page.goto(f"{issuer}/analytics/oauth")
        for r in RANGES:
            page.click(f"section.range a:text-is('{r}')")
            page.wait_for_load_state()
            current = page.get_attribute("section.range a[aria-current]", "href") or ""
            self.check(f"range={r}" in current and "/analytics/oauth" in page.url,
                       f"range {r}: at {page.url}, current {current}")
        page.fill("#from", "2026-01-01T00:00")
        page.fill("#to", "2026-01-02T00:00")
        page.click("form.custom-range button")
        page.wait_for_load_state()
        self.check("from=2026-01-01T00" in page.url and page.locator("#clients").count() == 1,
                   f"the custom range did not apply: {page.url}")

        # Live: a new tool call shows up on the open overview without a reload.
        page.goto(f"{issuer}/analytics?range=1h")
        before = page.inner_text("#tool-calls")
        page.wait_for_function("() => document.getElementById('live-status').textContent.startsWith('Live')",
                               timeout=15000)
        marker = page.evaluate("() => { window.__notReloaded = true; return true; }")
        self.call(token, session, "add_numbers", {"a": 40, "b": 2}, 30)
        try:
            page.wait_for_function(
                "(before) => document.getElementById('tool-calls').textContent.trim() !== before",
                arg=before.strip(), timeout=20000)
            after = page.inner_text("#tool-calls")
            still = page.evaluate("() => window.__notReloaded === true")
            self.check(marker and still, "the page was reloaded")
            self.check(int(after) == int(before) + 1, f"tool calls went from {before} to {after}")
            log(f"live update: tool calls {before} -> {after} without a reload")
        except Exception as e:  # noqa: BLE001
            page.screenshot(path=str(self.art / "live-failure.png"), full_page=True)
            self.check(False, f"the new tool call never appeared: {e}")
        admin.close()
        self.security(browser, token, shots)

    def wait_rows(self, page, selector, n, url):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            page.goto(url)
            if page.locator(selector).count() >= n:
                return True
            page.wait_for_timeout(200)
        return False

    def security(self, browser, token, shots):
        issuer = self.h.issuer
        # Events: a wrong password for USER in a browser, and a probe for a known path.
        ctx = browser.new_context()
        p = ctx.new_page()
        p.goto(f"{issuer}/login")
        p.fill("#email", USER)
        p.fill("#password", "not-the-password")
        p.click("#login")
        p.wait_for_load_state()
        ctx.close()
        status, _, _ = http_json("GET", f"{issuer}/.env")
        self.check(status == 404, f"the probe answered {status}")
        self.h.cli("security", "block", "203.0.113.9", "--reason", "e2e block")

        user = browser.new_context()
        page = user.new_page()
        self.sign_in(page, USER, self.user_password, "/login")
        resp = page.goto(f"{issuer}/security")
        self.check(resp.status == 403, f"a non-admin got {resp.status} for /security")
        user.close()

        admin = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
        page = admin.new_page()
        self.sign_in(page, EMAIL, self.h.password, "/security?range=1h")
        url = f"{issuer}/security?range=1h"
        self.check(self.wait_rows(page, "#events tbody tr", 2, url), "the events never appeared")
        self.axe(page, "/security")
        page.screenshot(path=str(shots / "security.png"), full_page=True)
        events = page.inner_text("#events")
        for kind in ("sign_in_failed", "scanner"):
            self.check(kind in events, f"the feed lacks {kind}: {events!r}")
        self.check(USER in page.inner_text("#top-users"), "the top users lack the user")
        self.check("203.0.113.9" in page.inner_text("#blocks"), "the block is not listed")

        # Filters through the form.
        page.select_option("#type", "scanner")
        page.click("#filters button")
        page.wait_for_load_state()
        kinds = page.locator("#events tbody tr td:nth-child(2)").all_inner_texts()
        self.check("type=scanner" in page.url and kinds and set(kinds) == {"scanner"},
                   f"the type filter showed {kinds} at {page.url}")

        # Live: a new probe appears without a reload.
        page.goto(url)
        before = page.inner_text("#events-total").strip()
        page.wait_for_function("() => document.getElementById('live-status').textContent.startsWith('Live')",
                               timeout=15000)
        page.evaluate("() => { window.__notReloaded = true; }")
        http_json("GET", f"{issuer}/wp-login.php")
        try:
            page.wait_for_function(
                "(before) => document.getElementById('events-total').textContent.trim() !== before",
                arg=before, timeout=20000)
            self.check(page.evaluate("() => window.__notReloaded === true"), "the page was reloaded")
            log(f"security live update: events {before} -> {page.inner_text('#events-total')}")
        except Exception as e:  # noqa: BLE001
            self.check(False, f"the new probe never appeared: {e}")

        # Unblock from the page.
        page.goto(url)
        page.click("#blocks button.unblock")
        page.wait_for_load_state()
        self.check(page.locator("#no-blocks").count() == 1, "the block is still listed")
        listed = self.h.cli("security", "blocks")
        self.check("203.0.113.9" not in listed, f"the CLI still lists the block: {listed}")

        # Triage an event: acknowledge with a note, then resolve.
        page.goto(url)
        page.click("#events tbody tr:first-child td:first-child a")
        page.wait_for_selector("#triage")
        self.axe(page, "/security/events/{id}")
        page.fill("#note-input", "checked by the e2e run")
        page.click("#acknowledge")
        page.wait_for_load_state()
        self.check(EMAIL in page.inner_text("#acknowledged"), "the acknowledgement lacks who")
        page.click("#resolve")
        page.wait_for_load_state()
        self.check(EMAIL in page.inner_text("#resolved"), "the resolution lacks who")
        self.check(page.inner_text("#note").strip() == "checked by the e2e run", "the note was lost")

        # Revoke every token of the user, after the confirmation.
        page.goto(url)
        page.click("#top-users a.revoke")
        page.wait_for_selector("#confirm-revoke")
        self.axe(page, "/security/revoke")
        self.check("1 live grant" in page.inner_text("#live-grants"),
                   f"the confirmation says {page.inner_text('#live-grants')!r}")
        page.click("#confirm-revoke")
        page.wait_for_selector("#revoked")
        status, _, _ = http_json("POST", f"{issuer}/mcp", {
            "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "dashboard-e2e", "version": "1"}}},
            {"authorization": f"Bearer {token}", "accept": "application/json, text/event-stream"})
        self.check(status == 401, f"the revoked user's token got {status}")
        admin.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--database", default="sqlite")
    ap.add_argument("--artifacts", default="target/e2e-artifacts/dashboard")
    ap.add_argument("--screenshots", help="where to save the pages' screenshots (default: artifacts)")
    args = ap.parse_args()
    d = Dashboard(args)
    try:
        d.run()
    except Failure as e:
        d.problems.append(str(e))
    except Exception as e:  # noqa: BLE001
        d.problems.append(f"{type(e).__name__}: {e}")
    finally:
        d.h.cleanup()
    if d.problems:
        print(f"FAIL dashboard: {'; '.join(d.problems)}", flush=True)
        return 1
    print("PASS dashboard", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
