//! From a request to the database without slowing it: `Recorder::record` updates the
//! Prometheus metrics from the event (`super::metrics`), puts it on a bounded queue and returns
//! at once (when the queue is full the event is dropped and counted); one writer task per
//! instance stores the queue in batches, one transaction each, and drains what is left when
//! the server stops. Security events (`Recorder::security`) have a queue of their own, which
//! the writer empties first into their own table: a flood of requests (an attack, often) fills
//! the usage queue, and must not crowd out the events that describe it. They are kept even
//! when usage analytics is off.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::Counter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use mcp_oauth_core::analytics::Event;
use mcp_oauth_core::security::events::SecurityEvent;
use mcp_oauth_store::Db;

use crate::clock::Clock;
use crate::config::AnalyticsSettings;
use crate::db_health::DbHealth;
use crate::metrics::Metrics;

use super::metrics::EventMetrics;

/// Security events queued at most: far fewer than usage events (detectors report stages of
/// an attack, not requests), so this holds minutes of a heavy attack between two flushes.
pub const SECURITY_QUEUE_CAPACITY: usize = 8_192;

/// What the writer reads: usage events when analytics is on, security events when security
/// monitoring is.
pub struct Queues {
    pub usage: Option<mpsc::Receiver<Event>>,
    pub security: Option<mpsc::Receiver<SecurityEvent>>,
}

/// Where events are handed in. Cheap to share; never blocks.
pub struct Recorder {
    /// To the writer, when analytics is on.
    queue: Option<mpsc::Sender<Event>>,
    /// To the writer, when security monitoring is on.
    security_queue: Option<mpsc::Sender<SecurityEvent>>,
    /// Whether usage events are stored (analytics on), besides security events.
    store_usage: bool,
    /// The metrics events update, while `/metrics` can be read.
    metrics: Option<EventMetrics>,
    /// Dropped since the writer last stored the count.
    unreported_drops: AtomicU64,
    /// Dropped since start.
    dropped: AtomicU64,
    dropped_total: Counter,
    recorded_total: Counter,
    security_dropped_total: Counter,
    clock: Clock,
}

