//! Everything that talks to etcd: endpoints, connections, and the members' own /metrics.

pub mod connect;
pub mod endpoint;
pub mod error;
pub mod member_metrics;
pub mod tls;
