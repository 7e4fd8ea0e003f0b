//! Browser login sessions. The `__Host-` cookie holds a random 256-bit id; the database holds
//! only its hash, so every instance shares sessions and a database leak reveals none.

use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use mcp_oauth_core::domain::SecretHash;

use crate::state::AppState;

pub const COOKIE: &str = "__Host-mcp_session";

#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: String,
    pub email: String,
    pub is_admin: bool,
    /// When this session was created, i.e. when the user last entered a password.
    pub signed_in_at: i64,
}

pub async fn current_user(
    state: &AppState,
    jar: &CookieJar,
) -> mcp_oauth_store::Result<Option<CurrentUser>> {
    let Some(cookie) = jar.get(COOKIE) else {
        return Ok(None);
    };
    let hash = SecretHash::of(cookie.value());
    let row = state
        .db
        .find_session(hash.as_str(), state.clock.now())
        .await?;
    Ok(row.map(|r| CurrentUser {
        is_admin: r.is_admin != 0,
        id: r.user_id,
        email: r.email,
        signed_in_at: r.created_at,
    }))
}

/// Start a session for `user_id`, replacing any session cookie the browser had (a fresh id
/// at login prevents session fixation).
pub async fn start(
    state: &AppState,
    user_id: &str,
    jar: CookieJar,
) -> mcp_oauth_store::Result<CookieJar> {
    let jar = end(state, jar).await?;
    let secret = crate::random::secret();
    let now = state.clock.now();
    state
        .db
        .insert_session(
            secret.hash().as_str(),
            user_id,
            now,
            now + state.settings.session_ttl,
        )
        .await?;
    let cookie = Cookie::build((COOKIE, secret.expose().to_owned()))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(time::Duration::seconds(state.settings.session_ttl))
        .build();
    Ok(jar.add(cookie))
}

/// End the browser's session, server-side and in the browser.
pub async fn end(state: &AppState, jar: CookieJar) -> mcp_oauth_store::Result<CookieJar> {
    if let Some(c) = jar.get(COOKIE) {
        state
            .db
            .delete_session(SecretHash::of(c.value()).as_str())
            .await?;
    }
    Ok(jar.remove(Cookie::build(COOKIE).path("/").secure(true).http_only(true)))
}
