//! Usage analytics: what is recorded, how it is summed, and how a range is read back.
//!
//! An [`Event`] is one HTTP request, one MCP JSON-RPC message, one OAuth event, or a count of
//! events the pipeline had to drop. It never holds a token, code, secret, password, tool
//! argument or result: only names, outcomes, codes, latencies and who (user, client, address).
//! Events are summed into rollups keyed by their [`Dimensions`]; [`summary`] turns summed rows
//! into the figures the dashboard and the JSON API show.

pub mod export;
pub mod geo;
pub mod histogram;
pub mod metrics;
pub mod range;
pub mod summary;

pub use histogram::Histogram;
pub use range::{Millis, Period, RangePlan, RollupSpan, plan};

/// What an event is about; stored as [`Kind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Http,
    Mcp,
    OAuth,
    /// Events the pipeline dropped because its queue was full (`count` of them).
    Pipeline,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Mcp => "mcp",
            Kind::OAuth => "oauth",
            Kind::Pipeline => "pipeline",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Kind::Http, Kind::Mcp, Kind::OAuth, Kind::Pipeline]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Ok,
    /// An HTTP response with status ≥ 400, or a refused OAuth request.
    Error,
    /// A tool ran and reported failure (`isError: true` in its result).
    ToolError,
    /// A JSON-RPC error response (its code in `code`).
    ProtocolError,
    /// The user said no (authorization denied).
    Denied,
}

impl Outcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::ToolError => "tool_error",
            Outcome::ProtocolError => "protocol_error",
            Outcome::Denied => "denied",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Outcome::Ok,
            Outcome::Error,
            Outcome::ToolError,
            Outcome::ProtocolError,
            Outcome::Denied,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// Everything events are summed by. Empty strings stand for "not known" so that the
/// dimensions can form a primary key on both databases.
///
/// | kind | name | detail | code |
/// |---|---|---|---|
/// | http | route template (`/token`) | method | status |
/// | mcp | JSON-RPC method | tool, prompt or resource name | JSON-RPC error code |
/// | oauth | [`OAuthEvent::name`] | [`OAuthEvent::detail`] | RFC error code |
/// | pipeline | `dropped` | | |
///
/// HTTP requests and MCP messages also carry the country of the address they came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Dimensions {
    pub kind: String,
    pub name: String,
    pub detail: String,
    pub outcome: String,
    pub code: String,
    pub user_id: String,
    pub client_id: String,
    /// The MCP client software, `name/version` from `clientInfo`.
    pub software: String,
    pub protocol_version: String,
    /// `streamable_http` or `sse` for MCP traffic.
    pub transport: String,
    /// Where the request came from ([`geo::country_of`]): an ISO 3166-1 alpha-2 code,
    /// `private`, `unknown`, or empty when no GeoIP database is configured.
    pub country: String,
}

impl Dimensions {
    /// The dimensions an event is summed by in rollups. HTTP requests are summed without
    /// their user and client: those of an authenticated MCP request are on its MCP messages
    /// already, and per user and client HTTP rows would multiply the rollups (and the time
    /// to read a month of them) for no figure. Raw events keep them, for drill-downs.
    pub fn for_rollup(&self) -> Dimensions {
        let mut d = self.clone();
        if d.kind == Kind::Http.as_str() {
            d.user_id.clear();
            d.client_id.clear();
        }
        d
    }
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: Millis,
    pub dims: Dimensions,
    pub latency_us: Option<u64>,
    /// How many events this row stands for: 1, except for [`Event::dropped`].
    pub count: u64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

/// Longest value kept for a user-controlled string (user agents, tool and client names):
/// storage per event is bounded whatever a client sends.
pub const MAX_FIELD: usize = 200;

/// `s` cut to at most [`MAX_FIELD`] bytes on a character boundary, without control
/// characters (they have no place in a name and would garble exports).
pub fn clip(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_FIELD));
    for c in s.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_FIELD {
            break;
        }
        out.push(c);
    }
    out
}

/// The protocol transport an MCP request came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    StreamableHttp,
    LegacySse,
}

impl Transport {
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::StreamableHttp => "streamable_http",
            Transport::LegacySse => "sse",
        }
    }
}

impl Event {
    fn new(at: Millis, kind: Kind, name: &str) -> Self {
        Self {
            at,
            dims: Dimensions {
                kind: kind.as_str().to_owned(),
                name: clip(name),
                outcome: Outcome::Ok.as_str().to_owned(),
                ..Dimensions::default()
            },
            latency_us: None,
            count: 1,
            ip: None,
            user_agent: None,
            request_id: None,
        }
    }

