//! The probe of one endpoint: Status, the health read, alarms, the member list and the member's /metrics, all at
//! once, each bounded by the command timeout, so a frozen member costs one timeout and never more.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmType, Client};

use crate::etcd::connect::{Connector, describe_etcd_error};
use crate::etcd::endpoint::Endpoint;
use crate::etcd::member_metrics::{self, MemberMetrics};
use crate::histogram::Histogram;
use crate::id::Id;
use crate::view::{Alarm, Member, Outcome, PeerRtt, ProbeMetrics, ProbeResult, StatusInfo};
use crate::vitals;

/// What a probe leaves behind for the next one: the connection, and the raw histograms to diff against.
#[derive(Default)]
pub struct EndpointMemory {
    pub client: Option<Client>,
    pub metrics: Option<MemberMetrics>,
    /// When `metrics` was read, for rates.
    pub metrics_at: Option<Instant>,
    /// The last round-trip estimates, kept while the member measures nothing new.
    pub peer_rtt: BTreeMap<Id, PeerRtt>,
    /// What the last reading gave, shown again on polls that do not read /metrics (vitals interval).
    pub summary: Option<Outcome<ProbeMetrics>>,
}

async fn bounded<T, F>(timeout: Duration, call: F) -> Outcome<T>
where
    F: Future<Output = Result<T, etcd_client::Error>>,
{
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(describe_etcd_error(&e)),
        Err(_) => Err(format!(
            "timed out after {}",
            humantime::format_duration(timeout)
        )),
    }
}

type Calls = (
    Outcome<etcd_client::StatusResponse>,
    Outcome<()>,
    Outcome<etcd_client::AlarmResponse>,
    Outcome<etcd_client::MemberListResponse>,
);

fn needs_new_token(calls: &Calls) -> bool {
    let stale = |e: &String| {
        e.contains("revision of auth store is old") || e.contains("invalid auth token")
    };
    [
        calls.0.as_ref().err(),
        calls.1.as_ref().err(),
        calls.2.as_ref().err(),
        calls.3.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    .any(stale)
}

/// Status, the health read, AlarmList and MemberList, all at once.
async fn grpc_calls(client: &Client, timeout: Duration) -> Calls {
    let mut maintenance = client.maintenance_client();
    let mut kv = client.kv_client();
    let mut alarm_client = client.maintenance_client();
    let mut cluster = client.cluster_client();
    tokio::join!(
        bounded(timeout, maintenance.status()),
        // `etcdctl endpoint health` semantics: permission denied still proves the member served a linearizable
        // read, so it counts as healthy.
        bounded(timeout, async {
            match kv.get("health", None).await {
                Err(etcd_client::Error::GRpcStatus(s))
                    if s.code() == tonic::Code::PermissionDenied =>
                {
                    Ok(())
                }
                // A learner refuses linearizable reads ("rpc not supported for learner"); what can be asked of
                // it is that it serves a local read.
                Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("learner") => kv
                    .get(
                        "health",
                        Some(etcd_client::GetOptions::new().with_serializable()),
                    )
                    .await
                    .map(|_| ()),
                other => other.map(|_| ()),
            }
        }),
        bounded(
            timeout,
            alarm_client.alarm(AlarmAction::Get, AlarmType::None, None)
        ),
        bounded(timeout, cluster.member_list()),
    )
}

/// Where a member's /metrics are read.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum MetricsSource {
    /// `<client URL>/metrics`, which every etcd member serves.
    #[default]
    ClientUrl,
    /// A URL template with `{scheme}`, `{host}`, `{port}` (of the client endpoint) and `{name}` (the member's),
    /// e.g. `http://{host}:2381/metrics` for kubeadm's `--listen-metrics-urls`.
    Template(String),
    /// A URL per member name; members not listed use their client URL.
    PerMember(BTreeMap<String, String>),
}

impl MetricsSource {
    /// Whether the URL depends on the member's name, which is only known once gRPC answered.
    fn needs_member_name(&self) -> bool {
        match self {
            MetricsSource::ClientUrl => false,
            MetricsSource::Template(t) => t.contains("{name}"),
            MetricsSource::PerMember(_) => true,
        }
    }

