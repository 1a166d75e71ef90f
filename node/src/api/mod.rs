//! The peer's local control API: HTTP + JSON on 127.0.0.1, for the CLI (`dfs status`, `dfs
//! peers`) and, later, the admin panel.
//!
//! Every route but `/v1/health` needs `Authorization: Bearer <token>`. The token and the address
//! are written to `DATA/api.json` (mode 0600) once the listener is bound, so a CLI that can read
//! the data directory finds the running peer; the file is removed at shutdown.

mod users;
mod volumes;

pub use users::{
    LoggedOut, Login, Logout, OidcFinish, OidcLoggedIn, OidcStart, ProfileChange, ProfileView,
    UID_HEADER,
};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::Path as UrlPath;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::net::{NetError, Network};
use crate::repo::write_private_file;

/// The name of the discovery file in the data directory.
pub const API_FILE: &str = "api.json";

/// What `DATA/api.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiEndpoint {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub token: String,
    /// The process serving it, so a stale file is recognisable.
    pub pid: u32,
}

impl ApiEndpoint {
    /// Read the endpoint of the peer running on `data`.
    pub fn load(data: &Path) -> std::io::Result<Self> {
        let text = std::fs::read(data.join(API_FILE))?;
        serde_json::from_slice(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

#[derive(Clone)]
struct ApiState {
    network: Network,
    /// The network side of the chunk pipeline, for its placement health.
    cluster: Option<Arc<Cluster>>,
    token: String,
    /// OIDC logins started and waiting for their code.
    oidc: Arc<crate::oidc::PendingLogins>,
}

impl ApiState {
    /// The peer's status with its placement health.
    async fn status(&self) -> Result<crate::net::NodeStatus, NetError> {
        let mut status = self.network.status().await?;
        status.placement = self.cluster.as_ref().map(|c| c.status());
        Ok(status)
    }
}

/// A JSON error body: `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<NetError> for ApiError {
    fn from(e: NetError) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time comparison (`subtle`): the token is the only secret here, and its length
    // is fixed, so only its bytes could leak through timing.
    let ok = given.is_some_and(|g| {
        use subtle::ConstantTimeEq;
        bool::from(g.as_bytes().ct_eq(state.token.as_bytes()))
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (see DATA/api.json)".into(),
        ))
    }
}

async fn status(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(state.status().await?))
}

async fn peers(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(state.network.peers().await?))
}

impl From<crate::volumes::VolumeError> for ApiError {
    fn from(e: crate::volumes::VolumeError) -> Self {
        use crate::volumes::VolumeError as V;
        if let V::Issuer(issuer) = e {
            return issuer.into();
        }
        let code = match &e {
            V::NameTaken(_) | V::AlreadyMember(..) => StatusCode::CONFLICT,
            V::Unknown(_) => StatusCode::NOT_FOUND,
            V::BadName(_) | V::BadTicket(_) | V::NotYetMember(_) => StatusCode::BAD_REQUEST,
            V::NotAMember { .. } | V::NoUser | V::NotAllowed(_) => StatusCode::FORBIDDEN,
            V::Op(op) if op.is_refusal() => StatusCode::FORBIDDEN,
            V::NoSuchMember { .. } => StatusCode::NOT_FOUND,
            V::Profile(_) | V::AmbiguousMember { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

/// `POST /v1/volumes` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateVolume {
    pub name: String,
}

/// `POST /v1/volumes/{name}/require-issuer` body: joins need an attestation from `issuer`
/// (whose tokens are for `client_id`), or, with no issuer, none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequireIssuer {
    pub issuer: Option<String>,
    #[serde(default = "default_client_id")]
    pub client_id: String,
}

fn default_client_id() -> String {
    "dfs".to_string()
}

/// `POST /v1/volumes/{name}/role` body: `member` by display name or key (8+ hex digits).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetRole {
    pub member: String,
    pub role: crate::oplog::Role,
}

/// `POST /v1/volumes/{name}/invite` body: the ticket is good for `expires_secs` (0: for
/// good; default one day), for one principal only with `single_use`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InviteVolume {
    #[serde(default = "one_day")]
    pub expires_secs: u64,
    #[serde(default)]
    pub single_use: bool,
}

