//! Server-rendered pages (askama templates, escaped by default) and static assets.

use askama::Template;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// Render a template; a rendering failure is an internal error.
pub fn render<T: Template>(t: &T) -> anyhow::Result<String> {
    Ok(t.render()?)
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    /// The public URL's path, prefixed to every link (`""` at the root).
    pub base_path: &'a str,
    pub title: &'a str,
    pub detail: &'a str,
    /// A link the user may follow (for example back to the application), with its label.
    pub link: Option<&'a crate::http::error::PageLink>,
}

pub async fn stylesheet() -> Response {
    let mut r = include_str!("../static/app.css").into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}
