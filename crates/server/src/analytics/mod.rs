//! Usage analytics: recording (HTTP requests in `http`, MCP messages in `mcp`, OAuth events
//! where they happen), the pipeline to the database (`pipeline`) and to the Prometheus
//! metrics (`metrics`), and reading it back (`summary`, the JSON API in `api`, downloads in
//! `export`).

pub mod api;
pub mod cache;
pub mod charts;
pub mod dashboard;
pub mod export;
pub mod geoip;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod pipeline;

use mcp_oauth_core::analytics::summary::{Names, Row, Summary, summarize};
use mcp_oauth_core::analytics::{Event, Millis, OAuthEvent, plan};
use mcp_oauth_store::Db;

pub use http::Attribution;
pub use pipeline::Recorder;

/// The figures of `[from, to)`: what the JSON API, the dashboard and the CLI show.
pub async fn summary(db: &Db, from: Millis, to: Millis) -> mcp_oauth_store::Result<Summary> {
    Ok(read_range(db, None, from, to).await?.0)
}

/// The figures of `[from, to)` and the summed rows they come from; settled spans from
/// `cache` when given (see `cache`).
pub async fn read_range(
    db: &Db,
    cache: Option<(&cache::SpanCache, Millis)>,
    from: Millis,
    to: Millis,
) -> mcp_oauth_store::Result<(Summary, Vec<Row>)> {
    let plan = plan(from, to);
    let (rows, latencies) = match cache {
        Some((cache, now)) => cache.read(db, &plan, now).await?,
        None => (
            db.analytics_rows(&plan).await?,
            db.analytics_latencies(&plan).await?,
        ),
    };
    let names = names_of(db, &rows).await?;
    Ok((summarize(from, to, &rows, &latencies, &names), rows))
}

/// Emails and client names for the ids in `rows`.
pub async fn names_of(db: &Db, rows: &[Row]) -> mcp_oauth_store::Result<Names> {
    let distinct = |id: fn(&Row) -> &str| -> Vec<&str> {
        let set: std::collections::HashSet<&str> =
            rows.iter().map(id).filter(|id| !id.is_empty()).collect();
        let mut ids: Vec<&str> = set.into_iter().collect();
        ids.sort_unstable();
        ids
    };
    let users = distinct(|r| &r.dims.user_id);
    let clients = distinct(|r| &r.dims.client_id);
    Ok(Names {
        user_emails: db.user_emails(&users).await?,
        client_names: db.client_names(&clients).await?,
    })
}

impl Recorder {
    /// Record an OAuth event for `user` and `client`.
    pub fn oauth(&self, event: OAuthEvent<'_>, user: Option<&str>, client: Option<&str>) {
        if self.enabled() {
            self.record(Event::oauth(self.now_ms(), event).user(user).client(client));
        }
    }
}
