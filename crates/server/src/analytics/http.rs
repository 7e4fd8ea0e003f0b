//! One event per HTTP request, recorded when the last byte of the response body has been
//! handed to the connection (for an SSE stream: when it ends), or when the client goes away
//! before that. Never the query string, a header that can carry a credential, or a body.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};

use mcp_oauth_core::analytics::{Event, Transport};

use super::Recorder;
use super::geoip::RequestCountry;
use crate::http::extract::client_ip;
use crate::http::middleware::REQUEST_ID;
use crate::state::AppState;

/// Who a response was for, when a layer or handler learned it (the bearer layer, the token
/// endpoint): put in the response's extensions, read here.
#[derive(Debug, Clone, Default)]
pub struct Attribution {
    pub user_id: Option<String>,
    pub client_id: Option<String>,
}

/// Routes that are not the product's traffic: probes, metrics, assets, and the dashboard
/// itself (watching it must not change what it shows).
fn is_excluded(route: &str, base: &str) -> bool {
    let route = route.strip_prefix(base).unwrap_or(route);
    matches!(
        route,
        "/healthz" | "/readyz" | "/metrics" | "/static/app.css" | "/static/analytics.js"
    ) || route == "/analytics"
        || route.starts_with("/analytics/")
}

fn transport_of(route: &str) -> Option<Transport> {
    if route.contains("/.well-known/") {
        None
    } else if route.ends_with("/mcp") || route.contains("/mcp/") {
        Some(Transport::StreamableHttp)
    } else if route.ends_with("/sse") || route.ends_with("/message") {
        Some(Transport::LegacySse)
    } else {
        None
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub async fn record_requests(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let recorder = &state.analytics;
    if !recorder.enabled() {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(unmatched)", MatchedPath::as_str)
        .to_owned();
    if is_excluded(&route, state.settings.base_path()) {
        return next.run(req).await;
    }
    let start = Instant::now();
    let at = recorder.now_ms();
    let headers = req.headers();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ip = peer.map(|p| client_ip(p, headers, &state.settings.trusted_proxies));
    let country = match (&state.geoip, ip) {
        (Some(geoip), Some(ip)) => Some(geoip.country_of(ip)),
        _ => None,
    };
    let transport = transport_of(&route);
    let protocol_version = header_str(headers, "mcp-protocol-version").map(str::to_owned);
    let user_agent = header_str(headers, header::USER_AGENT.as_str()).map(str::to_owned);
    let request_id = header_str(headers, REQUEST_ID.as_str()).map(str::to_owned);
    let method = req.method().as_str().to_owned();
    if let Some(country) = &country {
        // For the MCP messages this request carries (`mcp::Recorded`).
        req.extensions_mut().insert(RequestCountry(country.clone()));
    }

    let response = next.run(req).await;

    let who = response
        .extensions()
        .get::<Attribution>()
        .cloned()
        .unwrap_or_default();
    let event = Event::http(at, &route, &method, response.status().as_u16(), 0)
        .user(who.user_id.as_deref())
        .client(who.client_id.as_deref())
        .mcp_context(None, protocol_version.as_deref(), transport)
        .country(country.as_deref())
        .request(
            ip.map(|ip| ip.to_string()),
            user_agent.as_deref(),
            request_id.as_deref(),
        );
    let (parts, body) = response.into_parts();
    let body = RecordedBody {
        inner: body,
        pending: Some(Pending {
            event,
            start,
            recorder: recorder.clone(),
        }),
    };
    Response::from_parts(parts, Body::new(body))
}

/// The event of a response whose body is still being sent.
struct Pending {
    event: Event,
    start: Instant,
    recorder: Arc<Recorder>,
}

impl Pending {
    fn finish(self) {
        let mut event = self.event;
        event.latency_us = Some(self.start.elapsed().as_micros() as u64);
        self.recorder.record(event);
    }
}

/// A response body that records its request's event once, at its end or when dropped.
struct RecordedBody {
    inner: Body,
    pending: Option<Pending>,
}

impl RecordedBody {
    fn finish(&mut self) {
        if let Some(p) = self.pending.take() {
            p.finish();
        }
    }
}

impl HttpBody for RecordedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finish(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RecordedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_metrics_assets_and_the_dashboard_are_not_counted() {
        for route in [
            "/healthz",
            "/metrics",
            "/static/app.css",
            "/analytics",
            "/analytics/api/summary",
        ] {
            assert!(is_excluded(route, ""), "{route}");
        }
        assert!(is_excluded("/base/analytics", "/base"));
        for route in [
            "/token",
            "/mcp",
            "/authorize",
            "/.well-known/oauth-authorization-server",
        ] {
            assert!(!is_excluded(route, ""), "{route}");
        }
    }

    #[test]
    fn mcp_routes_name_their_transport() {
        assert_eq!(transport_of("/mcp"), Some(Transport::StreamableHttp));
        assert_eq!(transport_of("/base/mcp"), Some(Transport::StreamableHttp));
        assert_eq!(transport_of("/sse"), Some(Transport::LegacySse));
        assert_eq!(transport_of("/message"), Some(Transport::LegacySse));
        assert_eq!(transport_of("/token"), None);
        assert_eq!(
            transport_of("/.well-known/oauth-protected-resource/mcp"),
            None
        );
    }
}
