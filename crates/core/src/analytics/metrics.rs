//! What each recorded event adds to the operational metrics (Prometheus, at `/metrics`).
//!
//! The server feeds every event it records to [`observe`], so the metrics and the analytics
//! tables count the same things and can never disagree. The label rules live here, next to
//! their tests: a label takes only values from a bounded set (route templates, the standard
//! HTTP methods, status codes, the MCP methods the server names, the server's own tool names,
//! protocol error codes), never a user, client, address or anything else a client chooses, so
//! no client can grow the number of series a scraper has to keep.

use super::{Event, Kind, Outcome};

/// The label value standing for "something outside the bounded set" (OpenTelemetry's
/// convention for `http.request.method`).
pub const OTHER: &str = "_OTHER";

/// One update of the metrics, with its label values.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation<'a> {
    /// `mcp_oauth_http_requests_total{route,method,status}` and
    /// `mcp_oauth_http_request_duration_seconds{route,method}`.
    HttpRequest {
        route: &'a str,
        method: &'static str,
        status: &'a str,
        seconds: f64,
    },
    /// `mcp_server_operation_duration_seconds{mcp_method_name,gen_ai_tool_name,error_type}`,
    /// named as in the OpenTelemetry MCP semantic conventions.
    McpOperation {
        method: &'a str,
        /// The tool of a `tools/call`, `""` for other methods, [`OTHER`] for a name the server
        /// does not serve.
        tool: &'a str,
        /// `""` on success, `tool_error` for a tool result with `isError`, else the JSON-RPC
        /// error code.
        error_type: &'a str,
        seconds: f64,
    },
    /// `mcp_oauth_tokens_issued_total{grant_type}`.
    TokenIssued { grant_type: &'static str },
    /// `mcp_oauth_security_events_total{type}`.
    SecurityEvent { kind: &'static str },
}

/// HTTP methods get their own label value; any other (extension methods are unbounded) is
/// [`OTHER`].
const HTTP_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn http_method(m: &str) -> &'static str {
    HTTP_METHODS
        .iter()
        .find(|known| **known == m)
        .copied()
        .unwrap_or(OTHER)
}

fn seconds(latency_us: u64) -> f64 {
    latency_us as f64 / 1_000_000.0
}

