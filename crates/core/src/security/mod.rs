//! Security decisions: throttles, the address policy for outgoing requests and, later,
//! detectors. Pure, with time passed in.

pub mod address;
pub mod alerts;
pub mod blocks;
pub mod connections;
pub mod detectors;
pub mod events;
pub mod login_throttle;
pub mod rate_limit;
