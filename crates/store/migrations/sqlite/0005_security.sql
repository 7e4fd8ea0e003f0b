-- Security events (issue 8). Same table in both dialects; only the id column differs.
-- Times are Unix milliseconds. Evidence is a JSON object of names, counts and reasons: never a
-- token, code, password or secret. Kept 90 days by default (`security.retention_days`).
CREATE TABLE security_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    level       TEXT NOT NULL,
    score       INTEGER NOT NULL,
    ip          TEXT,
    user_id     TEXT,
    client_id   TEXT,
    request_id  TEXT,
    evidence    TEXT NOT NULL,
    -- Who acknowledged it (a user id), when and why; then who resolved it.
    acknowledged_at  BIGINT,
    acknowledged_by  TEXT,
    resolved_at      BIGINT,
    resolved_by      TEXT,
    note             TEXT
);
CREATE INDEX security_events_at ON security_events(at_ms);
-- Filters by type, address, user and client list the newest first.
CREATE INDEX security_events_kind ON security_events(kind, at_ms);
CREATE INDEX security_events_ip ON security_events(ip, at_ms);
CREATE INDEX security_events_user ON security_events(user_id, at_ms);
CREATE INDEX security_events_client ON security_events(client_id, at_ms);

-- Blocked client addresses, one row per address, shared by every instance (each polls it).
-- A row outlives its block by a day so that a repeat offender's next block is longer
-- (`strikes`); unblocking ends the block and keeps the count.
CREATE TABLE ip_blocks (
    ip          TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    -- NULL: until unblocked.
    expires_at  BIGINT,
    -- `auto`, or the operator (a user id, or `cli`).
    created_by  TEXT NOT NULL,
    strikes     INTEGER NOT NULL
);
