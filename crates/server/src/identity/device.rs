//! Device cookies (OWASP "Slow down online guessing attacks with device cookies"): a browser
//! that signed in to an account gets a random cookie; the database keeps its hash and the
//! account. Presenting it for that account later makes the sign-in throttle count the
//! attempt against this browser alone, so strangers' wrong passwords never lock it out.

use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use mcp_oauth_core::domain::SecretHash;

use crate::state::AppState;

pub const COOKIE: &str = "__Host-mcp_device";

/// Devices remembered per account; older ones are forgotten.
const DEVICES_PER_USER: i64 = 20;

/// The hash of the browser's device cookie, if it is a live one for `user_id`.
pub async fn trusted_for(
    state: &AppState,
    jar: &CookieJar,
    user_id: Option<&str>,
) -> mcp_oauth_store::Result<Option<String>> {
    let (Some(cookie), Some(user_id)) = (jar.get(COOKIE), user_id) else {
        return Ok(None);
    };
    let hash = SecretHash::of(cookie.value()).as_str().to_owned();
    let owner = state
        .db
        .trusted_device_user(&hash, state.clock.now())
        .await?;
    Ok((owner.as_deref() == Some(user_id)).then_some(hash))
}

/// After a successful sign-in: give the browser a device cookie for `user_id`, unless the
/// one it presented already is.
pub async fn remember(
    state: &AppState,
    jar: CookieJar,
    user_id: &str,
    already_trusted: bool,
) -> mcp_oauth_store::Result<CookieJar> {
    if already_trusted {
        return Ok(jar);
    }
    let secret = crate::random::secret();
    let now = state.clock.now();
    let ttl = state.settings.login.device_ttl_days * 86_400;
    state
        .db
        .insert_trusted_device(
            secret.hash().as_str(),
            user_id,
            now,
            now + ttl,
            DEVICES_PER_USER,
        )
        .await?;
    let cookie = Cookie::build((COOKIE, secret.expose().to_owned()))
        .path("/")
        .secure(true)
        .http_only(true)
        // Only ever needed on our own sign-in form.
        .same_site(SameSite::Strict)
        .max_age(time::Duration::seconds(ttl))
        .build();
    Ok(jar.add(cookie))
}
