//! The probe of one endpoint: Status, the health read, alarms, the member list and the member's /metrics, all at
//! once, each bounded by the command timeout, so a frozen member costs one timeout and never more.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmType, Client};
use tokio::sync::watch;

use crate::etcd::connect::{ConnectError, Connector};
use crate::etcd::endpoint::Endpoint;
use crate::etcd::error as failure;
use crate::etcd::member_metrics::{self, MemberMetrics};
use crate::histogram::Histogram;
use crate::id::Id;
use crate::settings::MetricsSource;
use crate::view::{
    Alarm, FailureKind, Member, Outcome, PeerRtt, ProbeError, ProbeMetrics, ProbeResult, StatusInfo,
};
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
    /// The last verdict on our credentials, kept while they cannot be tried (no leader to authenticate with).
    pub auth_error: Option<ProbeError>,
}

/// The time one probe's calls may take, computed once when the connection is ready: every call of the probe,
/// retries, token renewal and a late /metrics read included, ends by it.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    budget: Duration,
}

impl Deadline {
    fn from_now(budget: Duration) -> Self {
        Deadline {
            at: Instant::now() + budget,
            budget,
        }
    }

    /// `budget` from now, but never past `limit` (the whole probe's bound: dial + command timeout).
    fn from_now_within(budget: Duration, limit: Instant) -> Self {
        Deadline {
            at: (Instant::now() + budget).min(limit),
            budget,
        }
    }

    fn timed_out(&self) -> ProbeError {
        ProbeError::new(
            FailureKind::Timeout,
            format!(
                "timed out after {}",
                humantime::format_duration(self.budget)
            ),
        )
    }

    async fn bound<T, F>(&self, call: F) -> Outcome<T>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout_at(self.at.into(), call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(failure::from_etcd(&e)),
            Err(_) => Err(self.timed_out()),
        }
    }
}

/// How a probe tells its poller what the member said so far, while the rest of the probe (a read that waits
/// for an election, say) may still take a while: its latest Status, and when it last answered anything.
#[derive(Debug)]
pub struct ProbeProgress {
    latest: Mutex<Option<StatusInfo>>,
    /// `None` while connecting: that is bounded by the dial timeout, and a slow link is not silence.
    last_answer: Mutex<Option<Instant>>,
    /// The gRPC calls are over: whatever still runs (a /metrics read) is not a sign of life or death.
    calls_done: AtomicBool,
}

impl Default for ProbeProgress {
    fn default() -> Self {
        ProbeProgress {
            latest: Mutex::new(None),
            last_answer: Mutex::new(None),
            calls_done: AtomicBool::new(false),
        }
    }
}

impl ProbeProgress {
    /// The member's most recent Status in this probe.
    pub fn latest_status(&self) -> Option<StatusInfo> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How long the member has said nothing since the connection was made or its last Status; `None` while
    /// connecting and once the calls are over.
    pub fn silent_for(&self) -> Option<Duration> {
        if self.calls_done.load(Ordering::Relaxed) {
            return None;
        }
        self.last_answer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }

