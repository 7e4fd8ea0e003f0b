//! Test harness: a real server on a real socket (port 0), on SQLite or, when
//! `MCP_OAUTH_TEST_DATABASE_URL` is set, on a fresh PostgreSQL database per test; a manual
//! clock; and a small "browser" that keeps cookies and sends same-origin headers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Once};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{HeaderMap, HeaderValue, LOCATION};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use mcp_oauth::clock::Clock;
use mcp_oauth::config::RawSettings;
use mcp_oauth::startup::{Application, connect_db};
use mcp_oauth::state::AppState;

pub const PASSWORD: &str = "correct horse battery staple";

static TRACING: Once = Once::new();

fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            mcp_oauth::telemetry::init(mcp_oauth::config::LogFormat::Text, "debug");
        }
    });
}

pub struct TestApp {
    /// Where this instance listens, e.g. `http://127.0.0.1:41234`; also the issuer, except
    /// for a second instance (see `spawn_second_instance`), which shares the first's.
    pub url: String,
    pub state: AppState,
    pub clock: Clock,
    /// A plain HTTP client that does not follow redirects.
    pub http: reqwest::Client,
    pub database_url: String,
    /// Whether dropping this app removes the database (not for a second instance on it).
    owns_database: bool,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    /// Stop the server and remove the test's database.
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if !self.owns_database {
            return;
        }
        if let Some(path) = self.database_url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path).to_owned();
            // The database, its journal files, and the signing-key encryption key generated
            // next to it.
            for suffix in ["", "-wal", "-shm", ".key"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        } else if let (Ok(base), Ok(url)) = (
            std::env::var("MCP_OAUTH_TEST_DATABASE_URL"),
            url::Url::parse(&self.database_url),
        ) {
            let name = url.path().trim_start_matches('/').to_owned();
            // Dropping needs async I/O, and Drop is sync: use a runtime of our own on a thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let admin = connect_db_raw(&base).await;
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&admin)
                    .await;
                    admin.close().await;
                });
                Some(())
            })
            .join();
        }
    }
}

/// A database for one test: a temporary SQLite file, or a new PostgreSQL database.
async fn test_database_url() -> String {
    let name = format!(
        "mcp_oauth_it_{}",
        mcp_oauth::random::id()
            .to_lowercase()
            .replace(['-', '_'], "")
    );
    match std::env::var("MCP_OAUTH_TEST_DATABASE_URL") {
        Ok(base) => {
            let admin = connect_db_raw(&base).await;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&admin)
                .await
                .expect("create the test database");
            let mut url = url::Url::parse(&base).expect("MCP_OAUTH_TEST_DATABASE_URL is a URL");
            url.set_path(&name);
            url.to_string()
        }
        Err(_) => {
            let path = std::env::temp_dir().join(format!("{name}.db"));
            format!("sqlite://{}?mode=rwc", path.display())
        }
    }
}

async fn connect_db_raw(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(url)
        .await
        .expect("connect to the test database server")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawn with settings adjusted by `configure` (the public URL and database are set for you).
pub async fn spawn_app_with(configure: impl FnOnce(&mut RawSettings)) -> TestApp {
    init_tracing();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let addr = listener.local_addr().expect("local addr");
    let mut raw = RawSettings {
        public_url: format!("http://{addr}"),
        listen: addr.to_string(),
        database_url: test_database_url().await.into(),
        ..RawSettings::default()
    };
    // PostgreSQL needs a configured key; SQLite generates one next to the database file.
    if std::env::var("MCP_OAUTH_TEST_DATABASE_URL").is_ok() {
        raw.keys.encryption_key = Some(TEST_ENCRYPTION_KEY.into());
    }
    configure(&mut raw);
    let clock = Clock::manual(Clock::system().now());
    start(raw, listener, clock, true).await
}

/// A second instance on `app`'s database, as behind a load balancer: same issuer, same
/// clock, and the signing keys and revocations it finds in the shared database. It does not
/// remove the database when dropped; declare it after `app` so that it is dropped first.
pub async fn spawn_second_instance(app: &TestApp) -> TestApp {
    try_second_instance_with(app, |_| {})
        .await
        .expect("build the second instance")
}

/// A second instance (see `spawn_second_instance`) with settings adjusted by `configure`, or
/// the error that stopped it from starting.
pub async fn try_second_instance_with(
    app: &TestApp,
    configure: impl FnOnce(&mut RawSettings),
) -> anyhow::Result<TestApp> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let mut raw = RawSettings {
        public_url: app.state.settings.issuer.clone(),
        listen: listener.local_addr().expect("local addr").to_string(),
        database_url: app.database_url.clone().into(),
        // The same signing-key encryption key (SQLite: the same generated key file).
        keys: app.state.settings.keys.clone(),
        ..RawSettings::default()
    };
    configure(&mut raw);
    try_start(raw, listener, app.clock.clone(), false).await
}

/// A test key for encrypting signing keys at rest (base64 of 32 bytes).
pub const TEST_ENCRYPTION_KEY: &str = "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo=";

async fn start(
    raw: RawSettings,
    listener: tokio::net::TcpListener,
    clock: Clock,
    owns_database: bool,
) -> TestApp {
    try_start(raw, listener, clock, owns_database)
        .await
        .expect("build the app")
}

async fn try_start(
    raw: RawSettings,
    listener: tokio::net::TcpListener,
    clock: Clock,
    owns_database: bool,
) -> anyhow::Result<TestApp> {
    let addr = listener.local_addr().expect("local addr");
    let database_url = raw.database_url.to_string();
    let settings = raw.validate()?;
    let db = connect_db(&settings.database_url)
        .await
        .expect("connect and migrate");
    let app = Application::build_on(settings, clock.clone(), db, listener).await?;
    let state = app.state().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    Ok(TestApp {
        url: format!("http://{addr}"),
        state,
        clock,
        http,
        database_url,
        owns_database,
        shutdown: Some(tx),
    })
}