impl Recorder {
    /// The recorder and the queues its writer reads (`None` when analytics and security
    /// monitoring are both off). Events update `metrics` when `observed` (someone may read
    /// `/metrics`), labelled with the names in `tools` only.
    pub fn new(
        settings: &AnalyticsSettings,
        security_enabled: bool,
        clock: Clock,
        metrics: &Arc<Metrics>,
        observed: bool,
        tools: impl IntoIterator<Item = String>,
    ) -> (Arc<Self>, Option<Queues>) {
        let (queue, usage) = match settings.enabled {
            true => {
                let (tx, rx) = mpsc::channel(settings.queue_capacity);
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        let (security_queue, security) = match security_enabled {
            true => {
                let (tx, rx) = mpsc::channel(SECURITY_QUEUE_CAPACITY);
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        let queues = (usage.is_some() || security.is_some()).then_some(Queues { usage, security });
        let recorder = Self {
            queue,
            security_queue,
            store_usage: settings.enabled,
            metrics: observed.then(|| EventMetrics::new(metrics.clone(), tools)),
            unreported_drops: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            dropped_total: metrics.counter(
                "mcp_oauth_analytics_events_dropped_total",
                &[],
                "Analytics events dropped because the writer's queue was full.",
            ),
            recorded_total: metrics.counter(
                "mcp_oauth_analytics_events_total",
                &[],
                "Analytics events handed to the writer.",
            ),
            security_dropped_total: metrics.counter(
                "mcp_oauth_security_events_dropped_total",
                &[],
                "Security events not stored because their queue was full (each was still logged).",
            ),
            clock,
        };
        (Arc::new(recorder), queues)
    }

    /// Whether events are wanted at all: to be stored, or counted in the metrics. Analytics
    /// off and `/metrics` closed, recording costs nothing.
    pub fn enabled(&self) -> bool {
        self.store_usage || self.metrics.is_some()
    }

    /// Now, in Unix milliseconds, on the application's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_millis()
    }

    /// Count `event` in the metrics, and queue it for storage, or count it as dropped when
    /// the queue is full.
    pub fn record(&self, event: Event) {
        if let Some(m) = &self.metrics {
            m.observe(&event);
        }
        let Some(queue) = &self.queue else { return };
        match queue.try_send(event) {
            Ok(()) => self.recorded_total.increment(1),
            Err(_) => self.count_drops(1),
        }
    }

    /// Queue a security event for storage, on its own queue (dropped and counted when even
    /// that is full; the event's log line has been written anyway).
    pub fn security(&self, event: SecurityEvent) {
        let Some(queue) = &self.security_queue else {
            return;
        };
        if queue.try_send(event).is_err() {
            self.security_dropped_total.increment(1);
        }
    }

    /// Events dropped since this instance started.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn count_drops(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.unreported_drops.fetch_add(n, Ordering::Relaxed);
        self.dropped_total.increment(n);
    }

    fn take_drops(&self) -> u64 {
        self.unreported_drops.swap(0, Ordering::Relaxed)
    }
}

/// Events per transaction. On SQLite the writer shares the one write connection with token
/// grants: a transaction of 2,000 events held it for ~25 ms, and the token endpoint's p99
/// under load went from ~25 ms (nothing recorded) to ~40 ms; with 64 a grant waits about a
/// millisecond and the p99 is the same as without analytics (`--bench token_endpoint`).
const EVENTS_PER_TRANSACTION: usize = 64;

/// How often the writer looks at the queue, at most: a full batch waits no longer than this.
const MAX_POLL: Duration = Duration::from_millis(50);

/// Room for events the writer keeps between bursts.
const IDLE_CAPACITY: usize = 64;

/// The writer: stores batches until `stop` is cancelled, then whatever is still queued.
pub struct Writer {
    pub db: Db,
    pub recorder: Arc<Recorder>,
    pub queues: Queues,
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// Events held while the database cannot take them, at most (then the oldest go).
    pub max_pending: usize,
    pub db_health: Arc<DbHealth>,
}

impl Writer {
    pub fn spawn(self, stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(self.run(stop))
    }

    async fn run(mut self, stop: CancellationToken) {
        let mut pending = Pending::default();
        let mut incoming: Vec<Event> = Vec::with_capacity(IDLE_CAPACITY);
        // The writer looks at the queue on a timer instead of waiting on it: waiting, it was
        // woken for every event, 20,000 times a second under load, and those wake-ups cost
        // the requests more than storing the events did.
        let mut tick = tokio::time::interval(self.flush_interval.min(MAX_POLL));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_flush = Instant::now();
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            // Take what is queued, without waiting for more (security events first); store
            // each full batch at once.
            self.take_security(&mut pending);
            while let Some(queue) = self.queues.usage.as_mut()
                && !queue.is_empty()
            {
                let room = self.batch_size.saturating_sub(pending.len()).max(1);
                queue.recv_many(&mut incoming, room).await;
                pending.usage.append(&mut incoming);
                if pending.len() >= self.batch_size {
                    self.flush(&mut pending).await;
                    last_flush = Instant::now();
                }
            }
            if last_flush.elapsed() >= self.flush_interval {
                self.flush(&mut pending).await;
                last_flush = Instant::now();
            }
        }
        // Shutting down: store what requests that already finished recorded.
        self.take_security(&mut pending);
        while let Some(e) = self.queues.usage.as_mut().and_then(|q| q.try_recv().ok()) {
            pending.usage.push(e);
            if pending.len() >= self.batch_size {
                self.flush(&mut pending).await;
            }
        }
        self.flush(&mut pending).await;
        if !pending.is_empty() {
            tracing::warn!(
                events = pending.len(),
                "analytics events could not be stored before shutdown"
            );
        }
    }

    /// Move the queued security events to `pending`.
    fn take_security(&mut self, pending: &mut Pending) {
        if let Some(queue) = self.queues.security.as_mut() {
            while let Ok(e) = queue.try_recv() {
                pending.security.push(e);
            }
        }
    }

    /// Store `pending` (with a count of drops since the last flush): security events first,
    /// then usage events [`EVENTS_PER_TRANSACTION`] at a time. On failure what was not stored
    /// stays pending for the next try, up to `max_pending`.
    async fn flush(&self, pending: &mut Pending) {
        let drops = self.recorder.take_drops();
        if drops > 0 && self.recorder.store_usage {
            pending
                .usage
                .push(Event::dropped(self.recorder.now_ms(), drops));
        }
        let security = &mut pending.security;
        while !security.is_empty() {
            let n = security.len().min(EVENTS_PER_TRANSACTION);
            if let Err(e) = self.db.record_security_events(&security[..n]).await {
                if !self.db_health.observe(&e) {
                    tracing::error!(error = ?e.to_string(), events = security.len(), "storing security events failed");
                }
                if security.len() > self.max_pending {
                    let excess = security.len() - self.max_pending;
                    security.drain(..excess);
                    self.recorder.count_drops(excess as u64);
                }
                return;
            }
            security.drain(..n);
        }
        security.shrink_to(IDLE_CAPACITY);
        let pending = &mut pending.usage;
        while !pending.is_empty() {
            let n = pending.len().min(EVENTS_PER_TRANSACTION);
            if let Err(e) = self.db.record_events(&pending[..n]).await {
                if !self.db_health.observe(&e) {
                    tracing::error!(error = ?e.to_string(), events = pending.len(), "storing analytics events failed");
                }
                if pending.len() > self.max_pending {
                    let excess = pending.len() - self.max_pending;
                    pending.drain(..excess);
                    self.recorder.count_drops(excess as u64);
                }
                return;
            }
            pending.drain(..n);
        }
        // A burst grew it; an idle server need not keep the room.
        pending.shrink_to(IDLE_CAPACITY);
    }
}

/// Events the writer holds until they are stored.
#[derive(Default)]
struct Pending {
    usage: Vec<Event>,
    security: Vec<SecurityEvent>,
}

impl Pending {
    fn len(&self) -> usize {
        self.usage.len() + self.security.len()
    }

