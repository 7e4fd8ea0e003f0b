//! Security decisions: throttles and, later, detectors. Pure, with time passed in.

pub mod connections;
pub mod login_throttle;
