//! etcd-sentinel: keeps etcd clusters healthy.
//!
//! Data flows one way: targets → poller (probes every endpoint concurrently) → [`view::ClusterView`] → exporters
//! and maintenance. Pure logic (view, histogram math) has no I/O; I/O lives in `etcd` and `probe`.

pub mod config;
pub mod daemon;
pub mod etcd;
pub mod events;
pub mod export;
pub mod files;
pub mod histogram;
pub mod id;
pub mod maintenance;
mod names;
pub mod pem;
pub mod probe;
pub mod rule;
pub mod schedule;
pub mod secret;
pub mod settings;
pub mod state;
#[cfg(test)]
mod testing;
pub mod units;
pub mod view;
pub mod vitals;
