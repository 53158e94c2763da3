//! Maintenance: what may be touched and when, and (with the snapshot and defrag work) doing it.
//!
//! The pure parts decide from a [`ClusterView`](crate::view::ClusterView) and the clock alone, and are tested
//! without etcd: [`gate`] (may this member be touched now?) and [`plan`] (in which order). The I/O parts (the
//! snapshot stream, the rolling defrag, the lock in etcd, the snapshot stores) live beside them and ask the gate
//! again, on a fresh view, before every step. The daemon runs one maintenance task per cluster beside its poller.

pub mod bolt;
pub mod compress;
pub mod consistency;
pub mod defrag;
pub mod drill;
pub mod gate;
pub mod lock;
pub mod plan;
pub mod restore_plan;
pub mod retention;
pub mod snapshot;
pub mod store;

use std::time::SystemTime;

use serde::Serialize;

use crate::view::ClusterView;
pub use gate::{GateOptions, Refusal, RefusalKind};
pub use plan::{Role, Step};

/// What maintenance makes of one view: whether the cluster may be touched now, why not, and the order a rolling
/// operation would take. The `maintenance` key of the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Readiness {
    /// Every member may be touched, one at a time, without risking quorum.
    pub ready: bool,
    /// Why not, each naming the member when it is about one.
    pub refusals: Vec<Refusal>,
    /// Followers (learners first) then the leader: the order of a rolling defragmentation.
    pub order: Vec<Step>,
    /// When the view this was judged from was polled.
    #[serde(serialize_with = "crate::units::serialize_unix_seconds")]
    pub view_polled_at: SystemTime,
}

/// Judges one view at `now`.
pub fn assess(view: &ClusterView, now: SystemTime, options: &GateOptions) -> Readiness {
    let refusals = gate::refusals(view, now, options);
    Readiness {
        ready: refusals.is_empty(),
        refusals,
        order: plan::rolling_order(view),
        view_polled_at: view.polled_at,
    }
}
