-- The countries each user has been seen from (issue 8, the `new_country` detector): one row
-- per user and ISO country code, written when an instance first sees the pair. Needs a
-- GeoIP database (`analytics.geoip_database`); without one, nothing is written.
CREATE TABLE user_countries (
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    country        TEXT NOT NULL,
    first_seen_ms  BIGINT NOT NULL,
    last_seen_ms   BIGINT NOT NULL,
    PRIMARY KEY (user_id, country)
);
