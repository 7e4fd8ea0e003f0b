-- Hardening (issue 6). Same statements in both dialects.

-- The successor a rotated refresh token was replaced by, sealed with a pad derived from the
-- rotated token itself (see mcp_oauth_core::oauth::token::refresh_token): a retry within the
-- grace period gets the same successor back instead of forking the family. Cleared once the
-- successor is used.
ALTER TABLE refresh_tokens ADD COLUMN sealed_successor TEXT;

-- Browsers that signed in to an account before (OWASP device cookies): an attempt from one of
-- them is throttled on its own, so that strangers' wrong passwords cannot lock the owner out.
-- Only the cookie's hash is stored.
CREATE TABLE trusted_devices (
    id_hash    TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX trusted_devices_user ON trusted_devices(user_id);
CREATE INDEX trusted_devices_expires ON trusted_devices(expires_at);