    fn is_empty(&self) -> bool {
        self.usage.is_empty() && self.security.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_oauth_core::analytics::Event;

    #[test]
    fn a_full_usage_queue_does_not_crowd_out_security_events() {
        let settings = AnalyticsSettings {
            queue_capacity: 2,
            ..AnalyticsSettings::default()
        };
        let metrics = Arc::new(Metrics::default());
        let (recorder, queues) = Recorder::new(
            &settings,
            true,
            Clock::manual(1_000),
            &metrics,
            false,
            Vec::<String>::new(),
        );
        let mut queues = queues.expect("queues");
        for _ in 0..5 {
            recorder.record(Event::dropped(0, 1));
        }
        assert_eq!(recorder.dropped(), 3, "the usage queue holds two");
        recorder.security(SecurityEvent::scanner(0, "/.env", 1));
        let security = queues.security.as_mut().unwrap();
        assert!(security.try_recv().is_ok(), "kept, on its own queue");
        assert_eq!(queues.usage.as_mut().unwrap().len(), 2);
    }

    #[test]
    fn only_what_is_on_gets_a_queue() {
        let metrics = Arc::new(Metrics::default());
        let queues = |analytics: bool, security: bool| {
            let settings = AnalyticsSettings {
                enabled: analytics,
                ..AnalyticsSettings::default()
            };
            let clock = Clock::manual(0);
            Recorder::new(
                &settings,
                security,
                clock,
                &metrics,
                false,
                Vec::<String>::new(),
            )
            .1
            .map(|q| (q.usage.is_some(), q.security.is_some()))
        };
        assert_eq!(queues(true, true), Some((true, true)));
        assert_eq!(queues(false, true), Some((false, true)));
        assert_eq!(queues(true, false), Some((true, false)));
        assert_eq!(queues(false, false), None);
    }
}
