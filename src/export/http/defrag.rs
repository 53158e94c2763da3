//! `/api/v1/clusters/{name}/defrag`: GET the state and the last report; POST starts a run now (or, with
//! `?dry_run=true`, only answers with its plan); DELETE is the kill switch: the run in progress stops before its
//! next member, never during one.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiState, not_polled, unknown};
use crate::maintenance::defrag;

fn no_defrag(name: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("cluster {name:?} has no [cluster.defrag] configured"),
    )
}

/// The configuration, the state (running, which member, next run) and the last run's report.
pub(super) async fn status(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let body = state
        .shared
        .with_cluster(&name, |c| {
            let control = c.defrag.as_ref()?;
            let config = c.config.defrag.as_ref()?;
            Some(json!({
                "cluster": name,
                "schedule": config.schedule,
                "trigger": config.trigger.as_ref().map(|t| t.text().to_string()),
                "min_interval_seconds": config.min_interval.as_secs_f64(),
                "rule": config.rule.text(),
                "requested": control.requests.capacity() == 0,
                "status": *control.status.borrow(),
            }))
        })
        .ok_or_else(|| unknown(&name))?
        .ok_or_else(|| no_defrag(&name))?;
    Ok(axum::Json(body).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct StartQuery {
    #[serde(default)]
    dry_run: bool,
}

/// Starts a run now (202) with the plan the latest complete poll gives, or only the plan (200) for a dry run.
/// 409 while a run is under way or already asked for; 503 before the first complete poll.
pub(super) async fn start(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Query(query): Query<StartQuery>,
) -> Result<Response, ApiError> {
    let outcome = state
        .shared
        .with_cluster(&name, |c| {
            let control = c.defrag.as_ref()?;
            let Some(view) = c.complete.borrow().clone() else {
                return Some(Err(not_polled(&name)));
            };
            if !query.dry_run
                && let Some(since) = control.status.borrow().running_since {
                return Some(Err(ApiError(
                    StatusCode::CONFLICT,
                    format!(
                        "a defragmentation of {name:?} is under way (since {}); DELETE stops it before its next member",
                        humantime::format_rfc3339_seconds(since)
                    ),
                )));
            }
            let mut options = control.options.clone();
            options.dry_run = query.dry_run;
            let plan = defrag::plan(&view, SystemTime::now(), &options);
            if query.dry_run {
                return Some(Ok((StatusCode::OK, plan)));
            }
            if plan.result == defrag::RunResult::Refused {
                // A run now would be refused at once: say why instead of queueing it.
                return Some(Ok((StatusCode::CONFLICT, plan)));
            }
            Some(match control.requests.try_send(()) {
                Ok(()) => Ok((StatusCode::ACCEPTED, plan)),
                Err(tokio::sync::mpsc::error::TrySendError::Full(())) => Err(ApiError(
                    StatusCode::CONFLICT,
                    format!("a defragmentation of {name:?} was asked for already and is about to start"),
                )),
                Err(tokio::sync::mpsc::error::TrySendError::Closed(())) => Err(ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the maintenance task of {name:?} is stopping"),
                )),
            })
        })
        .ok_or_else(|| unknown(&name))?
        .ok_or_else(|| no_defrag(&name))?;
    let (code, plan) = outcome?;
    let mut plan = serde_json::to_value(&plan)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if code == StatusCode::ACCEPTED {
        // What will be tried, judged on the last complete poll; the run judges each member again.
        plan["result"] = json!("planned");
    }
    let mut body = json!({
        "accepted": code == StatusCode::ACCEPTED,
        "dry_run": query.dry_run,
        "plan": plan,
    });
    if code == StatusCode::CONFLICT {
        body["error"] = plan["message"].clone();
    }
    Ok((code, axum::Json(body)).into_response())
}

/// The kill switch: 202 when a run was under way (it stops before its next member), 409 when none is.
pub(super) async fn stop(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let stopped = state
        .shared
        .with_cluster(&name, |c| {
            let control = c.defrag.as_ref()?;
            // A poisoned lock only means a task panicked while swapping the token; the token is still valid.
            let token = control
                .stop
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            Some(token.map(|t| {
                t.cancel();
                control.status.borrow().member.clone()
            }))
        })
        .ok_or_else(|| unknown(&name))?
        .ok_or_else(|| no_defrag(&name))?;
    match stopped {
        Some(member) => Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "stopping": true,
                "message": match member {
                    Some(m) => format!("the run stops once member {m} is done, before the next member"),
                    None => "the run stops before its next member".to_string(),
                },
            })),
        )
            .into_response()),
        None => Err(ApiError(
            StatusCode::CONFLICT,
            format!("no defragmentation of {name:?} is under way"),
        )),
    }
}
