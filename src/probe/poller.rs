//! The poller of one cluster: which endpoints to probe (as given, or every member's client URLs), probing them
//! all at once, and building the view. It keeps connections and last metrics between polls.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::etcd::connect::Connector;
use crate::etcd::endpoint::Endpoint;
use crate::id::Id;
use crate::probe::ProbeProgress;
use crate::probe::endpoint::{EndpointMemory, ProbeOptions, probe};
use crate::settings::{Discovery, Target};
use crate::view::{
    self, Alarm, BuildContext, ClusterView, EndpointHealth, FailureKind, Member, ProbeError,
    ProbeResult,
};

pub struct ClusterPoller {
    target: Target,
    connector: Arc<Connector>,
    memory: HashMap<Endpoint, EndpointMemory>,
    /// Each endpoint's last result, shown (marked stale) while its next probe runs.
    last: HashMap<Endpoint, ProbeResult>,
    /// The last member list read, kept for when no member answers.
    known_members: Vec<Member>,
    /// The last alarm list read, kept for when no member can answer it (no leader).
    known_alarms: Option<Vec<Alarm>>,
    /// The leader at the last poll, when the sentinel could not reach it but members that served reads named it.
    unreachable_leader: Option<Id>,
    /// Endpoints found through the member list at the last poll, probed straight away next time.
    discovered: Vec<Endpoint>,
    last_metrics_read: Option<Instant>,
    /// Keep each endpoint's connection for the next poll (a daemon), or close it when its probe ends (one shot).
    keep_connections: bool,
    /// The last consistency check's result, carried into every view built (the check runs on its own schedule).
    consistency: Option<crate::view::Consistency>,
}

/// How many endpoints of one poll are probed at once (see `probe_all`).
const MAX_PROBES_IN_FLIGHT: usize = 256;

/// How a daemon sees a poll before it ends: a view each time an endpoint's probe finishes. And how long a member
/// may say nothing at all before its probe is given up (shown down) instead of waiting the command timeout out:
/// a member that answers Status keeps its full command timeout for slow reads (Status is read every 200 ms while
/// they wait), one that is frozen or cut off is shown down after `unresponsive_after`, and does not hold up the
/// next poll of the others.
pub struct Progress<'a> {
    pub unresponsive_after: Duration,
    pub publish: &'a mut (dyn FnMut(ClusterView) + Send),
}

impl ClusterPoller {
    pub fn new(target: Target, connector: Arc<Connector>) -> Self {
        ClusterPoller {
            target,
            connector,
            memory: HashMap::new(),
            last: HashMap::new(),
            known_members: Vec::new(),
            known_alarms: None,
            unreachable_leader: None,
            discovered: Vec::new(),
            last_metrics_read: None,
            keep_connections: true,
            consistency: None,
        }
    }

    /// Takes over what a previous poller of this cluster knew (after a reload restarted it): the membership,
    /// alarms and an unreachable leader survive, so a reload in the middle of an outage forgets nothing.
    pub fn resume_from(&mut self, view: &ClusterView) {
        self.remember(view);
        // The last consistency check stays shown until the restarted cluster's first check replaces it.
        self.consistency = view.consistency.clone();
        // And the members found through the member list: a reload while the configured seed is down must go on
        // probing the members, not start again from a seed that does not answer.
        if self.target.discovery == Discovery::Members {
            self.discovered = client_endpoints(&view.members);
        }
    }

    /// The result of the latest consistency check, shown by every view built from now on.
    pub fn set_consistency(&mut self, consistency: Option<crate::view::Consistency>) {
        self.consistency = consistency;
    }

    /// For a one-shot probe (`status`): connections are closed as soon as each probe ends.
    pub fn one_shot(mut self) -> Self {
        self.keep_connections = false;
        self
    }

    /// The member an endpoint answered as at the last poll (or before).
    fn member_of(&self, endpoint: &Endpoint) -> Option<Id> {
        let last = self.last.get(endpoint)?;
        last.status
            .as_ref()
            .ok()
            .map(|s| s.member_id)
            .or(last.known_member_id)
    }

