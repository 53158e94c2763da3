//! The poller of one cluster: which endpoints to probe (as given, or every member's client URLs), probing them
//! all at once, and building the view. It keeps connections and last metrics between polls.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::join_all;

use crate::etcd::connect::Connector;
use crate::etcd::endpoint::Endpoint;
use crate::probe::endpoint::{EndpointMemory, MetricsSource, ProbeOptions, probe};
use crate::view::{self, ClusterView, Member, ProbeResult, Thresholds};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Discovery {
    /// Probe the configured endpoints, exactly.
    #[default]
    Static,
    /// Use the configured endpoints to find the members, then probe every member's client URLs
    /// (as `etcdctl --cluster` does).
    Members,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    pub discovery: Discovery,
    pub metrics: MetricsSource,
    /// Read members' /metrics (quota, peer round trips, vitals) at most this often; every poll when `None`.
    pub vitals_interval: Option<Duration>,
    pub thresholds: Thresholds,
}

impl Target {
    /// A target with the defaults: static discovery, metrics on the client URL at every poll.
    pub fn new(name: &str, endpoints: Vec<Endpoint>) -> Self {
        Target {
            name: name.to_string(),
            endpoints,
            discovery: Discovery::Static,
            metrics: MetricsSource::ClientUrl,
            vitals_interval: None,
            thresholds: Thresholds::default(),
        }
    }
}

pub struct ClusterPoller {
    target: Target,
    connector: Arc<Connector>,
    memory: HashMap<Endpoint, EndpointMemory>,
    /// Endpoints found through the member list at the last poll, probed straight away next time.
    discovered: Vec<Endpoint>,
    last_metrics_read: Option<Instant>,
}

impl ClusterPoller {
    pub fn new(target: Target, connector: Arc<Connector>) -> Self {
        ClusterPoller {
            target,
            connector,
            memory: HashMap::new(),
            discovered: Vec::new(),
            last_metrics_read: None,
        }
    }

    async fn probe_all(
        &mut self,
        endpoints: &[Endpoint],
        options: &ProbeOptions,
    ) -> Vec<ProbeResult> {
        let connector = &self.connector;
        let mut work = Vec::with_capacity(endpoints.len());
        for ep in endpoints {
            let mut memory = self.memory.remove(ep).unwrap_or_default();
            work.push(async move {
                let result = probe(connector, ep, &mut memory, options).await;
                (ep.clone(), memory, result)
            });
        }
        let mut results = Vec::with_capacity(endpoints.len());
        for (ep, memory, result) in join_all(work).await {
            self.memory.insert(ep, memory);
            results.push(result);
        }
        results
    }

    /// One poll: probe, discover, and merge into a view.
    pub async fn poll(&mut self) -> ClusterView {
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
        };
        let mut first_round: Vec<Endpoint> = self.target.endpoints.clone();
        for ep in &self.discovered {
            if !first_round.contains(ep) {
                first_round.push(ep.clone());
            }
        }
        let mut probes = self.probe_all(&first_round, &options).await;

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
                probes.extend(self.probe_all(&missing, &fresh).await);
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
        view::build_with(
            &self.target.name,
            &probes,
            SystemTime::now(),
            &self.target.thresholds,
        )
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
