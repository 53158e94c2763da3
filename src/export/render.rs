//! The CLI's rendering of a view: one table with what etcdctl needs four for, or the JSON contract.

use comfy_table::{Cell, Color, ContentArrangement, Table};

use crate::units::{human_bytes, human_seconds};
use crate::view::{ClusterView, EndpointHealth, EndpointState};

/// No borders, one line under the header: compact, and still easy to read in a terminal or a log.
const HEADER_LINE_ONLY: &str = "     ══            ";

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn role(e: &EndpointState) -> &'static str {
    match (e.is_leader, e.is_learner, e.raft_term.is_some()) {
        (true, _, _) => "leader",
        (_, true, _) => "learner",
        (_, _, true) => "follower",
        _ => "-",
    }
}

fn db_cell(e: &EndpointState) -> String {
    match (e.db_size_bytes, e.db_size_in_use_bytes) {
        (Some(size), Some(used)) => format!("{} / {}", human_bytes(size), human_bytes(used)),
        _ => "-".into(),
    }
}

fn quota_cell(e: &EndpointState) -> String {
    match (e.db_quota_bytes, e.db_quota_usage) {
        (Some(q), Some(u)) => format!("{:.0}% of {}", u * 100.0, human_bytes(q)),
        (Some(q), None) => human_bytes(q),
        _ => "-".into(),
    }
}

/// WAL fsync and backend commit p99, the two numbers that tell a slow disk.
fn disk_cell(e: &EndpointState) -> String {
    let v = e.vitals.as_ref();
    let fsync = v
        .and_then(|v| v.wal_fsync_seconds)
        .and_then(|l| l.p99)
        .map(human_seconds);
    let commit = v
        .and_then(|v| v.backend_commit_seconds)
        .and_then(|l| l.p99)
        .map(human_seconds);
    match (fsync, commit) {
        (None, None) => "-".into(),
        (f, c) => format!("{} / {}", opt(f), opt(c)),
    }
}

fn peer_rtt_cell(e: &EndpointState) -> String {
    let worst = e
        .peer_rtt_seconds
        .values()
        .map(|r| r.p99)
        .fold(None, |acc: Option<f64>, v| {
            Some(acc.map_or(v, |a| a.max(v)))
        });
    opt(worst.map(human_seconds))
}

/// The table: a verdict line, one row per endpoint, then the warnings.
pub fn table(view: &ClusterView, color: bool) -> String {
    let mut out = String::new();
    let verdict = if view.healthy { "HEALTHY" } else { "UNHEALTHY" };
    let leader = view.leader().map_or_else(
        || {
            view.leader_id
                .map_or_else(|| "none".to_string(), |id| id.to_string())
        },
        |m| format!("{} ({})", m.display_name(), m.id),
    );
    let q = &view.quorum;
    let quorum = if view.members.is_empty() {
        "membership unknown (no member answered)".to_string()
    } else {
        let tolerance = q.tolerance_text();
        let stale = if view.members_stale {
            " (member list as last read)"
        } else {
            ""
        };
        format!(
            "quorum {}/{} voting members healthy (needs {}), failure tolerance {tolerance}{stale}",
            q.healthy_voting_members, q.voting_members, q.quorum_size
        )
    };
    out.push_str(&format!(
        "cluster {} ({}): {verdict}\nleader {leader}, {quorum}\n",
        view.cluster,
        opt(view.cluster_id),
    ));

    let mut table = Table::new();
    table
        .load_preset(HEADER_LINE_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(vec![
            "ENDPOINT",
            "MEMBER",
            "HEALTH",
            "ROLE",
            "TERM",
            "INDEX",
            "APPLIED",
            "LAG",
            "DB SIZE / IN USE",
            "QUOTA",
            "VERSION",
            "ALARMS",
            "PEER RTT p99",
            "PROBE",
            "ERROR",
        ]);
    if !color {
        table.force_no_tty();
    }
    for e in &view.endpoints {
        let health = match e.state {
            EndpointHealth::Healthy => Cell::new("healthy").fg(Color::Green),
            EndpointHealth::NoLeader => Cell::new("healthy, no leader").fg(Color::Yellow),
            EndpointHealth::AuthFailed => Cell::new("AUTH FAILED").fg(Color::Red),
            EndpointHealth::Unreachable => Cell::new("DOWN").fg(Color::Red),
            EndpointHealth::Unhealthy | EndpointHealth::Foreign => {
                Cell::new("UNHEALTHY").fg(Color::Red)
            }
        };
        let member = match (&e.member_name, e.member_id) {
            (Some(name), Some(id)) => format!("{name}\n{id}"),
            (None, Some(id)) => id.to_string(),
            _ => "-".into(),
        };
        table.add_row(vec![
            Cell::new(&e.endpoint),
            Cell::new(member),
            health,
            Cell::new(role(e)),
            Cell::new(opt(e.raft_term)),
            Cell::new(opt(e.raft_index)),
            Cell::new(opt(e.raft_applied_index)),
            Cell::new(opt(e.raft_index_lag)),
            Cell::new(db_cell(e)),
            Cell::new(quota_cell(e)),
            Cell::new(opt(e.version.as_deref())),
            Cell::new(if e.alarms.is_empty() {
                "-".to_string()
            } else {
                e.alarms.join(",")
            }),
            Cell::new(disk_cell(e)),
            Cell::new(peer_rtt_cell(e)),
            Cell::new(human_seconds(e.probe_seconds)),
            Cell::new(e.error.as_deref().unwrap_or("")),
        ]);
    }
    out.push_str(&table.to_string());
    out.push('\n');
    if !view.warnings.is_empty() {
        out.push_str("warnings:\n");
        for w in &view.warnings {
            out.push_str(&format!("  [{}] {}\n", w.kind.as_str(), w.message));
        }
    }
    out
}

pub fn json(view: &ClusterView) -> String {
    // Serialising plain data with string keys cannot fail.
    serde_json::to_string_pretty(view).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
