//! The daemon's HTTP server: /metrics, the JSON API, /healthz and /readyz, read-only; and mutating endpoints
//! (`POST /api/v1/reload`, snapshots and defragmentation) that are only ever served when an API token
//! is configured. Read handlers only read the latest published views; none waits for a poll.

mod defrag;

use std::sync::Arc;

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};
use tower_http::limit::RequestBodyLimitLayer;

use crate::export::metrics::Metrics;
use crate::id::Id;
use crate::state::{ApiToken, Shared};
use crate::units::unix_seconds;
use crate::view::ClusterView;

/// An error as the API returns it: `{"error": "..."}` with its status code.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

/// A request to reload the configuration, answered with the outcome.
pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

/// What the HTTP server needs: the daemon's shared state, the API token that guards mutating endpoints, and a
/// way to ask the daemon to reload.
pub struct ApiState {
    pub shared: Arc<Shared>,
    pub metrics: Arc<Metrics>,
    /// Mutating endpoints are only ever served when a token is configured.
    pub token: Arc<ApiToken>,
    pub reload: mpsc::Sender<ReloadRequest>,
}

/// Largest request body accepted; the API takes no bodies worth more.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// A request that takes longer than this is answered 408 and dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A reload may wait for clusters' steps in flight (their grace period is 25 s): it gets longer.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest URL (path and query) accepted: 414 beyond.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header bytes (names and values) accepted: 431 beyond.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most headers accepted: 431 beyond.
pub const MAX_HEADERS: usize = 100;

pub fn router(state: ApiState) -> Router {
    let state = Arc::new(state);
    // Everything that changes something goes here, behind the token.
    let mutating = Router::new()
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/clusters/{name}/snapshots", post(take_snapshot))
        .route(
            "/api/v1/clusters/{name}/defrag",
            post(defrag::start).delete(defrag::stop),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/clusters", get(clusters))
        .route("/api/v1/clusters/{name}", get(cluster))
        .route("/api/v1/clusters/{name}/events", get(cluster_events))
        .route(
            "/api/v1/clusters/{name}/maintenance",
            get(cluster_maintenance),
        )
        .route("/api/v1/clusters/{name}/snapshots", get(list_snapshots))
        .route("/api/v1/clusters/{name}/defrag", get(defrag::status))
        .merge(mutating)
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such resource".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into())
        })
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(middleware::from_fn(bounded))
        // Outermost: whatever produced an error (a limit above, an extractor's rejection), it leaves as JSON.
        .layer(middleware::map_response(json_errors))
        .with_state(state)
}

/// Refuses URLs and headers larger than the API needs (414, 431) and answers 408 for a request that takes too
/// long, all as JSON, before anything else looks at the request.
async fn bounded(request: Request, next: Next) -> Response {
    let uri = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if uri > MAX_URI_BYTES {
        return ApiError(
            StatusCode::URI_TOO_LONG,
            format!("URL longer than {MAX_URI_BYTES} bytes"),
        )
        .into_response();
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers > MAX_HEADER_BYTES || request.headers().len() > MAX_HEADERS {
        return ApiError(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("more than {MAX_HEADERS} headers or {MAX_HEADER_BYTES} bytes of them"),
        )
        .into_response();
    }
    let (limit, status) = if request.uri().path() == "/api/v1/reload" {
        // The reload itself is slow, not the client: a gateway timeout, not 408.
        (RELOAD_TIMEOUT, StatusCode::GATEWAY_TIMEOUT)
    } else {
        (REQUEST_TIMEOUT, StatusCode::REQUEST_TIMEOUT)
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError(
            status,
            format!(
                "the request took longer than {}",
                humantime::format_duration(limit)
            ),
        )
        .into_response(),
    }
}

/// One kind of error: a 4xx or 5xx that is not JSON yet (axum's extractor rejections, the body limit) is
/// replaced by `{"error": …}` with the same status, keeping the text when it is short plain text.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 1024).await {
        Ok(body) if !body.is_empty() => String::from_utf8_lossy(&body).trim().to_string(),
        _ => String::new(),
    };
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!("request body larger than {MAX_BODY_BYTES} bytes"),
        _ if !text.is_empty() => text,
        _ => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
    };
    ApiError(status, message).into_response()
}

