//! `GET /analytics/api/summary?from=<RFC 3339>&to=<RFC 3339>`: the figures of a range as
//! JSON, for admins (a signed-in user with the admin role or on `analytics.admin_emails`).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;
use serde_json::json;

use mcp_oauth_core::analytics::Millis;
use mcp_oauth_core::analytics::summary::parse_rfc3339;

use crate::identity::session::{self, CurrentUser};
use crate::state::AppState;

/// The longest range one request may ask for: the rollups' default retention.
const MAX_RANGE_MS: Millis = 400 * 86_400_000;
/// Without `from`, the last day.
const DEFAULT_RANGE_MS: Millis = 86_400_000;

#[derive(Debug, Deserialize)]
pub struct RangeQuery {
    pub from: Option<String>,
    pub to: Option<String>,
}

fn invalid(description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "invalid_request", "error_description": description})),
    )
        .into_response()
}

/// `[from, to)` in Unix milliseconds from the query, or the answer explaining what is wrong.
pub fn parse_range(q: &RangeQuery, now: Millis) -> Result<(Millis, Millis), &'static str> {
    let to = match &q.to {
        Some(s) => parse_rfc3339(s).ok_or("`to` must be an RFC 3339 time")?,
        // Exclusive: one past now, so that what happened this very millisecond is in.
        None => now + 1,
    };
    let from = match &q.from {
        Some(s) => parse_rfc3339(s).ok_or("`from` must be an RFC 3339 time")?,
        None => to - DEFAULT_RANGE_MS,
    };
    if from >= to {
        return Err("`from` must be before `to`");
    }
    if to - from > MAX_RANGE_MS {
        return Err("the range may span at most 400 days");
    }
    Ok((from, to))
}

/// Whether `user` may read analytics.
pub fn is_admin(state: &AppState, user: &CurrentUser) -> bool {
    user.is_admin || state.settings.analytics.is_admin_email(&user.email)
}

/// The signed-in admin, or the JSON refusal: 401 without a session, 403 for others.
pub async fn require_admin(state: &AppState, jar: &CookieJar) -> Result<CurrentUser, Response> {
    let user = session::current_user(state, jar).await.map_err(|e| {
        tracing::error!(error = ?e.to_string(), "reading the session failed");
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    })?;
    match user {
        None => Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "unauthorized", "error_description": "sign in as an administrator"})),
        )
            .into_response()),
        Some(u) if !is_admin(state, &u) => Err((
            StatusCode::FORBIDDEN,
            Json(json!({"error": "forbidden", "error_description": "analytics are for administrators"})),
        )
            .into_response()),
        Some(u) => Ok(u),
    }
}

pub async fn summary_get(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<RangeQuery>,
) -> Response {
    if let Err(refusal) = require_admin(&state, &jar).await {
        return refusal;
    }
    let (from, to) = match parse_range(&q, state.clock.now_millis()) {
        Ok(r) => r,
        Err(why) => return invalid(why),
    };
    let cache = Some((&*state.analytics_cache, state.clock.now_millis()));
    match super::read_range(&state.db, cache, from, to).await {
        Ok((s, _)) => {
            let mut r = Json(s).into_response();
            r.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            r
        }
        Err(e) => {
            state.db_health.observe(&e);
            tracing::error!(error = ?e.to_string(), "reading analytics failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(from: Option<&str>, to: Option<&str>) -> RangeQuery {
        RangeQuery {
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
        }
    }

    #[test]
    fn a_range_defaults_to_the_last_day_and_must_be_ordered_and_bounded() {
        let now = 1_700_000_000_000;
        assert_eq!(
            parse_range(&q(None, None), now),
            Ok((now + 1 - 86_400_000, now + 1))
        );
        assert_eq!(
            parse_range(
                &q(Some("2023-11-14T00:00:00Z"), Some("2023-11-14T01:00:00Z")),
                now
            ),
            Ok((1_699_920_000_000, 1_699_923_600_000))
        );
        assert!(
            parse_range(
                &q(Some("2023-11-14T01:00:00Z"), Some("2023-11-14T00:00:00Z")),
                now
            )
            .is_err()
        );
        assert!(
            parse_range(
                &q(Some("2020-01-01T00:00:00Z"), Some("2023-11-14T00:00:00Z")),
                now
            )
            .is_err()
        );
        assert!(parse_range(&q(Some("yesterday"), None), now).is_err());
    }
}
