#!/usr/bin/env node
// The official MCP TypeScript SDK (@modelcontextprotocol/sdk, v1 line) against a running
// mcp-oauth, end to end, over StreamableHTTPClientTransport with an OAuthClientProvider.
//
// Usage (run_sdk_e2e.py starts the server and calls this once per registration mode; Node 22
// and the SDK come from .ci/tools/npm, installed from the committed .ci/npm lock file):
//   node e2e/sdk_typescript.mjs --issuer http://127.0.0.1:PORT --email E --password P \
//     --registration dcr|cimd --access-ttl 5 --python .ci/tools/venv/bin/python \
//     [--node-modules .ci/tools/npm/node_modules] [--artifacts DIR]
//
// One run:
//  1. a request without a token is answered 401 with a resource_metadata challenge;
//  2. client.connect(): the transport gets the 401 and calls the SDK's auth(): discovery
//     (RFC 9728 from the challenge, RFC 8414), registration (dynamic registration, or a client
//     ID metadata document served by this script on 127.0.0.1), then redirectToAuthorization(),
//     where browser_login.py (Python Playwright + Chromium) logs in and consents, stopping at
//     this script's loopback callback; transport.finishAuth(code) exchanges the code and the
//     connection is retried, as in the SDK's own OAuth client example;
//  3. tools/list (the six tools), tools/call add_numbers and whoami;
//  4. waits past the access token's expiry (+ the server's 5 s leeway): the next call gets a
//     401, the transport's auth() refreshes (refresh_token grant), the call succeeds, with a new
//     access token and no second login;
//  5. revokes the refresh token at the revocation_endpoint (RFC 7009, client credentials);
//     after 1 s the access token is refused with 401 invalid_token, and the SDK's next call
//     fails (its refresh is refused and it asks for a new login).
// Prints `PASS typescript streamable <registration>` or `FAIL ...`; exit code 0 / 1.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.dirname(HERE);
const EXPECTED_TOOLS = [
  'add_numbers',
  'calculate_circle_area',
  'check_prime_number',
  'format_text',
  'generate_random_number',
  'whoami',
];
const SERVER_LEEWAY = 5; // the server accepts a token this long after its exp
const CALL_TIMEOUT_MS = 60_000;

const { values: args } = parseArgs({
  options: {
    issuer: { type: 'string' },
    email: { type: 'string' },
    password: { type: 'string' },
    registration: { type: 'string', default: 'dcr' },
    'access-ttl': { type: 'string' },
    python: { type: 'string', default: path.join(REPO, '.ci/tools/venv/bin/python') },
    'node-modules': { type: 'string', default: path.join(REPO, '.ci/tools/npm/node_modules') },
    artifacts: { type: 'string', default: path.join(REPO, 'target/e2e-artifacts/sdk-typescript') },
  },
});
for (const required of ['issuer', 'email', 'password', 'access-ttl']) {
  if (!args[required]) {
    console.error(`--${required} is required`);
    process.exit(2);
  }
}
if (!['dcr', 'cimd'].includes(args.registration)) {
  console.error('--registration must be dcr or cimd');
  process.exit(2);
}

// The SDK is installed under .ci/tools/npm, not next to this script: import it by path.
const sdkDir = path.join(args['node-modules'], '@modelcontextprotocol/sdk/dist/esm');
const sdk = async (p) => import(pathToFileURL(path.join(sdkDir, p)).href);
const { Client } = await sdk('client/index.js');
const { StreamableHTTPClientTransport } = await sdk('client/streamableHttp.js');
const { UnauthorizedError, discoverAuthorizationServerMetadata } = await sdk('client/auth.js');

