//! The tasks of one cluster (its poller, its maintenance task), stopped by a cancellation token at their own safe
//! points, never aborted: a poller may be dropped mid-poll (it only reads), but a task that writes a snapshot or
//! defragments a member finishes the step it is in, and the daemon waits for it, up to a bound.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a shutdown or a reload waits for a step in flight. Below Kubernetes' default grace period (30 s), so
/// that the daemon says what it left unfinished before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(25);

/// Tasks that stop together.
pub struct TaskGroup {
    cancel: CancellationToken,
    handles: Vec<(&'static str, JoinHandle<()>)>,
}

impl TaskGroup {
    /// A group that also stops when `parent` is cancelled (the daemon's shutdown).
    pub fn child_of(parent: &CancellationToken) -> Self {
        TaskGroup {
            cancel: parent.child_token(),
            handles: Vec::new(),
        }
    }

    /// Starts a task; it gets the group's token and must return soon after it is cancelled.
    pub fn spawn<F>(&mut self, name: &'static str, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(task(self.cancel.clone()));
        self.handles.push((name, handle));
    }

    /// Cancels every task and waits for each to return, `grace` at most in all. Returns the names of those still
    /// running then: they are left to finish their step in the background (the process may end first), never
    /// aborted mid-step.
    pub async fn stop(self, grace: Duration) -> Vec<&'static str> {
        self.cancel.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        let mut unfinished = Vec::new();
        for (name, handle) in self.handles {
            match tokio::time::timeout_at(deadline, handle).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.is_panic() => tracing::error!(task = name, "task panicked: {e}"),
                Ok(Err(_)) => {}
                Err(_) => unfinished.push(name),
            }
        }
        unfinished
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stop_waits_for_a_step_in_flight_to_finish() {
        let root = CancellationToken::new();
        let mut group = TaskGroup::child_of(&root);
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        group.spawn("step", move |cancel| async move {
            cancel.cancelled().await;
            // The step in flight reaches its safe point 200 ms after being asked to stop.
            tokio::time::sleep(Duration::from_millis(200)).await;
            done.store(true, Ordering::SeqCst);
        });
        let started = Instant::now();
        let unfinished = group.stop(Duration::from_secs(5)).await;
        assert!(unfinished.is_empty());
        assert!(
            finished.load(Ordering::SeqCst),
            "stop returned before the step ended"
        );
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(200),
            "as long as the step, no more"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stop_is_bounded_and_names_what_did_not_stop() {
        let root = CancellationToken::new();
        let mut group = TaskGroup::child_of(&root);
        group.spawn("stuck", |_cancel| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        group.spawn("polite", |cancel| async move { cancel.cancelled().await });
        let started = Instant::now();
        let unfinished = group.stop(Duration::from_millis(300)).await;
        assert_eq!(unfinished, vec!["stuck"]);
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(300),
            "the grace period, no more"
        );
    }

    #[tokio::test]
    async fn cancelling_the_parent_stops_the_group() {
        let root = CancellationToken::new();
        let mut group = TaskGroup::child_of(&root);
        let (tx, rx) = tokio::sync::oneshot::channel();
        group.spawn("poll", move |cancel| async move {
            cancel.cancelled().await;
            let _ = tx.send(());
        });
        root.cancel();
        tokio::time::timeout(Duration::from_secs(2), rx)
            .await
            .expect("the task saw its parent's cancellation")
            .unwrap();
    }
}
