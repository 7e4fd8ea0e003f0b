//! First run: while no user exists, `serve` prints a one-time URL at which the first
//! administrator is created in the browser. `mcp-oauth user add` is the scripted path.

use std::sync::Mutex;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use mcp_oauth_core::domain::SecretHash;
use mcp_oauth_store::UserRow;

use super::{csrf, normalize_email, password, session};
use crate::http::error::PageError;
use crate::http::extract::PageForm;
use crate::security::Requester;
use crate::state::AppState;

/// The hash of the current setup token, if setup is open.
#[derive(Default)]
pub struct SetupToken(Mutex<Option<SecretHash>>);

impl SetupToken {
    /// Open setup; returns the token to print.
    pub fn open(&self) -> String {
        let secret = crate::random::secret();
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(secret.hash());
        secret.expose().to_owned()
    }

    fn matches(&self, presented: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|h| h.verify(presented))
    }

    fn close(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage<'a> {
    base_path: &'a str,
    csrf: &'a str,
    token: &'a str,
    email: &'a str,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct SetupQuery {
    token: Option<String>,
}

#[derive(Deserialize)]
pub struct SetupForm {
    token: Option<String>,
    csrf: Option<String>,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
}

fn closed() -> PageError {
    PageError::Status {
        status: StatusCode::NOT_FOUND,
        title: "Setup is complete",
        detail: "An account already exists. Sign in, or ask an administrator to add you.".into(),
        link: None,
    }
}

fn render(
    state: &AppState,
    jar: CookieJar,
    status: StatusCode,
    token: &str,
    email: &str,
    error: Option<String>,
) -> Result<Response, PageError> {
    let (csrf_token, jar) = csrf::token(jar);
    let html = crate::web::render(&SetupPage {
        base_path: state.settings.base_path(),
        csrf: &csrf_token,
        token,
        email,
        error,
    })?;
    Ok((status, jar, Html(html)).into_response())
}

pub async fn setup_get(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<SetupQuery>,
) -> Result<Response, PageError> {
    if state.db.count_users().await? > 0 {
        return Err(closed());
    }
    let token = q.token.unwrap_or_default();
    if !state.setup.matches(&token) {
        return Err(PageError::forbidden(
            "This setup link is not valid. Use the link `mcp-oauth serve` printed.",
        ));
    }
    render(&state, jar, StatusCode::OK, &token, "", None)
}

pub async fn setup_post(
    State(state): State<AppState>,
    who: Requester,
    headers: HeaderMap,
    jar: CookieJar,
    PageForm(form): PageForm<SetupForm>,
) -> Result<Response, PageError> {
    let token = form.token.unwrap_or_default();
    if !state.setup.matches(&token) {
        return Err(PageError::forbidden(
            "This setup link is not valid. Use the link `mcp-oauth serve` printed.",
        ));
    }
    if !csrf::verify_post(&state, &who, "setup", &jar, &headers, form.csrf.as_deref()) {
        return render(
            &state,
            jar,
            StatusCode::FORBIDDEN,
            &token,
            &form.email,
            Some("The form expired; please submit it again.".into()),
        );
    }
    let Some(email) = normalize_email(&form.email) else {
        return render(
            &state,
            jar,
            StatusCode::BAD_REQUEST,
            &token,
            &form.email,
            Some("Enter a valid email address.".into()),
        );
    };
    if let Err(why) = password::check_new_password(&form.password) {
        return render(
            &state,
            jar,
            StatusCode::BAD_REQUEST,
            &token,
            &form.email,
            Some(why),
        );
    }
    if form.password != form.password_confirm {
        return render(
            &state,
            jar,
            StatusCode::BAD_REQUEST,
            &token,
            &form.email,
            Some("The passwords do not match.".into()),
        );
    }
    let user = UserRow {
        id: crate::random::id(),
        email,
        password_hash: Some(password::hash(form.password).await?),
        is_admin: 1,
        created_at: state.clock.now(),
        disabled_at: None,
    };
    if !state.db.insert_first_user(&user).await? {
        state.setup.close();
        return Err(closed());
    }
    state.setup.close();
    tracing::info!(user_id = ?user.id, "first administrator created through the setup page");
    let jar = session::start(&state, &user.id, jar).await?;
    Ok((
        jar,
        Redirect::to(&format!("{}/account", state.settings.base_path())),
    )
        .into_response())
}
