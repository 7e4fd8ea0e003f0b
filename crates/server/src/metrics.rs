//! Prometheus metrics through the `metrics` facade, rendered at `/metrics` for the client
//! addresses in `metrics.allowed_cidrs`, and from anywhere for a request that presents
//! `metrics.bearer_token` (404 for everyone else, as for a path we do not serve).
//!
//! Each application has its own recorder instead of the process-global one: the global
//! recorder can be installed only once per process, and the tests start many applications in
//! one process, each of which must report its own numbers. A component registers the handles
//! it needs once (`counter`, `gauge`) and keeps them; series whose labels are only known per
//! event (`counter_with`, `histogram_with`) are looked up by the caller, who must keep their
//! label values bounded. Code that prefers the facade's macros runs them inside `record`.
//! Values that are cheaper to compute than to track (how many sessions are open) are set just
//! before rendering by a hook added with `on_render`.
//!
//! Histogram samples wait in the recorder until they are folded into their buckets, which
//! rendering does and so does `run_upkeep`: housekeeping calls it every few seconds, so an
//! instance that is never scraped does not keep every sample.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use mcp_oauth_core::resource::bearer::{self, Credentials};

use crate::http::extract::ClientIp;
use crate::state::AppState;

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

type RenderHook = Box<dyn Fn() + Send + Sync>;

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    on_render: Mutex<Vec<RenderHook>>,
}

/// Histogram bucket bounds, in seconds, for every latency histogram: log-scale (1, 2.5, 5 per
/// decade) from 1 ms to 10 s, then 30 s. Without buckets the exporter would render summaries,
/// which cannot be aggregated across instances.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Default for Metrics {
    fn default() -> Self {
        // `set_buckets` refuses only an empty list.
        let builder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        Self {
            recorder,
            handle,
            on_render: Mutex::default(),
        }
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|&(k, v)| Label::new(k, v.to_owned()))
            .collect::<Vec<_>>(),
    )
}

impl Metrics {
    /// A counter, with its `# HELP` text.
    pub fn counter(
        &self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
        help: &'static str,
    ) -> Counter {
        self.recorder.describe_counter(
            KeyName::from_const_str(name),
            None,
            SharedString::from(help),
        );
        self.recorder
            .register_counter(&key(name, labels), &METADATA)
    }

    /// A gauge, with its `# HELP` text.
    pub fn gauge(
        &self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
        help: &'static str,
    ) -> Gauge {
        self.recorder.describe_gauge(
            KeyName::from_const_str(name),
            None,
            SharedString::from(help),
        );
        self.recorder.register_gauge(&key(name, labels), &METADATA)
    }

    /// The `# HELP` text of a counter whose series are looked up with `counter_with`.
    pub fn describe_counter(&self, name: &'static str, help: &'static str) {
        self.recorder.describe_counter(
            KeyName::from_const_str(name),
            None,
            SharedString::from(help),
        );
    }

    /// The `# HELP` text of a histogram whose series are looked up with `histogram_with`.
    pub fn describe_histogram(&self, name: &'static str, help: &'static str) {
        self.recorder.describe_histogram(
            KeyName::from_const_str(name),
            None,
            SharedString::from(help),
        );
    }

    /// The counter of `name` with these label values (created on first use). The caller keeps
    /// the values bounded: each distinct set is a series kept for the life of the process.
    pub fn counter_with(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.recorder
            .register_counter(&key(name, labels), &METADATA)
    }

    /// The histogram of `name` with these label values, bucketed by [`LATENCY_BUCKETS`]
    /// (bounded values only, as for `counter_with`).
    pub fn histogram_with(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        self.recorder
            .register_histogram(&key(name, labels), &METADATA)
    }

    /// Fold the histogram samples taken since the last call into their buckets.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Run `f` with this application's recorder behind the `metrics` macros.
    pub fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// Call `hook` before each rendering, to set values computed on demand.
    pub fn on_render(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.on_render
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(hook));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        for hook in self
            .on_render
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            hook();
        }
        self.handle.render()
    }
}

/// Whether `headers` carry exactly one `Authorization: Bearer` with `expected`. Both sides
/// are hashed first, so the comparison takes the same time whatever the length or the first
/// differing byte of what was sent.
fn presents_token(headers: &HeaderMap, expected: &SecretString) -> bool {
    let values: Vec<&str> = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let Ok(Credentials::Bearer(sent)) = bearer::extract(&values, None) else {
        return false;
    };
    let sent = Sha256::digest(sent.as_bytes());
    let expected = Sha256::digest(expected.expose_secret().as_bytes());
    sent.ct_eq(&expected).into()
}

/// `GET /metrics`: for allowed client addresses, and for a request with the configured bearer
/// token from anywhere; others cannot tell it exists.
pub async fn metrics_get(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    let settings = &state.settings;
    let allowed = settings.metrics_allowed.iter().any(|c| c.contains(ip))
        || settings
            .metrics_bearer_token
            .as_ref()
            .is_some_and(|t| presents_token(&headers, t));
    if !allowed {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    let metrics: Arc<Metrics> = state.metrics.clone();
    let body = metrics.render();
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_the_configured_bearer_token_opens_the_metrics() {
        let token = SecretString::from("s3cret-token-for-prometheus-0123456789");
        for (headers, expected, why) in [
            (
                vec!["Bearer s3cret-token-for-prometheus-0123456789"],
                true,
                "the token",
            ),
            (
                vec!["bearer s3cret-token-for-prometheus-0123456789"],
                true,
                "the scheme is case-insensitive",
            ),
            (
                vec!["Bearer s3cret-token-for-prometheus-012345678"],
                false,
                "a prefix",
            ),
            (vec!["Bearer wrong"], false, "another token"),
            (vec!["Basic czNjcmV0LXRva2Vu"], false, "another scheme"),
            (
                vec![
                    "Bearer s3cret-token-for-prometheus-0123456789",
                    "Bearer s3cret-token-for-prometheus-0123456789",
                ],
                false,
                "two Authorization headers",
            ),
            (vec![], false, "no header"),
        ] {
            assert_eq!(
                presents_token(&with_auth(&headers), &token),
                expected,
                "{why}"
            );
        }
    }

    #[test]
    fn latency_histograms_render_with_buckets() {
        let m = Metrics::default();
        m.describe_histogram("t_duration_seconds", "A latency.");
        m.histogram_with("t_duration_seconds", &[("route", "/token")])
            .record(0.003);
        let text = m.render();
        assert!(
            text.contains("t_duration_seconds_bucket{route=\"/token\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("t_duration_seconds_bucket{route=\"/token\",le=\"0.0025\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("t_duration_seconds_count{route=\"/token\"} 1"),
            "{text}"
        );
    }
}
