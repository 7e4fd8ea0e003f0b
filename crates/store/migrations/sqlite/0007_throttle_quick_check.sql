-- When a password last failed on a throttle key (Unix ms), for the quick-login check: a
-- second wrong password that soon after the last locks the key (issue 8, Keycloak's model).
ALTER TABLE throttles ADD COLUMN last_failure_ms BIGINT;