/// PKCE pair (RFC 7636).
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Self {
        let verifier = format!("{}{}", mcp_oauth::random::id(), mcp_oauth::random::id());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Self {
            verifier,
            challenge,
        }
    }
}

/// Value of a hidden input in a page, HTML-unescaped.
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(unescape(&html[start..end]))
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A minimal browser: keeps cookies (including `__Host-`/Secure ones on loopback http, as
/// Chromium does), sends `Origin` on POSTs, never follows redirects by itself.
#[derive(Clone)]
pub struct Browser {
    pub origin: String,
    http: reqwest::Client,
    cookies: Arc<Mutex<HashMap<String, String>>>,
    /// Sent as `X-Forwarded-For`, for a server that trusts loopback as its proxy.
    client_ip: Option<String>,
}

impl Browser {
    pub fn new(app: &TestApp) -> Self {
        Self {
            origin: app.url.clone(),
            http: app.http.clone(),
            cookies: Arc::default(),
            client_ip: None,
        }
    }

    /// A browser that appears to come from `ip` (the app must list 127.0.0.1 in
    /// `trusted_proxies`).
    pub fn from_ip(app: &TestApp, ip: &str) -> Self {
        Self {
            client_ip: Some(ip.to_owned()),
            ..Self::new(app)
        }
    }

    /// Another browser (its own cookies) from the same address.
    pub fn fresh(&self) -> Self {
        Self {
            cookies: Arc::default(),
            ..self.clone()
        }
    }

    fn forwarded(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.client_ip {
            Some(ip) => req.header("x-forwarded-for", ip),
            None => req,
        }
    }

    fn cookie_header(&self) -> Option<HeaderValue> {
        let jar = self.cookies.lock().unwrap();
        if jar.is_empty() {
            return None;
        }
        let s = jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        HeaderValue::from_str(&s).ok()
    }

    fn store(&self, r: &Response) {
        let mut jar = self.cookies.lock().unwrap();
        for v in r.headers().get_all(reqwest::header::SET_COOKIE) {
            let s = v.to_str().unwrap();
            let pair = s.split(';').next().unwrap();
            let (k, val) = pair.split_once('=').unwrap();
            let expired = s.to_ascii_lowercase().contains("max-age=0");
            if expired || val.is_empty() {
                jar.remove(k);
            } else {
                jar.insert(k.to_owned(), val.to_owned());
            }
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.lock().unwrap().get(name).cloned()
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.cookies
            .lock()
            .unwrap()
            .insert(name.to_owned(), value.to_owned());
    }

    fn absolute(&self, url: &str) -> String {
        if url.starts_with('/') {
            format!("{}{url}", self.origin)
        } else {
            url.to_owned()
        }
    }

    pub async fn get(&self, url: &str) -> Response {
        let mut req = self.forwarded(self.http.get(self.absolute(url)));
        if let Some(c) = self.cookie_header() {
            req = req.header(reqwest::header::COOKIE, c);
        }
        let r = req.send().await.expect("GET");
        self.store(&r);
        r
    }

    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Response {
        self.post_form_with(url, form, HeaderMap::new()).await
    }

    pub async fn post_form_with(
        &self,
        url: &str,
        form: &[(&str, &str)],
        mut headers: HeaderMap,
    ) -> Response {
        if !headers.contains_key(reqwest::header::ORIGIN) {
            headers.insert(
                reqwest::header::ORIGIN,
                HeaderValue::from_str(&self.origin).unwrap(),
            );
        }
        let mut req = self.forwarded(
            self.http
                .post(self.absolute(url))
                .headers(headers)
                .form(form),
        );
        if let Some(c) = self.cookie_header() {
            req = req.header(reqwest::header::COOKIE, c);
        }
        let r = req.send().await.expect("POST");
        self.store(&r);
        r
    }

    /// Sign in through the login page.
    pub async fn login(&self, email: &str, password: &str) -> Response {
        let page = self.get("/login").await.text().await.unwrap();
        let csrf = hidden_field(&page, "csrf").expect("login page has a CSRF field");
        self.post_form(
            "/login",
            &[
                ("email", email),
                ("password", password),
                ("csrf", &csrf),
                ("return_to", "/account"),
            ],
        )
        .await
    }
}

pub fn location(r: &Response) -> String {
    r.headers()
        .get(LOCATION)
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_owned()
}

/// Query parameters of a redirect's Location.
pub fn redirect_params(r: &Response) -> HashMap<String, String> {
    let url = url::Url::parse(&location(r)).expect("Location is absolute");
    url.query_pairs().into_owned().collect()
}

/// How a client authenticates at the token, revocation and introspection endpoints.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// A public client (`none`): just `client_id` in the form.
    Public(String),
    /// `client_secret_basic`.
    Basic { id: String, secret: String },
    /// `client_secret_post`: `client_id` and `client_secret` in the form.
    Post { id: String, secret: String },
}

impl ClientAuth {
    pub fn id(&self) -> &str {
        match self {
            Self::Public(id) | Self::Basic { id, .. } | Self::Post { id, .. } => id,
        }
    }

    /// The same client and method with another secret (a public client gains one, as post).
    pub fn with_secret(&self, secret: &str) -> Self {
        let (id, secret) = (self.id().to_owned(), secret.to_owned());
        match self {
            Self::Basic { .. } => Self::Basic { id, secret },
            Self::Post { .. } | Self::Public(_) => Self::Post { id, secret },
        }
    }

    /// The same credentials sent by the other secret method.
    pub fn by_other_method(&self) -> Self {
        match self.clone() {
            Self::Basic { id, secret } => Self::Post { id, secret },
            Self::Post { id, secret } => Self::Basic { id, secret },
            public => public,
        }
    }

    /// Only the client id, as a public client sends it.
    pub fn without_secret(&self) -> Self {
        Self::Public(self.id().to_owned())
    }
}

impl TestApp {
    /// The authorization server metadata document (RFC 8414) as served at the root.
    pub async fn as_metadata(&self) -> Value {
        self.http
            .get(format!(
                "{}/.well-known/oauth-authorization-server",
                self.url
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The MCP resource (the default audience): `<issuer>/mcp`.
    pub fn mcp_resource(&self) -> String {
        format!("{}/mcp", self.state.settings.issuer)
    }

    /// A form POST to `path` (`/token`, `/revoke`, `/introspect`) authenticated as `auth`.
    pub fn oauth_request(
        &self,
        path: &str,
        auth: &ClientAuth,
        form: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut pairs: Vec<(&str, &str)> = form.to_vec();
        let req = self.http.post(format!("{}{path}", self.url));
        let req = match auth {
            ClientAuth::Public(id) => {
                pairs.push(("client_id", id));
                req
            }
            ClientAuth::Basic { id, secret } => req.basic_auth(id, Some(secret)),
            ClientAuth::Post { id, secret } => {
                pairs.push(("client_id", id));
                pairs.push(("client_secret", secret));
                req
            }
        };
        req.form(&pairs)
    }

    pub async fn token_as(&self, auth: &ClientAuth, form: &[(&str, &str)]) -> Response {
        self.oauth_request("/token", auth, form)
            .send()
            .await
            .unwrap()
    }

    /// Start a token request on its own task, to race it against others.
    pub fn spawn_token_as(
        &self,
        auth: &ClientAuth,
        form: &[(&str, &str)],
    ) -> tokio::task::JoinHandle<Response> {
        let request = self.oauth_request("/token", auth, form);
        tokio::spawn(async move { request.send().await.unwrap() })
    }

    /// Exchange a code, authenticating as `auth`.
    pub async fn exchange_as(
        &self,
        auth: &ClientAuth,
        code: &str,
        redirect_uri: &str,
        pkce: &Pkce,
    ) -> Response {
        self.token_as(
            auth,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", &pkce.verifier),
            ],
        )
        .await
    }

    /// `grant_type=refresh_token`, plus `extra` parameters (`scope`, `resource`).
    pub async fn refresh_as(
        &self,
        auth: &ClientAuth,
        refresh_token: &str,
        extra: &[(&str, &str)],
    ) -> Response {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        form.extend_from_slice(extra);
        self.token_as(auth, &form).await
    }

    /// RFC 7009 revocation of `token` by `auth`.
    pub async fn revoke_as(&self, auth: &ClientAuth, token: &str) -> Response {
        self.oauth_request("/revoke", auth, &[("token", token)])
            .send()
            .await
            .unwrap()
    }

    /// RFC 7662 introspection of `token` by `auth`; the raw response.
    pub async fn introspect_as(&self, auth: &ClientAuth, token: &str) -> Response {
        self.oauth_request("/introspect", auth, &[("token", token)])
            .send()
            .await
            .unwrap()
    }

    /// Run the browser side of an authorization and return the code with its PKCE pair.
    pub async fn code_for(
        &self,
        browser: &Browser,
        client_id: &str,
        redirect_uri: &str,
        extra: &[(&str, &str)],
    ) -> (String, Pkce) {
        let pkce = Pkce::new();
        let code = self
            .get_code(browser, client_id, redirect_uri, &pkce, extra)
            .await;
        (code, pkce)
    }

    /// The rows of `table` whose `column` equals `value`, counted with a connection of our
    /// own (for what the API cannot show, such as deleted rows).
    pub async fn count_rows(&self, table: &str, column: &str, value: &str) -> i64 {
        let pool = connect_db_raw(&self.database_url).await;
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {table} WHERE {column} = $1"
        )))
        .bind(value.to_owned())
        .fetch_one(&pool)
        .await
        .expect("count rows");
        pool.close().await;
        n
    }

    /// Make every later UPDATE of `table` fail inside the database (fault injection), on
    /// either backend, through a trigger.
    pub async fn fail_updates_of(&self, table: &str) {
        let pool = connect_db_raw(&self.database_url).await;
        let statements = if self.database_url.starts_with("sqlite:") {
            vec![format!(
                "CREATE TRIGGER fail_{table}_updates BEFORE UPDATE ON {table} \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            )]
        } else {
            vec![
                "CREATE OR REPLACE FUNCTION injected_failure() RETURNS trigger LANGUAGE plpgsql \
                 AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$"
                    .to_owned(),
                format!(
                    "CREATE TRIGGER fail_{table}_updates BEFORE UPDATE ON {table} \
                     FOR EACH ROW EXECUTE FUNCTION injected_failure()"
                ),
            ]
        };
        for sql in statements {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .expect("install the failing trigger");
        }
        pool.close().await;
    }

    /// `signing_keys.private_key` of every row as stored, by kid, read with a connection of
    /// our own.
    pub async fn stored_private_keys(&self) -> Vec<(String, String)> {
        let pool = connect_db_raw(&self.database_url).await;
        let rows = sqlx::query_as("SELECT kid, private_key FROM signing_keys ORDER BY kid")
            .fetch_all(&pool)
            .await
            .expect("read signing keys");
        pool.close().await;
        rows
    }

    /// Overwrite the stored private key of `kid`, as a database from an older version (or
    /// a tampered one) would hold it.
    pub async fn overwrite_private_key(&self, kid: &str, stored: &str) {
        let pool = connect_db_raw(&self.database_url).await;
        sqlx::query("UPDATE signing_keys SET private_key = $1 WHERE kid = $2")
            .bind(stored.to_owned())
            .bind(kid.to_owned())
            .execute(&pool)
            .await
            .expect("overwrite a signing key");
        pool.close().await;
    }

    /// Create a user directly in the database.
    pub async fn create_user(&self, email: &str, admin: bool) -> String {
        let hash = mcp_oauth::identity::password::hash(PASSWORD.to_owned())
            .await
            .unwrap();
        let id = mcp_oauth::random::id();
        self.state
            .db
            .insert_user(&mcp_oauth_store::UserRow {
                id: id.clone(),
                email: email.to_owned(),
                password_hash: Some(hash),
                is_admin: i64::from(admin),
                created_at: self.clock.now(),
                disabled_at: None,
            })
            .await
            .unwrap();
        id
    }

    pub async fn register(&self, body: Value) -> Response {
        self.http
            .post(format!("{}/register", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Register a public client (auth method `none`) for `redirect_uri`; returns its id.
    pub async fn register_public_client(&self, redirect_uri: &str) -> String {
        let r = self
            .register(json!({
                "client_name": "Test Client",
                "redirect_uris": [redirect_uri],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
            }))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["client_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Register a confidential client; returns (id, secret).
    pub async fn register_confidential_client(
        &self,
        redirect_uri: &str,
        method: &str,
        grants: &[&str],
    ) -> (String, String) {
        let r = self
            .register(json!({
                "client_name": "Confidential Client",
                "redirect_uris": [redirect_uri],
                "token_endpoint_auth_method": method,
                "grant_types": grants,
            }))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        (
            v["client_id"].as_str().unwrap().to_owned(),
            v["client_secret"].as_str().unwrap().to_owned(),
        )
    }

    /// Register a confidential client for `redirect_uri`, authenticating by `method`
    /// (`client_secret_basic` or `client_secret_post`) with the authorization code grant and
    /// refresh tokens.
    pub async fn register_confidential(&self, redirect_uri: &str, method: &str) -> ClientAuth {
        let (id, secret) = self
            .register_confidential_client(
                redirect_uri,
                method,
                &["authorization_code", "refresh_token"],
            )
            .await;
        match method {
            "client_secret_basic" => ClientAuth::Basic { id, secret },
            "client_secret_post" => ClientAuth::Post { id, secret },
            other => panic!("{other} is not a secret-based method"),
        }
    }

    /// A confidential client for the client credentials grant only (a service acting for
    /// itself), optionally limited to `scope`, registered the only way such a client can be:
    /// by the operator, as `mcp-oauth client add --client-credentials` does.
    pub async fn register_service_client(&self, scope: Option<&str>) -> ClientAuth {
        let (id, secret) = self.preregistered_service_client("Service", scope).await;
        ClientAuth::Basic { id, secret }
    }

    pub fn authorize_url(
        &self,
        client_id: &str,
        redirect_uri: &str,
        pkce: &Pkce,
        extra: &[(&str, &str)],
    ) -> String {
        let mut url = url::Url::parse(&format!("{}/authorize", self.url)).unwrap();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code");
            q.append_pair("client_id", client_id);
            q.append_pair("redirect_uri", redirect_uri);
            q.append_pair("code_challenge", &pkce.challenge);
            q.append_pair("code_challenge_method", "S256");
            q.append_pair("state", "st-123");
            for (k, v) in extra {
                q.append_pair(k, v);
            }
        }
        url.to_string()
    }

    /// Run the whole browser side of an authorization as a signed-in `browser`, approving
    /// consent if asked. Returns the final redirect to the client.
    pub async fn authorize(&self, browser: &Browser, url: &str) -> Response {
        let r = browser.get(url).await;
        if r.status() != StatusCode::OK {
            return r;
        }
        let page = r.text().await.unwrap();
        let csrf = hidden_field(&page, "csrf").expect("consent page has a CSRF field");
        let request = hidden_field(&page, "request").expect("consent page carries the request");
        browser
            .post_form(
                "/authorize",
                &[
                    ("csrf", &csrf),
                    ("request", &request),
                    ("decision", "allow"),
                ],
            )
            .await
    }

    /// A signed-in browser for a new user.
    pub async fn signed_in_browser(&self, email: &str) -> Browser {
        self.create_user(email, false).await;
        let b = Browser::new(self);
        let r = b.login(email, PASSWORD).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "login succeeds");
        b
    }

    /// Authorize and return the code.
    pub async fn get_code(
        &self,
        browser: &Browser,
        client_id: &str,
        redirect_uri: &str,
        pkce: &Pkce,
        extra: &[(&str, &str)],
    ) -> String {
        let r = self
            .authorize(
                browser,
                &self.authorize_url(client_id, redirect_uri, pkce, extra),
            )
            .await;
        assert_eq!(
            r.status(),
            StatusCode::SEE_OTHER,
            "authorization redirects back"
        );
        let params = redirect_params(&r);
        params
            .get("code")
            .unwrap_or_else(|| panic!("no code in {params:?}"))
            .clone()
    }

    pub async fn token(&self, form: &[(&str, &str)]) -> Response {
        self.http
            .post(format!("{}/token", self.url))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn token_basic(&self, id: &str, secret: &str, form: &[(&str, &str)]) -> Response {
        self.http
            .post(format!("{}/token", self.url))
            .basic_auth(id, Some(secret))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Exchange a code for a public client.
    pub async fn exchange(
        &self,
        client_id: &str,
        code: &str,
        redirect_uri: &str,
        pkce: &Pkce,
    ) -> Response {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", &pkce.verifier),
        ])
        .await
    }

    /// A public client with a signed-in user and a first token response.
    pub async fn tokens_for_new_client(&self, email: &str) -> Tokens {
        self.tokens_for_client_at(email, "http://127.0.0.1:7777/callback", &[])
            .await
    }

    /// Like `tokens_for_new_client`, for the public client registered for `redirect` (identical
    /// registrations share one client, so another `redirect` means another client), with
    /// `extra` authorization parameters such as `scope`.
    pub async fn tokens_for_client_at(
        &self,
        email: &str,
        redirect: &str,
        extra: &[(&str, &str)],
    ) -> Tokens {
        let client_id = self.register_public_client(redirect).await;
        let browser = self.signed_in_browser(email).await;
        let auth = ClientAuth::Public(client_id);
        self.tokens_for(&auth, &browser, redirect, extra).await
    }

    /// Authorize `auth`'s client as `browser`'s user and exchange the code.
    pub async fn tokens_for(
        &self,
        auth: &ClientAuth,
        browser: &Browser,
        redirect: &str,
        extra: &[(&str, &str)],
    ) -> Tokens {
        let (code, pkce) = self.code_for(browser, auth.id(), redirect, extra).await;
        let body = ok_json(self.exchange_as(auth, &code, redirect, &pkce).await).await;
        Tokens {
            client_id: auth.id().to_owned(),
            auth: auth.clone(),
            access_token: body["access_token"].as_str().unwrap().to_owned(),
            refresh_token: body["refresh_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            scope: body["scope"].as_str().unwrap().to_owned(),
            browser: browser.clone(),
        }
    }

    /// Introspect with a pre-registered confidential client (which may see any token).
    pub async fn introspect(&self, token: &str) -> Value {
        let (id, secret) = self.preregistered_confidential_client().await;
        let auth = ClientAuth::Basic { id, secret };
        ok_json(self.introspect_as(&auth, token).await).await
    }

    /// A confidential client as `mcp-oauth client add --confidential` makes one.
    pub async fn preregistered_confidential_client(&self) -> (String, String) {
        self.preregistered_service_client("Resource Server", None)
            .await
    }

    /// An operator-registered confidential client (`client_secret_basic`) for the client
    /// credentials grant; returns (id, secret).
    async fn preregistered_service_client(
        &self,
        name: &str,
        scope: Option<&str>,
    ) -> (String, String) {
        let secret = mcp_oauth::random::secret();
        let id = mcp_oauth::random::id();
        let metadata = json!({
            "client_name": name, "redirect_uris": [], "grant_types": ["client_credentials"],
            "response_types": ["code"], "token_endpoint_auth_method": "client_secret_basic",
            "scope": scope,
        });
        self.state
            .db
            .insert_client(&mcp_oauth_store::ClientRow {
                id: id.clone(),
                kind: "preregistered".into(),
                metadata: metadata.to_string(),
                secret_hash: Some(secret.hash().as_str().to_owned()),
                metadata_hash: None,
                created_at: self.clock.now(),
                last_used_at: None,
                refresh_after: None,
            })
            .await
            .unwrap();
        (id, secret.expose().to_owned())
    }

    /// Wait until the revocation poller has run (it polls every 250 ms).
    pub async fn wait_for_revocation_poll(&self) {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    }
}

pub struct Tokens {
    pub client_id: String,
    pub auth: ClientAuth,
    pub access_token: String,
    /// Empty when none was issued.
    pub refresh_token: String,
    pub scope: String,
    pub browser: Browser,
}

/// The JSON body of a response that must be a 200 with `Cache-Control: no-store`.
pub async fn ok_json(r: Response) -> Value {
    let status = r.status();
    let no_store = r
        .headers()
        .get("cache-control")
        .is_some_and(|v| v == "no-store");
    let body = r.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "expected 200, got {status}: {body}");
    assert!(no_store, "a token-endpoint answer is not cached");
    serde_json::from_str(&body).expect("a JSON body")
}

/// Decode a JWT's claims without verifying (the tests verify through the server).
pub fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

pub fn jwt_header(token: &str) -> Value {
    let header = token.split('.').next().expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

/// The `error` of an OAuth JSON error response, after checking the RFC 6749 §5.2 shape.
pub async fn oauth_error(r: Response) -> (StatusCode, String) {
    let status = r.status();
    assert_eq!(
        r.headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store"),
        "errors are not cached"
    );
    let body: Value = r.json().await.expect("a JSON error body");
    assert!(
        body["error_description"].is_string(),
        "error_description present: {body}"
    );
    (
        status,
        body["error"].as_str().expect("an error code").to_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Browser-side and registration helpers (registration, authorize, cimd, login, account, setup).
// ---------------------------------------------------------------------------------------------

/// The text of the error page's detail paragraph (`<p id="error-detail">`), HTML-unescaped.
pub fn error_detail(html: &str) -> Option<String> {
    element_text(html, "error-detail")
}

/// The text inside the element with `id`, up to its closing tag, HTML-unescaped.
pub fn element_text(html: &str, id: &str) -> Option<String> {
    let marker = format!("id=\"{id}\"");
    let start = html.find(&marker)?;
    let start = html[start..].find('>')? + start + 1;
    let end = html[start..].find("</")? + start;
    Some(unescape(&html[start..end]))
}

/// `url` with every `key` parameter removed, then `key=value` appended when `value` is given.
pub fn with_param(url: &str, key: &str, value: Option<&str>) -> String {
    let mut parsed = url::Url::parse(url).expect("an absolute URL");
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != key)
        .collect();
    {
        let mut q = parsed.query_pairs_mut();
        q.clear();
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        if let Some(v) = value {
            q.append_pair(key, v);
        }
    }
    parsed.to_string()
}

/// Assert that `r` is a local HTML error page with `status` (never a redirect); returns its
/// detail text.
pub async fn error_page(r: Response, status: StatusCode) -> String {
    assert_eq!(r.status(), status, "error page status");
    assert!(
        r.headers().get(LOCATION).is_none(),
        "an error page never redirects"
    );
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "an HTML page"
    );
    let html = r.text().await.unwrap();
    error_detail(&html).unwrap_or_else(|| panic!("an error page: {html}"))
}

/// Assert that `r` redirects the error `code` back to `redirect_uri`, with `state` and RFC 9207
/// `iss`; returns the redirect's parameters.
pub fn assert_error_redirect(
    app: &TestApp,
    r: &Response,
    redirect_uri: &str,
    code: &str,
) -> HashMap<String, String> {
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "an error redirect");
    let target = location(r);
    assert!(
        target.starts_with(&format!("{redirect_uri}?")),
        "redirects to the registered URI: {target}"
    );
    let params = redirect_params(r);
    assert_eq!(
        params.get("error").map(String::as_str),
        Some(code),
        "{params:?}"
    );
    assert_eq!(params.get("state").map(String::as_str), Some("st-123"));
    assert_eq!(params.get("iss"), Some(&app.url), "RFC 9207 iss");
    assert!(!params.contains_key("code"), "no code with an error");
    params
}

/// The consent form's hidden fields, from a consent page.
pub struct ConsentForm {
    pub csrf: String,
    pub request: String,
}

impl ConsentForm {
    pub fn from_page(html: &str) -> Self {
        Self {
            csrf: hidden_field(html, "csrf").expect("consent page has a CSRF field"),
            request: hidden_field(html, "request").expect("consent page carries the request"),
        }
    }
}

impl Browser {
    /// Sign in through the login page, asking to continue to `return_to`.
    pub async fn login_to(&self, email: &str, password: &str, return_to: &str) -> Response {
        let csrf = self.csrf_from("/login").await;
        self.post_form(
            "/login",
            &[
                ("email", email),
                ("password", password),
                ("csrf", &csrf),
                ("return_to", return_to),
            ],
        )
        .await
    }

    /// GET `page` and return the CSRF token of its form.
    pub async fn csrf_from(&self, page: &str) -> String {
        let html = self.get(page).await.text().await.unwrap();
        hidden_field(&html, "csrf").unwrap_or_else(|| panic!("{page} has a CSRF field"))
    }

    /// GET `url` and return the consent page, asserting that one is shown.
    pub async fn consent_page(&self, url: &str) -> String {
        let r = self.get(url).await;
        assert_eq!(r.status(), StatusCode::OK, "the consent page is shown");
        r.text().await.unwrap()
    }

    /// Submit the consent form with `decision` (`allow` or `deny`).
    pub async fn decide(&self, form: &ConsentForm, decision: &str) -> Response {
        self.post_form(
            "/authorize",
            &[
                ("csrf", &form.csrf),
                ("request", &form.request),
                ("decision", decision),
            ],
        )
        .await
    }

    /// The `Set-Cookie` header for `name` in `r`.
    pub fn set_cookie_header(r: &Response, name: &str) -> Option<String> {
        r.headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|v| v.starts_with(&format!("{name}=")))
    }
}

impl TestApp {
    /// Register a client with `metadata`, asserting success; returns its id.
    pub async fn register_client(&self, metadata: Value) -> String {
        let r = self.register(metadata).await;
        assert_eq!(r.status(), StatusCode::CREATED, "registration succeeds");
        r.json::<Value>().await.unwrap()["client_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// POST a raw body to the registration endpoint.
    pub async fn register_raw(
        &self,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        self.http
            .post(format!("{}/register", self.url))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// A public client as `mcp-oauth client add` makes one (not dynamically registered).
    pub async fn preregistered_public_client(&self, name: &str, redirect_uri: &str) -> String {
        self.preregistered_client(json!({
            "client_name": name, "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"], "token_endpoint_auth_method": "none",
        }))
        .await
    }

    /// A public client with this stored metadata, as the operator registers one.
    pub async fn preregistered_client(&self, metadata: Value) -> String {
        let id = mcp_oauth::random::id();
        self.state
            .db
            .insert_client(&mcp_oauth_store::ClientRow {
                id: id.clone(),
                kind: "preregistered".into(),
                metadata: metadata.to_string(),
                secret_hash: None,
                metadata_hash: None,
                created_at: self.clock.now(),
                last_used_at: None,
                refresh_after: None,
            })
            .await
            .unwrap();
        id
    }

    /// Disable a user as `mcp-oauth user disable` does.
    pub async fn disable_user(&self, user_id: &str) {
        let disabled = self
            .state
            .db
            .disable_user(user_id, self.clock.now(), self.state.revocation_ttl())
            .await
            .unwrap();
        assert!(disabled);
    }

    /// Open first-run setup, as `serve` does when no user exists; returns the token.
    pub fn open_setup(&self) -> String {
        self.state.setup.open()
    }
}

/// A tiny web server that serves one Client ID Metadata Document at `/client.json` and
/// counts how often it is fetched.
pub struct DocServer {
    pub url: String,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// What the document server answers.
#[derive(Clone, Default)]
pub struct DocResponse {
    pub body: String,
    pub cache_control: Option<String>,
    /// Answer with a 302 to this location instead of the document.
    pub redirect_to: Option<String>,
}

impl DocServer {
    /// Serve `doc`; the closure gets the document's URL (the client id) to build it.
    pub async fn start(doc: impl FnOnce(&str) -> DocResponse) -> Self {
        use axum::response::IntoResponse;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let url = format!("http://{}/client.json", listener.local_addr().unwrap());
        let response = doc(&url);
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = fetches.clone();
        let handler = move || {
            let response = response.clone();
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if let Some(to) = response.redirect_to {
                    return (
                        axum::http::StatusCode::FOUND,
                        [(axum::http::header::LOCATION, to)],
                    )
                        .into_response();
                }
                let mut r = (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    response.body,
                )
                    .into_response();
                if let Some(cc) = response.cache_control {
                    r.headers_mut().insert(
                        axum::http::header::CACHE_CONTROL,
                        axum::http::HeaderValue::from_str(&cc).unwrap(),
                    );
                }
                r
            }
        };
        let router = axum::Router::new().route("/client.json", axum::routing::get(handler));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
        });
        Self {
            url,
            fetches,
            shutdown: Some(tx),
        }
    }

    /// How many times the document was requested.
    pub fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        url::Url::parse(&self.url).unwrap().port().unwrap()
    }
}

impl Drop for DocServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MCP helpers (mcp, mcp_auth, mcp_sse): JSON-RPC bodies, requests with the headers an MCP
// client sends, and tokens minted with our own key for claims the AS would never issue.
// ---------------------------------------------------------------------------------------------

/// The protocol version the helpers initialise with.
pub const MCP_VERSION: &str = "2025-06-18";

/// A JSON-RPC request.
pub fn rpc(id: i64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

pub fn initialize(id: i64) -> Value {
    initialize_with_version(id, MCP_VERSION)
}

pub fn initialize_with_version(id: i64, version: &str) -> Value {
    rpc(
        id,
        "initialize",
        json!({"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "it", "version": "0"}}),
    )
}

pub fn initialized() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
}

pub fn tool_call(id: i64, name: &str, arguments: Value) -> Value {
    rpc(
        id,
        "tools/call",
        json!({"name": name, "arguments": arguments}),
    )
}

/// What an MCP endpoint answered: the JSON-RPC messages of a JSON or SSE body.
#[derive(Debug)]
pub struct McpReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
    pub messages: Vec<Value>,
}

impl McpReply {
    pub async fn read(r: Response) -> Self {
        let (status, headers) = (r.status(), r.headers().clone());
        let body = r.text().await.unwrap();
        let messages = if headers
            .get("content-type")
            .is_some_and(|c| c.to_str().unwrap().starts_with("text/event-stream"))
        {
            body.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str(d.trim()).ok())
                .collect()
        } else {
            serde_json::from_str(&body)
                .map(|v| vec![v])
                .unwrap_or_default()
        };
        Self {
            status,
            headers,
            body,
            messages,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn session_id(&self) -> Option<String> {
        self.header("mcp-session-id").map(str::to_owned)
    }

    /// The `result` of the one JSON-RPC response, asserting a 200 without a JSON-RPC error.
    pub fn result(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        let result = &self
            .messages
            .first()
            .unwrap_or_else(|| panic!("a JSON-RPC response: {}", self.body))["result"];
        assert!(!result.is_null(), "a result, not an error: {}", self.body);
        result
    }

    /// The text of a tool result, with its `isError` flag.
    pub fn tool_text(&self) -> (&str, bool) {
        let result = self.result();
        (
            result["content"][0]["text"]
                .as_str()
                .expect("a text result"),
            result["isError"].as_bool().unwrap_or(false),
        )
    }

    /// Assert that the request was refused by the bearer layer before MCP saw it: `status`,
    /// exactly `challenge` in `WWW-Authenticate`, an OAuth-shaped body with `error`, and no
    /// JSON-RPC answer or session.
    pub fn assert_refused(&self, status: StatusCode, challenge: &str, error: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.header("www-authenticate"),
            Some(challenge),
            "the challenge"
        );
        assert!(self.session_id().is_none(), "no session was created");
        let body: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("a JSON error body: {}", self.body));
        assert_eq!(body["error"], error, "{body}");
        assert!(
            body.get("jsonrpc").is_none() && body.get("result").is_none(),
            "nothing reached the MCP service: {body}"
        );
    }
}

/// An exact `WWW-Authenticate` value, rendered independently of the server's builder.
pub fn bearer_challenge(
    error: Option<(&str, &str)>,
    scope: Option<&str>,
    resource_metadata: &str,
) -> String {
    let mut params = Vec::new();
    if let Some((code, description)) = error {
        params.push(format!("error=\"{code}\""));
        params.push(format!("error_description=\"{description}\""));
    }
    if let Some(s) = scope {
        params.push(format!("scope=\"{s}\""));
    }
    params.push(format!("resource_metadata=\"{resource_metadata}\""));
    format!("Bearer {}", params.join(", "))
}

impl TestApp {
    /// The legacy SSE resource: `<issuer>/sse`.
    pub fn sse_resource(&self) -> String {
        format!("{}/sse", self.state.settings.issuer)
    }

    /// Where the metadata of the resource at `path` (`/mcp`, `/sse`) is served.
    pub fn prm_url(&self, path: &str) -> String {
        format!(
            "{}/.well-known/oauth-protected-resource{}{path}",
            self.url,
            self.state.settings.base_path()
        )
    }

    /// `path` (`/mcp`, `/sse`, `/message?…`) under the issuer's path on this instance.
    pub fn mcp_url(&self, path: &str) -> String {
        format!("{}{}{path}", self.url, self.state.settings.base_path())
    }

    /// A request to an MCP endpoint with the headers a Streamable HTTP client sends.
    pub fn mcp_request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, self.mcp_url(path))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req
    }

    /// POST `body` to `/mcp`, in `session` if given.
    pub async fn mcp_send(
        &self,
        token: Option<&str>,
        session: Option<&str>,
        body: &Value,
    ) -> McpReply {
        let mut req = self
            .mcp_request(reqwest::Method::POST, "/mcp", token)
            .body(body.to_string());
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        McpReply::read(req.send().await.unwrap()).await
    }

    /// Initialise a Streamable HTTP session with `token`; returns its id.
    pub async fn mcp_session(&self, token: &str) -> String {
        let init = self.mcp_send(Some(token), None, &initialize(1)).await;
        init.result();
        let session = init.session_id().expect("a session id");
        let ack = self
            .mcp_send(Some(token), Some(&session), &initialized())
            .await;
        assert_eq!(ack.status, StatusCode::ACCEPTED, "{}", ack.body);
        session
    }

    /// Claims of a valid `mcp` token for `/mcp` that the test then edits, signed with the
    /// server's current key: for tokens the authorization server would never issue.
    pub fn mint_access_token(
        &self,
        edit: impl FnOnce(&mut mcp_oauth_core::oauth::access_token::AccessTokenClaims),
    ) -> String {
        let now = self.clock.now();
        let mut claims = mcp_oauth_core::oauth::access_token::AccessTokenClaims {
            iss: self.state.settings.issuer.clone(),
            sub: "minted-user".into(),
            aud: self.mcp_resource(),
            client_id: "minted-client".into(),
            scope: "mcp".into(),
            exp: now + self.state.settings.tokens.access_ttl,
            iat: now,
            nbf: now,
            jti: mcp_oauth::random::id(),
            gid: None,
            auth_time: None,
        };
        edit(&mut claims);
        self.state.keys.sign(&claims).unwrap()
    }
}

/// POST one JSON-RPC message to `/mcp`; returns the status, headers and the JSON-RPC
/// messages in the body (plain JSON or an SSE stream).
pub async fn mcp_post(
    app: &TestApp,
    token: Option<&str>,
    session: Option<&str>,
    body: Value,
) -> (StatusCode, HeaderMap, Vec<Value>) {
    let r = app.mcp_send(token, session, &body).await;
    (r.status, r.headers, r.messages)
}

/// The real binary serving on a temporary SQLite database, its standard error collected:
/// for what only a separate process shows (its logs, its environment, its memory).
pub struct ServerProcess {
    child: std::process::Child,
    pub url: String,
    pub database_url: String,
    db_path: std::path::PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl ServerProcess {
    /// POST an `initialize` without a token to its `/mcp`, as an SDK first does; the status.
    pub async fn initialize_without_token(&self, http: &reqwest::Client) -> StatusCode {
        let r = http
            .post(format!("{}/mcp", self.url))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(initialize(1).to_string())
            .send()
            .await
            .expect("the server answers");
        r.status()
    }

    /// Start `mcp-oauth serve` with a clean environment plus `env`, and wait until it answers.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let db_path =
            std::env::temp_dir().join(format!("mcp_oauth_proc_{}.db", mcp_oauth::random::id()));
        let database_url = format!("sqlite://{}?mode=rwc", db_path.display());
        let url = format!("http://127.0.0.1:{port}");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-oauth"))
            .env_clear()
            .env("MCP_OAUTH_DATABASE_URL", &database_url)
            .env("MCP_OAUTH_LISTEN", format!("127.0.0.1:{port}"))
            .env("MCP_OAUTH_PUBLIC_URL", &url)
            .envs(env.iter().copied())
            .arg("serve")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn mcp-oauth serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut pipe = pipe;
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let server = Self {
            child,
            url,
            database_url,
            db_path,
            stderr,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/healthz", server.url)).await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not start: {}",
                server.stderr()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        server
    }

    /// Run an administration command on the same database.
    pub fn admin(&self, args: &[&str], stdin: &str) -> std::process::Output {
        use std::io::Write as _;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-oauth"))
            .env_clear()
            .env("MCP_OAUTH_DATABASE_URL", &self.database_url)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn mcp-oauth");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Everything the server wrote to standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGTERM and wait (up to 30 s) for the process to exit; whether it exited 0.
    pub async fn terminate(&mut self) -> bool {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return status.success();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not stop: {}",
                self.stderr()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for suffix in ["", "-wal", "-shm", ".key"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.db_path.display()));
        }
    }
}

/// Spawn on a database the test manages itself (its own PostgreSQL cluster, say): it is
/// migrated, but neither created nor dropped here.
pub async fn spawn_app_on_database(
    database_url: &str,
    configure: impl FnOnce(&mut RawSettings),
) -> TestApp {
    init_tracing();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let addr = listener.local_addr().expect("local addr");
    let mut raw = RawSettings {
        public_url: format!("http://{addr}"),
        listen: addr.to_string(),
        database_url: database_url.into(),
        ..RawSettings::default()
    };
    if database_url.starts_with("postgres") {
        raw.keys.encryption_key = Some(TEST_ENCRYPTION_KEY.into());
    }
    configure(&mut raw);
    let clock = Clock::manual(Clock::system().now());
    start(raw, listener, clock, false).await
}

/// Run `command` to completion without blocking the test's runtime: the app under test runs
/// on that runtime, and a command that waits for it (a SQLite write waiting for the app's
/// transaction to commit) would otherwise wait for a runtime that waits for the command.
pub async fn output_of(mut command: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output().expect("run the command"))
        .await
        .expect("the command's thread")
}
