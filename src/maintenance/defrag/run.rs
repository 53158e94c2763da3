//! The rolling run (I/O). Every member is preceded by a fresh poll that the gate, the leader check and the rule
//! judge; each stop condition is checked only between members, so a kill switch, SIGTERM or a lost lock never cuts
//! a member's defragmentation short (etcd would carry on with it regardless).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client, CompactionOptions};
use tokio_util::sync::CancellationToken;

use super::decide::{self, Decision};
use super::{
    CompactionReport, DefragOptions, DefragReport, LeaderMove, MemberAction, MemberReport,
    RunResult, plan,
};
use crate::etcd::connect::Connector;
use crate::etcd::endpoint::Endpoint;
use crate::etcd::error::describe_etcd_error;
use crate::id::Id;
use crate::maintenance::gate;
use crate::maintenance::lock::{LockError, MaintenanceLock, Owner};
use crate::maintenance::plan::{Role, snapshot_source};
use crate::maintenance::snapshot::{self, SaveRequest};
use crate::probe::poller::ClusterPoller;
use crate::units::human_bytes;
use crate::view::{ClusterView, EndpointHealth};

/// What a run tells its caller as it goes (metrics, events, a progress line).
pub enum Progress<'a> {
    /// The lock is held and the first member is next.
    Started(&'a DefragReport),
    MemberStarted(&'a MemberReport),
    MemberFinished(&'a MemberReport),
}

/// The connections and the cluster a run works on.
pub struct Cluster<'a> {
    pub poller: &'a mut ClusterPoller,
    pub connector: &'a Arc<Connector>,
}

/// How long a wait for a member (catch-up, a new leader) pauses before its `n`th poll again: a member usually
/// catches up within milliseconds of its defragmentation, and a poll of a healthy cluster takes a few, so the
/// first rechecks come quickly and later ones settle at 100 ms.
fn recheck(n: u32) -> Duration {
    Duration::from_millis(match n {
        0 => 5,
        1 => 20,
        2 => 50,
        _ => 100,
    })
}

/// One rolling defragmentation, start to end. The report says how it went, member by member; its `result` is
/// never `success` unless every member was defragmented or skipped by the rule.
pub async fn run(
    cluster: Cluster<'_>,
    options: &DefragOptions,
    cancel: &CancellationToken,
    observe: &(dyn Fn(Progress<'_>) + Send + Sync),
) -> DefragReport {
    let started = Instant::now();
    let view = cluster.poller.poll().await;
    let mut report = plan(&view, SystemTime::now(), options);
    if report.result == RunResult::Refused || options.dry_run {
        report.seconds = started.elapsed().as_secs_f64();
        return report;
    }
    let clients = healthy_clients(&view, cluster.connector).await;
    let owner = Owner::me(&format!("defrag of {}", view.cluster));
    let refuse = |report: &mut DefragReport, message: String| {
        report.result = RunResult::Refused;
        report.message = Some(message);
        report.seconds = started.elapsed().as_secs_f64();
    };
    // A stop asked for while the lock is waited for is a stop before the first member.
    let acquired = tokio::select! {
        acquired = MaintenanceLock::acquire(clients, &options.lock, owner) => acquired,
        () = cancel.cancelled() => {
            refuse(&mut report, "not started: asked to stop while waiting for the lock".into());
            return report;
        }
    };
    let lock = match acquired {
        Ok(lock) => Some(lock),
        // A full cluster takes no writes, a lock's included, from anyone: defragmentation is what frees it, but
        // without a lock nothing keeps two runners apart. Only when the operator said this runner is the only
        // one does the run go on without it, and say so. A lock taken before the cluster filled up is still
        // honoured (`Held`).
        Err(e @ LockError::NoSpace { .. }) if options.nospace_without_lock => {
            tracing::warn!(
                cluster = view.cluster,
                "{e}: defragmenting without the lock (nospace_without_lock)"
            );
            report.lock = Some(format!("not held: {e}"));
            None
        }
        Err(e @ LockError::NoSpace { .. }) => {
            refuse(
                &mut report,
                format!(
                    "not started: {e}; if no other runner (daemon replica, CronJob) can act on this cluster \
                     now, run with --nospace-without-lock (nospace_without_lock = true)"
                ),
            );
            return report;
        }
        Err(e) => {
            refuse(&mut report, format!("not started: {e}"));
            return report;
        }
    };
    if let Some(lock) = &lock {
        report.lock = Some(format!("held: {}", lock.key()));
    }
    observe(Progress::Started(&report));
    let mut run = Run {
        cluster,
        options,
        cancel,
        observe,
        lock: lock.as_ref(),
        report: &mut report,
        fresh: None,
    };
    run.steps(view).await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    report.reclaimed_bytes = report
        .members
        .iter()
        .filter_map(|m| m.reclaimed_bytes)
        .sum();
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// Connections to every healthy member, the leader last (the lock's keep-alives go to the first that answers,
/// and a follower is blocked by its defragmentation no longer than the leader).
pub async fn healthy_clients(view: &ClusterView, connector: &Connector) -> Vec<Client> {
    let mut rows: Vec<_> = view
        .endpoints
        .iter()
        // A learner serves neither the lock nor the lease API.
        .filter(|e| e.state == EndpointHealth::Healthy && !view.is_foreign(e) && !e.is_learner)
        .collect();
    rows.sort_by_key(|e| e.is_leader);
    let mut clients = Vec::new();
    for row in rows {
        if let Ok(ep) = Endpoint::parse(&row.endpoint)
            && let Ok(c) = connector.connect(&ep).await
        {
            clients.push(c);
        }
    }
    clients
}

struct Run<'a, 'b> {
    cluster: Cluster<'b>,
    options: &'a DefragOptions,
    cancel: &'a CancellationToken,
    observe: &'a (dyn Fn(Progress<'_>) + Send + Sync),
    lock: Option<&'a MaintenanceLock>,
    report: &'a mut DefragReport,
    /// The poll that showed the last member caught up, when nothing was waited for since: the next member's
    /// checks judge it rather than poll again a moment later.
    fresh: Option<Arc<ClusterView>>,
}

/// Why the run ends before a member.
struct Stop {
    result: RunResult,
    message: String,
}

fn stop(result: RunResult, message: String) -> Stop {
    Stop { result, message }
}

impl Run<'_, '_> {
    async fn poll(&mut self) -> Arc<ClusterView> {
        Arc::new(self.cluster.poller.poll().await)
    }

    async fn connect(&self, endpoint: &str) -> Result<Client, String> {
        let ep = Endpoint::parse(endpoint).map_err(|e| format!("{endpoint}: {e}"))?;
        self.cluster
            .connector
            .connect(&ep)
            .await
            .map_err(|e| format!("{endpoint}: {e}"))
    }

    fn command_timeout(&self) -> Duration {
        self.cluster.connector.settings().command_timeout
    }

    async fn steps(&mut self, first: ClusterView) {
        let mut expected_leader = first.leader_id;
        let age = SystemTime::now()
            .duration_since(first.polled_at)
            .unwrap_or(Duration::MAX);
        if age < Duration::from_secs(1) {
            // Only the lock was taken, at once, since the first poll: it serves the first member's checks.
            self.fresh = Some(Arc::new(first));
        }
        // The snapshot and the compaction come before the first member that is actually defragmented (the rule
        // is judged afresh before each, so which one is first is known only then).
        let mut prepared = self.options.snapshot_before.is_none()
            && self.options.compaction_keep.is_none()
            && self.options.compaction_window.is_none();
        let mut done: Vec<Id> = Vec::new();
        for i in 0..self.report.members.len() {
            if self.report.members[i].action == MemberAction::Skipped
                && self.report.members[i].values.is_none()
            {
                // No figures (no endpoint reaches it, or excluded): nothing will change before its turn.
                continue;
            }
            let mut view = match self.check_before(i, expected_leader).await {
                Ok(v) => v,
                Err(s) => return self.end(s, i),
            };
            let id = self.report.members[i].member_id;
            if self.spared(i, &view) {
                continue;
            }
            if !prepared {
                prepared = true;
                if let Err(s) = self.before_first_member(i).await {
                    return self.end(s, i);
                }
                // The snapshot may have taken minutes: this member is judged again on a fresh poll.
                self.fresh = None;
                view = match self.check_before(i, expected_leader).await {
                    Ok(v) => v,
                    Err(s) => return self.end(s, i),
                };
                if self.spared(i, &view) {
                    continue;
                }
            }
            if Some(id) == view.leader_id && self.options.move_leader {
                match self.move_leadership(&view, id, &done).await {
                    Ok(Some(new_leader)) => {
                        expected_leader = Some(new_leader);
                        view = match self.check_before(i, expected_leader).await {
                            Ok(v) => v,
                            Err(s) => return self.end(s, i),
                        };
                        self.report.members[i].role = Role::Follower;
                    }
                    Ok(None) => {}
                    Err(s) => return self.end(s, i),
                }
            }
            let outcome = self.defragment(&view, i).await;
            if let Err(message) = outcome {
                let m = &mut self.report.members[i];
                m.action = MemberAction::Failed;
                m.reason = Some(message.clone());
                (self.observe)(Progress::MemberFinished(m));
                let failed = format!("member {} failed: {message}", m.member);
                if !self.options.continue_on_error {
                    return self.end(stop(RunResult::Failed, failed), i + 1);
                }
                self.report.result = RunResult::Failed;
                self.report.message = Some(failed);
                continue;
            }
            (self.observe)(Progress::MemberFinished(&self.report.members[i]));
            done.push(id);
            if let Err(s) = self.wait_caught_up(i).await {
                return self.end(s, i + 1);
            }
            let more = self.report.members[i + 1..]
                .iter()
                .any(|m| m.action == MemberAction::NotReached);
            if more && !self.options.wait_between.is_zero() {
                tokio::select! {
                    () = self.cancel.cancelled() => {}
                    () = tokio::time::sleep(self.options.wait_between) => {}
                }
            }
        }
        if self.report.result != RunResult::Failed {
            self.report.result = RunResult::Success;
        }
        self.disarm_nospace().await;
    }

    /// Whether the rule (or the floor) spares member `i` in `view`; if so it is marked skipped with the figures.
    fn spared(&mut self, i: usize, view: &ClusterView) -> bool {
        let id = self.report.members[i].member_id;
        match decide::decide(view, id, &self.options.worth) {
            Decision::Defragment { .. } => false,
            Decision::Skip { reason, inputs } => {
                let m = &mut self.report.members[i];
                m.action = MemberAction::Skipped;
                m.reason = Some(reason);
                m.values = inputs;
                true
            }
        }
    }

    /// Ends the run before member `from`: the members not yet reached stay untouched, and say why.
    fn end(&mut self, s: Stop, from: usize) {
        let from = from.min(self.report.members.len());
        for m in self.report.members[from..].iter_mut() {
            if m.action == MemberAction::NotReached {
                m.reason = Some(format!("not reached: {}", s.message));
            }
        }
        self.report.result = s.result;
        self.report.message = Some(s.message);
    }

    /// The snapshot and the compaction: once, before the first member defragmented (member `i`), each only if no
    /// stop was asked for meanwhile.
    async fn before_first_member(&mut self, i: usize) -> Result<(), Stop> {
        let name = self.report.members[i].member.clone();
        let stop_asked = |what: &str| {
            stop(
                RunResult::Stopped,
                format!(
                    "asked to stop (the kill switch, a reload that restarts the cluster's tasks, or SIGTERM) before {what}, before member {name}"
                ),
            )
        };
        if let Some(before) = &self.options.snapshot_before {
            if self.cancel.is_cancelled() {
                return Err(stop_asked("the snapshot"));
            }
            let view = self.poll().await;
            let failed = |e: String| {
                stop(
                    RunResult::Failed,
                    format!("no verified snapshot, so no defragmentation: {e}"),
                )
            };
            let source = snapshot_source(&view).map_err(failed)?;
            let client = self.connect(&source.endpoint).await.map_err(failed)?;
            let mut request = SaveRequest::from_view(&view.cluster, &before.dir, &view, source);
            request.compression = before.compression;
            let saved = snapshot::save(&client, request, |_, _| {})
                .await
                .map_err(|e| failed(format!("{} ({})", e, e.reason())))?;
            self.report.snapshot = Some(saved.path);
        }
        if self.options.compaction_keep.is_some() || self.options.compaction_window.is_some() {
            if self.cancel.is_cancelled() {
                return Err(stop_asked("the compaction"));
            }
            self.report.compaction = Some(self.compact().await?);
        }
        Ok(())
    }

    async fn compact(&mut self) -> Result<CompactionReport, Stop> {
        let view = self.poll().await;
        let failed = |e: String| stop(RunResult::Failed, format!("compaction failed: {e}"));
        let leader = view
            .endpoints
            .iter()
            .find(|e| e.is_leader && e.state == EndpointHealth::Healthy)
            .ok_or_else(|| failed("the leader does not answer".into()))?;
        let mut client = self.connect(&leader.endpoint).await.map_err(failed)?;
        let status = tokio::time::timeout(self.command_timeout(), client.status())
            .await
            .map_err(|_| failed("Status timed out".into()))?
            .map_err(|e| failed(describe_etcd_error(&e)))?;
        let newest = status.header().map_or(0, |h| h.revision());
        let keep = self.options.compaction_keep;
        let window = self.options.compaction_window.as_ref().map(|(w, _)| *w);
        let report = |revision, message| CompactionReport {
            revision,
            newest_revision: newest,
            kept_revisions: keep,
            kept_seconds: window.map(|w| w.as_secs_f64()),
            message,
        };
        let (target, kept) = match (&self.options.compaction_window, keep) {
            (Some((window, history)), _) => {
                let history = history.lock().unwrap_or_else(|p| p.into_inner());
                let now = SystemTime::now();
                let then = history.revision_at(now, *window);
                let said = humantime::format_duration(*window).to_string();
                match then {
                    None => {
                        let reach = humantime::format_duration(Duration::from_secs(
                            history.reach(now).as_secs(),
                        ));
                        return Ok(report(
                            None,
                            format!(
                                "nothing compacted: the revisions of {said} ago are not known yet (seen for {reach})"
                            ),
                        ));
                    }
                    Some(r) => (
                        Some(r).filter(|&r| r > 1 && r < newest),
                        format!("the revisions of the last {said}"),
                    ),
                }
            }
            (None, Some(keep)) => (
                decide::compaction_revision(newest, keep),
                format!("{keep} revisions"),
            ),
            (None, None) => return Ok(report(None, "no compaction asked for".into())),
        };
        let Some(revision) = target else {
            return Ok(report(
                None,
                format!("nothing to compact: revision {newest} keeps {kept} already"),
            ));
        };
        // Physical: the call returns once the compacted revisions are gone from the file, so the
        // defragmentation that follows gives their space back.
        let compacted = tokio::time::timeout(
            self.options
                .member_timeout
                .for_size(status.db_size().max(0) as u64),
            client.compact(revision, Some(CompactionOptions::new().with_physical())),
        )
        .await
        .map_err(|_| failed("the physical compaction did not finish in time".into()))?;
        let message = match compacted {
            Ok(_) => format!("compacted to revision {revision} (newest {newest}, {kept} kept)"),
            Err(e) if describe_etcd_error(&e).contains("compacted") => format!(
                "already compacted past revision {revision}: {}",
                describe_etcd_error(&e)
            ),
            Err(e) => return Err(failed(describe_etcd_error(&e))),
        };
        Ok(report(Some(revision), message))
    }

    /// The checks before member `i`: not asked to stop, the lock still held, a fresh view in which the gate lets
    /// this member be touched, and the leader the one expected.
    async fn check_before(
        &mut self,
        i: usize,
        expected_leader: Option<Id>,
    ) -> Result<Arc<ClusterView>, Stop> {
        let name = self.report.members[i].member.clone();
        if self.cancel.is_cancelled() {
            return Err(stop(
                RunResult::Stopped,
                format!(
                    "asked to stop (the kill switch, a reload that restarts the cluster's tasks, or SIGTERM) before member {name}"
                ),
            ));
        }
        if let Some(why) = self.lock.and_then(MaintenanceLock::lost) {
            return Err(stop(
                RunResult::Stopped,
                format!(
                    "{why}: another runner may hold the lock now; stopped before member {name}"
                ),
            ));
        }
        let view = match self.fresh.take() {
            Some(v) => v,
            None => self.poll().await,
        };
        let id = self.report.members[i].member_id;
        if let Err(refusals) = gate::may_touch(&view, id, SystemTime::now(), &self.options.gate) {
            let reasons: Vec<&str> = refusals.iter().map(|r| r.message.as_str()).collect();
            return Err(stop(
                RunResult::Stopped,
                format!("stopped before member {name}: {}", reasons.join("; ")),
            ));
        }
        if view.leader_id != expected_leader {
            let said = |id: Option<Id>| {
                id.map_or_else(
                    || "none".to_string(),
                    |id| view.member(id).map_or(id.to_string(), |m| m.display_name()),
                )
            };
            return Err(stop(
                RunResult::Stopped,
                format!(
                    "the leader changed during the run, from {} to {}: stopped before member {name}",
                    said(expected_leader),
                    said(view.leader_id)
                ),
            ));
        }
        Ok(view)
    }

    /// Hands leadership from `leader` to a healthy follower (one already defragmented, if any) and waits until a
    /// poll shows it. `None` when there is no follower to hand it to (then the leader is defragmented as leader).
    async fn move_leadership(
        &mut self,
        view: &ClusterView,
        leader: Id,
        done: &[Id],
    ) -> Result<Option<Id>, Stop> {
        let Some(target) = decide::leadership_target(view, done) else {
            return Ok(None);
        };
        let name = |id: Id| view.member(id).map_or(id.to_string(), |m| m.display_name());
        let failed = |e: String| {
            stop(
                RunResult::Failed,
                format!(
                    "leadership could not be moved from {} to {}: {e}",
                    name(leader),
                    name(target)
                ),
            )
        };
        let row = decide::member_row(view, leader)
            .ok_or_else(|| failed("no endpoint reaches the leader".into()))?;
        let mut client = self.connect(&row.endpoint).await.map_err(failed)?;
        tokio::time::timeout(
            self.command_timeout() + Duration::from_secs(10),
            client.move_leader(target.0),
        )
        .await
        .map_err(|_| failed("MoveLeader timed out".into()))?
        .map_err(|e| failed(describe_etcd_error(&e)))?;
        let deadline = Instant::now() + self.options.catch_up_timeout;
        loop {
            let now_view = self.poll().await;
            if now_view.leader_id == Some(target) {
                self.report.leader_moved = Some(LeaderMove {
                    from: name(leader),
                    to: name(target),
                });
                return Ok(Some(target));
            }
            if Instant::now() >= deadline {
                return Err(failed("no poll showed the new leader in time".into()));
            }
            tokio::time::sleep(recheck(3)).await;
        }
    }

    /// Defragments member `i` through its own endpoint, within a time that grows with its size.
    async fn defragment(&mut self, view: &ClusterView, i: usize) -> Result<(), String> {
        let id = self.report.members[i].member_id;
        let row = decide::member_row(view, id).ok_or("no endpoint reaches it")?;
        let endpoint = row.endpoint.clone();
        let mut client = self.connect(&endpoint).await?;
        let timeout = self.command_timeout();
        let before = tokio::time::timeout(timeout, client.status())
            .await
            .map_err(|_| format!("{endpoint}: Status timed out"))?
            .map_err(|e| format!("{endpoint}: {}", describe_etcd_error(&e)))?;
        let size_before = before.db_size().max(0) as u64;
        {
            let m = &mut self.report.members[i];
            m.endpoint = Some(endpoint.clone());
            m.size_before = Some(size_before);
            m.in_use_before = Some(before.raft_used_db_size().max(0) as u64);
            m.values = decide::member_row(view, id)
                .and_then(|r| decide::inputs_of(r, self.options.worth.fallback_quota));
        }
        (self.observe)(Progress::MemberStarted(&self.report.members[i]));
        let limit = self.options.member_timeout.for_size(size_before);
        let started = Instant::now();
        let defragmented = tokio::time::timeout(limit, client.defragment()).await;
        let seconds = started.elapsed().as_secs_f64();
        self.report.members[i].seconds = Some(seconds);
        match defragmented {
            Err(_) => {
                return Err(format!(
                    "{endpoint}: did not finish within {} (etcd may still be defragmenting it)",
                    humantime::format_duration(Duration::from_secs(limit.as_secs()))
                ));
            }
            Ok(Err(e)) => return Err(format!("{endpoint}: {}", describe_etcd_error(&e))),
            Ok(Ok(_)) => {}
        }
        // The size now; a member that answered the defragmentation answers Status.
        let after = tokio::time::timeout(timeout, client.status())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|s| s.db_size().max(0) as u64);
        let m = &mut self.report.members[i];
        m.action = MemberAction::Defragmented;
        m.size_after = after;
        m.reclaimed_bytes = after.map(|a| size_before.saturating_sub(a));
        tracing::info!(
            cluster = self.report.cluster,
            member = m.member,
            "defragmented in {seconds:.1}s: {} -> {}",
            human_bytes(size_before),
            after.map_or("?".into(), human_bytes)
        );
        Ok(())
    }

    /// After member `i`: healthy and caught up with the leader before anything else is touched.
    async fn wait_caught_up(&mut self, i: usize) -> Result<(), Stop> {
        let id = self.report.members[i].member_id;
        let deadline = Instant::now() + self.options.catch_up_timeout;
        let mut attempt = 0;
        loop {
            let view = self.poll().await;
            if decide::caught_up(&view, id) {
                if self.options.wait_between.is_zero() {
                    self.fresh = Some(view);
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(stop(
                    RunResult::Failed,
                    format!(
                        "member {} was not healthy and caught up with the leader within {} of its \
                         defragmentation",
                        self.report.members[i].member,
                        humantime::format_duration(self.options.catch_up_timeout)
                    ),
                ));
            }
            tokio::time::sleep(recheck(attempt)).await;
            attempt += 1;
        }
    }

    /// After the run: NOSPACE alarms go when every member is under the threshold of its quota; the report says
    /// what was done, or why not.
    async fn disarm_nospace(&mut self) {
        let Some(threshold) = self.options.disalarm_threshold else {
            return;
        };
        // The poll that showed the last member caught up is the cluster after the run; without it, poll.
        let view = match self.fresh.take() {
            Some(v) => v,
            None => self.poll().await,
        };
        match decide::nospace_to_disarm(&view, threshold, self.options.worth.fallback_quota) {
            Ok(alarmed) if alarmed.is_empty() => {}
            Err(why) => {
                self.report.nospace = Some(format!("NOSPACE alarm kept: {why}"));
            }
            Ok(alarmed) => {
                let Some(row) = view
                    .endpoints
                    .iter()
                    .find(|e| e.state == EndpointHealth::Healthy && !view.is_foreign(e))
                else {
                    self.report.nospace = Some("NOSPACE alarm kept: no member answers".into());
                    return;
                };
                let mut client = match self.connect(&row.endpoint).await {
                    Ok(c) => c,
                    Err(e) => {
                        self.report.nospace = Some(format!("NOSPACE alarm kept: {e}"));
                        return;
                    }
                };
                let mut cleared = Vec::new();
                let mut failed = Vec::new();
                for id in alarmed {
                    let mut options = AlarmOptions::new();
                    options.with_member(id.0);
                    let name = view.member(id).map_or(id.to_string(), |m| m.display_name());
                    match tokio::time::timeout(
                        self.command_timeout(),
                        client.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(options)),
                    )
                    .await
                    {
                        Ok(Ok(_)) => cleared.push(name),
                        Ok(Err(e)) => failed.push(format!("{name}: {}", describe_etcd_error(&e))),
                        Err(_) => failed.push(format!("{name}: timed out")),
                    }
                }
                let mut said = Vec::new();
                if !cleared.is_empty() {
                    said.push(format!(
                        "NOSPACE alarm disarmed on {} (every member under {:.0}% of its quota)",
                        cleared.join(", "),
                        100.0 * threshold
                    ));
                }
                if !failed.is_empty() {
                    said.push(format!("NOSPACE alarm not disarmed: {}", failed.join("; ")));
                }
                self.report.nospace = Some(said.join("; "));
            }
        }
    }
}