    /// A sign of life that is not a Status: the connection was made.
    fn alive(&self) {
        *self.last_answer.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn record(&self, status: &etcd_client::StatusResponse) -> Option<StatusInfo> {
        let info = status_info(status).ok()?;
        self.alive();
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(info.clone());
        Some(info)
    }
}

fn status_info(s: &etcd_client::StatusResponse) -> Outcome<StatusInfo> {
    let header = s
        .header()
        .ok_or_else(|| ProbeError::new(FailureKind::Other, "Status response without header"))?;
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
}

struct Calls {
    status: Outcome<etcd_client::StatusResponse>,
    health: HealthRead,
    alarms: Outcome<etcd_client::AlarmResponse>,
    members: Outcome<etcd_client::MemberListResponse>,
}

fn needs_new_token(calls: &Calls) -> bool {
    let stale = |e: &ProbeError| {
        e.message.contains("revision of auth store is old")
            || e.message.contains("invalid auth token")
    };
    [
        calls.status.as_ref().err(),
        calls.health.outcome.as_ref().err(),
        calls.alarms.as_ref().err(),
        calls.members.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    .any(stale)
}

/// How long to wait before asking again while the cluster elects a leader (etcd's client waits about as long).
const ELECTION_RETRY: Duration = Duration::from_millis(100);

/// How a health read was served.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Served {
    Plainly,
    /// etcd served the read, then refused us the key because we gave no user: the cluster has authentication
    /// enabled and we have no credentials for it (or ours were refused).
    WithoutUser,
}

/// One `etcdctl endpoint health` read: a linearizable range read of key "health".
async fn read_health(kv: &mut etcd_client::KvClient) -> Result<Served, etcd_client::Error> {
    match kv.get("health", None).await {
        // Permission to a key is checked after the read was served, so a refusal still proves the member served
        // a linearizable read.
        Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::PermissionDenied => {
            Ok(Served::Plainly)
        }
        Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("user name is empty") => {
            Ok(Served::WithoutUser)
        }
        // A learner refuses linearizable reads ("rpc not supported for learner"); what can be asked of it is
        // that it serves a local read.
        Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("learner") => kv
            .get(
                "health",
                Some(etcd_client::GetOptions::new().with_serializable()),
            )
            .await
            .map(|_| Served::Plainly),
        other => other.map(|_| Served::Plainly),
    }
}

/// What the health read found: its outcome, whether it waited out an election, and whether it was served to
/// a client without a user.
struct HealthRead {
    outcome: Outcome<()>,
    election_seen: bool,
    without_user: bool,
}

/// A call that needs a leader (the health read, and AlarmList, which etcd proposes through raft), asked again while
/// the cluster has none ("leader changed", "no leader"), as etcd's own client does, and asked afresh when the
/// member reports another leader: etcd holds a request that waited on a dead leader until its own request
/// timeout, seconds after the election, while the same request sent again is answered at once. Ends by the
/// deadline. Also says whether an election was seen.
async fn until_led<T, F, Fut>(
    deadline: Deadline,
    moved: &watch::Receiver<u64>,
    mut call: F,
) -> (Outcome<T>, bool)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let mut election: Option<ProbeError> = None;
    let mut seen = false;
    loop {
        let mut moved = moved.clone();
        moved.mark_unchanged();
        tokio::select! {
            r = deadline.bound(call()) => match r {
                Err(e) if e.kind == FailureKind::NoLeader => {
                    tracing::debug!(error = %e, "no leader: asking again");
                    seen = true;
                    election = Some(e);
                    let retry_at = (Instant::now() + ELECTION_RETRY).min(deadline.at);
                    tokio::time::sleep_until(retry_at.into()).await;
                }
                Err(e) if e.kind == FailureKind::Timeout && seen => break,
                other => return (other, seen),
            },
            Ok(()) = moved.changed() => {
                tracing::debug!("the member reports another leader: asking again");
                seen = true;
            }
        }
        if Instant::now() >= deadline.at {
            break;
        }
    }
    let last = election.map_or_else(
        || "waited on the leader that was replaced".to_string(),
        |e| e.message,
    );
    let error = ProbeError::new(
        FailureKind::NoLeader,
        format!(
            "{last} (not served within {}: leader election)",
            humantime::format_duration(deadline.budget)
        ),
    );
    (Err(error), true)
}

/// How often Status is read while other calls wait, to notice a change of leader.
const LEADER_WATCH: Duration = Duration::from_millis(200);