/// The guard of mutating endpoints: 403 when no token is configured (they are disabled), 401 without a bearer
/// token, 403 with a wrong one. Compared in constant time.
async fn require_token(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.token.get() else {
        return ApiError(
            StatusCode::FORBIDDEN,
            "mutating endpoints are disabled: no API token is configured".into(),
        )
        .into_response();
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 7235): "bearer" is as good as "Bearer".
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        });
    let Some(presented) = presented else {
        let mut response = ApiError(
            StatusCode::UNAUTHORIZED,
            "an API token is required (Authorization: Bearer <token>)".into(),
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return response;
    };
    let matches: bool = presented
        .as_bytes()
        .ct_eq(expected.expose().as_bytes())
        .into();
    if !matches {
        return ApiError(StatusCode::FORBIDDEN, "invalid API token".into()).into_response();
    }
    next.run(request).await
}

async fn reload(
    State(state): State<Arc<ApiState>>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let stopping = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is stopping".into(),
        )
    };
    let (answer, outcome) = oneshot::channel();
    state.reload.send(answer).await.map_err(|_| stopping())?;
    match outcome.await {
        Ok(Ok(message)) => Ok(axum::Json(json!({ "reloaded": true, "message": message }))),
        Ok(Err(e)) => Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, e)),
        Err(_) => Err(stopping()),
    }
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let shared = &state.shared;
    let views: Vec<Arc<ClusterView>> = shared
        .latest_views()
        .into_iter()
        .filter_map(|(_, v)| v)
        .collect();
    match state.metrics.render(views.iter().map(|v| v.as_ref())) {
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

async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    let shared = &state.shared;
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
        failure_tolerance: view.and_then(|v| v.quorum.failure_tolerance),
        warnings: view.map(|v| v.warnings.len()),
        polled_at: view.map(|v| unix_seconds(v.polled_at)),
    }
}

async fn clusters(State(state): State<Arc<ApiState>>) -> axum::Json<serde_json::Value> {
    let shared = &state.shared;
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

fn not_polled(name: &str) -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cluster {name:?} has not completed its first poll yet"),
    )
}

async fn cluster(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let view = state
        .shared
        .with_cluster(&name, |c| c.latest())
        .ok_or_else(|| unknown(&name))?
        .ok_or_else(|| not_polled(&name))?;
    Ok(axum::Json(view.as_ref()).into_response())
}

/// Whether the cluster may be touched now (the maintenance gate on the latest view), and in which order.
async fn cluster_maintenance(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let readiness = state
        .shared
        .with_cluster(&name, |c| c.readiness(std::time::SystemTime::now()))
        .ok_or_else(|| unknown(&name))?
        .ok_or_else(|| not_polled(&name))?;
    Ok(axum::Json(json!({ "cluster": name, "maintenance": readiness })).into_response())
}

async fn cluster_events(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let shared = &state.shared;
    let events = shared
        .with_cluster(&name, |c| c.events())
        .ok_or_else(|| unknown(&name))?;
    Ok(axum::Json(json!({ "cluster": name, "events": events })))
}

fn no_snapshots(name: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("cluster {name:?} has no [cluster.snapshot] configured"),
    )
}