    /// An HTTP request answered with `status` after `latency_us` (to the last byte sent).
    pub fn http(at: Millis, route: &str, method: &str, status: u16, latency_us: u64) -> Self {
        let mut e = Self::new(at, Kind::Http, route);
        e.dims.detail = clip(method);
        e.dims.code = status.to_string();
        if status >= 400 {
            e.dims.outcome = Outcome::Error.as_str().to_owned();
        }
        e.latency_us = Some(latency_us);
        e
    }

    /// An MCP message: `method`, the tool, prompt or resource it names, and how it ended.
    pub fn mcp(
        at: Millis,
        method: &str,
        target: Option<&str>,
        result: McpResult,
        latency_us: u64,
    ) -> Self {
        let mut e = Self::new(at, Kind::Mcp, method);
        e.dims.detail = target.map(clip).unwrap_or_default();
        let (outcome, code) = match result {
            McpResult::Success => (Outcome::Ok, String::new()),
            McpResult::ToolError => (Outcome::ToolError, String::new()),
            McpResult::ProtocolError(code) => (Outcome::ProtocolError, code.to_string()),
        };
        e.dims.outcome = outcome.as_str().to_owned();
        e.dims.code = code;
        e.latency_us = Some(latency_us);
        e
    }

    /// An OAuth event.
    pub fn oauth(at: Millis, event: OAuthEvent<'_>) -> Self {
        let mut e = Self::new(at, Kind::OAuth, event.name());
        e.dims.detail = clip(event.detail());
        e.dims.outcome = event.outcome().as_str().to_owned();
        e.dims.code = clip(event.code());
        e
    }

    /// `count` events the pipeline could not keep.
    pub fn dropped(at: Millis, count: u64) -> Self {
        let mut e = Self::new(at, Kind::Pipeline, "dropped");
        e.count = count;
        e
    }

    pub fn user(mut self, user_id: Option<&str>) -> Self {
        self.dims.user_id = user_id.map(clip).unwrap_or_default();
        self
    }

    pub fn client(mut self, client_id: Option<&str>) -> Self {
        self.dims.client_id = client_id.map(clip).unwrap_or_default();
        self
    }

    /// The MCP session's client software, its protocol version and transport.
    pub fn mcp_context(
        mut self,
        software: Option<&str>,
        protocol_version: Option<&str>,
        transport: Option<Transport>,
    ) -> Self {
        self.dims.software = software.map(clip).unwrap_or_default();
        self.dims.protocol_version = protocol_version.map(clip).unwrap_or_default();
        self.dims.transport = transport.map(|t| t.as_str().to_owned()).unwrap_or_default();
        self
    }

    /// The country the request came from ([`geo::country_of`]).
    pub fn country(mut self, country: Option<&str>) -> Self {
        self.dims.country = country.map(clip).unwrap_or_default();
        self
    }

    pub fn request(
        mut self,
        ip: Option<String>,
        user_agent: Option<&str>,
        request_id: Option<&str>,
    ) -> Self {
        self.ip = ip;
        self.user_agent = user_agent.map(clip);
        self.request_id = request_id.map(clip);
        self
    }
}

/// How an MCP request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpResult {
    Success,
    /// A tool result with `isError: true`.
    ToolError,
    /// A JSON-RPC error, with its code.
    ProtocolError(i32),
}

/// OAuth events, one variant per fact an operator counts. `detail` and `code` carry only
/// protocol values (grant types, PKCE methods, RFC error codes), never anything secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthEvent<'a> {
    /// A client registered itself (RFC 7591).
    ClientRegistered,
    /// A client ID metadata document was fetched and accepted.
    MetadataDocumentFetched,
    /// The user approved (or had approved before) an authorization request.
    AuthorizationGranted {
        pkce_method: &'a str,
    },
    /// The user refused.
    AuthorizationDenied,
    /// The authorization request was refused (RFC 6749 §4.1.2.1 error code).
    AuthorizationFailed {
        error: &'a str,
    },
    /// An authorization code was exchanged for tokens; the PKCE method it was bound with.
    CodeExchanged {
        pkce_method: &'a str,
    },
    TokenRefreshed,
    ClientCredentialsGranted,
    /// The token endpoint refused a grant (RFC 6749 §5.2 error code).
    TokenFailed {
        grant_type: &'a str,
        error: &'a str,
    },
    /// A rotated refresh token came back after its grace period (OAuth 2.1 §4.3.1).
    RefreshReuseDetected,
    /// A used authorization code came back (OAuth 2.1 §4.1.3).
    CodeReplayDetected,
    TokenRevoked,
    SignInSucceeded,
    /// A password submission was refused: `invalid_credentials` (unknown emails included) or
    /// `throttled`.
    SignInFailed {
        reason: &'a str,
    },
}

