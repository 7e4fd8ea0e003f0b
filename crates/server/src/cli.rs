//! The command line: `serve`, `migrate`, `check-config`, the `user`, `client`, `keys` and
//! `analytics` administration commands, and `demo traffic`. Each returns an error that `main`
//! prints as one line.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use mcp_oauth_core::oauth::client::{
    ClientKind, ClientMetadata, GrantType, TokenEndpointAuthMethod,
};
use mcp_oauth_core::oauth::registration::validate_client_metadata;
use mcp_oauth_store::{ClientRow, Db, StoreError, UserRow};

use crate::clock::Clock;
use crate::config::{self, Overrides, Settings};
use crate::identity::{normalize_email, password};
use crate::keys::encryption::KeyRing;
use crate::startup::{Application, connect_db, shutdown_signal};

#[derive(Debug, Parser)]
#[command(
    name = "mcp-oauth",
    version,
    about = "OAuth 2.1 authorization server and protected MCP server"
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "MCP_OAUTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Database URL (overrides the file and MCP_OAUTH_DATABASE_URL).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration and print it (secrets redacted).
    CheckConfig,
    /// Manage local user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage pre-registered OAuth clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage token signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Read usage analytics.
    #[command(subcommand)]
    Analytics(AnalyticsCommand),
    /// Read security events.
    #[command(subcommand)]
    Security(SecurityCommand),
    /// Demonstrations against a running server.
    #[command(subcommand)]
    Demo(DemoCommand),
}

#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Drive realistic traffic through a running server's real endpoints (registrations,
    /// sign-ins of demo users it creates, authorizations, token grants, MCP tool calls, some
    /// failures), so that the analytics dashboard fills up. Uses the server's database (the
    /// same configuration) only to create the demo users.
    Traffic {
        /// The server's base URL; the MCP endpoint is `<url>/mcp`.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: url::Url,
        /// How long to run, seconds.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Demo users (`demo-1@example.com` …), each acting in parallel.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=50))]
        users: u16,
    },
}

