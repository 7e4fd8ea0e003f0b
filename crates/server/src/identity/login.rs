//! The sign-in page, with throttling per client IP, per account and per trusted browser
//! (`mcp_oauth_core::security::login_throttle`).

use mcp_oauth_core::analytics::OAuthEvent;
use mcp_oauth_core::security::rate_limit::{EndpointClass, RateKey};
use std::time::Duration;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use mcp_oauth_core::security::login_throttle::{
    Admission, ThrottleKey, ThrottlePolicy, ThrottleState, forgive_attempt, record_failure,
    register_attempts,
};
use mcp_oauth_store::{ThrottleRow, ThrottleWrite};

use super::{csrf, device, normalize_email, password, session};
use crate::http::error::PageError;
use crate::http::extract::PageForm;
use crate::security::Requester;
use crate::security::rate_limit::RateDecision;
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

/// The one answer to a failed sign-in: wrong password, unknown account, disabled or locked.
const INVALID_CREDENTIALS: &str = "Invalid email or password.";

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
        last_failure_ms: r.last_failure_ms,
    })
}

fn to_row(s: ThrottleState) -> ThrottleRow {
    ThrottleRow {
        failures: s.failures,
        window_start: s.window_start,
        locked_until: s.locked_until,
        last_failure_ms: s.last_failure_ms,
    }
}

/// Keys this attempt locked, with their failure counts and the end of the lock.
type NewlyLocked = Vec<(ThrottleKey, i64, i64)>;

/// Count this attempt against `keys` before the password is checked, atomically (see
/// `login_throttle`): the admission is decided from the counts that include it. Also says
/// which keys this attempt locked (a key that was locked already refuses the attempt).
async fn register(
    state: &AppState,
    keys: &[(ThrottleKey, ThrottlePolicy)],
    now: i64,
) -> Result<(Admission, NewlyLocked), PageError> {
    let names: Vec<String> = keys.iter().map(|(k, _)| k.as_key()).collect();
    let admission = state
        .db
        .update_throttles(&names, now, |rows| {
            let input: Vec<_> = rows
                .iter()
                .zip(keys)
                .map(|(row, (_, policy))| (to_state(*row), *policy))
                .collect();
            let (admission, next) = register_attempts(&input, now);
            let locked: NewlyLocked = keys
                .iter()
                .zip(&next)
                .filter_map(|((key, _), s)| Some((key.clone(), s.failures, s.locked_until?)))
                .collect();
            let writes = match next.is_empty() {
                true => vec![ThrottleWrite::Keep; keys.len()],
                false => next
                    .into_iter()
                    .map(|s| ThrottleWrite::Put(to_row(s)))
                    .collect(),
            };
            (writes, (admission, locked))
        })
        .await?;
    Ok(admission)
}

/// After a successful sign-in: clear the account's counts and give back this attempt's
/// reservation on the shared IP count.
async fn forgive(
    state: &AppState,
    keys: &[(ThrottleKey, ThrottlePolicy)],
    now: i64,
) -> Result<(), PageError> {
    let names: Vec<String> = keys.iter().map(|(k, _)| k.as_key()).collect();
    state
        .db
        .update_throttles(&names, now, |rows| {
            let writes = rows
                .iter()
                .zip(keys)
                .map(|(row, (key, policy))| match key.clears_on_success() {
                    true => ThrottleWrite::Delete,
                    false => forgive_attempt(to_state(*row).as_ref(), policy)
                        .map_or(ThrottleWrite::Keep, |s| ThrottleWrite::Put(to_row(s))),
                })
                .collect();
            (writes, ())
        })
        .await?;
    Ok(())
}