    fn remember(&mut self, view: &ClusterView) {
        if !view.members.is_empty() {
            self.known_members = view.members.clone();
        }
        if !view.alarms_stale {
            self.known_alarms = Some(view.alarms.clone());
        }
        self.unreachable_leader = view.leader_id.filter(|l| {
            view.endpoints
                .iter()
                .any(|e| e.member_id == Some(*l) && e.state == EndpointHealth::Unreachable)
        });
    }

    fn build(&self, probes: &[ProbeResult]) -> ClusterView {
        let context = BuildContext {
            thresholds: self.target.thresholds,
            known_members: self.known_members.clone(),
            known_alarms: self.known_alarms.clone(),
            unreachable_leader: self.unreachable_leader,
            consistency: self.consistency.clone(),
        };
        view::build_with(&self.target.name, probes, SystemTime::now(), &context)
    }

    /// The view while some probes still run: finished endpoints as found; the others as they were at the last
    /// poll (stale), with the Status they gave in this poll if any. `None` while an endpoint has nothing to show
    /// yet (its first probe).
    fn interim(
        &self,
        endpoints: &[Endpoint],
        done: &HashMap<usize, ProbeResult>,
        progress: &[ProbeProgress],
    ) -> Option<ClusterView> {
        let mut probes = Vec::with_capacity(endpoints.len());
        // With member discovery, seeds that are no member's client URL only serve to find the members: the
        // final view drops them, so the interim ones do too.
        let seed_only = |ep: &Endpoint| {
            self.target.discovery == Discovery::Members
                && !self.discovered.is_empty()
                && !self.discovered.contains(ep)
        };
        for (i, ep) in endpoints.iter().enumerate() {
            if seed_only(ep) {
                continue;
            }
            if let Some(p) = done.get(&i) {
                probes.push(p.clone());
            } else {
                let mut previous = self.last.get(ep)?.clone();
                previous.stale = true;
                // What the member said in this poll so far (its leader, during an election) beats the last poll.
                if let Some(status) = progress[i].latest_status() {
                    previous.status = Ok(status);
                }
                probes.push(previous);
            }
        }
        Some(self.build(&probes))
    }

    async fn probe_all(
        &mut self,
        endpoints: &[Endpoint],
        options: &ProbeOptions,
        mut progress: Option<&mut Progress<'_>>,
    ) -> Vec<ProbeResult> {
        let connector = self.connector.clone();
        let flags: Vec<ProbeProgress> =
            endpoints.iter().map(|_| ProbeProgress::default()).collect();
        let unresponsive_after = progress.as_ref().map(|p| p.unresponsive_after);
        let mut memories: Vec<EndpointMemory> = endpoints
            .iter()
            .map(|ep| self.memory.remove(ep).unwrap_or_default())
            .collect();
        let start = |i: usize, mut memory: EndpointMemory| {
            let ep = &endpoints[i];
            let connector = &connector;
            let flag = &flags[i];
            async move {
                let probing = probe(connector, ep, &mut memory, options, flag);
                let result = match unresponsive_after {
                    None => probing.await,
                    Some(after) => tokio::select! {
                        r = probing => r,
                        silence = silent_for(flag, after) => {
                            // The probe and its connection are dropped: the next poll dials afresh.
                            let error = ProbeError::new(
                                FailureKind::Timeout,
                                format!(
                                    "no answer for {} (unresponsive_after)",
                                    humantime::format_duration(after)
                                ),
                            );
                            ProbeResult::unreachable(ep.clone(), error, silence.as_secs_f64())
                        }
                    },
                };
                (i, memory, result)
            }
        };
        // At most MAX_PROBES_IN_FLIGHT at once: every probe in flight holds its buffers, so a poll of thousands
        // of endpoints costs that many probes' memory at its peak, not thousands.
        let mut work = FuturesUnordered::new();
        let mut next = 0;
        while next < endpoints.len() && next < MAX_PROBES_IN_FLIGHT {
            work.push(start(next, std::mem::take(&mut memories[next])));
            next += 1;
        }
        let mut done: HashMap<usize, ProbeResult> = HashMap::new();
        while let Some((i, memory, mut result)) = work.next().await {
            if next < endpoints.len() {
                work.push(start(next, std::mem::take(&mut memories[next])));
                next += 1;
            }
            self.memory.insert(endpoints[i].clone(), memory);
            result.known_member_id = self.member_of(&endpoints[i]);
            done.insert(i, result);
            if done.len() < endpoints.len()
                && let Some(p) = progress.as_deref_mut()
                && let Some(view) = self.interim(endpoints, &done, &flags)
            {
                (p.publish)(view);
            }
        }
        drop(work);
        let mut results: Vec<(usize, ProbeResult)> = done.into_iter().collect();
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }

