//! Prometheus metrics through the `metrics` facade, rendered at `/metrics` for the client
//! addresses in `metrics.allowed_cidrs` (404 for everyone else, as for a path we do not serve).
//!
//! Each application has its own recorder instead of the process-global one: the global
//! recorder can be installed only once per process, and the tests start many applications in
//! one process, each of which must report its own numbers. A component registers the handles
//! it needs once (`counter`, `gauge`) and keeps them; code that prefers the facade's macros runs
//! them inside `record`. Values that are cheaper to compute than to track (how many sessions
//! are open) are set just before rendering by a hook added with `on_render`.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Gauge, Key, KeyName, Label, Level, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

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

impl Default for Metrics {
    fn default() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        Self {
            recorder,
            handle,
            on_render: Mutex::default(),
        }
    }
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|&(k, v)| Label::new(k, v))
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

/// `GET /metrics`: only for allowed client addresses; others cannot tell it exists.
pub async fn metrics_get(State(state): State<AppState>, ClientIp(ip): ClientIp) -> Response {
    if !state
        .settings
        .metrics_allowed
        .iter()
        .any(|c| c.contains(ip))
    {
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