fn one_day() -> u64 {
    24 * 3600
}

/// `POST /v1/volumes/join` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinVolume {
    pub ticket: String,
    pub name: Option<String>,
}

/// `POST /v1/volumes/{name}/invite` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invitation {
    pub ticket: String,
}

async fn volumes(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(volumes::list_on(&state.network).await?))
}

async fn create_volume(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Json(body): Json<CreateVolume>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    let uid = users::uid_of(&headers)?;
    let info = volumes::create_on(&state.network, uid, body.name).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn invite_volume(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    Json(body): Json<InviteVolume>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    let uid = users::uid_of(&headers)?;
    let terms = crate::volumes::InviteTerms {
        expires_ms: (body.expires_secs > 0).then(|| {
            crate::oplog::physical_now_ms().saturating_add(body.expires_secs.saturating_mul(1000))
        }),
        single_use: body.single_use,
        // Set from the volume's requirement by the invitation itself.
        issuer: None,
    };
    let ticket = volumes::invite_on(&state.network, uid, name, terms).await?;
    Ok(Json(Invitation {
        ticket: ticket.encode(),
    }))
}

async fn require_issuer(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    Json(body): Json<RequireIssuer>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    let uid = users::uid_of(&headers)?;
    volumes::require_issuer_on(
        &state.network,
        uid,
        name,
        body.issuer.clone(),
        body.client_id,
    )
    .await?;
    Ok(Json(serde_json::json!({ "issuer": body.issuer })))
}

async fn revoke_ticket(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    Json(body): Json<JoinVolume>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    let ticket = crate::volumes::Ticket::decode(&body.ticket)?;
    let uid = users::uid_of(&headers)?;
    volumes::revoke_on(&state.network, uid, name, ticket).await?;
    Ok(Json(serde_json::json!({"revoked": true})))
}

async fn join_volume(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Json(body): Json<JoinVolume>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    let ticket = crate::volumes::Ticket::decode(&body.ticket)?;
    let uid = users::uid_of(&headers)?;
    let info = volumes::join_on(&state.network, uid, ticket, body.name).await?;
    Ok(Json(info))
}

/// `GET /v1/volumes/{name}/log` query.
#[derive(Debug, Clone, Deserialize)]
struct LogQuery {
    limit: Option<usize>,
}

async fn volume_log(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    axum::extract::Query(query): axum::extract::Query<LogQuery>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    let limit = query.limit.unwrap_or(100);
    Ok(Json(volumes::log_on(&state.network, name, limit).await?))
}

/// `GET /metrics`: Prometheus text format, no token (like every exporter: it is on 127.0.0.1,
/// and says nothing a local user could not read from `dfs status`).
async fn prometheus_metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::state::render(&state.network, state.status().await.ok()).await,
    )
}

/// `GET /v1/events` query: `since` (ms since the epoch), `kind` (comma-separated names),
/// `limit`.
#[derive(Debug, Clone, Deserialize)]
struct EventsQuery {
    since: Option<u64>,
    kind: Option<String>,
    limit: Option<usize>,
}

async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<EventsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    let kinds = query
        .kind
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|k| !k.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<crate::events::EventKind>, String>>()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let repo = std::sync::Arc::clone(state.network.ops().repo());
    let (since, limit) = (query.since.unwrap_or(0), query.limit.unwrap_or(1000));
    let found = tokio::task::spawn_blocking(move || repo.events(since, &kinds, limit))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(found))
}

/// `GET /v1/stats` query.
#[derive(Debug, Clone, Deserialize)]
struct StatsQuery {
    top: Option<usize>,
}

async fn stats(
    State(state): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<StatsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    let repo = std::sync::Arc::clone(state.network.ops().repo());
    let top = query.top.unwrap_or(20);
    let report = tokio::task::spawn_blocking(move || repo.usage(top))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(report))
}

