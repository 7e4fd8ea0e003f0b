-- Hardening (issue 6). Same statements in both dialects.

-- The successor a rotated refresh token was replaced by, sealed with a pad derived from the
-- rotated token itself (see mcp_oauth_core::oauth::token::refresh_token): a retry within the
-- grace period gets the same successor back instead of forking the family. Cleared once the
-- successor is used.
ALTER TABLE refresh_tokens ADD COLUMN sealed_successor TEXT;
