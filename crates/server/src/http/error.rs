//! Errors as responses. An OAuth error is shown to the client in its RFC's shape; anything
//! internal becomes an opaque 500 whose cause is logged once, by the `log_errors` layer,
//! except an unreachable database, which is a 503 with `Retry-After` (worth retrying).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use mcp_oauth_core::oauth::{ErrorCode, OAuthError};

/// The cause of a 500, carried in response extensions to the logging layer.
#[derive(Debug, Clone)]
pub struct InternalCause(pub String);

/// Marks a response that failed because the database could not be reached, for
/// `db_health`'s layer to trip its flag.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseUnavailable;

/// Whether an internal error is the database being unreachable.
fn is_database_unavailable(e: &anyhow::Error) -> bool {
    crate::db_health::store_error_in(e).is_some_and(mcp_oauth_store::StoreError::is_unavailable)
}

/// `Retry-After` (RFC 9110 §10.2.3) on a 503: the health monitor looks again every 250 ms,
/// and answering a retry costs nothing while the database is down.
fn retry_soon(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response.extensions_mut().insert(DatabaseUnavailable);
}

/// A JSON endpoint's answer while the database is unreachable: `temporarily_unavailable`
/// (RFC 6749 §4.1.2.1, used for every endpoint here) with status 503.
pub fn database_unavailable_api() -> Response {
    let mut response = ApiError::OAuth(OAuthError::new(
        ErrorCode::TemporarilyUnavailable,
        "the service is temporarily unavailable; retry shortly",
    ))
    .into_response();
    retry_soon(&mut response);
    response
}

/// A browser page's answer while the database is unreachable.
pub fn database_unavailable_page() -> Response {
    let mut response = PageError::Status {
        status: StatusCode::SERVICE_UNAVAILABLE,
        title: "Temporarily unavailable",
        detail: "The service cannot complete this request right now. Try again in a moment.".into(),
        link: None,
    }
    .into_response();
    retry_soon(&mut response);
    response
}

/// `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1, §5.2).
pub fn no_store(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// Error from a JSON endpoint (token, registration, revocation, introspection).
#[derive(Debug)]
pub enum ApiError {
    OAuth(OAuthError),
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }
}

impl From<OAuthError> for ApiError {
    fn from(e: OAuthError) -> Self {
        Self::OAuth(e)
    }
}

impl From<mcp_oauth_store::StoreError> for ApiError {
    fn from(e: mcp_oauth_store::StoreError) -> Self {
        Self::Internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (error, internal) = match self {
            Self::OAuth(e) => (e, None),
            Self::Internal(cause) if is_database_unavailable(&cause) => {
                let mut response = database_unavailable_api();
                response
                    .extensions_mut()
                    .insert(InternalCause(format!("{cause:#}")));
                return response;
            }
            Self::Internal(cause) => (
                OAuthError::new(ErrorCode::ServerError, "internal error"),
                Some(InternalCause(format!("{cause:#}"))),
            ),
        };
        let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response = (
            status,
            Json(json!({"error": error.code.as_str(), "error_description": error.description})),
        )
            .into_response();
        no_store(&mut response);
        if error.code == ErrorCode::InvalidClient {
            // RFC 6749 §5.2: a 401 names the scheme the client should authenticate with.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"mcp-oauth\""),
            );
        }
        if let Some(cause) = internal {
            response.extensions_mut().insert(cause);
        }
        response
    }
}

/// What an error page says; turned into HTML by `middleware::error_pages`.
#[derive(Debug, Clone)]
pub struct ErrorPageContent {
    pub title: &'static str,
    pub detail: String,
    pub link: Option<PageLink>,
}

/// A link the user may follow from an error page (never followed automatically).
#[derive(Debug, Clone)]
pub struct PageLink {
    pub href: String,
    pub label: String,
}

/// Error from a browser page: an HTML error page, never a redirect.
#[derive(Debug)]
pub enum PageError {
    Status {
        status: StatusCode,
        title: &'static str,
        detail: String,
        link: Option<PageLink>,
    },
    Internal(anyhow::Error),
}

impl PageError {
    pub fn bad_request(title: &'static str, detail: impl Into<String>) -> Self {
        Self::Status {
            status: StatusCode::BAD_REQUEST,
            title,
            detail: detail.into(),
            link: None,
        }
    }
    pub fn not_found() -> Self {
        Self::Status {
            status: StatusCode::NOT_FOUND,
            title: "Not found",
            detail: "There is nothing here.".into(),
            link: None,
        }
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::Status {
            status: StatusCode::FORBIDDEN,
            title: "Forbidden",
            detail: detail.into(),
            link: None,
        }
    }

    /// The same error page, with a link the user may choose to follow.
    pub fn with_link(self, href: impl Into<String>, label: impl Into<String>) -> Self {
        match self {
            Self::Status {
                status,
                title,
                detail,
                ..
            } => Self::Status {
                status,
                title,
                detail,
                link: Some(PageLink {
                    href: href.into(),
                    label: label.into(),
                }),
            },
            internal => internal,
        }
    }
}

impl From<mcp_oauth_store::StoreError> for PageError {
    fn from(e: mcp_oauth_store::StoreError) -> Self {
        Self::Internal(e.into())
    }
}

impl From<anyhow::Error> for PageError {
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, detail, link, cause) = match self {
            Self::Status {
                status,
                title,
                detail,
                link,
            } => (status, title, detail, link, None),
            Self::Internal(e) if is_database_unavailable(&e) => {
                let mut response = database_unavailable_page();
                response
                    .extensions_mut()
                    .insert(InternalCause(format!("{e:#}")));
                return response;
            }
            Self::Internal(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The server could not complete this request. Try again later.".to_owned(),
                None,
                Some(InternalCause(format!("{e:#}"))),
            ),
        };
        // Rendered by the `error_pages` layer, which knows the base path for links.
        let mut response = status.into_response();
        response.extensions_mut().insert(ErrorPageContent {
            title,
            detail,
            link,
        });
        no_store(&mut response);
        if let Some(c) = cause {
            response.extensions_mut().insert(c);
        }
        response
    }
}