async fn set_role(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    Json(body): Json<SetRole>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    let uid = users::uid_of(&headers)?;
    Ok(Json(
        volumes::set_role_on(&state.network, uid, name, body).await?,
    ))
}

async fn volume_members(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    let uid = users::uid_of(&headers)?;
    Ok(Json(volumes::members_on(&state.network, uid, name).await?))
}

async fn login(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Json(body): Json<Login>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(users::login(&state.network, body).await?))
}

async fn oidc_start(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Json(body): Json<OidcStart>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(
        users::oidc_start(&state.network, &state.oidc, body).await?,
    ))
}

async fn oidc_finish(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Json(body): Json<OidcFinish>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(
        users::oidc_finish(&state.network, &state.oidc, body).await?,
    ))
}

async fn logout(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Json(body): Json<Logout>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(users::logout(&state.network, body.uid)))
}

async fn sessions(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(users::sessions(&state.network)))
}

async fn set_profile(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Json(body): Json<ProfileChange>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    let uid = users::uid_of(&headers)?;
    Ok(Json(users::set_profile(&state.network, uid, body).await?))
}

async fn profiles(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(users::profiles(&state.network)?))
}

async fn health() -> &'static str {
    "ok\n"
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such API route".into())
}

/// The routes of the control API.
pub fn router(network: Network, cluster: Option<Arc<Cluster>>, token: String) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/metrics", get(prometheus_metrics))
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/events", get(events))
        .route("/v1/stats", get(stats))
        .route("/v1/volumes", get(volumes).post(create_volume))
        .route("/v1/volumes/join", post(join_volume))
        .route("/v1/volumes/{name}/invite", post(invite_volume))
        .route("/v1/volumes/{name}/log", get(volume_log))
        .route("/v1/volumes/{name}/members", get(volume_members))
        .route("/v1/volumes/{name}/role", post(set_role))
        .route("/v1/volumes/{name}/revoke", post(revoke_ticket))
        .route("/v1/volumes/{name}/require-issuer", post(require_issuer))
        .route("/v1/login", post(login))
        .route("/v1/login/oidc", post(oidc_start))
        .route("/v1/login/oidc/finish", post(oidc_finish))
        .route("/v1/logout", post(logout))
        .route("/v1/sessions", get(sessions))
        .route("/v1/profile", post(set_profile))
        .route("/v1/profiles", get(profiles))
        .fallback(not_found)
        .with_state(ApiState {
            network,
            cluster,
            token,
            oidc: Arc::default(),
        })
}

/// A bound, not yet serving, API listener and the discovery file it wrote.
pub struct ApiServer {
    listener: tokio::net::TcpListener,
    router: Router,
    file: PathBuf,
}

impl ApiServer {
    /// Bind `addr` (127.0.0.1:0 when `None`) and write `DATA/api.json`.
    pub async fn bind(
        data: &Path,
        addr: Option<SocketAddr>,
        network: Network,
        cluster: Option<Arc<Cluster>>,
    ) -> std::io::Result<Self> {
        let addr = addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {addr} for the API: {e}"),
            )
        })?;
        let bound = listener.local_addr()?;
        if !bound.ip().is_loopback() {
            tracing::warn!(address = %bound, "the API listens beyond loopback: anyone who can reach it and learns the token (DATA/api.json) controls this peer; prefer 127.0.0.1 and an SSH tunnel");
        }
        let token = crate::crypto::random_hex(32);
        let endpoint = ApiEndpoint {
            url: format!("http://{bound}"),
            token: token.clone(),
            pid: std::process::id(),
        };
        let file = data.join(API_FILE);
        let json = serde_json::to_vec_pretty(&endpoint).map_err(std::io::Error::other)?;
        write_private_file(&file, &json)?;
        Ok(Self {
            listener,
            router: router(network, cluster, token),
            file,
        })
    }

    /// Serve until `shutdown` resolves, then remove the discovery file.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        let result = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "the API server failed");
        }
        let _ = std::fs::remove_file(&self.file);
    }
}
