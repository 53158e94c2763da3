//! The status table's columns. Each is defined once, its header beside the function that fills its cells, so a
//! header cannot drift away from its values again (it did: 15 headers over 16 cells shifted half the table).

use comfy_table::Color;

use crate::units::{human_bytes, human_seconds};
use crate::view::{EndpointHealth, EndpointState};

/// When a column is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shown {
    /// In every table, never left out for width: ENDPOINT and HEALTH say which row and what verdict; ERROR moves
    /// under the table when there is no room for it.
    Always,
    /// In the default table, until the width runs out: the lowest rank is left out first.
    Default { drop_rank: u8 },
    /// With `-w wide` only.
    WideOnly,
}

pub(super) struct Column {
    pub header: &'static str,
    pub shown: Shown,
    /// Free text that may wrap at word boundaries, or move under the table (ERROR). Every other cell is one
    /// short line, printed whole at its natural width.
    pub wraps: bool,
    pub cell: fn(&EndpointState) -> String,
    /// The cell's colour, used only when colour is on.
    pub color: fn(&EndpointState) -> Option<Color>,
}

impl Column {
    /// The cell's text for one endpoint, safe to print: member names and errors come from the members, and a
    /// control character in them (an escape sequence) would drive the operator's terminal.
    pub fn text(&self, e: &EndpointState) -> String {
        super::wrap::printable(&(self.cell)(e))
    }

    const fn new(header: &'static str, shown: Shown, cell: fn(&EndpointState) -> String) -> Self {
        Column {
            header,
            shown,
            wraps: false,
            cell,
            color: |_| None,
        }
    }

    const fn colored(mut self, color: fn(&EndpointState) -> Option<Color>) -> Self {
        self.color = color;
        self
    }

    const fn wrapping(mut self) -> Self {
        self.wraps = true;
        self
    }

    pub fn in_default(&self) -> bool {
        self.shown != Shown::WideOnly
    }

    pub fn drop_rank(&self) -> Option<u8> {
        match self.shown {
            Shown::Default { drop_rank } => Some(drop_rank),
            Shown::Always | Shown::WideOnly => None,
        }
    }
}

const fn default(drop_rank: u8) -> Shown {
    Shown::Default { drop_rank }
}

/// Every column, in the order of the wide table; the default table keeps this order too. The drop ranks say
/// what an operator misses least when the terminal is narrow: the raft index (LAG tells whether it is behind),
/// then the DB size (QUOTA% tells whether it matters), the role (the verdict line names the leader), the
/// member name (the endpoint names the row), the lag, and the quota use last.
pub(super) static COLUMNS: [Column; 20] = [
    Column::new("ENDPOINT", Shown::Always, |e| e.endpoint.clone()),
    Column::new("MEMBER", default(3), |e| opt(e.member_name.as_deref())),
    Column::new("MEMBER ID", Shown::WideOnly, |e| opt(e.member_id)),
    Column::new("HEALTH", Shown::Always, |e| health(e.state).0.to_string())
        .colored(|e| Some(health(e.state).1)),
    Column::new("ROLE", default(2), |e| role(e).to_string()),
    Column::new("TERM", Shown::WideOnly, |e| opt(e.raft_term)),
    Column::new("INDEX", default(0), |e| opt(e.raft_index)),
    Column::new("APPLIED", Shown::WideOnly, |e| opt(e.raft_applied_index)),
    Column::new("LAG", default(4), |e| opt(e.raft_index_lag)),
    Column::new("DB SIZE", default(1), |e| {
        opt(e.db_size_bytes.map(human_bytes))
    }),
    Column::new("IN USE", Shown::WideOnly, |e| {
        opt(e.db_size_in_use_bytes.map(human_bytes))
    }),
    Column::new("QUOTA", Shown::WideOnly, |e| {
        opt(e.db_quota_bytes.map(human_bytes))
    }),
    // df's "Use%": the DB size as a share of the quota, where etcd raises NOSPACE at 100%.
    Column::new("QUOTA%", default(5), |e| {
        opt(e.db_quota_usage.map(|u| format!("{:.0}%", u * 100.0)))
    }),
    Column::new("VERSION", Shown::WideOnly, |e| opt(e.version.as_deref())),
    Column::new("ALARMS", Shown::WideOnly, |e| {
        if e.alarms.is_empty() {
            "-".to_string()
        } else {
            e.alarms.join(",")
        }
    }),
    // WAL fsync and backend commit p99: the two numbers that tell a slow disk.
    Column::new("WAL FSYNC p99", Shown::WideOnly, |e| {
        latency(e, |v| v.wal_fsync_seconds)
    }),
    Column::new("BACKEND COMMIT p99", Shown::WideOnly, |e| {
        latency(e, |v| v.backend_commit_seconds)
    }),
    Column::new("PEER RTT p99", Shown::WideOnly, worst_peer_rtt),
    Column::new("PROBE", Shown::WideOnly, |e| human_seconds(e.probe_seconds)),
    Column::new("ERROR", Shown::Always, |e| {
        e.error.clone().unwrap_or_default()
    })
    .wrapping(),
];

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The endpoint's state in a word or two, and its colour. Short: it is in every table, however narrow.
fn health(state: EndpointHealth) -> (&'static str, Color) {
    match state {
        EndpointHealth::Healthy => ("healthy", Color::Green),
        // The member is fine; the cluster has no leader (the verdict line and the warnings say so).
        EndpointHealth::NoLeader => ("no leader", Color::Yellow),
        EndpointHealth::AuthFailed => ("AUTH FAILED", Color::Red),
        EndpointHealth::Unreachable => ("DOWN", Color::Red),
        EndpointHealth::Unhealthy | EndpointHealth::Foreign => ("UNHEALTHY", Color::Red),
    }
}

fn role(e: &EndpointState) -> &'static str {
    match (e.is_leader, e.is_learner, e.raft_term.is_some()) {
        (true, _, _) => "leader",
        (_, true, _) => "learner",
        (_, _, true) => "follower",
        _ => "-",
    }
}

fn latency(
    e: &EndpointState,
    which: fn(&crate::vitals::Vitals) -> Option<crate::vitals::LatencySummary>,
) -> String {
    opt(e
        .vitals
        .as_ref()
        .and_then(which)
        .and_then(|l| l.p99)
        .map(human_seconds))
}

/// The slowest peer's p99: one slow link is what an operator looks for.
fn worst_peer_rtt(e: &EndpointState) -> String {
    let worst = e
        .peer_rtt_seconds
        .values()
        .map(|r| r.p99)
        .fold(None, |acc: Option<f64>, v| {
            Some(acc.map_or(v, |a| a.max(v)))
        });
    opt(worst.map(human_seconds))
}