impl OAuthEvent<'_> {
    pub const fn name(&self) -> &'static str {
        match self {
            OAuthEvent::ClientRegistered => "client_registered",
            OAuthEvent::MetadataDocumentFetched => "metadata_document_fetched",
            OAuthEvent::AuthorizationGranted { .. } => "authorization_granted",
            OAuthEvent::AuthorizationDenied => "authorization_denied",
            OAuthEvent::AuthorizationFailed { .. } => "authorization_failed",
            OAuthEvent::CodeExchanged { .. } => "code_exchanged",
            OAuthEvent::TokenRefreshed => "token_refreshed",
            OAuthEvent::ClientCredentialsGranted => "client_credentials_granted",
            OAuthEvent::TokenFailed { .. } => "token_failed",
            OAuthEvent::RefreshReuseDetected => "refresh_reuse_detected",
            OAuthEvent::CodeReplayDetected => "code_replay_detected",
            OAuthEvent::TokenRevoked => "token_revoked",
            OAuthEvent::SignInSucceeded => "sign_in_succeeded",
            OAuthEvent::SignInFailed { .. } => "sign_in_failed",
        }
    }

    fn detail(&self) -> &str {
        match self {
            OAuthEvent::AuthorizationGranted { pkce_method }
            | OAuthEvent::CodeExchanged { pkce_method } => pkce_method,
            OAuthEvent::TokenFailed { grant_type, .. } => grant_type,
            _ => "",
        }
    }

    fn code(&self) -> &str {
        match self {
            OAuthEvent::AuthorizationFailed { error } | OAuthEvent::TokenFailed { error, .. } => {
                error
            }
            OAuthEvent::SignInFailed { reason } => reason,
            _ => "",
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            OAuthEvent::AuthorizationDenied => Outcome::Denied,
            OAuthEvent::AuthorizationFailed { .. }
            | OAuthEvent::TokenFailed { .. }
            | OAuthEvent::RefreshReuseDetected
            | OAuthEvent::CodeReplayDetected
            | OAuthEvent::SignInFailed { .. } => Outcome::Error,
            _ => Outcome::Ok,
        }
    }
}

/// The histogram series an event's latency is summed into: `(kind, name, detail)`, that is
/// per route and method, or per MCP method and tool.
pub fn series_of(dims: &Dimensions) -> (String, String, String) {
    (dims.kind.clone(), dims.name.clone(), dims.detail.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_error_is_a_status_of_400_or_more() {
        assert_eq!(Event::http(0, "/token", "POST", 200, 5).dims.outcome, "ok");
        assert_eq!(Event::http(0, "/token", "POST", 399, 5).dims.outcome, "ok");
        let e = Event::http(0, "/token", "POST", 401, 5);
        assert_eq!(
            (e.dims.outcome.as_str(), e.dims.code.as_str()),
            ("error", "401")
        );
    }

    #[test]
    fn mcp_outcomes_keep_the_json_rpc_code() {
        let e = Event::mcp(
            0,
            "tools/call",
            Some("x"),
            McpResult::ProtocolError(-32602),
            1,
        );
        assert_eq!(
            (e.dims.outcome.as_str(), e.dims.code.as_str()),
            ("protocol_error", "-32602")
        );
        let e = Event::mcp(0, "tools/call", Some("x"), McpResult::ToolError, 1);
        assert_eq!(e.dims.outcome, "tool_error");
    }

    #[test]
    fn oauth_failures_carry_their_rfc_error_code() {
        let e = Event::oauth(
            0,
            OAuthEvent::TokenFailed {
                grant_type: "refresh_token",
                error: "invalid_grant",
            },
        );
        assert_eq!(e.dims.name, "token_failed");
        assert_eq!(e.dims.detail, "refresh_token");
        assert_eq!(e.dims.code, "invalid_grant");
        assert_eq!(e.dims.outcome, "error");
        assert_eq!(
            Event::oauth(0, OAuthEvent::AuthorizationDenied)
                .dims
                .outcome,
            "denied"
        );
    }

    #[test]
    fn client_strings_are_bounded_and_lose_control_characters() {
        let long = "é".repeat(500);
        let clipped = clip(&long);
        assert!(clipped.len() <= MAX_FIELD);
        assert!(clipped.chars().all(|c| c == 'é'));
        assert_eq!(clip("a\nb\u{7}c"), "abc");
    }

    #[test]
    fn kinds_and_outcomes_read_back_what_they_write() {
        for k in [Kind::Http, Kind::Mcp, Kind::OAuth, Kind::Pipeline] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        for o in [
            Outcome::Ok,
            Outcome::Error,
            Outcome::ToolError,
            Outcome::ProtocolError,
            Outcome::Denied,
        ] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
    }
}