/// Reads Status every `LEADER_WATCH` while other calls wait, records it in `progress`, and bumps `moved` each time
/// the member reports another leader or term. Never returns: dropped when the calls are done.
async fn watch_leader(
    status: &mut etcd_client::MaintenanceClient,
    deadline: Deadline,
    progress: &ProbeProgress,
    moved: &watch::Sender<u64>,
) {
    loop {
        tokio::time::sleep(LEADER_WATCH).await;
        if Instant::now() >= deadline.at {
            return std::future::pending().await;
        }
        // Compared with the last Status of this probe, the first one included (read before the calls waited).
        let before = progress.latest_status().map(|s| (s.leader, s.raft_term));
        if let Ok(Some(s)) = deadline
            .bound(status.status())
            .await
            .map(|r| progress.record(&r))
            && before.is_some_and(|b| b != (s.leader, s.raft_term))
        {
            tracing::debug!(leader = %s.leader, term = s.raft_term, "leader moved");
            moved.send_modify(|n| *n += 1);
        }
    }
}

/// Status, the health read, AlarmList and MemberList, all at once, all ending by the deadline.
async fn grpc_calls(client: &Client, deadline: Deadline, progress: &ProbeProgress) -> Calls {
    let mut maintenance = client.maintenance_client();
    let mut watcher = client.maintenance_client();
    let kv = client.kv_client();
    let alarm_client = client.maintenance_client();
    let mut cluster = client.cluster_client();
    let (moved_tx, moved) = watch::channel(0u64);
    let status = async {
        let status = deadline.bound(maintenance.status()).await;
        if let Ok(s) = &status {
            progress.record(s);
        }
        status
    };
    let health = async {
        let (outcome, election_seen) = until_led(deadline, &moved, || {
            let mut kv = kv.clone();
            async move { read_health(&mut kv).await }
        })
        .await;
        let without_user = matches!(outcome, Ok(Served::WithoutUser));
        HealthRead {
            outcome: outcome.map(|_| ()),
            election_seen,
            without_user,
        }
    };
    let alarms = async {
        until_led(deadline, &moved, || {
            let mut a = alarm_client.clone();
            async move { a.alarm(AlarmAction::Get, AlarmType::None, None).await }
        })
        .await
        .0
    };
    let calls = async {
        tokio::join!(
            status,
            health,
            alarms,
            deadline.bound(cluster.member_list())
        )
    };
    tokio::pin!(calls);
    // The watch ends only with the calls (it waits forever past the deadline, by which they have ended).
    let (status, health, alarms, members) = tokio::select! {
        done = &mut calls => done,
        () = watch_leader(&mut watcher, deadline, progress, &moved_tx) => calls.await,
    };
    // The read waited out an election: Status, read before it, names the old leader. Ask again.
    let status = match (status, health.election_seen) {
        (Ok(old), true) => Ok(deadline
            .bound(client.maintenance_client().status())
            .await
            .unwrap_or(old)),
        (status, _) => status,
    };
    Calls {
        status,
        health,
        alarms,
        members,
    }
}

/// What a poll asks of a probe beyond the health calls.
#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    pub metrics: MetricsSource,
    /// False when the vitals interval has not elapsed: the last reading of /metrics stands.
    pub read_metrics: bool,
}

async fn read_metrics(
    connector: &Connector,
    url: &str,
    deadline: Option<Deadline>,
) -> Outcome<MemberMetrics> {
    let deadline =
        deadline.unwrap_or_else(|| Deadline::from_now(connector.settings().command_timeout));
    let text = match tokio::time::timeout_at(deadline.at.into(), connector.fetch_metrics(url)).await
    {
        Ok(r) => r.map_err(|e| ProbeError::new(FailureKind::Other, e))?,
        Err(_) => {
            return Err(ProbeError::new(
                FailureKind::Timeout,
                format!("GET {url}: timed out"),
            ));
        }
    };
    member_metrics::parse(&text)
        .map_err(|e| ProbeError::new(FailureKind::Other, format!("{url}: {e}")))
}