    /// One poll: probe, discover, and merge into a view.
    pub async fn poll(&mut self) -> ClusterView {
        self.poll_with(None).await
    }

    /// One poll, showing its progress (see [`Progress`]) before the final view is returned.
    pub async fn poll_with(&mut self, progress: Option<&mut Progress<'_>>) -> ClusterView {
        let now = Instant::now();
        let read_metrics = match (self.target.vitals_interval, self.last_metrics_read) {
            (Some(every), Some(last)) => now.duration_since(last) >= every,
            _ => true,
        };
        if read_metrics {
            self.last_metrics_read = Some(now);
        }
        let options = ProbeOptions {
            metrics: self.target.metrics.clone(),
            read_metrics,
            keep_connection: self.keep_connections,
        };
        let mut first_round: Vec<Endpoint> = self.target.endpoints.clone();
        for ep in &self.discovered {
            if !first_round.contains(ep) {
                first_round.push(ep.clone());
            }
        }
        let mut probes = self.probe_all(&first_round, &options, progress).await;

        if self.target.discovery == Discovery::Members {
            let member_urls = client_endpoints(&view::membership(&probes).members);
            if !member_urls.is_empty() {
                let missing: Vec<Endpoint> = member_urls
                    .iter()
                    .filter(|ep| !first_round.contains(ep))
                    .cloned()
                    .collect();
                // Endpoints new to us have nothing to show yet: read their metrics whatever the interval.
                let fresh = ProbeOptions {
                    read_metrics: true,
                    ..options.clone()
                };
                probes.extend(self.probe_all(&missing, &fresh, None).await);
                // Seeds that are no member's client URL only served to find the members.
                let wanted: BTreeSet<&Endpoint> = member_urls.iter().collect();
                probes.retain(|p| wanted.contains(&p.endpoint));
                probes.sort_by_key(|p| member_urls.iter().position(|e| *e == p.endpoint));
                self.discovered = member_urls;
            }
        }
        // Forget connections of endpoints no longer probed (members removed, config changed).
        let probed: BTreeSet<&Endpoint> = probes.iter().map(|p| &p.endpoint).collect();
        self.memory.retain(|ep, _| probed.contains(ep));
        let view = self.build(&probes);
        self.remember(&view);
        self.last = probes
            .into_iter()
            .map(|p| (p.endpoint.clone(), p))
            .collect();
        view
    }
}

/// Returns how long the member had been silent once that reaches `after`; never while it answers.
async fn silent_for(progress: &ProbeProgress, after: Duration) -> Duration {
    loop {
        match progress.silent_for() {
            Some(silence) if silence >= after => return silence,
            Some(silence) => tokio::time::sleep(after - silence).await,
            // Connecting (bounded by the dial timeout), or the calls are over (what remains is bounded too).
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Every parseable client URL of every member, in member-list order.
fn client_endpoints(members: &[Member]) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for m in members {
        for url in &m.client_urls {
            match Endpoint::parse(url) {
                Ok(ep) if !out.contains(&ep) => out.push(ep),
                Ok(_) => {}
                Err(e) => tracing::warn!(member = %m.display_name(), "skipping client URL: {e}"),
            }
        }
    }
    out
}
