//! The Prometheus side of recording: every event the recorder is handed updates the metrics
//! `mcp_oauth_core::analytics::metrics::observe` assigns it, so `/metrics` and the analytics
//! tables count the same requests, MCP operations and OAuth events.

use std::collections::HashSet;
use std::sync::Arc;

use mcp_oauth_core::analytics::Event;
use mcp_oauth_core::analytics::metrics::{Observation, observe};

use crate::metrics::Metrics;

const HTTP_REQUESTS: &str = "mcp_oauth_http_requests_total";
const HTTP_DURATION: &str = "mcp_oauth_http_request_duration_seconds";
const MCP_DURATION: &str = "mcp_server_operation_duration_seconds";
const TOKENS_ISSUED: &str = "mcp_oauth_tokens_issued_total";
const SECURITY_EVENTS: &str = "mcp_oauth_security_events_total";

/// Turns events into metric updates for one application.
pub struct EventMetrics {
    metrics: Arc<Metrics>,
    /// The tools the MCP server serves: the only tool names used as label values.
    tools: HashSet<String>,
}

impl EventMetrics {
    pub fn new(metrics: Arc<Metrics>, tools: impl IntoIterator<Item = String>) -> Self {
        metrics.describe_counter(
            HTTP_REQUESTS,
            "HTTP requests answered, by route template, method and status.",
        );
        metrics.describe_histogram(
            HTTP_DURATION,
            "Time from a request to the last byte of its response (SSE: the stream's end), \
             seconds, by route template and method.",
        );
        metrics.describe_histogram(
            MCP_DURATION,
            "MCP request handling time, seconds, by JSON-RPC method, tool (tools/call) and \
             error type (\"\" on success, tool_error, or the JSON-RPC error code).",
        );
        metrics.describe_counter(
            TOKENS_ISSUED,
            "Access tokens issued at the token endpoint, by grant type.",
        );
        metrics.describe_counter(
            SECURITY_EVENTS,
            "Security events: code_replay_detected, refresh_reuse_detected, sign_in_failed.",
        );
        Self {
            metrics,
            tools: tools.into_iter().collect(),
        }
    }

    pub fn observe(&self, event: &Event) {
        let Some(observation) = observe(event, |name| self.tools.contains(name)) else {
            return;
        };
        let m = &self.metrics;
        match observation {
            Observation::HttpRequest {
                route,
                method,
                status,
                seconds,
            } => {
                m.counter_with(
                    HTTP_REQUESTS,
                    &[("route", route), ("method", method), ("status", status)],
                )
                .increment(1);
                m.histogram_with(HTTP_DURATION, &[("route", route), ("method", method)])
                    .record(seconds);
            }
            Observation::McpOperation {
                method,
                tool,
                error_type,
                seconds,
            } => m
                .histogram_with(
                    MCP_DURATION,
                    &[
                        ("mcp_method_name", method),
                        ("gen_ai_tool_name", tool),
                        ("error_type", error_type),
                    ],
                )
                .record(seconds),
            Observation::TokenIssued { grant_type } => m
                .counter_with(TOKENS_ISSUED, &[("grant_type", grant_type)])
                .increment(1),
            Observation::SecurityEvent { kind } => m
                .counter_with(SECURITY_EVENTS, &[("type", kind)])
                .increment(1),
        }
    }
}