/// Connects with the configured credentials; if they are refused, connects without any, so that what etcd tells
/// anyone (Status, alarms, members, whether a read is served) is still known. Returns the refusal beside.
/// How the probe's connection stands with our credentials.
enum Credentials {
    /// Authenticated (or none configured).
    Accepted,
    /// Refused: the probe goes on without them.
    Refused(ProbeError),
    /// Could not be tried: authenticating needs a leader, and there is none right now. The probe goes on
    /// without them for this poll; the last verdict on them stands.
    Untried,
}

/// Connects with the configured credentials; if they are refused, or cannot be tried for want of a leader,
/// connects without any, so that what etcd tells anyone (Status, alarms, members, whether a read is served) is
/// still known.
async fn connect(
    connector: &Connector,
    endpoint: &Endpoint,
) -> Result<(Client, Credentials), ProbeError> {
    match connector.connect(endpoint).await {
        Ok(client) => Ok((client, Credentials::Accepted)),
        Err(e @ ConnectError::Auth { .. }) => {
            let failure = e.to_failure();
            let standing = match failure.kind {
                FailureKind::Auth => Credentials::Refused(failure.clone()),
                FailureKind::NoLeader => Credentials::Untried,
                _ => return Err(failure),
            };
            match connector.connect_anonymously(endpoint).await {
                Ok(client) => Ok((client, standing)),
                Err(_) => Err(failure),
            }
        }
        Err(e) => Err(e.to_failure()),
    }
}

/// Probes one endpoint. `memory` carries the connection and last metrics between polls; pass a fresh one for
/// a one-shot probe (peer round-trip times and latencies are then cumulative since the member started).
pub async fn probe(
    connector: &Connector,
    endpoint: &Endpoint,
    memory: &mut EndpointMemory,
    options: &ProbeOptions,
    progress: &ProbeProgress,
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
        let result = read_metrics(connector, &options.metrics.url_for(endpoint, None), None).await;
        tracing::debug!(%endpoint, ms = started.elapsed().as_secs_f64() * 1e3, "metrics read");
        Some(result)
    };
    // One bound for the whole probe, connection and credentials fallback included: dial + command timeout.
    let whole = started + connector.settings().dial_timeout + timeout;
    let cached = memory.client.take();
    let grpc = async {
        let (client, auth_error) = match cached {
            Some(c) => (c, Credentials::Accepted),
            None => {
                let connecting = connect(connector, endpoint);
                let (client, refused) = tokio::time::timeout_at(whole.into(), connecting)
                    .await
                    .map_err(|_| {
                    ProbeError::new(
                        FailureKind::Timeout,
                        format!(
                            "no connection within {}",
                            humantime::format_duration(connector.settings().dial_timeout)
                        ),
                    )
                })??;
                (client, refused)
            }
        };
        // The member answered the connection: the silence clock starts from here.
        progress.alive();
        let deadline = Deadline::from_now_within(timeout, whole);
        let mut calls = grpc_calls(&client, deadline, progress).await;
        // etcd-client renews an invalid token by itself; a token minted before a change of users or roles is
        // "old" instead: authenticate again and ask once more, within the same deadline.
        if needs_new_token(&calls)
            && matches!(
                tokio::time::timeout_at(deadline.at.into(), client.refresh_token()).await,
                Ok(Ok(_))
            )
        {
            calls = grpc_calls(&client, deadline, progress).await;
        }
        progress.calls_done.store(true, Ordering::Relaxed);
        tracing::debug!(%endpoint, ms = started.elapsed().as_secs_f64() * 1e3, "gRPC calls done");
        Ok::<_, ProbeError>((client, auth_error, deadline, calls))
    };
    let (grpc, early_metrics) = tokio::join!(grpc, metrics_fetch);
    let (client, auth_error, deadline, calls) = match grpc {
        Ok(done) => done,
        Err(e) => {
            let e = annotate(
                connector,
                diagnose_within(connector, endpoint, e, whole).await,
            );
            // Keep the last reading: when the member answers again, a restart in between is recognised and
            // yields no interval values, instead of passing "since start" off as "last interval".
            memory.summary = None;
            return ProbeResult::unreachable(endpoint.clone(), e, started.elapsed().as_secs_f64());
        }
    };

    let Calls {
        status,
        health,
        alarms,
        members,
    } = calls;
    let anonymous = !matches!(auth_error, Credentials::Accepted);
    let auth_error = match auth_error {
        Credentials::Refused(e) => Some(e),
        Credentials::Untried => memory.auth_error.clone(),
        // Served, but only because etcd checks the user after the read: we have no user the cluster accepts.
        Credentials::Accepted => health.without_user.then(|| {
            ProbeError::new(
                FailureKind::Auth,
                "the cluster has authentication enabled and no user was given (--user, or user and \
                 password_file)",
            )
        }),
    };
    memory.auth_error = auth_error.clone();
    let (status, health) = match (status, health.outcome) {
        (Err(e), Err(_)) if is_vague(&e.message) => {
            let e = annotate(
                connector,
                diagnose_within(connector, endpoint, e, whole).await,
            );
            (Err(e.clone()), Err(e))
        }
        (status, health) => (
            status.map_err(|e| annotate(connector, e)),
            health.map_err(|e| annotate(connector, e)),
        ),
    };
    let status = status.and_then(|s| status_info(&s));
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
            Some(match name {
                // The URL needs the member's name, and the member did not say it: do not spend a second
                // timeout on a member that has just spent one.
                None => Err(ProbeError::new(
                    FailureKind::Other,
                    "not read: the member's name, which the metrics URL needs, is unknown",
                )),
                Some(name) => {
                    read_metrics(
                        connector,
                        &options.metrics.url_for(endpoint, Some(&name)),
                        Some(deadline),
                    )
                    .await
                }
            })
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
            .unwrap_or_else(|| Err(ProbeError::new(FailureKind::Other, "not read yet"))),
    };

    // Keep the connection unless it is broken: a member that answered nothing is dialled afresh next time. One
    // made without credentials is not kept either, so that the next poll tries the credentials again.
    if (status.is_ok() || health.is_ok()) && !anonymous {
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
        auth_error,
        stale: false,
        known_member_id: None,
    }
}

