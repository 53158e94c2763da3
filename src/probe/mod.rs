//! Probing: one endpoint (`endpoint`, with its calls, deadline, progress and /metrics reading), one cluster
//! (`poller`).

mod calls;
pub mod consistency;
mod convert;
mod deadline;
mod diagnose;
pub mod endpoint;
pub mod poller;
mod progress;
mod reading;

pub use progress::ProbeProgress;
