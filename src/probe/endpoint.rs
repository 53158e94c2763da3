//! The probe of one endpoint: Status, the health read, alarms, the member list and the member's /metrics, all at
//! once, each bounded by the command timeout, so a frozen member costs one timeout and never more.

use std::sync::atomic::Ordering;
use std::time::Instant;

use etcd_client::Client;

use crate::etcd::connect::{ConnectError, Connector};
use crate::etcd::endpoint::Endpoint;
use crate::etcd::member_metrics::MemberMetrics;
use crate::settings::MetricsSource;
use crate::view::{
    FailureKind, Member, Outcome, ProbeError, ProbeMetrics, ProbeResult, StatusInfo,
};

use super::calls::{Calls, grpc_calls, needs_new_token};
use super::convert::{self, status_info};
use super::deadline::Deadline;
use super::diagnose::{annotate, diagnose_within, is_vague};
use super::progress::ProbeProgress;
use super::reading::{LastReading, read_metrics, remember_reading};

/// What a probe leaves behind for the next one: the connection, and the raw histograms to diff against.
#[derive(Default)]
pub struct EndpointMemory {
    pub client: Option<Client>,
    /// The last reading of the member's /metrics, to diff the next one against.
    pub reading: LastReading,
    /// What the last reading gave, shown again on polls that do not read /metrics (vitals interval).
    pub summary: Option<Outcome<ProbeMetrics>>,
    /// The last verdict on our credentials, kept while they cannot be tried (no leader to authenticate with).
    pub auth_error: Option<ProbeError>,
}