    pub fn url_for(&self, endpoint: &Endpoint, member_name: Option<&str>) -> String {
        let default = format!("{}/metrics", endpoint.url());
        match self {
            MetricsSource::ClientUrl => default,
            MetricsSource::Template(t) => t
                .replace("{scheme}", endpoint.scheme().as_str())
                .replace("{host}", endpoint.host())
                .replace("{port}", &endpoint.port().to_string())
                .replace("{name}", member_name.unwrap_or("")),
            MetricsSource::PerMember(map) => member_name
                .and_then(|n| map.get(n))
                .cloned()
                .unwrap_or(default),
        }
    }
}

/// What a poll asks of a probe beyond the health calls.
#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    pub metrics: MetricsSource,
    /// False when the vitals interval has not elapsed: the last reading of /metrics stands.
    pub read_metrics: bool,
}

async fn read_metrics(connector: &Connector, url: &str) -> Outcome<MemberMetrics> {
    let timeout = connector.settings().command_timeout;
    let text = match tokio::time::timeout(timeout, connector.fetch_metrics(url)).await {
        Ok(r) => r?,
        Err(_) => return Err(format!("GET {url}: timed out")),
    };
    member_metrics::parse(&text).map_err(|e| format!("{url}: {e}"))
}

/// Probes one endpoint. `memory` carries the connection and last metrics between polls; pass a fresh one for
/// a one-shot probe (peer round-trip times and latencies are then cumulative since the member started).
pub async fn probe(
    connector: &Connector,
    endpoint: &Endpoint,
    memory: &mut EndpointMemory,
    options: &ProbeOptions,
) -> ProbeResult {
    let started = Instant::now();
    let timeout = connector.settings().command_timeout;
    // The member renders ~150 KB for /metrics, the slowest part of a probe: ask for it while gRPC connects,
    // unless its URL depends on the member's name.
    let early = options.read_metrics && !options.metrics.needs_member_name();
    let metrics_fetch = async {
        if !early {
            return None;
        }
        let result = read_metrics(connector, &options.metrics.url_for(endpoint, None)).await;
        tracing::debug!(%endpoint, ms = started.elapsed().as_secs_f64() * 1e3, "metrics read");
        Some(result)
    };
    let cached = memory.client.take();
    let grpc = async {
        let client = match cached {
            Some(c) => c,
            None => connector
                .connect(endpoint)
                .await
                .map_err(|e| e.to_string())?,
        };
        let mut calls = grpc_calls(&client, timeout).await;
        // etcd-client renews an invalid token by itself; a token minted before a change of users or roles is
        // "old" instead: authenticate again and ask once more.
        if needs_new_token(&calls) && client.refresh_token().await.is_ok() {
            calls = grpc_calls(&client, timeout).await;
        }
        tracing::debug!(%endpoint, ms = started.elapsed().as_secs_f64() * 1e3, "gRPC calls done");
        Ok::<_, String>((client, calls))
    };
    let (grpc, early_metrics) = tokio::join!(grpc, metrics_fetch);
    let (client, (status, health, alarms, members)) = match grpc {
        Ok(done) => done,
        Err(e) => {
            let e = annotate(connector, with_tls_diagnosis(connector, endpoint, e).await);
            // Keep the last reading: when the member answers again, a restart in between is recognised and
            // yields no interval values, instead of passing "since start" off as "last interval".
            memory.summary = None;
            return ProbeResult::unreachable(endpoint.clone(), e, started.elapsed().as_secs_f64());
        }
    };

    let (status, health) = match (status, health) {
        (Err(e), Err(_)) if is_vague(&e) => {
            let e = annotate(connector, with_tls_diagnosis(connector, endpoint, e).await);
            (Err(e.clone()), Err(e))
        }
        (status, health) => (
            status.map_err(|e| annotate(connector, e)),
            health.map_err(|e| annotate(connector, e)),
        ),
    };
    let status = status.and_then(|s| {
        let header = s
            .header()
            .ok_or_else(|| "Status response without header".to_string())?;
        Ok(StatusInfo {
            member_id: Id(header.member_id()),
            cluster_id: Id(header.cluster_id()),
            leader: Id(s.leader()),
            raft_term: s.raft_term(),
            raft_index: s.raft_index(),
            raft_applied_index: s.raft_applied_index(),
            db_size: s.db_size().max(0) as u64,
            db_size_in_use: s.raft_used_db_size().max(0) as u64,
            db_quota: Some(s.db_size_quota()).filter(|q| *q > 0).map(|q| q as u64),
            version: s.version().to_string(),
            is_learner: s.is_learner(),
            errors: s.errors().to_vec(),
        })
    });
    let alarms = alarms.map(|a| {
        a.alarms()
            .iter()
            .filter(|m| m.alarm() != AlarmType::None)
            .map(|m| Alarm {
                member_id: Id(m.member_id()),
                kind: m.alarm().as_str_name().to_string(),
            })
            .collect()
    });
    let members: Outcome<Vec<Member>> = members.map(|list| {
        list.members()
            .iter()
            .map(|m| {
                Member::new(
                    Id(m.id()),
                    m.name().to_string(),
                    m.peer_urls().to_vec(),
                    m.client_urls().to_vec(),
                    m.is_learner(),
                )
            })
            .collect()
    });

    let reading = match early_metrics {
        Some(r) => Some(r),
        None if options.read_metrics => {
            let name = status.as_ref().ok().and_then(|s| {
                let list = members.as_ref().ok()?;
                list.iter()
                    .find(|m| m.id == s.member_id)
                    .map(|m| m.name.clone())
            });
            Some(
                read_metrics(
                    connector,
                    &options.metrics.url_for(endpoint, name.as_deref()),
                )
                .await,
            )
        }
        None => None,
    };
    let metrics = match reading {
        Some(result) => {
            let summary = result.map(|now| remember_reading(memory, now));
            memory.summary = Some(summary.clone());
            summary
        }
        // Not this poll: the last reading stands.
        None => memory
            .summary
            .clone()
            .unwrap_or_else(|| Err("not read yet".to_string())),
    };

    // Keep the connection unless it is broken: a member that answered nothing is dialled afresh next time.
    if status.is_ok() || health.is_ok() {
        memory.client = Some(client);
    }
    ProbeResult {
        endpoint: endpoint.clone(),
        status,
        health,
        alarms,
        members,
        metrics,
        probe_seconds: started.elapsed().as_secs_f64(),
    }
}

