#!/usr/bin/env python3
"""Complete an OAuth authorization flow in headless Chromium, like a human would.

Usage:
    browser_login.py URL --email E --password P [--callback PREFIX]
                     [--timeout SECONDS] [--artifacts DIR]

Opens URL (an authorization request), fills the mcp-oauth login form when it
appears (#email, #password, #login), clicks #allow on the consent page when it
appears, and succeeds once the browser has been redirected to the client's
callback. The callback prefix defaults to the request's redirect_uri.

Exits non-zero, with a message on stderr and a screenshot + HTML dump in the
artifacts directory, when:
  - the deadline passes before the callback is reached,
  - any page of the flow answers with HTTP status >= 400 (an error page),
  - the login form or the consent page comes back after being submitted
    (wrong password, or the server did not accept the consent),
  - the callback carries an OAuth `error` parameter.

As a module: `complete_login(url, email, password, callback=None, timeout=60,
artifacts=...)` does the same and returns the exit code (sdk_python.py uses it).

Uses Debian's /usr/bin/chromium: Playwright's own browser download is not
reachable from CI machines.
"""

import argparse
import os
import sys
import time
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying to reach
# Google's hosts, which this network refuses; --no-sandbox because CI is root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class FlowError(Exception):
    pass


def redact(url):
    """The code is a live credential until the token request; keep it out of logs."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = parse_qs(parts.query, keep_blank_values=True)
    shown = "&".join(
        f"{k}={'<redacted>' if k == 'code' else v}"
        for k, values in query.items()
        for v in values
    )
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{shown}"


def visible(page, selector):
    # The page may be mid-navigation; treat "cannot tell" as "not visible"
    # and let the polling loop look again.
    try:
        return page.locator(selector).first.is_visible()
    except PlaywrightError:
        return False


def run_flow(page, url, email, password, callback, deadline):
    error_pages = []

    def on_response(response):
        # Only top-level navigations count as "pages"; a missing favicon is not an error page.
        req = response.request
        if req.is_navigation_request() and req.frame == page.main_frame and response.status >= 400:
            error_pages.append(f"HTTP {response.status} for {redact(response.url)}")

    page.on("response", on_response)
    page.on("framenavigated", lambda f: f == page.main_frame and log(f"at {redact(f.url)}"))

    log(f"opening {redact(url)}")
    page.goto(url, wait_until="domcontentloaded")

    logged_in = consented = False
    while True:
        current = page.url
        if current.startswith(callback):
            params = parse_qs(urlsplit(current).query)
            if "error" in params:
                raise FlowError(
                    f"authorization failed: error={params['error'][0]} "
                    f"{params.get('error_description', [''])[0]}"
                )
            if "code" not in params:
                raise FlowError(f"callback reached without a code: {redact(current)}")
            return current
        if error_pages:
            raise FlowError("error page: " + "; ".join(error_pages))
        if time.monotonic() > deadline:
            raise FlowError(f"timed out waiting for the callback; browser is at {redact(current)}")

        if visible(page, "#email"):
            if logged_in:
                raise FlowError("login form shown again after submitting it (login rejected?)")
            log("filling the login form")
            page.fill("#email", email)
            page.fill("#password", password)
            submit(page, "#login")
            logged_in = True
        elif visible(page, "#allow"):
            if consented:
                raise FlowError("consent page shown again after clicking Allow")
            log("consent page: clicking Allow")
            submit(page, "#allow")
            consented = True
        else:
            page.wait_for_timeout(200)


def submit(page, selector):
    # Wait for the navigation the click starts (following any redirects), so
    # the next loop iteration sees the new page rather than the old one.
    with page.expect_navigation(wait_until="domcontentloaded"):
        page.click(selector)


def log(msg):
    print(f"browser_login: {msg}", flush=True)


def complete_login(url, email, password, callback=None, timeout=60.0,
                   artifacts="target/e2e-artifacts"):
    """Drive the flow at `url` to `callback`; 0 on success, 1 on failure (reason on stderr).

    Uses Playwright's sync API, so call it from a thread without a running event loop
    (asyncio code: `await asyncio.to_thread(complete_login, ...)`).
    """
    if not callback:
        redirect = parse_qs(urlsplit(url).query).get("redirect_uri")
        if not redirect:
            print("browser_login: URL has no redirect_uri; pass --callback", file=sys.stderr)
            return 2
        callback = redirect[0]

    deadline = time.monotonic() + timeout
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(timeout * 1000)
            # Chromium explains blocked navigations (e.g. a CSP form-action
            # violation, seen by Playwright only as net::ERR_ABORTED) on the console.
            console_errors = []
            page.on("console", lambda m: m.type == "error" and console_errors.append(m.text))
            try:
                final = run_flow(page, url, email, password, callback, deadline)
            except (FlowError, PlaywrightError) as e:
                save_evidence(page, artifacts)
                for text in console_errors:
                    log(f"browser console error: {text}")
                print(f"browser_login: FAILED: {e}", file=sys.stderr, flush=True)
                return 1
            log(f"reached callback {redact(final)}")
            return 0
        finally:
            browser.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url", help="authorization request URL")
    ap.add_argument("--email", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--callback", help="URL prefix that ends the flow (default: the redirect_uri in URL)")
    ap.add_argument("--timeout", type=float, default=60, help="seconds for the whole flow (default 60)")
    ap.add_argument("--artifacts", default="target/e2e-artifacts", help="where failure screenshots go")
    args = ap.parse_args()
    return complete_login(args.url, args.email, args.password, args.callback,
                          args.timeout, args.artifacts)


def save_evidence(page, artifacts):
    os.makedirs(artifacts, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    shot = os.path.join(artifacts, f"browser-login-{stamp}.png")
    html = os.path.join(artifacts, f"browser-login-{stamp}.html")
    try:
        page.screenshot(path=shot, full_page=True)
        with open(html, "w", encoding="utf-8") as f:
            f.write(page.content())
        log(f"saved {shot} and {html}")
    except PlaywrightError as e:
        log(f"could not save evidence: {e}")


if __name__ == "__main__":
    sys.exit(main())