/// The cluster's snapshot state (running, next run, the last success, failure and drill) and its verified
/// snapshots in the destination, newest first.
async fn list_snapshots(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let (config, status, requested) = state
        .shared
        .with_cluster(&name, |c| {
            let control = c.snapshots.as_ref()?;
            Some((
                c.config.snapshot.clone()?,
                control.status.borrow().clone(),
                control.trigger.capacity() == 0,
            ))
        })
        .ok_or_else(|| unknown(&name))?
        .ok_or_else(|| no_snapshots(&name))?;
    let dir = config.dir.clone();
    let listed = tokio::task::spawn_blocking(move || crate::maintenance::store::list(&dir))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot list {}: {e}", config.dir.display()),
            )
        })?;
    let drilled = status.last_drill.as_ref();
    let snapshots: Vec<serde_json::Value> = listed
        .iter()
        .rev()
        .filter(|s| s.sidecar.cluster == name)
        .map(|s| {
            let drill = drilled
                .filter(|d| d.file.as_deref() == Some(s.sidecar.file.as_str()))
                .map(|d| {
                    if d.reason.is_none() {
                        "passed"
                    } else {
                        "failed"
                    }
                });
            json!({
                "file": s.sidecar.file,
                "path": s.path,
                "size_bytes": s.size,
                "verified": true,
                "restore_drill": drill,
                "snapshot": s.sidecar,
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "cluster": name,
        "dir": config.dir,
        "schedule": config.schedule,
        "compression": <&str>::from(config.compression),
        "requested": requested,
        "status": status,
        "snapshots": snapshots,
    }))
    .into_response())
}

/// Asks the cluster's maintenance task for a snapshot now (202); it is taken like a scheduled one and shows in
/// `GET …/snapshots`. 409 while one is being taken or already asked for.
async fn take_snapshot(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let outcome = state
        .shared
        .with_cluster(&name, |c| {
            let control = c.snapshots.as_ref()?;
            if let Some(since) = control.status.borrow().running_since {
                return Some(Err(format!(
                    "a snapshot of {name:?} is being taken (since {}); GET /api/v1/clusters/{name}/snapshots shows when it ends",
                    humantime::format_rfc3339_seconds(since)
                )));
            }
            Some(control.trigger.try_send(()).map_err(|e| match e {
                tokio::sync::mpsc::error::TrySendError::Full(()) => {
                    format!("a snapshot of {name:?} was asked for already and is about to be taken")
                }
                tokio::sync::mpsc::error::TrySendError::Closed(()) => {
                    format!("the maintenance task of {name:?} is stopping")
                }
            }))
        })
        .ok_or_else(|| unknown(&name))?
        .ok_or_else(|| no_snapshots(&name))?;
    match outcome {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "accepted": true,
                "message": format!(
                    "a snapshot of {name:?} will be taken now; GET /api/v1/clusters/{name}/snapshots shows it"
                ),
            })),
        )
            .into_response()),
        Err(message) => Err(ApiError(StatusCode::CONFLICT, message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maintenance::{self, GateOptions};
    use crate::testing::*;
    use crate::view;

    fn pretty(value: &impl Serialize) -> String {
        serde_json::to_string_pretty(value).unwrap()
    }

    /// The API's own JSON beside the view's (snapshotted with the table): a renamed or dropped key fails here.
    #[test]
    fn cluster_list_and_maintenance_json_keep_their_keys() {
        let (_, mut probes) = three();
        let healthy = view::build("prod", &probes, polled_at());
        probes[2] = down(2);
        let one_down = view::build("prod", &probes, polled_at());
        let list = vec![
            summary("prod".into(), Some(&one_down)),
            summary("staging".into(), None),
        ];
        insta::assert_snapshot!("api_clusters", pretty(&json!({ "clusters": list })));

        let options = GateOptions::for_interval(Duration::from_secs(10));
        let ready = maintenance::assess(&healthy, polled_at(), &options);
        insta::assert_snapshot!(
            "api_maintenance_ready",
            pretty(&json!({ "cluster": "prod", "maintenance": ready }))
        );
        let refused = maintenance::assess(&one_down, polled_at(), &options);
        insta::assert_snapshot!(
            "api_maintenance_refused",
            pretty(&json!({ "cluster": "prod", "maintenance": refused }))
        );
    }
}