/// Adds the hint for a server's TLS alert, which depends on whether we presented a client certificate.
fn annotate(connector: &Connector, error: String) -> String {
    if !error.contains("received fatal alert") {
        return error;
    }
    match connector.tls_hint(&error) {
        // The TLS diagnosis already added it.
        Some(hint) if error.contains(hint) => error,
        Some(hint) => format!("{error} ({hint})"),
        None => error,
    }
}

/// A transport failure that hides its cause: the connection was just cut.
fn is_vague(error: &str) -> bool {
    [
        "connection closed",
        "broken pipe",
        "connection reset",
        "operation was canceled",
    ]
    .iter()
    .any(|v| error.contains(v))
}

/// Replaces a vague transport error on a TLS endpoint with what the server's TLS alert says, if it said one.
async fn with_tls_diagnosis(connector: &Connector, endpoint: &Endpoint, error: String) -> String {
    if !is_vague(&error) {
        return error;
    }
    if endpoint.scheme() == crate::etcd::endpoint::Scheme::Http {
        // A TLS member hangs up on a plain-text client without a word.
        return format!(
            "{error} (the member cut the connection: if it expects TLS, use https:// and --cacert)"
        );
    }
    match connector.diagnose_tls(endpoint).await {
        Some(diagnosis) => diagnosis,
        None => error,
    }
}

/// Turns a new reading into what the view shows, against the previous reading, and keeps it for next time.
fn remember_reading(memory: &mut EndpointMemory, now: MemberMetrics) -> ProbeMetrics {
    let taken = Instant::now();
    let previous = memory
        .metrics
        .as_ref()
        .zip(memory.metrics_at)
        .map(|(m, at)| (m, taken.duration_since(at).as_secs_f64()));
    let rtt = peer_rtt(&now, previous.map(|(m, _)| m), &memory.peer_rtt);
    let vitals = vitals::derive(&now, previous);
    memory.peer_rtt = rtt.clone();
    let summary = ProbeMetrics {
        quota_backend_bytes: now.quota_backend_bytes(),
        peer_rtt: rtt,
        vitals,
    };
    memory.metrics = Some(now);
    memory.metrics_at = Some(taken);
    summary
}