#[derive(Debug, Subcommand)]
pub enum AnalyticsCommand {
    /// Print the figures of a range as JSON (the same document as
    /// `GET /analytics/api/summary`).
    Summary {
        /// Start of the range, RFC 3339 (default: a day before `--to`).
        #[arg(long)]
        from: Option<String>,
        /// End of the range, RFC 3339, exclusive (default: now).
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecurityCommand {
    /// Print security events, oldest first (one JSON object per line with `--json`).
    Events(SecurityEventsArgs),
    /// Block a client address on every instance (within a second).
    Block {
        ip: String,
        /// For this long; without it, until `unblock`.
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=525_600))]
        minutes: Option<i64>,
        #[arg(long, default_value = "blocked by an operator")]
        reason: String,
    },
    /// End an address's block.
    Unblock { ip: String },
    /// List the addresses blocked now.
    Blocks {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct SecurityEventsArgs {
    /// Start of the range, RFC 3339 (default: a day before `--to`).
    #[arg(long)]
    pub from: Option<String>,
    /// End of the range, RFC 3339, exclusive (default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// Only this type, e.g. `code_replay` (see the README for every type).
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Only this level and above: info, notice, warning or critical.
    #[arg(long)]
    pub level: Option<String>,
    /// Only events from this client address.
    #[arg(long)]
    pub ip: Option<String>,
    /// Only events about this user (email or user id).
    #[arg(long)]
    pub user: Option<String>,
    /// Only events about this client id.
    #[arg(long)]
    pub client: Option<String>,
    /// The newest this many events of the range.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub limit: i64,
    /// One JSON object per line: id, time, type, level, score, ip, user, user_id, client_id,
    /// request_id, evidence, and the triage fields.
    #[arg(long)]
    pub json: bool,
    /// Keep printing new events as any instance stores them, until interrupted.
    #[arg(long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long)]
    pub listen: Option<String>,
    /// Public URL (the issuer), e.g. https://mcp.example.com.
    #[arg(long)]
    pub public_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is read from standard input (prompted on a terminal).
    Add {
        email: String,
        #[arg(long)]
        admin: bool,
    },
    /// List users.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: sessions end and every grant is revoked.
    Disable { email: String },
    /// Set a user's password (read like `user add`).
    SetPassword { email: String },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Pre-register a client. A confidential client's secret is printed once.
    Add {
        #[arg(long)]
        name: String,
        /// Redirect URI (repeatable).
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// A confidential client (client_secret_basic unless --auth-method says otherwise).
        #[arg(long)]
        confidential: bool,
        /// client_secret_basic or client_secret_post, for confidential clients.
        #[arg(long)]
        auth_method: Option<String>,
        /// Space-separated scopes the client may request (default: any supported scope).
        #[arg(long)]
        scope: Option<String>,
        /// Allow the client_credentials grant (confidential clients only).
        #[arg(long)]
        client_credentials: bool,
        #[arg(long)]
        json: bool,
    },
    /// List clients.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a client; its grants and tokens are revoked.
    Remove {
        /// Accepted even when it starts with `-` (ids minted before that was avoided).
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Start signing with a new key; old keys stay published until their tokens expire.
    Rotate,
    /// Re-encrypt every stored signing key with the current `keys.encryption_key` (after
    /// changing it, with the old one in `keys.previous_encryption_keys`).
    Rewrap,
}

fn settings(cli: &Cli, serve: Option<&ServeArgs>) -> anyhow::Result<Settings> {
    let overrides = Overrides {
        listen: serve.and_then(|s| s.listen.clone()),
        public_url: serve.and_then(|s| s.public_url.clone()),
        database_url: cli.database_url.clone(),
    };
    let raw = config::load(cli.config.as_deref(), &overrides)?;
    Ok(raw.validate()?)
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Serve(args) => serve(settings(&cli, Some(args))?).await,
        Command::CheckConfig => check_config(&settings(&cli, None)?),
        command => {
            let settings = settings(&cli, None)?;
            let db = connect_db(&settings.database_url).await?;
            let result = admin(command, &settings, &db).await;
            db.close().await;
            result
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    crate::telemetry::init(settings.log_format, &settings.log_level);
    if settings.mcp.open {
        tracing::warn!(
            "mcp.open is set: the MCP endpoints accept requests WITHOUT authentication. \
             This is for conformance testing on loopback only."
        );
    }
    let app = Application::build(settings, Clock::system()).await?;
    let state = app.state().clone();
    if let Some(url) = app.setup_url().await? {
        // Printed, not only logged: this is how the operator finishes installation.
        println!(
            "No account exists yet. Create the first administrator at:\n\n    {url}\n\n(or run `mcp-oauth user add <email> --admin`)"
        );
    }
    tracing::info!(
        listen = %app.local_addr(),
        issuer = %state.settings.issuer,
        database = ?state.db.backend(),
        "mcp-oauth is serving"
    );
    app.run_until_stopped(shutdown_signal()).await
}

fn check_config(s: &Settings) -> anyhow::Result<()> {
    let summary = json!({
        "issuer": s.issuer,
        "listen": s.listen.to_string(),
        "database_url": s.database_url.redacted(),
        "signing_key_encryption": key_encryption_summary(s),
        "resources": s.resources.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "scopes_supported": s.supported_scopes.to_string(),
        "access_ttl": s.tokens.access_ttl,
        "refresh_ttl": s.tokens.refresh_ttl,
        "code_ttl": s.tokens.code_ttl,
        "signing_alg": s.tokens.signing_alg.as_str(),
        "dynamic_registration": s.registration.enabled,
        "client_id_metadata_documents": s.cimd.enabled,
        "metrics_bearer_token": s.metrics_bearer_token.as_ref().map(|_| "set, not shown"),
        "redis_url": s.redis_url.as_ref().map(|_| "set, not shown"),
        "rate_limits_shared": s.rate_limits.shared
            .resolve(s.database_url.backend(), s.redis_url.is_some()),
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    println!("configuration is valid");
    Ok(())
}

/// Where the signing-key encryption key comes from, without the key.
fn key_encryption_summary(s: &Settings) -> String {
    let previous = s.keys.previous_encryption_keys.len();
    let source = match (&s.keys.encryption_key, &s.keys.encryption_key_file) {
        (Some(_), _) => "keys.encryption_key (set, not shown)".to_owned(),
        (None, Some(path)) => format!("keys.encryption_key_file {}", path.display()),
        (None, None) => "a key generated next to the SQLite database".to_owned(),
    };
    if previous > 0 {
        format!("{source}; {previous} previous key(s) accepted for reading")
    } else {
        source
    }
}

/// Read a password: prompted without echo on a terminal, else one line of standard input.
fn read_password() -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Repeat password: ")?;
        if first != again {
            bail!("the passwords do not match");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input failed")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    password::check_new_password(&password).map_err(|why| anyhow!(why))?;
    Ok(password)
}

fn now() -> i64 {
    Clock::system().now()
}

async fn admin(command: &Command, settings: &Settings, db: &Db) -> anyhow::Result<()> {
    let out = &mut std::io::stdout();
    match command {
        Command::Migrate => writeln!(out, "migrations applied")?,
        Command::User(UserCommand::Add { email, admin }) => {
            let email = normalize_email(email)
                .ok_or_else(|| anyhow!("{email:?} is not an email address"))?;
            let hash = password::hash(read_password()?).await?;
            let user = UserRow {
                id: crate::random::id(),
                email: email.clone(),
                password_hash: Some(hash),
                is_admin: i64::from(*admin),
                created_at: now(),
                disabled_at: None,
            };
            match db.insert_user(&user).await {
                Err(StoreError::Conflict) => bail!("a user with email {email} already exists"),
                other => other?,
            }
            writeln!(
                out,
                "user {email} added{}",
                if *admin { " (administrator)" } else { "" }
            )?;
        }
        Command::User(UserCommand::List { json }) => {
            let users = db.list_users().await?;
            if *json {
                let list: Vec<_> = users
                    .iter()
                    .map(|u| json!({"id": u.id, "email": u.email, "admin": u.is_admin(), "disabled": u.is_disabled(), "created_at": u.created_at}))
                    .collect();
                writeln!(out, "{}", serde_json::to_string(&list)?)?;
            } else {
                for u in users {
                    let flags = [(u.is_admin(), "admin"), (u.is_disabled(), "disabled")]
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, n)| *n)
                        .collect::<Vec<_>>()
                        .join(",");
                    writeln!(out, "{}\t{}\t{}", u.id, u.email, flags)?;
                }
            }
        }
        Command::User(UserCommand::Disable { email }) => {
            let email = normalize_email(email).unwrap_or_default();
            let user = db
                .find_user_by_email(&email)
                .await?
                .ok_or_else(|| anyhow!("no user with email {email}"))?;
            if !db
                .disable_user(&user.id, now(), settings.tokens.access_ttl + 120)
                .await?
            {
                bail!("user {email} is already disabled");
            }
            writeln!(
                out,
                "user {email} disabled; sessions ended and grants revoked"
            )?;
        }
        Command::User(UserCommand::SetPassword { email }) => {
            let email = normalize_email(email).unwrap_or_default();
            let user = db
                .find_user_by_email(&email)
                .await?
                .ok_or_else(|| anyhow!("no user with email {email}"))?;
            let hash = password::hash(read_password()?).await?;
            db.set_password_hash(&user.id, &hash).await?;
            db.delete_user_sessions(&user.id).await?;
            writeln!(out, "password of {email} changed; existing sessions ended")?;
        }
        Command::Client(ClientCommand::Add {
            name,
            redirect_uris,
            confidential,
            auth_method,
            scope,
            client_credentials,
            json,
        }) => {
            let method = match (confidential, auth_method.as_deref()) {
                (false, None) => TokenEndpointAuthMethod::None,
                (false, Some(_)) => bail!("--auth-method needs --confidential"),
                (true, None) => TokenEndpointAuthMethod::ClientSecretBasic,
                (true, Some(m)) => match TokenEndpointAuthMethod::parse(m) {
                    Some(m) if m.is_confidential() => m,
                    _ => bail!("--auth-method must be client_secret_basic or client_secret_post"),
                },
            };
            let mut grants = vec![];
            if !redirect_uris.is_empty() {
                grants.extend([GrantType::AuthorizationCode, GrantType::RefreshToken]);
            }
            if *client_credentials {
                grants.push(GrantType::ClientCredentials);
            }
            if grants.is_empty() {
                bail!("give at least one --redirect-uri, or --client-credentials");
            }
            let request = json!({
                "client_name": name,
                "redirect_uris": redirect_uris,
                "grant_types": grants.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
                "token_endpoint_auth_method": method.as_str(),
                "scope": scope,
            });
            let obj = request
                .as_object()
                .ok_or_else(|| anyhow!("internal: request is not an object"))?;
            let policy = mcp_oauth_core::oauth::registration::RegistrationPolicy {
                supported_scopes: settings.supported_scopes.clone(),
                private_use_schemes: settings.private_use_schemes.clone(),
                allow_client_credentials: true,
            };
            let metadata: ClientMetadata = validate_client_metadata(obj, &policy, None)
                .map_err(|e| anyhow!("{}", e.description))?;
            let secret = method.is_confidential().then(crate::random::secret);
            let row = ClientRow {
                id: crate::random::id(),
                kind: ClientKind::Preregistered.as_str().to_owned(),
                metadata: serde_json::to_string(&metadata)?,
                secret_hash: secret.as_ref().map(|s| s.hash().as_str().to_owned()),
                metadata_hash: None,
                created_at: now(),
                last_used_at: None,
                refresh_after: None,
            };
            db.insert_client(&row).await?;
            if *json {
                let mut v =
                    json!({"client_id": row.id, "token_endpoint_auth_method": method.as_str()});
                if let Some(s) = &secret {
                    v["client_secret"] = json!(s.expose());
                }
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "client_id: {}", row.id)?;
                if let Some(s) = &secret {
                    writeln!(
                        out,
                        "client_secret: {}\n(shown once; store it now)",
                        s.expose()
                    )?;
                }
            }
        }
        Command::Client(ClientCommand::List { json }) => {
            let clients = db.list_clients().await?;
            let rows: Vec<_> = clients
                .iter()
                .map(|c| {
                    let m: Option<ClientMetadata> = serde_json::from_str(&c.metadata).ok();
                    let name = m
                        .as_ref()
                        .and_then(|m| m.client_name.clone())
                        .unwrap_or_default();
                    let redirects = m.map(|m| m.redirect_uris).unwrap_or_default();
                    (c, name, redirects)
                })
                .collect();
            if *json {
                let list: Vec<_> = rows
                    .iter()
                    .map(|(c, name, r)| json!({"client_id": c.id, "kind": c.kind, "name": name, "redirect_uris": r, "created_at": c.created_at, "last_used_at": c.last_used_at}))
                    .collect();
                writeln!(out, "{}", serde_json::to_string(&list)?)?;
            } else {
                for (c, name, r) in rows {
                    writeln!(out, "{}\t{}\t{}\t{}", c.id, c.kind, name, r.join(" "))?;
                }
            }
        }
        Command::Client(ClientCommand::Remove { client_id }) => {
            if !db
                .delete_client(client_id, now(), settings.tokens.access_ttl + 120)
                .await?
            {
                bail!("no client with id {client_id}");
            }
            writeln!(out, "client {client_id} removed; its grants were revoked")?;
        }
        Command::Analytics(AnalyticsCommand::Summary { from, to }) => {
            let range = crate::analytics::api::RangeQuery {
                from: from.clone(),
                to: to.clone(),
            };
            let (from, to) =
                crate::analytics::api::parse_range(&range, Clock::system().now_millis())
                    .map_err(|why| anyhow!("{why}"))?;
            let summary = crate::analytics::summary(db, from, to).await?;
            writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
        }
        Command::Security(SecurityCommand::Events(args)) => {
            let filter = security_filter(args, db).await?;
            crate::security::feed::print_events(
                db,
                &Clock::system(),
                filter,
                args.limit,
                args.json,
                args.follow,
                out,
            )
            .await?;
        }
        Command::Security(SecurityCommand::Block {
            ip,
            minutes,
            reason,
        }) => {
            let ip = parse_ip(ip)?;
            let now = Clock::system().now_millis();
            let until = minutes.map(|m| now + m * 60_000);
            retry_busy(|| db.block_ip(&ip, reason, now, until, "cli", false)).await?;
            // On the record with the automatic ones: the page, the feed and the alerts' log.
            let mut event = mcp_oauth_core::security::events::SecurityEvent::ip_blocked(
                now, reason, until, "operator",
            );
            event.actor.ip = ip.parse().ok();
            retry_busy(|| db.record_security_events(std::slice::from_ref(&event))).await?;
            match until {
                Some(t) => writeln!(
                    out,
                    "{ip} is blocked until {}",
                    mcp_oauth_core::analytics::summary::rfc3339(t)
                )?,
                None => writeln!(out, "{ip} is blocked until unblocked")?,
            }
        }
        Command::Security(SecurityCommand::Unblock { ip }) => {
            let ip = parse_ip(ip)?;
            let now = Clock::system().now_millis();
            if !retry_busy(|| db.unblock_ip(&ip, now)).await? {
                bail!("{ip} is not blocked");
            }
            writeln!(out, "{ip} is unblocked")?;
        }
        Command::Security(SecurityCommand::Blocks { json }) => {
            let rows = db
                .active_ip_blocks(Clock::system().now_millis(), 100_000)
                .await?;
            for row in rows {
                if *json {
                    writeln!(out, "{}", serde_json::to_string(&row)?)?;
                } else {
                    let until = row.expires_at.map_or("until unblocked".to_owned(), |t| {
                        format!("until {}", mcp_oauth_core::analytics::summary::rfc3339(t))
                    });
                    writeln!(
                        out,
                        "{} {until} by {} ({}; {} automatic block(s))",
                        row.ip, row.created_by, row.reason, row.strikes
                    )?;
                }
            }
        }
        Command::Demo(DemoCommand::Traffic {
            url,
            duration,
            users,
        }) => {
            let options = crate::demo::Options {
                url: url.clone(),
                duration: std::time::Duration::from_secs(*duration),
                users: usize::from(*users),
            };
            let line = crate::demo::traffic(db, &options).await?;
            writeln!(out, "{line}")?;
        }
        Command::Keys(KeysCommand::Rotate) => {
            let keyring = KeyRing::load(&settings.keys, &settings.database_url)?;
            let kid = crate::keys::rotate(
                db,
                &keyring,
                settings.tokens.signing_alg,
                now(),
                settings.tokens.access_ttl,
            )
            .await?;
            writeln!(
                out,
                "new signing key {kid} is active; running instances pick it up within a minute"
            )?;
        }
        Command::Keys(KeysCommand::Rewrap) => {
            let keyring = KeyRing::load(&settings.keys, &settings.database_url)?;
            let done = crate::keys::rewrap(db, &keyring).await?;
            writeln!(
                out,
                "{} signing keys re-encrypted with {}, {} already were; \
                 keys.previous_encryption_keys can now be removed",
                done.resealed,
                keyring.source(),
                done.current
            )?;
        }
        Command::Serve(_) | Command::CheckConfig => unreachable!("handled by run"),
    }
    Ok(())
}

/// The filter `security events` asks for, each value checked.
async fn security_filter(
    args: &SecurityEventsArgs,
    db: &Db,
) -> anyhow::Result<mcp_oauth_store::SecurityFilter> {
    use mcp_oauth_core::security::events::{Level, SecurityEventKind};
    let range = crate::analytics::api::RangeQuery {
        from: args.from.clone(),
        to: args.to.clone(),
    };
    let (from, to) = crate::analytics::api::parse_range(&range, Clock::system().now_millis())
        .map_err(|why| anyhow!("{why}"))?;
    if let Some(kind) = &args.kind
        && SecurityEventKind::parse(kind).is_none()
    {
        let all: Vec<&str> = SecurityEventKind::ALL.iter().map(|k| k.as_str()).collect();
        bail!("--type {kind:?} is not a type; one of: {}", all.join(", "));
    }
    let min_level = match &args.level {
        Some(l) => Some(Level::parse(l).ok_or_else(|| {
            anyhow!("--level {l:?} is not a level; one of: info, notice, warning, critical")
        })?),
        None => None,
    };
    let ip = args.ip.as_deref().map(parse_ip).transpose()?;
    let user_id = match &args.user {
        Some(u) if u.contains('@') => {
            let email =
                normalize_email(u).ok_or_else(|| anyhow!("{u:?} is not an email address"))?;
            let user = db
                .find_user_by_email(&email)
                .await?
                .ok_or_else(|| anyhow!("no user with email {email}"))?;
            Some(user.id)
        }
        other => other.clone(),
    };
    Ok(mcp_oauth_store::SecurityFilter {
        from,
        to,
        kind: args.kind.clone(),
        min_level,
        ip,
        user_id,
        client_id: args.client.clone(),
        after_id: None,
    })
}

/// An address as stored: as it prints, so that equal addresses written differently match.
fn parse_ip(ip: &str) -> anyhow::Result<String> {
    Ok(ip
        .parse::<std::net::IpAddr>()
        .map_err(|_| anyhow!("{ip:?} is not an IP address"))?
        .to_string())
}

/// Run a write beside a running server on SQLite, trying again while SQLite answers busy
/// where its busy timeout does not apply (see `StoreError::is_busy`).
async fn retry_busy<T, F, Fut>(mut write: F) -> mcp_oauth_store::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = mcp_oauth_store::Result<T>>,
{
    let mut attempt = 0;
    loop {
        match write().await {
            Err(e) if e.is_busy() && attempt < 50 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            outcome => return outcome,
        }
    }
}
