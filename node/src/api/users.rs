//! The API's user routes: log a user in for a local uid (unsealing its key here, in the
//! running peer), log out, list who is logged in; and which user a request acts as.
//!
//! A request acts as the user logged in for the uid in its `X-Dfs-Uid` header (the CLI sends
//! its own uid): the bearer token already makes the caller this peer's operator, so the
//! header only chooses among the peer's sessions, as the mount chooses by the caller's uid.

use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::ApiError;
use crate::net::sync::OpsHub;
use crate::net::Network;
use crate::oidc::{OidcError, PendingLogins, Started};
use crate::users::{SessionInfo, UserError, UserKey, UserStore};

/// The header naming the local uid a request acts for.
pub const UID_HEADER: &str = "x-dfs-uid";

/// The uid of `X-Dfs-Uid`, if the request has one that parses.
pub(super) fn uid_of(headers: &HeaderMap) -> Result<Option<u32>, ApiError> {
    match headers.get(UID_HEADER) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("{UID_HEADER} must be a uid (a decimal number)"),
                )
            }),
    }
}

/// `POST /v1/login` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Login {
    pub user: String,
    pub passphrase: String,
    /// The local uid the user acts for (the mount signs this uid's ops as the user).
    pub uid: u32,
}

/// `POST /v1/logout` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Logout {
    pub uid: u32,
}

/// `POST /v1/logout` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedOut {
    /// Who was logged in for the uid.
    pub user: Option<String>,
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        let text = e.to_string();
        UserError::from_ref(&e, text)
    }
}

impl UserError {
    /// The API error for `self`, with `text` as its message.
    fn from_ref(e: &UserError, text: String) -> ApiError {
        let code = match e {
            UserError::Unknown(_) => StatusCode::NOT_FOUND,
            UserError::WrongPassphrase(_) => StatusCode::UNAUTHORIZED,
            UserError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(code, text)
    }
}

/// Unseal `login.user` from the peer's data directory with the passphrase (on a blocking
/// thread: argon2id takes a deliberate fraction of a second) and log it in for the uid.
pub(super) async fn login(net: &Network, login: Login) -> Result<SessionInfo, ApiError> {
    let hub = Arc::clone(net.ops());
    blocking(move || {
        let store = UserStore::new(hub.repo().path());
        let sealed = store.load(&login.user)?;
        if crate::oidc::Bindings::new(hub.repo().path())
            .load(&login.user)?
            .is_some()
        {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!(
                    "user {:?} has no passphrase: it logs in through its issuer (`dfs login --oidc ISSUER {}`)",
                    login.user, login.user
                ),
            ));
        }
        let key = sealed.open(login.passphrase.as_bytes())?;
        Ok(log_in(&hub, login.uid, key, "passphrase"))
    })
    .await
}

/// `POST /v1/login/oidc` body: start an OIDC login (see [`crate::oidc`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OidcStart {
    pub issuer: String,
    pub client_id: String,
    /// The loopback URL the CLI waits on for the issuer's redirect.
    pub redirect_uri: String,
    /// The user to log in as (made if new); without it, the one user bound to the issuer, or
    /// a new user named after the subject.
    pub user: Option<String>,
}

/// `POST /v1/login/oidc/finish` body: the code and state the issuer redirected with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OidcFinish {
    pub state: String,
    pub code: String,
    /// The local uid the user acts for.
    pub uid: u32,
}

/// `POST /v1/login/oidc/finish` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OidcLoggedIn {
    #[serde(flatten)]
    pub session: SessionInfo,
    pub issuer: String,
    pub subject: String,
    /// Whether the login made the user.
    pub created: bool,
}

impl From<OidcError> for ApiError {
    fn from(e: OidcError) -> Self {
        let code = match &e {
            OidcError::User(inner) => return UserError::from_ref(inner, e.to_string()),
            OidcError::Token(_) | OidcError::Exchange(_) | OidcError::UnknownState => {
                StatusCode::UNAUTHORIZED
            }
            OidcError::Discovery { .. } => StatusCode::BAD_GATEWAY,
            OidcError::Busy => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(code, e.to_string())
    }
}

/// Run blocking work of a login (key derivation, calls to the issuer) off the runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("login task failed: {e}"),
        )
    })?
}

