//! The volume commands of the control API on a running peer: each runs the op-log work of
//! [`crate::volumes`] on the blocking pool, then does what the network side needs (follow the
//! volume, dial the ticket's addresses). Here rather than in `volumes`, which knows the op
//! hub only, so that the network can use volume records without depending on itself.

use axum::http::StatusCode;

use super::ApiError;
use crate::net::sync::OpsHub;
use crate::net::Network;
use crate::oplog::VolumeId;
use crate::volumes::{self, LogEntry, MemberInfo, Ticket, VolumeError, VolumeInfo};

/// A volume command that failed on the network side or in its task: an internal error, as
/// every error of a volume command that is not the caller's.
fn failed(e: impl ToString) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Run a volume command on the blocking pool (it writes RocksDB durably).
async fn blocking<T: Send + 'static>(
    net: &Network,
    work: impl FnOnce(&OpsHub) -> Result<T, VolumeError> + Send + 'static,
) -> Result<T, ApiError> {
    let hub = std::sync::Arc::clone(net.ops());
    tokio::task::spawn_blocking(move || work(&hub))
        .await
        .map_err(|e| failed(format!("volume task failed: {e}")))?
        .map_err(ApiError::from)
}

/// [`volumes::create`] on a running peer, which then follows the new volume.
pub async fn create_on(
    net: &Network,
    uid: Option<u32>,
    name: String,
) -> Result<VolumeInfo, ApiError> {
    let volume = blocking(net, move |hub| {
        let acting = hub.acting(uid);
        // A peer configured to require an issuer makes its volumes require it from the start
        // (its keys fetched first: an unreachable issuer leaves no volume behind).
        let config = hub.repo().config().volume.clone();
        let keys = match &config.require_issuer {
            Some(issuer) => Some(crate::oidc::fetch_issuer_keys(issuer, &config.client_id)?),
            None => None,
        };
        let volume = volumes::create(hub, &acting, &name)?;
        if keys.is_some() {
            volumes::require_issuer(hub, &acting, &name, keys)?;
        }
        Ok(volume)
    })
    .await?;
    net.follow_volume(volume).await.map_err(failed)?;
    info_of(net, volume).await
}

/// [`volumes::require_issuer`] on a running peer: it fetches the issuer's keys, records them,
/// and publishes the op at once.
pub async fn require_issuer_on(
    net: &Network,
    uid: Option<u32>,
    name: String,
    issuer: Option<String>,
    client_id: String,
) -> Result<(), ApiError> {
    let op = blocking(net, move |hub| {
        let keys = match issuer {
            Some(issuer) => Some(crate::oidc::fetch_issuer_keys(&issuer, &client_id)?),
            None => None,
        };
        volumes::require_issuer(hub, &hub.acting(uid), &name, keys)
    })
    .await?;
    net.publish_op(op).await;
    Ok(())
}

/// [`volumes::invite`] on a running peer: the ticket names the addresses it listens on.
pub async fn invite_on(
    net: &Network,
    uid: Option<u32>,
    name: String,
    terms: volumes::InviteTerms,
) -> Result<Ticket, ApiError> {
    let addrs = net.status().await.map_err(failed)?.addresses;
    blocking(net, move |hub| {
        volumes::invite(hub, &hub.acting(uid), &name, addrs, terms)
    })
    .await
}

/// [`volumes::revoke`] on a running peer, which publishes the revocation at once.
pub async fn revoke_on(
    net: &Network,
    uid: Option<u32>,
    name: String,
    ticket: Ticket,
) -> Result<(), ApiError> {
    let op = blocking(net, move |hub| {
        volumes::revoke(hub, &hub.acting(uid), &name, &ticket)
    })
    .await?;
    net.publish_op(op).await;
    Ok(())
}

/// [`volumes::join`] on a running peer: it follows the volume and dials the ticket's addresses; the
/// first member reached takes the join and sends the volume's ops.
pub async fn join_on(
    net: &Network,
    uid: Option<u32>,
    ticket: Ticket,
    name: Option<String>,
) -> Result<VolumeInfo, ApiError> {
    let addrs = ticket.addrs.clone();
    let volume = blocking(net, move |hub| {
        volumes::join(hub, &hub.acting(uid), &ticket, name.as_deref())
    })
    .await?;
    net.follow_volume(volume).await.map_err(failed)?;
    for addr in addrs {
        match addr.parse() {
            Ok(addr) => net.dial(addr).await.map_err(failed)?,
            Err(e) => tracing::warn!(%addr, error = %e, "unusable address in the ticket"),
        }
    }
    info_of(net, volume).await
}

/// [`volumes::set_role`] on a running peer, which publishes the decision at once.
pub async fn set_role_on(
    net: &Network,
    uid: Option<u32>,
    name: String,
    change: super::SetRole,
) -> Result<MemberInfo, ApiError> {
    let (member, op) = blocking(net, move |hub| {
        volumes::set_role(hub, &hub.acting(uid), &name, &change.member, change.role)
    })
    .await?;
    net.publish_op(op).await;
    Ok(member)
}

/// [`volumes::log`] on a running peer.
pub async fn log_on(net: &Network, name: String, limit: usize) -> Result<Vec<LogEntry>, ApiError> {
    blocking(net, move |hub| volumes::log(hub, &name, limit)).await
}

/// [`volumes::members`] on a running peer.
pub async fn members_on(
    net: &Network,
    uid: Option<u32>,
    name: String,
) -> Result<Vec<MemberInfo>, ApiError> {
    blocking(net, move |hub| {
        volumes::members(hub, &hub.acting(uid), &name)
    })
    .await
}

/// [`volumes::list`] on a running peer.
pub async fn list_on(net: &Network) -> Result<Vec<VolumeInfo>, ApiError> {
    blocking(net, volumes::list).await
}

async fn info_of(net: &Network, volume: VolumeId) -> Result<VolumeInfo, ApiError> {
    let id = volume.to_string();
    list_on(net)
        .await?
        .into_iter()
        .find(|v| v.id == id)
        .ok_or_else(|| VolumeError::Corrupt(format!("volume {id} vanished")).into())
}
