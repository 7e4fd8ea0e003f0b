//! The account page: who is signed in, and the applications that hold access ("connected
//! apps"), each with a button that revokes it.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use mcp_oauth_core::oauth::client::ClientMetadata;

use super::{csrf, session};
use crate::http::error::PageError;
use crate::http::extract::PageForm;
use crate::security::Requester;
use crate::state::AppState;

struct AppView {
    name: String,
    client_id: String,
    last_authorized: String,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage<'a> {
    base_path: &'a str,
    csrf: &'a str,
    email: &'a str,
    apps: Vec<AppView>,
}

/// `YYYY-MM-DD HH:MM UTC`.
fn format_utc(t: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&format).ok())
        .unwrap_or_else(|| t.to_string())
}

fn login_redirect(state: &AppState) -> Response {
    let base = state.settings.base_path();
    Redirect::to(&format!("{base}/login?return_to={base}/account")).into_response()
}

pub async fn account_get(
    State(state): State<AppState>,
    jar: CookieJar,
) -> Result<Response, PageError> {
    let Some(user) = session::current_user(&state, &jar).await? else {
        return Ok(login_redirect(&state));
    };
    let apps = state
        .db
        .connected_apps(&user.id, state.clock.now())
        .await?
        .into_iter()
        .map(|a| {
            let name = serde_json::from_str::<ClientMetadata>(&a.metadata)
                .ok()
                .and_then(|m| m.client_name)
                .unwrap_or_else(|| a.client_id.clone());
            AppView {
                name,
                client_id: a.client_id,
                last_authorized: format_utc(a.last_authorized_at),
            }
        })
        .collect();
    let (token, jar) = csrf::token(jar);
    let html = crate::web::render(&AccountPage {
        base_path: state.settings.base_path(),
        csrf: &token,
        email: &user.email,
        apps,
    })?;
    Ok((jar, Html(html)).into_response())
}

#[derive(Deserialize)]
pub struct RevokeForm {
    csrf: Option<String>,
    client_id: String,
}

pub async fn account_revoke_post(
    State(state): State<AppState>,
    who: Requester,
    headers: HeaderMap,
    jar: CookieJar,
    PageForm(form): PageForm<RevokeForm>,
) -> Result<Response, PageError> {
    let Some(user) = session::current_user(&state, &jar).await? else {
        return Ok(login_redirect(&state));
    };
    if !csrf::verify_post(
        &state,
        &who,
        "revoke_app",
        &jar,
        &headers,
        form.csrf.as_deref(),
    ) {
        return Err(PageError::forbidden(
            "The form has expired. Go back, reload the page and try again.",
        ));
    }
    let revoked = state
        .db
        .revoke_client_access(
            &user.id,
            &form.client_id,
            state.clock.now(),
            state.revocation_ttl(),
        )
        .await?;
    tracing::info!(user_id = ?user.id, client_id = ?form.client_id, grants = revoked, "user revoked a client's access");
    // Apply at once here; other instances pick the published revocations up on their next poll.
    state.revocations.poll(&state.db, state.clock.now()).await?;
    Ok(Redirect::to(&format!("{}/account", state.settings.base_path())).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_unix_time_as_utc() {
        assert_eq!(super::format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(super::format_utc(1_700_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(super::format_utc(951_782_400), "2000-02-29 00:00 UTC");
    }
}
