//! Decisions of the MCP server that are not about authorization: how many sessions a client
//! may make it hold, and for how long.

pub mod sessions;
