-- Rate-limit buckets shared by every instance (issue 8), used when `rate_limits.shared`
-- resolves to the database. One row per bucket: a hash of the endpoint class and the
-- client, user and address it counts (never those themselves), and its GCRA theoretical
-- arrival time in Unix microseconds. A row whose time has passed is a full bucket; the
-- housekeeping task deletes those, so the table holds only keys active in the last window.
CREATE TABLE rate_limit_buckets (
    bucket  TEXT PRIMARY KEY,
    tat_us  BIGINT NOT NULL
);