/// After a wrong password: note the failure on the keys the quick-login check watches (see
/// `login_throttle::record_failure`), locking them if it came right after the last one.
/// Returns the keys it locked.
async fn failed(
    state: &AppState,
    keys: &[(ThrottleKey, ThrottlePolicy)],
    now: i64,
) -> Result<NewlyLocked, PageError> {
    let watched: Vec<&ThrottleKey> = keys
        .iter()
        .map(|(k, _)| k)
        .filter(|k| k.quick_checked())
        .collect();
    let quick = state.settings.login.quick_check();
    if watched.is_empty() || quick.window_ms == 0 {
        return Ok(vec![]);
    }
    let names: Vec<String> = watched.iter().map(|k| k.as_key()).collect();
    let now_ms = state.clock.now_millis();
    let locked = state
        .db
        .update_throttles(&names, now, |rows| {
            let mut locked = NewlyLocked::new();
            let writes = rows
                .iter()
                .zip(&watched)
                .map(|(row, key)| {
                    let before = to_state(*row);
                    match record_failure(before.as_ref(), now_ms, quick) {
                        Some(after) => {
                            if let Some(until) = after.locked_until
                                && before.and_then(|b| b.locked_until) != Some(until)
                            {
                                locked.push(((*key).clone(), after.failures, until));
                            }
                            ThrottleWrite::Put(to_row(after))
                        }
                        None => ThrottleWrite::Keep,
                    }
                })
                .collect();
            (writes, locked)
        })
        .await?;
    Ok(locked)
}

/// An attempt admitted: the keys it was counted against, the delay before its password is
/// checked, whether it came from a trusted browser, and the keys it locked.
type Admitted = (Vec<(ThrottleKey, ThrottlePolicy)>, u64, bool, NewlyLocked);

/// Count an attempt on `email` and decide whether it may go ahead (`Err`: locked until then).
/// A browser that signed in to this account before (`device`, its cookie's hash) is counted
/// on its own; if its own count is locked, it is counted like any other browser.
async fn admit_attempt(
    state: &AppState,
    email: &str,
    ip: std::net::IpAddr,
    device: Option<String>,
    now: i64,
) -> Result<Result<Admitted, i64>, PageError> {
    let throttle = state.settings.login.throttle();
    if let Some(hash) = device.as_deref() {
        let keys = throttle.keys(email, ip, Some(hash));
        if let (Admission::Allowed { delay_ms }, locked) = register(state, &keys, now).await? {
            return Ok(Ok((keys, delay_ms, true, locked)));
        }
    }
    let keys = throttle.keys(email, ip, None);
    Ok(match register(state, &keys, now).await? {
        (Admission::Allowed { delay_ms }, locked) => Ok((keys, delay_ms, false, locked)),
        (Admission::Locked { until }, _) => Err(until),
    })
}

