//! Probing: one endpoint (`endpoint`), one cluster (`poller`).

pub mod endpoint;
pub mod poller;
