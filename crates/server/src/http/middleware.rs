//! Cross-cutting layers: request ids, access logs without secrets, security headers, and
//! logging of internal errors (once, here, rather than where they happen).

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::{MakeRequestId, RequestId};

use axum::extract::State;
use axum::response::{Html, IntoResponse};

use super::error::{ErrorPageContent, InternalCause};
use crate::state::AppState;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Random request ids (16 hex characters).
#[derive(Clone, Copy, Default)]
pub struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let bytes: [u8; 8] = crate::random::bytes();
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// Span for each request: method, path and request id. Never the query string (it carries
/// codes and state) nor any header that could hold a credential.
pub fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %req.method(), path = ?req.uri().path(), request_id = ?id)
}

/// Log the cause of a 500 once, inside the request's span.
pub async fn log_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    if let Some(cause) = response.extensions().get::<InternalCause>() {
        tracing::error!(cause = ?cause.0, "request failed");
    }
    response
}

/// Headers every response gets. Pages may not be framed (clickjacking on the consent page);
/// nothing is sniffed; no referrer (with its query string) goes to other sites.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: with no referrer at all, browsers send `Origin: null` on
    // our own form posts, and the CSRF check needs the real origin.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    // Pages carry a CSRF token, the signed-in user's email and their applications: no copy of
    // them may be kept by the browser or anything in between (back button, shared proxies).
    let is_html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/html"));
    if is_html && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'",
            ),
        );
    }
    response
}

/// HSTS when we are served over https.
pub async fn hsts(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    response.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    response
}

/// Render `PageError`s as HTML pages, with links under the configured base path.
pub async fn error_pages(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let Some(content) = response.extensions().get::<ErrorPageContent>().cloned() else {
        return response;
    };
    let page = crate::web::ErrorPage {
        base_path: state.settings.base_path(),
        title: content.title,
        detail: &content.detail,
        link: content.link.as_ref(),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    match crate::web::render(&page) {
        Ok(html) => {
            let mut rendered = Html(html).into_response();
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            *rendered.headers_mut() = parts.headers;
            *rendered.status_mut() = parts.status;
            rendered.extensions_mut().extend(parts.extensions);
            rendered
        }
        Err(_) => (parts.status, content.title).into_response(),
    }
}

/// Does the request carry a body? A response sent without reading it must say
/// `Connection: close` (see `announce_close`).
pub fn has_body(request: &axum::http::HeaderMap) -> bool {
    request.contains_key(header::TRANSFER_ENCODING)
        || request
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// For a response sent without reading the request's body: hyper then closes the connection
/// rather than read a body nobody wants, so say so with `Connection: close`. A client that
/// saw no such header reuses the connection for its next request (the metadata discovery
/// after a 401, say) and gets "server disconnected" when the close wins the race.
pub fn announce_close(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

pub fn close_if_body_unread(request: &axum::http::HeaderMap, response: &mut Response) {
    if has_body(request) {
        announce_close(response);
    }
}

/// Every request body must arrive in full within `timeout` of its request head. A client that
/// sends a body slowly (or stops) would otherwise hold its connection and the handler waiting
/// on it for as long as it likes; the connection timeouts do not apply while a request is in
/// progress. A body that misses the deadline fails to read, and whatever the handler made of
/// that is replaced by `408 Request Timeout` (RFC 9110 §15.5.9) with `Connection: close`.
pub async fn request_body_deadline(
    State(timeout): State<std::time::Duration>,
    request: Request,
    next: Next,
) -> Response {
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower_http::timeout::{DeadlineBody, TimeoutError};

    let missed = Arc::new(AtomicBool::new(false));
    let request = {
        let missed = missed.clone();
        request.map(|body| {
            axum::body::Body::new(DeadlineBody::new(timeout, body).map_err(move |e| {
                if e.is::<TimeoutError>() {
                    missed.store(true, Ordering::Relaxed);
                }
                e
            }))
        })
    };
    let response = next.run(request).await;
    if !missed.load(Ordering::Relaxed) {
        return response;
    }
    tracing::info!("request body not received within http.request_body_timeout_seconds");
    let mut response = (
        axum::http::StatusCode::REQUEST_TIMEOUT,
        "the request body did not arrive in time",
    )
        .into_response();
    announce_close(&mut response);
    response
}