pub async fn login_post(
    State(state): State<AppState>,
    who: Requester,
    headers: HeaderMap,
    jar: CookieJar,
    PageForm(form): PageForm<LoginForm>,
) -> Result<Response, PageError> {
    let base = state.settings.base_path();
    let return_to = safe_return_to(form.return_to.as_deref(), base);
    let ip = who.ip;
    let key = RateKey::address(EndpointClass::SignIn, ip);
    if let Some(refused @ RateDecision::Refused { retry_after, .. }) =
        crate::security::rate_limit(&state, &who, &key).await
    {
        let mut r = page(
            &state,
            jar,
            StatusCode::TOO_MANY_REQUESTS,
            &return_to,
            &form.email,
            Some(format!(
                "Too many sign-in attempts from your address. Try again in {retry_after} second(s)."
            )),
        )?;
        refused.apply(r.headers_mut());
        return Ok(r);
    }
    if !csrf::verify_post(
        &state,
        &who,
        "sign_in",
        &jar,
        &headers,
        form.csrf.as_deref(),
    ) {
        state
            .analytics
            .oauth(OAuthEvent::SignInFailed { reason: "csrf" }, None, None);
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
    let user = match email.is_empty() {
        true => None,
        false => state.db.find_user_by_email(&email).await?,
    };

    let device = device::trusted_for(&state, &jar, user.as_ref().map(|u| u.id.as_str())).await?;
    let user_id = user.as_ref().map(|u| u.id.clone());
    let admitted = admit_attempt(&state, &email, ip, device, now).await?;
    let (keys, delay_ms, trusted, locked) = match admitted {
        Ok(admitted) => admitted,
        Err(_locked_until) => {
            // Keycloak's rule: a locked account answers exactly as a wrong password does,
            // and as late, so that an attacker cannot tell a lock from a miss (nor use locks
            // to learn which accounts exist). The owner's trusted browser is counted apart
            // (device cookie) and is rarely locked with them.
            password::wait_as_long_as_a_check().await;
            tracing::warn!(%ip, "sign-in refused: throttle locked");
            state.analytics.oauth(
                OAuthEvent::SignInFailed {
                    reason: "throttled",
                },
                user_id.as_deref(),
                None,
            );
            state
                .security
                .sign_in_failed(&who, &email, user_id.as_deref(), "locked");
            return page(
                &state,
                jar,
                StatusCode::UNAUTHORIZED,
                &return_to,
                &form.email,
                Some(INVALID_CREDENTIALS.into()),
            );
        }
    };
    // The delay comes before the password check, so a slow answer says nothing about it.
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }

    let stored = user
        .as_ref()
        .filter(|u| !u.is_disabled())
        .and_then(|u| u.password_hash.clone());
    let ok = password::verify(form.password, stored).await;
    let Some(user) = user.filter(|_| ok) else {
        // The attempt was counted when it was admitted.
        tracing::info!(%ip, trusted_device = trusted, "sign-in failed");
        state.analytics.oauth(
            OAuthEvent::SignInFailed {
                reason: "invalid_credentials",
            },
            user_id.as_deref(),
            None,
        );
        let reason = match user_id {
            Some(_) => "wrong_password",
            None => "unknown_account",
        };
        state
            .security
            .sign_in_failed(&who, &email, user_id.as_deref(), reason);
        let mut locked = locked;
        locked.extend(failed(&state, &keys, now).await?);
        report_locks(&state, &who, &email, user_id.as_deref(), &locked);
        return page(
            &state,
            jar,
            StatusCode::UNAUTHORIZED,
            &return_to,
            &form.email,
            Some(INVALID_CREDENTIALS.into()),
        );
    };
    forgive(&state, &keys, now).await?;
    let jar = session::start(&state, &user.id, jar).await?;
    let jar = device::remember(&state, jar, &user.id, trusted).await?;
    tracing::info!(user_id = ?user.id, "signed in");
    state.security.user_seen(&who, &user.id, None);
    state
        .analytics
        .oauth(OAuthEvent::SignInSucceeded, Some(&user.id), None);
    Ok((jar, Redirect::to(&return_to)).into_response())
}

/// One account-lock event when this failed attempt locked a key of the account (its own,
/// or its own from this address, or this browser's). The address's own key locks every
/// account from it: that is a brute force from one address, which the detector reports.
fn report_locks(
    state: &AppState,
    who: &Requester,
    email: &str,
    user_id: Option<&str>,
    locked: &NewlyLocked,
) {
    let lock = locked
        .iter()
        .filter(|(key, ..)| !matches!(key, ThrottleKey::Ip(_)))
        .max_by_key(|(_, _, until)| *until);
    if let Some((_, failures, until)) = lock {
        let account = if user_id.is_some() {
            email
        } else {
            "(unknown account)"
        };
        state
            .security
            .account_locked(who, account, user_id, (*failures).max(0) as u64, *until);
    }
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: Option<String>,
}

pub async fn logout_post(
    State(state): State<AppState>,
    who: Requester,
    headers: HeaderMap,
    jar: CookieJar,
    PageForm(form): PageForm<LogoutForm>,
) -> Result<Response, PageError> {
    if !csrf::verify_post(
        &state,
        &who,
        "sign_out",
        &jar,
        &headers,
        form.csrf.as_deref(),
    ) {
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