class CheckFailed extends Error {}
const check = (cond, msg) => {
  if (!cond) throw new CheckFailed(msg);
};
const log = (msg) => console.log(`[sdk-typescript] ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const withTimeout = (promise, ms, what) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms)),
  ]);

const issuer = args.issuer.replace(/\/$/, '');
const endpoint = `${issuer}/mcp`;
const accessTtl = Number(args['access-ttl']);
const label = `typescript streamable ${args.registration}`;

// ---- the "client application" on 127.0.0.1: metadata document + callback ----------------

const app = {
  callbacks: [],
  waiters: [],
  documentFetches: 0,
};
const appServer = http.createServer((req, res) => {
  const url = new URL(req.url, app.base);
  if (url.pathname === '/client.json') {
    app.documentFetches += 1;
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(documentFor(app)));
  } else if (url.pathname === '/callback') {
    const params = Object.fromEntries(url.searchParams);
    const waiter = app.waiters.shift();
    if (waiter) waiter(params);
    else app.callbacks.push(params);
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<p>Authorization complete; you can close this tab.</p>');
  } else {
    res.writeHead(404).end();
  }
});
await new Promise((r) => appServer.listen(0, '127.0.0.1', r));
app.base = `http://127.0.0.1:${appServer.address().port}`;
app.callbackUrl = `${app.base}/callback`;
app.documentUrl = `${app.base}/client.json`;

function documentFor(a) {
  return {
    client_id: a.documentUrl,
    client_name: 'mcp-oauth e2e (TypeScript SDK, metadata document)',
    redirect_uris: [a.callbackUrl],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  };
}

function nextCallback(ms) {
  if (app.callbacks.length) return Promise.resolve(app.callbacks.shift());
  return withTimeout(new Promise((r) => app.waiters.push(r)), ms, 'waiting for the callback');
}

// ---- the OAuthClientProvider --------------------------------------------------------------

class Provider {
  constructor() {
    this.tokenHistory = [];
    this.client = undefined;
    this.verifier = undefined;
    this.expectedState = undefined;
    this.pendingCallback = undefined;
    this.logins = 0;
    this.loginAllowed = true;
    this.invalidated = [];
  }
  get redirectUrl() {
    return app.callbackUrl;
  }
  get clientMetadata() {
    return {
      client_name: 'mcp-oauth e2e (TypeScript SDK)',
      redirect_uris: [app.callbackUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    };
  }
  state() {
    this.expectedState = randomBytes(16).toString('base64url');
    return this.expectedState;
  }
  clientInformation() {
    return this.client;
  }
  saveClientInformation(info) {
    this.client = info;
  }
  tokens() {
    return this.tokenHistory.at(-1);
  }
  saveTokens(tokens) {
    this.tokenHistory.push(tokens);
  }
  saveCodeVerifier(v) {
    this.verifier = v;
  }
  codeVerifier() {
    return this.verifier;
  }
  invalidateCredentials(scope) {
    this.invalidated.push(scope);
    if (scope === 'all' || scope === 'tokens') this.tokenHistory.push(undefined);
    if (scope === 'all' || scope === 'client') this.client = undefined;
  }
  async redirectToAuthorization(url) {
    this.logins += 1;
    if (!this.loginAllowed) {
      log(`redirectToAuthorization #${this.logins} after revocation: no login (expected)`);
      return; // auth() then reports REDIRECT and the transport throws UnauthorizedError
    }
    log(`redirectToAuthorization: browser login #${this.logins}`);
    const q = url.searchParams;
    check(q.get('code_challenge_method') === 'S256', 'authorization request without S256 PKCE');
    check(q.get('resource') === endpoint, `authorization request resource ${q.get('resource')} != ${endpoint}`);
    if (args.registration === 'cimd') {
      check(q.get('client_id') === app.documentUrl, `client_id ${q.get('client_id')} is not the document URL`);
    }
    const callback = nextCallback(90_000);
    const rc = await new Promise((resolve) => {
      const child = spawn(
        args.python,
        [
          path.join(HERE, 'browser_login.py'),
          url.href,
          '--email', args.email,
          '--password', args.password,
          '--callback', app.callbackUrl,
          '--timeout', '60',
          '--artifacts', path.join(args.artifacts, 'browser'),
        ],
        { stdio: 'inherit' },
      );
      child.on('exit', (code) => resolve(code));
      child.on('error', (e) => {
        log(`could not start the browser helper: ${e}`);
        resolve(1);
      });
    });
    check(rc === 0, 'the browser did not complete login + consent');
    this.pendingCallback = await callback;
  }
}

// ---- helpers ----------------------------------------------------------------------------

const exchanges = []; // {method, url, status, body}
const recordingFetch = async (input, init) => {
  const response = await fetch(input, init);
  const body = typeof init?.body === 'string' ? init.body : init?.body instanceof URLSearchParams ? init.body.toString() : '';
  exchanges.push({ method: init?.method ?? 'GET', url: String(input), status: response.status, body });
  return response;
};

async function rawStatus(token) {
  const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  if (token) headers.authorization = `Bearer ${token}`;
  const r = await fetch(endpoint, {
    method: 'POST',
    headers,
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
  });
  await r.body?.cancel();
  return [r.status, r.headers.get('www-authenticate') ?? ''];
}

const textOf = (result) => result.content.map((c) => c.text ?? '').join('');

// Successful tool calls, printed as `CALLS {json}` for the runner's analytics check.
const CALLS = {};

async function call(client, name, args_) {
  const result = await withTimeout(client.callTool({ name, arguments: args_ }), CALL_TIMEOUT_MS, `tools/call ${name}`);
  check(!result.isError, `tools/call ${name} returned isError: ${JSON.stringify(result.content)}`);
  CALLS[name] = (CALLS[name] ?? 0) + 1;
  return textOf(result);
}

async function connect(provider) {
  // As the SDK's simple OAuth client does: connect; on UnauthorizedError the provider has sent
  // the user to the authorization server; finish with the code from the callback and retry.
  const make = () => {
    const transport = new StreamableHTTPClientTransport(new URL(endpoint), {
      authProvider: provider,
      fetch: recordingFetch,
    });
    const client = new Client({ name: 'mcp-oauth-e2e', version: '1.0.0' });
    return { transport, client };
  };
  let { transport, client } = make();
  try {
    await withTimeout(client.connect(transport), CALL_TIMEOUT_MS, 'connect');
    return client;
  } catch (e) {
    if (!(e instanceof UnauthorizedError)) throw e;
  }
  const params = provider.pendingCallback;
  check(params, 'the SDK reported UnauthorizedError without sending the user to log in');
  check(!params.error, `authorization error at the callback: ${JSON.stringify(params)}`);
  check(params.state === provider.expectedState, 'state at the callback does not match');
  check(params.iss === issuer, `iss at the callback is ${params.iss}, expected ${issuer}`);
  await transport.finishAuth(params.code);
  await client.close().catch(() => {});
  ({ transport, client } = make());
  await withTimeout(client.connect(transport), CALL_TIMEOUT_MS, 'connect after login');
  return client;
}

async function revoke(provider) {
  const md = await discoverAuthorizationServerMetadata(new URL(issuer));
  check(md?.revocation_endpoint, 'no revocation_endpoint in the AS metadata');
  const info = provider.client;
  const form = new URLSearchParams({ token: provider.tokens().refresh_token, token_type_hint: 'refresh_token' });
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  const method = info.token_endpoint_auth_method ?? (info.client_secret ? 'client_secret_basic' : 'none');
  if (method === 'client_secret_basic' && info.client_secret) {
    const cred = `${encodeURIComponent(info.client_id)}:${encodeURIComponent(info.client_secret)}`;
    headers.authorization = `Basic ${Buffer.from(cred).toString('base64')}`;
  } else if (method === 'client_secret_post' && info.client_secret) {
    form.set('client_id', info.client_id);
    form.set('client_secret', info.client_secret);
  } else {
    form.set('client_id', info.client_id);
  }
  const r = await fetch(md.revocation_endpoint, { method: 'POST', headers, body: form });
  log(`revocation (${method}) at ${md.revocation_endpoint}: HTTP ${r.status}`);
  check(r.status === 200, `revocation answered ${r.status}: ${await r.text()}`);
}

// ---- the run ------------------------------------------------------------------------------

async function main() {
  let [status, challenge] = await rawStatus();
  check(status === 401, `unauthenticated request answered ${status}, not 401`);
  check(challenge.includes('resource_metadata='), `401 without resource_metadata: ${challenge}`);
  log(`no token -> 401, ${challenge}`);

  const provider = new Provider();
  if (args.registration === 'cimd') {
    // The SDK accepts only https clientMetadataUrl values (isHttpsUrl), and a loopback test
    // has no trusted certificate; the server fetches http://127.0.0.1 documents only with
    // cimd.allow_loopback. So we make the SDK's CIMD decision here, as auth() would (the AS
    // must advertise client_id_metadata_document_supported), and hand it the document URL as
    // its client information, which is exactly what auth() stores in that case.
    const md = await discoverAuthorizationServerMetadata(new URL(issuer));
    check(md?.client_id_metadata_document_supported === true, 'the AS does not advertise CIMD support');
    provider.client = { client_id: app.documentUrl };
  }

  const client = await connect(provider);
  const server = client.getServerVersion();
  log(`initialized: server ${server?.name} ${server?.version}, protocol ${client.transport?.protocolVersion ?? '?'}`);
  check(provider.logins === 1, `${provider.logins} browser logins for the first connection`);
  const info = provider.client;
  if (args.registration === 'cimd') {
    check(info.client_id === app.documentUrl, `client_id ${info.client_id} is not the document URL`);
    check(app.documentFetches >= 1, 'the server never fetched the metadata document');
    check(!exchanges.some((x) => x.url.endsWith('/register')), 'a dynamic registration was made in the CIMD run');
  } else {
    check(exchanges.some((x) => x.method === 'POST' && x.url.endsWith('/register') && x.status < 300), 'no dynamic registration was made');
  }
  log(`client_id ${info.client_id} (auth ${info.token_endpoint_auth_method ?? 'none'})`);

  const { tools } = await withTimeout(client.listTools(), CALL_TIMEOUT_MS, 'tools/list');
  const names = tools.map((t) => t.name).sort();
  check(JSON.stringify(names) === JSON.stringify(EXPECTED_TOOLS), `tools/list gave ${names}`);
  log(`tools/list: ${names.join(', ')}`);

  let text = await call(client, 'add_numbers', { a: 2, b: 3 });
  check(text.includes('is 5'), `add_numbers(2, 3) said ${text}`);
  const who = JSON.parse(await call(client, 'whoami', {}));
  check(who.authenticated === true && who.subject, `whoami said ${JSON.stringify(who)}`);
  check(who.client_id === info.client_id, `whoami client_id ${who.client_id} != ${info.client_id}`);
  check(who.scopes?.includes('mcp'), `whoami scopes ${who.scopes} lack mcp`);
  log(`tools/call add_numbers -> ${JSON.stringify(text)}; whoami -> ${JSON.stringify(who)}`);

  const first = provider.tokens();
  check(first?.refresh_token, 'the token response carried no refresh token');
  const wait = accessTtl + SERVER_LEEWAY + 1;
  log(`waiting ${wait} s for the access token to expire (ttl ${accessTtl} s + leeway)`);
  await sleep(wait * 1000);
  [status, challenge] = await rawStatus(first.access_token);
  check(status === 401 && challenge.includes('error="invalid_token"'), `expired token answered ${status} ${challenge}`);
  log('expired access token -> 401 invalid_token');

  text = await call(client, 'add_numbers', { a: 40, b: 2 });
  check(text.includes('is 42'), `add_numbers(40, 2) after expiry said ${text}`);
  const current = provider.tokens();
  check(current.access_token !== first.access_token, 'the access token did not change');
  check(exchanges.some((x) => x.body.includes('grant_type=refresh_token') && x.status === 200), 'no successful refresh_token grant was seen');
  check(provider.logins === 1, `${provider.logins} browser logins: the refresh needed a new login`);
  log(`after expiry: refreshed (refresh token ${current.refresh_token !== first.refresh_token ? 'rotated' : 'kept'}), tools/call ok, still 1 browser login`);

  await revoke(provider);
  await sleep(1100);
  [status, challenge] = await rawStatus(current.access_token);
  check(status === 401 && challenge.includes('error="invalid_token"'),
    `after revocation the access token got ${status} ${challenge}, not 401 invalid_token`);
  log(`after revocation: access token -> 401 (${challenge})`);

  provider.loginAllowed = false;
  const before = exchanges.length;
  let failure;
  try {
    await call(client, 'add_numbers', { a: 1, b: 1 });
  } catch (e) {
    failure = e;
  }
  check(failure, 'a tools/call succeeded after the grant was revoked');
  log(`SDK call after revocation failed as expected: ${failure.constructor.name}: ${failure.message}`);
  const refused = exchanges.slice(before).filter((x) => x.status === 400 || x.status === 401);
  check(refused.some((x) => x.url === endpoint && x.status === 401), 'the MCP endpoint did not answer 401 after revocation');
  check(refused.some((x) => x.body.includes('grant_type=refresh_token') && x.status === 400), 'the revoked refresh token was not refused');
  check(provider.logins === 2, 'the SDK did not ask for a new login after the refused refresh');
  log(`server refusals after revocation: ${refused.map((x) => `${x.method} ${x.url} ${x.status}`).join('; ')}`);
  await client.close().catch(() => {});
}

let code = 0;
try {
  await main();
  console.log(`CALLS ${JSON.stringify(CALLS)}`);
  console.log(`PASS ${label}`);
} catch (e) {
  if (!(e instanceof CheckFailed)) console.error(e);
  console.log(`FAIL ${label}: ${e.message}`);
  code = 1;
} finally {
  appServer.close();
  appServer.closeAllConnections?.();
}
process.exit(code);