/// Adds the hint for a server's TLS alert, which depends on whether we presented a client certificate.
fn annotate(connector: &Connector, error: ProbeError) -> ProbeError {
    if !error.message.contains("received fatal alert") {
        return error;
    }
    match connector.tls_hint(&error.message) {
        // The TLS diagnosis already added it.
        Some(hint) if error.message.contains(hint) => error,
        Some(hint) => failure::from_message(format!("{} ({hint})", error.message)),
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

/// The TLS diagnosis, if the probe's time allows it; else the error as it is.
async fn diagnose_within(
    connector: &Connector,
    endpoint: &Endpoint,
    error: ProbeError,
    whole: Instant,
) -> ProbeError {
    let fallback = error.clone();
    tokio::time::timeout_at(whole.into(), with_tls_diagnosis(connector, endpoint, error))
        .await
        .unwrap_or(fallback)
}

/// Replaces a vague transport error on a TLS endpoint with what the server's TLS alert says, if it said one.
async fn with_tls_diagnosis(
    connector: &Connector,
    endpoint: &Endpoint,
    error: ProbeError,
) -> ProbeError {
    if !is_vague(&error.message) {
        return error;
    }
    if endpoint.scheme() == crate::etcd::endpoint::Scheme::Http {
        // A TLS member hangs up on a plain-text client without a word.
        return ProbeError::new(
            error.kind,
            format!(
                "{} (the member cut the connection: if it expects TLS, use https:// and --cacert)",
                error.message
            ),
        );
    }
    match connector.diagnose_tls(endpoint).await {
        Some(diagnosis) => failure::from_message(diagnosis),
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