/// What a poll asks of a probe beyond the health calls.
#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    pub metrics: MetricsSource,
    /// False when the vitals interval has not elapsed: the last reading of /metrics stands.
    pub read_metrics: bool,
    /// Keep the connection for the next poll (a daemon); a one-shot probe closes it at once, so that probing
    /// thousands of endpoints does not hold thousands of connections until the end.
    pub keep_connection: bool,
}

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
///
/// One bound for the whole probe, connection and credentials fallback included: dial + command timeout. Every
/// call, retry, token renewal and /metrics read ends by it, so a frozen member costs one timeout and never more.
///
/// The phases (connecting, the calls, a /metrics read, a TLS diagnosis) are boxed: a future holds room for its
/// largest phase, and every probe of a poll is alive at once, so boxing keeps each probe at the size of the phase
/// it is in (measured: 71 KB a probe unboxed, at 1,000 endpoints).
pub async fn probe(
    connector: &Connector,
    endpoint: &Endpoint,
    memory: &mut EndpointMemory,
    options: &ProbeOptions,
    progress: &ProbeProgress,
) -> ProbeResult {
    let started = Instant::now();
    let whole = started + connector.settings().dial_timeout + connector.settings().command_timeout;
    // The member renders ~150 KB for /metrics, the slowest part of a probe: ask for it while gRPC connects,
    // unless its URL depends on the member's name.
    let early = options.read_metrics && !options.metrics.needs_member_name();
    let metrics_fetch = async {
        if !early {
            return None;
        }
        let url = options.metrics.url_for(endpoint, None);
        let result = read_metrics(
            connector,
            &url,
            Deadline::from_now_within(connector.settings().command_timeout, whole),
        )
        .await;
        tracing::debug!(%endpoint, ms = started.elapsed().as_secs_f64() * 1e3, "metrics read");
        Some(result)
    };
    let cached = memory.client.take();
    let grpc = connect_and_call(connector, endpoint, cached, whole, progress);
    let (grpc, early_metrics) = tokio::join!(grpc, metrics_fetch);
    let Answered {
        client,
        standing,
        deadline,
        calls,
    } = match grpc {
        Ok(answered) => answered,
        Err(e) => {
            let e = annotate(
                connector,
                Box::pin(diagnose_within(connector, endpoint, e, whole)).await,
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
    let anonymous = !matches!(standing, Credentials::Accepted);
    let auth_error = credentials_verdict(standing, health.without_user, &memory.auth_error);
    memory.auth_error = auth_error.clone();
    let (status, health) = match (status, health.outcome) {
        (Err(e), Err(_)) if is_vague(&e.message) => {
            let e = annotate(
                connector,
                Box::pin(diagnose_within(connector, endpoint, e, whole)).await,
            );
            (Err(e.clone()), Err(e))
        }
        (status, health) => (
            status.map_err(|e| annotate(connector, e)),
            health.map_err(|e| annotate(connector, e)),
        ),
    };
    let status = status.and_then(|s| status_info(&s));
    let alarms = alarms.map(|a| convert::alarms(&a));
    let members = members.map(|m| convert::members(&m));

    let reading = match early_metrics {
        Some(r) => Some(r),
        None if options.read_metrics => {
            let name = member_name(&status, &members);
            Some(
                Box::pin(late_metrics(
                    connector,
                    endpoint,
                    &options.metrics,
                    name,
                    deadline,
                ))
                .await,
            )
        }
        None => None,
    };
    let metrics = match reading {
        Some(result) => {
            let summary = result.map(|now| remember_reading(&mut memory.reading, now));
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
    if (status.is_ok() || health.is_ok()) && !anonymous && options.keep_connection {
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

/// A member that answered the connection, and what it said to the calls.
struct Answered {
    client: Client,
    standing: Credentials,
    /// The calls' deadline, which a /metrics read that waited for them also ends by.
    deadline: Deadline,
    calls: Calls,
}

/// Connects (or reuses the connection) and makes the calls, all by `whole`.
async fn connect_and_call(
    connector: &Connector,
    endpoint: &Endpoint,
    cached: Option<Client>,
    whole: Instant,
    progress: &ProbeProgress,
) -> Result<Answered, ProbeError> {
    let (client, standing) = match cached {
        Some(c) => (c, Credentials::Accepted),
        None => tokio::time::timeout_at(whole.into(), Box::pin(connect(connector, endpoint)))
            .await
            .map_err(|_| {
                ProbeError::new(
                    FailureKind::Timeout,
                    format!(
                        "no connection within {}",
                        humantime::format_duration(connector.settings().dial_timeout)
                    ),
                )
            })??,
    };
    // The member answered the connection: the silence clock starts from here.
    progress.alive();
    let deadline = Deadline::from_now_within(connector.settings().command_timeout, whole);
    let mut calls = Box::pin(grpc_calls(&client, deadline, progress)).await;
    // etcd-client renews an invalid token by itself; a token minted before a change of users or roles is
    // "old" instead: authenticate again and ask once more, within the same deadline.
    if needs_new_token(&calls)
        && matches!(
            tokio::time::timeout_at(deadline.at.into(), client.refresh_token()).await,
            Ok(Ok(_))
        )
    {
        calls = Box::pin(grpc_calls(&client, deadline, progress)).await;
    }
    progress.calls_done.store(true, Ordering::Relaxed);
    tracing::debug!(%endpoint, left_ms = deadline.at.saturating_duration_since(Instant::now()).as_secs_f64() * 1e3, "gRPC calls done");
    Ok(Answered {
        client,
        standing,
        deadline,
        calls,
    })
}

/// What to say about our credentials after the calls.
fn credentials_verdict(
    standing: Credentials,
    served_without_user: bool,
    last: &Option<ProbeError>,
) -> Option<ProbeError> {
    match standing {
        Credentials::Refused(e) => Some(e),
        Credentials::Untried => last.clone(),
        // Served, but only because etcd checks the user after the read: we have no user the cluster accepts.
        Credentials::Accepted => served_without_user.then(|| {
            ProbeError::new(
                FailureKind::Auth,
                "the cluster has authentication enabled and no user was given (--user, or user and \
                 password_file)",
            )
        }),
    }
}

/// The member's own name, from its Status and the member list it returned.
fn member_name(status: &Outcome<StatusInfo>, members: &Outcome<Vec<Member>>) -> Option<String> {
    let id = status.as_ref().ok()?.member_id;
    let list = members.as_ref().ok()?;
    list.iter().find(|m| m.id == id).map(|m| m.name.clone())
}

/// /metrics at a URL that needs the member's name, read once the calls told it, by the calls' deadline.
async fn late_metrics(
    connector: &Connector,
    endpoint: &Endpoint,
    source: &MetricsSource,
    name: Option<String>,
    deadline: Deadline,
) -> Outcome<MemberMetrics> {
    match name {
        // The URL needs the member's name, and the member did not say it: do not spend a second timeout on a
        // member that has just spent one.
        None => Err(ProbeError::new(
            FailureKind::Other,
            "not read: the member's name, which the metrics URL needs, is unknown",
        )),
        Some(name) => {
            read_metrics(connector, &source.url_for(endpoint, Some(&name)), deadline).await
        }
    }
}