pub(super) async fn oidc_start(
    net: &Network,
    logins: &Arc<PendingLogins>,
    start: OidcStart,
) -> Result<Started, ApiError> {
    let data = net.ops().repo().path().to_path_buf();
    let logins = Arc::clone(logins);
    blocking(move || {
        Ok(logins.start(
            &data,
            &start.issuer,
            &start.client_id,
            &start.redirect_uri,
            start.user.as_deref(),
        )?)
    })
    .await
}

pub(super) async fn oidc_finish(
    net: &Network,
    logins: &Arc<PendingLogins>,
    finish: OidcFinish,
) -> Result<OidcLoggedIn, ApiError> {
    let hub = Arc::clone(net.ops());
    let logins = Arc::clone(logins);
    blocking(move || {
        let done = logins.finish(hub.repo().path(), &finish.state, &finish.code)?;
        let session = log_in(&hub, finish.uid, done.key, "OIDC");
        Ok(OidcLoggedIn {
            session,
            issuer: done.binding.issuer,
            subject: done.binding.subject,
            created: done.created,
        })
    })
    .await
}

/// Log `key` in for `uid` and record it.
fn log_in(hub: &OpsHub, uid: u32, key: UserKey, how: &str) -> SessionInfo {
    let info = SessionInfo {
        uid,
        user: key.name().to_string(),
        id: key.id().to_string(),
    };
    if let Some(old) = hub.sessions().login(uid, key) {
        tracing::info!(uid, user = %old, "logged out by another login");
    }
    hub.repo().record_event(
        crate::events::EventKind::UserAction,
        &info.user,
        &format!("logged in ({how}) for uid {uid}"),
    );
    info
}

pub(super) fn logout(net: &Network, uid: u32) -> LoggedOut {
    let user = net.ops().sessions().logout(uid);
    if let Some(user) = &user {
        net.ops().repo().record_event(
            crate::events::EventKind::UserAction,
            user,
            &format!("logged out for uid {uid}"),
        );
    }
    LoggedOut { user }
}

pub(super) fn sessions(net: &Network) -> Vec<SessionInfo> {
    net.ops().sessions().list()
}

/// `POST /v1/profile` body: the fields to change of the acting user's profile.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProfileChange {
    pub display_name: Option<String>,
    pub bio: Option<String>,
    /// Preferences to set (key, value).
    #[serde(default)]
    pub set_prefs: Vec<(String, String)>,
    /// Preferences to remove.
    #[serde(default)]
    pub unset_prefs: Vec<String>,
}

/// A profile as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileView {
    /// The user's key, hex.
    pub user: String,
    #[serde(flatten)]
    pub profile: crate::profiles::Profile,
}

impl From<crate::profiles::SignedProfile> for ProfileView {
    fn from(p: crate::profiles::SignedProfile) -> Self {
        ProfileView {
            user: p.user.to_string(),
            profile: p.profile,
        }
    }
}

/// Change the acting user's profile, sign it, and replicate it to the user's volumes.
pub(super) async fn set_profile(
    net: &Network,
    uid: Option<u32>,
    change: ProfileChange,
) -> Result<ProfileView, ApiError> {
    let hub = std::sync::Arc::clone(net.ops());
    let (signed, ops) = tokio::task::spawn_blocking(move || {
        let acting = hub.acting(uid);
        let user = acting
            .user()
            .ok_or(crate::volumes::VolumeError::NoUser)?
            .id();
        let mut profile = crate::profiles::ProfileStore::new(hub.oplog().db())
            .get(&user)?
            .map(|p| p.profile)
            .unwrap_or_default();
        if let Some(name) = change.display_name {
            profile.display_name = name;
        }
        if let Some(bio) = change.bio {
            profile.bio = bio;
        }
        for (k, v) in change.set_prefs {
            profile.prefs.insert(k, v);
        }
        for k in change.unset_prefs {
            profile.prefs.remove(&k);
        }
        // Newer than the one held even if the clock went back.
        profile.updated_ms = crate::oplog::physical_now_ms().max(profile.updated_ms + 1);
        crate::volumes::set_profile(&hub, &acting, profile)
    })
    .await
    .map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("profile task failed: {e}"),
        )
    })?
    .map_err(ApiError::from)?;
    for op in ops {
        net.publish_op(op).await;
    }
    Ok(signed.into())
}

/// Every profile this peer holds (its users' and those replicated in its volumes).
pub(super) fn profiles(net: &Network) -> Result<Vec<ProfileView>, ApiError> {
    let all = crate::profiles::ProfileStore::new(net.ops().oplog().db())
        .all()
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(all.into_iter().map(ProfileView::from).collect())
}
