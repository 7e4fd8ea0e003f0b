-- Usage analytics (issue 7). Same tables in both dialects; only the id column differs.
-- Times are Unix milliseconds. Empty strings stand for "not known", so that every dimension
-- can be part of a rollup's primary key. No token, code, secret or tool argument is stored.

-- Raw events, kept 30 days by default: the edges of a range and drill-downs read them.
CREATE TABLE analytics_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms      BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    detail     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    code       TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    software   TEXT NOT NULL,
    protocol_version TEXT NOT NULL,
    transport  TEXT NOT NULL,
    latency_us BIGINT,
    count      BIGINT NOT NULL,
    ip         TEXT,
    user_agent TEXT,
    request_id TEXT
);
CREATE INDEX analytics_events_at ON analytics_events(at_ms);
-- Drill-downs list a user's or a client's latest events.
CREATE INDEX analytics_events_user ON analytics_events(user_id, at_ms);
CREATE INDEX analytics_events_client ON analytics_events(client_id, at_ms);

-- Events summed per minute, hour and day (period in seconds), updated in the same
-- transaction as the raw rows by adding to the counts, so several instances can write at once.
CREATE TABLE analytics_rollups (
    period       BIGINT NOT NULL,
    bucket_start BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    detail     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    code       TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    software   TEXT NOT NULL,
    protocol_version TEXT NOT NULL,
    transport  TEXT NOT NULL,
    count          BIGINT NOT NULL,
    latency_sum_us BIGINT NOT NULL,
    last_at_ms     BIGINT NOT NULL,
    PRIMARY KEY (period, bucket_start, kind, name, detail, outcome, code, user_id, client_id,
                 software, protocol_version, transport)
);

-- Latency histograms per series (kind, name, detail) and rollup bucket: how many latencies
-- fell in each fixed log-scale bin (mcp_oauth_core::analytics::histogram). Bins add up, so
-- percentiles over any range come from the sum of its buckets.
CREATE TABLE analytics_latency (
    period       BIGINT NOT NULL,
    bucket_start BIGINT NOT NULL,
    kind   TEXT NOT NULL,
    name   TEXT NOT NULL,
    detail TEXT NOT NULL,
    bin    BIGINT NOT NULL,
    count  BIGINT NOT NULL,
    PRIMARY KEY (period, bucket_start, kind, name, detail, bin)
);
