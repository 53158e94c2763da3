//! The daemon's HTTP server: /metrics, the JSON API, /healthz and /readyz. Read-only. Handlers only read the
//! latest published views; none waits for a poll.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::json;

use crate::daemon::state::Shared;
use crate::id::Id;
use crate::view::ClusterView;

/// An error as the API returns it: `{"error": "..."}` with its status code.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/clusters", get(clusters))
        .route("/api/v1/clusters/{name}", get(cluster))
        .route("/api/v1/clusters/{name}/events", get(cluster_events))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such resource".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: the API is read-only".into(),
            )
        })
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let views: Vec<Arc<ClusterView>> = shared
        .latest_views()
        .into_iter()
        .filter_map(|(_, v)| v)
        .collect();
    match shared.metrics.render(views.iter().map(|v| v.as_ref())) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let waiting: Vec<String> = shared
        .latest_views()
        .into_iter()
        .filter(|(_, v)| v.is_none())
        .map(|(name, _)| name)
        .collect();
    if waiting.is_empty() {
        (StatusCode::OK, axum::Json(json!({ "ready": true }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "ready": false, "waiting_for_first_poll": waiting })),
        )
            .into_response()
    }
}

/// One line per cluster in `/api/v1/clusters`.
#[derive(Serialize)]
struct ClusterSummary {
    name: String,
    polled: bool,
    healthy: Option<bool>,
    cluster_id: Option<Id>,
    leader_id: Option<Id>,
    members: Option<usize>,
    voting_members: Option<usize>,
    healthy_voting_members: Option<usize>,
    failure_tolerance: Option<i64>,
    warnings: Option<usize>,
    polled_at: Option<f64>,
}

fn summary(name: String, view: Option<&ClusterView>) -> ClusterSummary {
    ClusterSummary {
        name,
        polled: view.is_some(),
        healthy: view.map(|v| v.healthy),
        cluster_id: view.and_then(|v| v.cluster_id),
        leader_id: view.and_then(|v| v.leader_id),
        members: view.map(|v| v.members.len()),
        voting_members: view.map(|v| v.quorum.voting_members),
        healthy_voting_members: view.map(|v| v.quorum.healthy_voting_members),
        failure_tolerance: view.map(|v| v.quorum.failure_tolerance),
        warnings: view.map(|v| v.warnings.len()),
        polled_at: view.map(|v| {
            v.polled_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        }),
    }
}

async fn clusters(State(shared): State<Arc<Shared>>) -> axum::Json<serde_json::Value> {
    let list: Vec<ClusterSummary> = shared
        .latest_views()
        .into_iter()
        .map(|(name, view)| summary(name, view.as_deref()))
        .collect();
    axum::Json(json!({ "clusters": list }))
}

fn unknown(name: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no cluster named {name:?}"))
}

async fn cluster(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let view = shared
        .with_cluster(&name, |c| c.latest())
        .ok_or_else(|| unknown(&name))?
        .ok_or_else(|| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cluster {name:?} has not completed its first poll yet"),
            )
        })?;
    Ok(axum::Json(view.as_ref()).into_response())
}

async fn cluster_events(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let events = shared
        .with_cluster(&name, |c| c.events())
        .ok_or_else(|| unknown(&name))?;
    Ok(axum::Json(json!({ "cluster": name, "events": events })))
}
