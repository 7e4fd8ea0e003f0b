//! The `mcp-oauth` binary driven as an operator would: administration commands on a
//! temporary SQLite database, and one-line failures for bad configuration and busy ports.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::PASSWORD;

/// A temporary database for one test, removed on drop.
struct Cli {
    path: PathBuf,
}

impl Cli {
    fn new() -> Self {
        let path =
            std::env::temp_dir().join(format!("mcp_oauth_cli_{}.db", mcp_oauth::random::id()));
        Self { path }
    }

    fn database_url(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.path.display())
    }

    /// The binary with a clean environment: only what the test sets reaches it.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mcp-oauth"));
        c.env_clear()
            .env("MCP_OAUTH_DATABASE_URL", self.database_url())
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run mcp-oauth")
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
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

    /// Run a command that must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?} failed: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    /// A configuration file beside the database with `toml` in it; returns its path.
    fn config(&self, toml: &str) -> String {
        let path = format!("{}.toml", self.path.display());
        std::fs::write(&path, toml).unwrap();
        path
    }

    /// `args` with `--config` holding `toml`.
    fn run_with_config(&self, toml: &str, args: &[&str]) -> Output {
        let config = self.config(toml);
        let mut all = vec!["--config", config.as_str()];
        all.extend_from_slice(args);
        self.run(&all)
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("--json prints JSON")
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", ".key", ".toml"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The failure is reported as exactly one line on standard error.
fn one_line_failure(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let err = stderr(out);
    assert_eq!(err.trim_end().lines().count(), 1, "one line, got: {err}");
    err.trim_end().to_owned()
}

#[test]
fn migrate_creates_the_database() {
    let cli = Cli::new();
    assert!(cli.ok(&["migrate"]).contains("migrations applied"));
    assert!(cli.path.exists());
    cli.ok(&["migrate"]);
}

#[test]
fn user_add_reads_the_password_from_stdin_and_user_list_shows_the_user() {
    let cli = Cli::new();
    let out = cli.run_with_stdin(
        &["user", "add", "Ada@Example.com", "--admin"],
        &format!("{PASSWORD}\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let users = cli.json(&["user", "list", "--json"]);
    let users = users.as_array().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["email"], "ada@example.com");
    assert_eq!(users[0]["admin"], true);
    assert_eq!(users[0]["disabled"], false);
}

#[test]
fn user_add_with_a_too_short_password_fails_with_one_line() {
    let cli = Cli::new();
    let out = cli.run_with_stdin(&["user", "add", "bob@example.com"], "short\n");
    let line = one_line_failure(&out);
    assert!(line.contains("at least"), "{line}");
    assert_eq!(cli.json(&["user", "list", "--json"]), serde_json::json!([]));
}

#[test]
fn a_duplicate_user_fails_with_one_line() {
    let cli = Cli::new();
    let input = format!("{PASSWORD}\n");
    let first = cli.run_with_stdin(&["user", "add", "eve@example.com"], &input);
    assert!(first.status.success());
    let again = cli.run_with_stdin(&["user", "add", "eve@example.com"], &input);
    assert!(one_line_failure(&again).contains("already exists"));
}

#[test]
fn client_add_list_and_remove() {
    let cli = Cli::new();
    let added = cli.json(&[
        "client",
        "add",
        "--name",
        "x",
        "--redirect-uri",
        "http://127.0.0.1:9/cb",
        "--confidential",
        "--json",
    ]);
    let id = added["client_id"].as_str().expect("client_id").to_owned();
    assert!(
        added["client_secret"]
            .as_str()
            .is_some_and(|s| s.len() >= 32)
    );
    assert_eq!(added["token_endpoint_auth_method"], "client_secret_basic");

    let list = cli.json(&["client", "list", "--json"]);
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == id.as_str())
        .expect("the new client is listed");
    assert_eq!(entry["name"], "x");
    assert_eq!(entry["kind"], "preregistered");
    assert_eq!(
        entry["redirect_uris"],
        serde_json::json!(["http://127.0.0.1:9/cb"])
    );
    assert!(
        entry.get("client_secret").is_none(),
        "the secret is shown once"
    );

    assert!(cli.ok(&["client", "remove", &id]).contains("removed"));
    assert_eq!(
        cli.json(&["client", "list", "--json"]),
        serde_json::json!([])
    );
    let again = cli.run(&["client", "remove", &id]);
    assert!(one_line_failure(&again).contains(&id));
}

/// Ids minted before ids began with a letter or digit may start with `-`;
/// `client remove` still reads them as the id, not as an option.
#[test]
fn client_remove_reads_an_id_that_starts_with_a_dash_as_the_id() {
    let cli = Cli::new();
    let out = cli.run(&["client", "remove", "-nKH72Wg6F_FzjrNzADL6Q"]);
    assert!(one_line_failure(&out).contains("no client with id -nKH72Wg6F_FzjrNzADL6Q"));
}

#[test]
fn a_public_client_gets_no_secret() {
    let cli = Cli::new();
    let added = cli.json(&[
        "client",
        "add",
        "--name",
        "cli app",
        "--redirect-uri",
        "http://127.0.0.1:9/cb",
        "--json",
    ]);
    assert_eq!(added["token_endpoint_auth_method"], "none");
    assert!(added.get("client_secret").is_none());
}

#[test]
fn keys_rotate_publishes_a_second_key() {
    let cli = Cli::new();
    assert!(cli.ok(&["keys", "rotate"]).contains("new signing key"));
    cli.ok(&["keys", "rotate"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = rt.block_on(async {
        let db = mcp_oauth::startup::connect_db(&cli.database_url())
            .await
            .unwrap();
        let keys = db
            .published_keys(mcp_oauth::clock::Clock::system().now())
            .await
            .unwrap();
        db.close().await;
        keys
    });
    assert_eq!(keys.len(), 2, "both keys are published");
    let signing: Vec<_> = keys.iter().filter(|k| k.retired_at.is_none()).collect();
    assert_eq!(signing.len(), 1, "one key signs");
    assert!(
        keys.iter()
            .all(|k| k.retired_at.is_none() || k.expires_at.is_some()),
        "the retired key is published only until its tokens expire"
    );
}

#[test]
fn check_config_accepts_a_good_configuration() {
    let cli = Cli::new();
    let out = cli.ok(&["check-config"]);
    assert!(out.contains("configuration is valid"));
}

#[test]
fn check_config_with_a_bad_value_fails_with_one_line_naming_the_key() {
    let cli = Cli::new();
    let out = cli
        .command(&["check-config"])
        .env("MCP_OAUTH_PUBLIC_URL", "http://example.com")
        .output()
        .unwrap();
    let line = one_line_failure(&out);
    assert!(line.contains("public_url"), "{line}");
}

#[test]
fn an_out_of_range_setting_fails_with_one_line_naming_it() {
    let cli = Cli::new();
    let out = cli
        .command(&["check-config"])
        .env("MCP_OAUTH_TOKENS__ACCESS_TTL", "0")
        .output()
        .unwrap();
    let line = one_line_failure(&out);
    assert!(line.contains("tokens.access_ttl"), "{line}");
}

#[test]
fn serve_on_a_port_in_use_fails_with_one_line_saying_so() {
    let cli = Cli::new();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let mut child = cli
        .command(&[
            "serve",
            "--listen",
            &addr,
            "--public-url",
            &format!("http://{addr}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve did not exit although its port is taken");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let line = one_line_failure(&out);
    assert!(line.contains("already in use"), "{line}");
    drop(busy);
}

#[tokio::test]
async fn list_settings_can_be_plain_environment_values() {
    let server = crate::helpers::ServerProcess::start(&[
        ("MCP_OAUTH_TRUSTED_PROXIES", "127.0.0.1/32,::1"),
        (
            "MCP_OAUTH_SCOPES__SUPPORTED",
            "mcp offline_access tools:read",
        ),
        (
            "MCP_OAUTH_CORS__ALLOWED_ORIGINS",
            "https://a.example, https://b.example",
        ),
    ])
    .await;
    let metadata: Value = reqwest::get(format!(
        "{}/.well-known/oauth-authorization-server",
        server.url
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        metadata["scopes_supported"],
        serde_json::json!(["mcp", "offline_access", "tools:read"])
    );
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{}/token", server.url))
        .header("origin", "https://b.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://b.example"
    );
}
/// A plain HTTP/1.1 GET over a socket (no client library, so no proxy settings apply here
/// either): the status and the body.
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, response))
}

/// `serve` on a free loopback port with extra environment; returns the child and its
/// address once `/healthz` answers.
fn serve_with_env(cli: &Cli, env: &[(&str, &str)]) -> (std::process::Child, String) {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut command = cli.command(&[
        "serve",
        "--listen",
        &addr,
        "--public-url",
        &format!("http://{addr}"),
    ]);
    command.envs(env.iter().copied());
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(http_get(&addr, "/healthz"), Ok((200, _))) {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("serve did not come up on {addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, addr)
}

#[test]
fn the_metadata_document_fetcher_ignores_proxy_environment_variables() {
    // A "proxy" that only counts the connections it gets.
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    std::thread::spawn(move || {
        for stream in proxy.incoming() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });

    let cli = Cli::new();
    let vars = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ];
    let env: Vec<(&str, &str)> = vars.iter().map(|v| (*v, proxy_url.as_str())).collect();
    let (mut child, addr) = serve_with_env(&cli, &env);
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair(
            "client_id",
            "https://client-metadata.example.com/client.json",
        )
        .append_pair(
            "redirect_uri",
            "https://client-metadata.example.com/callback",
        )
        .append_pair("response_type", "code")
        .append_pair("code_challenge", &"a".repeat(43))
        .append_pair("code_challenge_method", "S256")
        .finish();
    let answer = http_get(&addr, &format!("/authorize?{query}"));
    let _ = child.kill();
    let _ = child.wait();
    let (status, _) = answer.unwrap();
    assert_eq!(status, 400, "the document cannot be fetched here");
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the fetch went through the proxy from the environment"
    );
}

const KEY_1: &str = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=";
const KEY_2: &str = "MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI=";

#[test]
fn the_generated_encryption_key_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let cli = Cli::new();
    cli.ok(&["keys", "rotate"]);
    let key_file = format!("{}.key", cli.path.display());
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let first = std::fs::read_to_string(&key_file).unwrap();
    cli.ok(&["keys", "rotate"]);
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        first,
        "reused, not generated again"
    );
}

#[test]
fn keys_rewrap_moves_every_key_to_the_new_encryption_key() {
    let cli = Cli::new();
    let old = format!("[keys]\nencryption_key = \"{KEY_1}\"\n");
    let new = format!("[keys]\nencryption_key = \"{KEY_2}\"\n");
    let both =
        format!("[keys]\nencryption_key = \"{KEY_2}\"\nprevious_encryption_keys = [\"{KEY_1}\"]\n");
    for _ in 0..2 {
        let out = cli.run_with_config(&old, &["keys", "rotate"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    let refused = cli.run_with_config(&new, &["keys", "rotate"]);
    let line = one_line_failure(&refused);
    assert!(
        line.contains("does not match the stored signing keys"),
        "{line}"
    );

    let out = cli.run_with_config(&both, &["keys", "rewrap"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(said.contains("2 signing keys re-encrypted"), "{said}");

    let out = cli.run_with_config(&new, &["keys", "rotate"]);
    assert!(out.status.success(), "the new key alone: {}", stderr(&out));
    let out = cli.run_with_config(&old, &["keys", "rotate"]);
    assert!(one_line_failure(&out).contains("does not match"));
}

#[test]
fn postgresql_without_an_encryption_key_fails_naming_the_setting_and_how_to_make_one() {
    let cli = Cli::new();
    for command in [&["check-config"][..], &["serve"][..]] {
        let out = cli
            .command(command)
            .env("MCP_OAUTH_DATABASE_URL", "postgres://mcp@127.0.0.1:1/mcp")
            .output()
            .unwrap();
        let line = one_line_failure(&out);
        assert!(line.contains("keys.encryption_key"), "{line}");
        assert!(line.contains("openssl rand -base64 32"), "{line}");
    }
}

#[test]
fn check_config_never_prints_the_encryption_key_or_the_database_password() {
    let cli = Cli::new();
    for database_url in [
        "postgres://mcp:hunter2-db-secret@db.example.com/mcp",
        "postgres://mcp@db.example.com/mcp?password=hunter2-db-secret&sslmode=require",
    ] {
        let out = cli
            .command(&["check-config"])
            .env("MCP_OAUTH_DATABASE_URL", database_url)
            .env("MCP_OAUTH_KEYS__ENCRYPTION_KEY", KEY_1)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains(KEY_1), "{printed}");
        assert!(printed.contains("db.example.com"), "{printed}");
        assert!(printed.contains("keys.encryption_key"), "{printed}");
    }
}

/// Logs written to a pipe or a file carry no ANSI colour codes (issue 6, item 20): colour is
/// for terminals only.
#[test]
fn logs_written_to_a_pipe_have_no_colour_codes() {
    let cli = Cli::new();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    // `mcp.open` makes `serve` log a warning before it tries the (taken) port and stops.
    let out = cli
        .command(&[
            "serve",
            "--listen",
            &addr,
            "--public-url",
            &format!("http://{addr}"),
        ])
        .env("MCP_OAUTH_MCP__OPEN", "true")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("mcp.open is set"),
        "a log line was written: {err}"
    );
    assert!(
        !out.stderr.contains(&0x1b),
        "no escape (0x1b) byte in piped logs: {err:?}"
    );
    drop(busy);
}
