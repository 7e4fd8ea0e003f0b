//! The sign-in page, with throttling per account and per client IP.

use std::time::Duration;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use mcp_oauth_core::security::login_throttle::{Admission, ThrottleState, admit, record_failure};
use mcp_oauth_store::ThrottleRow;

use super::{csrf, normalize_email, password, session};
use crate::http::error::PageError;
use crate::http::extract::{ClientIp, PageForm};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    base_path: &'a str,
    csrf: &'a str,
    return_to: &'a str,
    email: &'a str,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    return_to: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    csrf: Option<String>,
    return_to: Option<String>,
}

/// Where to go after signing in: a path on this server only (never another origin, never a
/// scheme-relative `//host` URL), else the account page.
pub fn safe_return_to(raw: Option<&str>, base_path: &str) -> String {
    let default = format!("{base_path}/account");
    let Some(r) = raw else { return default };
    let under_base = r
        .strip_prefix(base_path)
        .is_some_and(|rest| rest.starts_with('/'));
    let ok = under_base
        && !r.starts_with("//")
        && !r.contains('\\')
        && !r.chars().any(|c| c.is_control() || c.is_whitespace())
        && r.len() <= 8192;
    if ok { r.to_owned() } else { default }
}

fn page(
    state: &AppState,
    jar: CookieJar,
    status: StatusCode,
    return_to: &str,
    email: &str,
    error: Option<String>,
) -> Result<Response, PageError> {
    let (token, jar) = csrf::token(jar);
    let html = crate::web::render(&LoginPage {
        base_path: state.settings.base_path(),
        csrf: &token,
        return_to,
        email,
        error,
    })?;
    Ok((status, jar, Html(html)).into_response())
}

pub async fn login_get(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<LoginQuery>,
) -> Result<Response, PageError> {
    let return_to = safe_return_to(q.return_to.as_deref(), state.settings.base_path());
    page(&state, jar, StatusCode::OK, &return_to, "", None)
}

fn to_state(r: Option<ThrottleRow>) -> Option<ThrottleState> {
    r.map(|r| ThrottleState {
        failures: r.failures,
        window_start: r.window_start,
        locked_until: r.locked_until,
    })
}

fn to_row(s: ThrottleState) -> ThrottleRow {
    ThrottleRow {
        failures: s.failures,
        window_start: s.window_start,
        locked_until: s.locked_until,
    }
}

pub async fn login_post(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    jar: CookieJar,
    PageForm(form): PageForm<LoginForm>,
) -> Result<Response, PageError> {
    let base = state.settings.base_path();
    let return_to = safe_return_to(form.return_to.as_deref(), base);
    if !csrf::verify(&jar, &headers, form.csrf.as_deref(), &state.origin) {
        return page(
            &state,
            jar,
            StatusCode::FORBIDDEN,
            &return_to,
            &form.email,
            Some("Your session expired. Please sign in again.".into()),
        );
    }
    let email = normalize_email(&form.email).unwrap_or_default();
    let now = state.clock.now();
    let account_key = format!("account:{email}");
    let ip_key = format!("ip:{ip}");
    let account = to_state(state.db.get_throttle(&account_key).await?);
    let by_ip = to_state(state.db.get_throttle(&ip_key).await?);

    let account_policy = state.settings.login.account_policy();
    let ip_policy = state.settings.login.ip_policy();
    let mut delay_ms = 0;
    for admission in [
        admit(account.as_ref(), now, &account_policy),
        admit(by_ip.as_ref(), now, &ip_policy),
    ] {
        match admission {
            Admission::Locked { until } => {
                let minutes = ((until - now) + 59) / 60;
                tracing::warn!(%ip, "sign-in refused: throttle locked");
                return page(
                    &state,
                    jar,
                    StatusCode::TOO_MANY_REQUESTS,
                    &return_to,
                    &form.email,
                    Some(format!(
                        "Too many failed sign-in attempts. Try again in {minutes} minute(s)."
                    )),
                );
            }
            Admission::Allowed { delay_ms: d } => delay_ms = delay_ms.max(d),
        }
    }
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }

    let user = match email.is_empty() {
        true => None,
        false => state.db.find_user_by_email(&email).await?,
    };
    let stored = user
        .as_ref()
        .filter(|u| !u.is_disabled())
        .and_then(|u| u.password_hash.clone());
    let ok = password::verify(form.password, stored).await;
    let Some(user) = user.filter(|_| ok) else {
        state
            .db
            .put_throttle(
                &account_key,
                to_row(record_failure(account.as_ref(), now, &account_policy)),
            )
            .await?;
        state
            .db
            .put_throttle(
                &ip_key,
                to_row(record_failure(by_ip.as_ref(), now, &ip_policy)),
            )
            .await?;
        tracing::info!(%ip, "sign-in failed");
        return page(
            &state,
            jar,
            StatusCode::UNAUTHORIZED,
            &return_to,
            &form.email,
            Some("Invalid email or password.".into()),
        );
    };
    state.db.clear_throttle(&account_key).await?;
    let jar = session::start(&state, &user.id, jar).await?;
    tracing::info!(user_id = %user.id, "signed in");
    Ok((jar, Redirect::to(&return_to)).into_response())
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: Option<String>,
}

pub async fn logout_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    PageForm(form): PageForm<LogoutForm>,
) -> Result<Response, PageError> {
    if !csrf::verify(&jar, &headers, form.csrf.as_deref(), &state.origin) {
        return Err(PageError::forbidden(
            "The form has expired. Go back, reload the page and try again.",
        ));
    }
    let jar = session::end(&state, jar).await?;
    Ok((
        jar,
        Redirect::to(&format!("{}/login", state.settings.base_path())),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::safe_return_to;

    #[test]
    fn return_to_stays_on_this_server() {
        assert_eq!(
            safe_return_to(Some("/authorize?client_id=x"), ""),
            "/authorize?client_id=x"
        );
        assert_eq!(
            safe_return_to(Some("/auth/authorize?a=b"), "/auth"),
            "/auth/authorize?a=b"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/x",
            "/\\evil.example",
            "/a b",
            "evil",
        ] {
            assert_eq!(safe_return_to(Some(bad), ""), "/account", "{bad}");
        }
        assert_eq!(
            safe_return_to(Some("/authorize"), "/auth"),
            "/auth/account",
            "outside the base path"
        );
        assert_eq!(safe_return_to(None, ""), "/account");
    }
}