/// What `event` adds to the metrics, if anything. `is_tool` says whether the server serves a
/// tool of that name: only those become label values.
///
/// MCP notifications carry no latency (nothing answers them) and are not operations;
/// dropped-event counts have their own counter, kept by the pipeline.
pub fn observe<'a>(event: &'a Event, is_tool: impl Fn(&str) -> bool) -> Option<Observation<'a>> {
    let d = &event.dims;
    match Kind::parse(&d.kind)? {
        Kind::Http => Some(Observation::HttpRequest {
            route: &d.name,
            method: http_method(&d.detail),
            status: &d.code,
            seconds: seconds(event.latency_us?),
        }),
        Kind::Mcp => {
            let tool = match d.name.as_str() {
                "tools/call" if is_tool(&d.detail) => d.detail.as_str(),
                "tools/call" => OTHER,
                _ => "",
            };
            let error_type = match Outcome::parse(&d.outcome)? {
                Outcome::ToolError => "tool_error",
                Outcome::ProtocolError => d.code.as_str(),
                _ => "",
            };
            Some(Observation::McpOperation {
                method: &d.name,
                tool,
                error_type,
                seconds: seconds(event.latency_us?),
            })
        }
        Kind::OAuth => match d.name.as_str() {
            "code_exchanged" => Some(Observation::TokenIssued {
                grant_type: "authorization_code",
            }),
            "token_refreshed" => Some(Observation::TokenIssued {
                grant_type: "refresh_token",
            }),
            "client_credentials_granted" => Some(Observation::TokenIssued {
                grant_type: "client_credentials",
            }),
            "code_replay_detected" => Some(Observation::SecurityEvent {
                kind: "code_replay_detected",
            }),
            "refresh_reuse_detected" => Some(Observation::SecurityEvent {
                kind: "refresh_reuse_detected",
            }),
            "sign_in_failed" => Some(Observation::SecurityEvent {
                kind: "sign_in_failed",
            }),
            _ => None,
        },
        Kind::Pipeline => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::{McpResult, OAuthEvent};

    fn tools(name: &str) -> bool {
        name == "add_numbers"
    }

    #[test]
    fn an_http_request_is_labelled_by_route_template_method_and_status() {
        let e = Event::http(0, "/token", "POST", 400, 2_500);
        assert_eq!(
            observe(&e, tools),
            Some(Observation::HttpRequest {
                route: "/token",
                method: "POST",
                status: "400",
                seconds: 0.0025
            })
        );
    }

    #[test]
    fn extension_http_methods_share_one_label_value() {
        for method in ["FOO", "get", "PROPFIND"] {
            let e = Event::http(0, "(unmatched)", method, 404, 1);
            let Some(Observation::HttpRequest { method: m, .. }) = observe(&e, tools) else {
                panic!("an HTTP observation");
            };
            assert_eq!(m, OTHER, "{method}");
        }
    }

    #[test]
    fn mcp_operations_name_served_tools_only_and_the_error_type() {
        let cases = [
            (
                Event::mcp(0, "tools/call", Some("add_numbers"), McpResult::Success, 10),
                ("tools/call", "add_numbers", ""),
                "a served tool is named",
            ),
            (
                Event::mcp(
                    0,
                    "tools/call",
                    Some("add_numbers"),
                    McpResult::ToolError,
                    10,
                ),
                ("tools/call", "add_numbers", "tool_error"),
                "a tool error",
            ),
            (
                Event::mcp(
                    0,
                    "tools/call",
                    Some("x-random-name-1"),
                    McpResult::ProtocolError(-32602),
                    10,
                ),
                ("tools/call", OTHER, "-32602"),
                "a name the server does not serve is not a label value",
            ),
            (
                Event::mcp(0, "prompts/get", Some("solve_math"), McpResult::Success, 10),
                ("prompts/get", "", ""),
                "only tools/call names a tool",
            ),
        ];
        for (event, (method, tool, error_type), why) in cases {
            assert_eq!(
                observe(&event, tools),
                Some(Observation::McpOperation {
                    method,
                    tool,
                    error_type,
                    seconds: 0.00001
                }),
                "{why}"
            );
        }
    }

    #[test]
    fn notifications_are_not_operations() {
        let mut e = Event::mcp(0, "notifications/initialized", None, McpResult::Success, 0);
        e.latency_us = None;
        assert_eq!(observe(&e, tools), None);
    }

    #[test]
    fn oauth_events_count_tokens_per_grant_and_security_facts() {
        let cases = [
            (
                OAuthEvent::CodeExchanged {
                    pkce_method: "S256",
                },
                Some(Observation::TokenIssued {
                    grant_type: "authorization_code",
                }),
            ),
            (
                OAuthEvent::TokenRefreshed,
                Some(Observation::TokenIssued {
                    grant_type: "refresh_token",
                }),
            ),
            (
                OAuthEvent::ClientCredentialsGranted,
                Some(Observation::TokenIssued {
                    grant_type: "client_credentials",
                }),
            ),
            (
                OAuthEvent::CodeReplayDetected,
                Some(Observation::SecurityEvent {
                    kind: "code_replay_detected",
                }),
            ),
            (
                OAuthEvent::RefreshReuseDetected,
                Some(Observation::SecurityEvent {
                    kind: "refresh_reuse_detected",
                }),
            ),
            (
                OAuthEvent::SignInFailed {
                    reason: "invalid_credentials",
                },
                Some(Observation::SecurityEvent {
                    kind: "sign_in_failed",
                }),
            ),
            (OAuthEvent::SignInSucceeded, None),
            (OAuthEvent::ClientRegistered, None),
        ];
        for (event, expected) in cases {
            assert_eq!(
                observe(&Event::oauth(0, event), tools),
                expected,
                "{event:?}"
            );
        }
    }

    #[test]
    fn dropped_event_counts_are_not_observed_here() {
        assert_eq!(observe(&Event::dropped(0, 5), tools), None);
    }
}