/// Peer round-trip time: over the last interval when a previous reading exists, else since the member started.
///
/// etcd measures peer round trips only every few seconds, so an interval may hold no new observation: then the
/// last estimate stands. A counter reset (the member restarted) between two readings gives nothing for this poll
/// rather than a wrong figure.
fn peer_rtt(
    now: &MemberMetrics,
    previous: Option<&MemberMetrics>,
    last: &BTreeMap<Id, PeerRtt>,
) -> BTreeMap<Id, PeerRtt> {
    let mut out = BTreeMap::new();
    for (peer, hist) in &now.peer_rtt {
        let window: Option<Histogram> = match previous.and_then(|p| p.peer_rtt.get(peer)) {
            None => Some(hist.clone()),
            Some(before) => hist.since(before),
        };
        let Some(window) = window else {
            continue; // reset
        };
        let count = hist.count() as u64;
        let sum = now.peer_rtt_sum.get(peer).copied().unwrap_or(0.0);
        match (window.quantile(0.5), window.quantile(0.99)) {
            (Some(p50), Some(p99)) => {
                out.insert(
                    *peer,
                    PeerRtt {
                        p50,
                        p99,
                        count,
                        sum,
                    },
                );
            }
            _ => {
                if let Some(kept) = last.get(peer) {
                    out.insert(
                        *peer,
                        PeerRtt {
                            count,
                            sum,
                            ..*kept
                        },
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(peer: u64, buckets: &[(f64, f64)]) -> MemberMetrics {
        let mut m = MemberMetrics::default();
        m.peer_rtt
            .insert(Id(peer), Histogram::new(buckets.to_vec()));
        m
    }

    #[test]
    fn metrics_urls_from_templates_and_maps() {
        let ep = Endpoint::parse("https://10.0.0.1:2379").unwrap();
        assert_eq!(
            MetricsSource::ClientUrl.url_for(&ep, None),
            "https://10.0.0.1:2379/metrics"
        );
        let t = MetricsSource::Template(
            "http://{host}:2381/metrics?m={name}&p={port}&s={scheme}".into(),
        );
        assert!(t.needs_member_name());
        assert_eq!(
            t.url_for(&ep, Some("cp-1")),
            "http://10.0.0.1:2381/metrics?m=cp-1&p=2379&s=https"
        );
        let v6 = Endpoint::parse("[::1]:2379").unwrap();
        let kubeadm = MetricsSource::Template("http://{host}:2381/metrics".into());
        assert!(!kubeadm.needs_member_name());
        assert_eq!(kubeadm.url_for(&v6, None), "http://[::1]:2381/metrics");
        let map = MetricsSource::PerMember(
            [("cp-1".to_string(), "http://x:1/metrics".to_string())].into(),
        );
        assert_eq!(map.url_for(&ep, Some("cp-1")), "http://x:1/metrics");
        assert_eq!(
            map.url_for(&ep, Some("cp-2")),
            "https://10.0.0.1:2379/metrics",
            "unlisted: client URL"
        );
    }

    #[test]
    fn peer_rtt_per_interval_keeps_the_last_estimate_and_drops_on_reset() {
        let first = metrics(7, &[(0.001, 4.0), (0.01, 4.0), (f64::INFINITY, 4.0)]);
        let cumulative = peer_rtt(&first, None, &BTreeMap::new());
        assert!(cumulative[&Id(7)].p99 <= 0.001);

        // Two slow heartbeats in the interval: the interval's estimate, not the cumulative one.
        let slow = metrics(7, &[(0.001, 4.0), (0.01, 6.0), (f64::INFINITY, 6.0)]);
        let interval = peer_rtt(&slow, Some(&first), &cumulative);
        assert!(interval[&Id(7)].p50 > 0.001);

        // Nothing measured since: the last estimate stands.
        let quiet = peer_rtt(&slow, Some(&slow), &interval);
        assert_eq!(quiet[&Id(7)].p99, interval[&Id(7)].p99);
        assert_eq!(quiet[&Id(7)].count, 6);

        // Restarted member: counts went down, no figure this time.
        let restarted = metrics(7, &[(0.001, 1.0), (0.01, 1.0), (f64::INFINITY, 1.0)]);
        assert!(peer_rtt(&restarted, Some(&slow), &interval).is_empty());
    }
}
