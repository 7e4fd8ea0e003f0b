//! Background work on a schedule: deleting what has expired, reloading signing keys rotated
//! by another instance, polling published revocations and address blocks, closing idle MCP sessions, folding
//! metric samples into their histograms, and watching the database's health. While the database is known to be down each task skips
//! its turn quietly: the outage is logged once, by `db_health`, not once per poll.

use std::time::Duration;

use mcp_oauth_store::CleanupPolicy;
use tokio::task::JoinHandle;

use crate::revocation::POLL_INTERVAL;
use crate::state::AppState;

const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(60);
/// How often histogram samples are folded into their buckets (`Metrics::run_upkeep`): the
/// samples of a few seconds are all that waits in memory between scrapes.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

pub async fn run_cleanup(state: &AppState) -> anyhow::Result<()> {
    let policy = CleanupPolicy {
        code_retention: 86_400,
        revoked_retention: 7 * 86_400,
        stale_client_after: state.settings.registration.stale_after_days * 86_400,
    };
    let report = state.db.delete_expired(state.clock.now(), &policy).await?;
    let analytics = &state.settings.analytics;
    let old_events = state
        .db
        .delete_old_analytics(
            state.clock.now_millis(),
            mcp_oauth_store::AnalyticsRetention {
                raw_ms: analytics.raw_retention_days * 86_400_000,
                rollups_ms: analytics.rollup_retention_days * 86_400_000,
            },
        )
        .await?;
    if old_events > 0 {
        tracing::info!(rows = old_events, "old analytics deleted");
    }
    let security = &state.settings.security;
    let old_security = state
        .db
        .delete_old_security_events(state.clock.now_millis() - security.retention_days * 86_400_000)
        .await?;
    if old_security > 0 {
        tracing::info!(rows = old_security, "old security events deleted");
    }
    // A day after a block ends, the address starts again from the shortest block.
    state
        .db
        .delete_stale_ip_blocks(state.clock.now_millis() - 86_400_000)
        .await?;
    state
        .rate_limits
        .retain_recent(state.clock.now_millis())
        .await?;
    if report.total() > 0 {
        tracing::info!(?report, "expired records deleted");
    }
    Ok(())
}

/// Start the background tasks; the caller aborts them at shutdown.
pub fn spawn(state: &AppState) -> Vec<JoinHandle<()>> {
    let cleanup = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(state.settings.housekeeping_interval);
            loop {
                tick.tick().await;
                if state.db_health.is_down() {
                    continue;
                }
                if let Err(e) = run_cleanup(&state).await
                    && !state.db_health.observe_any(&e)
                {
                    tracing::error!(error = ?format!("{e:#}"), "cleanup failed");
                }
            }
        })
    };
    let keys = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(KEY_RELOAD_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                if state.db_health.is_down() {
                    continue;
                }
                if let Err(e) = state.keys.reload(state.clock.now()).await
                    && !state.db_health.observe_any(&e)
                {
                    tracing::error!(error = ?format!("{e:#}"), "reloading signing keys failed");
                }
            }
        })
    };
    let revocations = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if state.db_health.is_down() {
                    continue;
                }
                if let Err(e) = state.revocations.poll(&state.db, state.clock.now()).await
                    && !state.db_health.observe(&e)
                {
                    tracing::warn!(error = ?e.to_string(), "polling revocations failed");
                }
            }
        })
    };
    let blocks = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::security::blocks::POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if state.db_health.is_down() {
                    continue;
                }
                let now = state.clock.now_millis();
                if let Err(e) = state.security.blocks.poll(&state.db, now).await
                    && !state.db_health.observe(&e)
                {
                    tracing::warn!(error = ?e.to_string(), "polling address blocks failed");
                }
            }
        })
    };
    let mcp_sessions = {
        let state = state.clone();
        // Often enough that a session outlives the timeout by at most a quarter of it.
        let timeout = state
            .settings
            .mcp
            .session_idle_timeout_seconds
            .unsigned_abs();
        let every = (Duration::from_secs(timeout) / 4)
            .clamp(Duration::from_millis(250), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                state.mcp_sessions.reap().await;
            }
        })
    };
    let metrics = {
        let metrics = state.metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                metrics.run_upkeep();
            }
        })
    };
    let health = crate::db_health::spawn_monitor(state.db_health.clone(), state.db.clone());
    let alerts = tokio::spawn(state.security.alerts.clone().deliver());
    vec![
        cleanup,
        keys,
        revocations,
        blocks,
        alerts,
        mcp_sessions,
        metrics,
        health,
    ]
}
