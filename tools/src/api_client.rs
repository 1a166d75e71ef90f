//! The client of a running peer's HTTP control API (`DATA/api.json` names its address and
//! token): every command that asks a peer something (`dfs status`, `peers`, `top`, `stats`,
//! `events`, `log`, `volume`) goes through [`api_get`] or [`api_post`], which turn a missing or
//! stopped peer and the API's error answers into one clear message.

use std::path::Path;

use anyhow::{bail, Context, Result};
use dfs_node::ApiEndpoint;

/// GET an API route of the peer running on `data` and decode its JSON.
pub(crate) fn api_get<T: serde::de::DeserializeOwned>(data: &Path, route: &str) -> Result<T> {
    api_call(data, route, None)
}

/// POST a JSON body to an API route of the peer running on `data` and decode its JSON.
pub(crate) fn api_post<T: serde::de::DeserializeOwned>(
    data: &Path,
    route: &str,
    body: &impl serde::Serialize,
) -> Result<T> {
    let body = serde_json::to_string(body).context("cannot encode the request")?;
    api_call(data, route, Some(body))
}

fn api_call<T: serde::de::DeserializeOwned>(
    data: &Path,
    route: &str,
    post: Option<String>,
) -> Result<T> {
    let endpoint = match ApiEndpoint::load(data) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no dfs peer is running on {} (start one with `dfs node` or `dfs mount`)",
            data.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| {
                format!("cannot read {}", data.join(dfs_node::API_FILE).display())
            })
        }
    };
    let url = format!("{}{route}", endpoint.url);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        // Long enough for the calls a peer makes on behalf of one (an OIDC login asks the
        // issuer twice, each within 10 s).
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let auth = format!("Bearer {}", endpoint.token);
    // The peer acts as the user logged in for this uid (`dfs login`), if any.
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() }.to_string();
    let sent = match post {
        None => agent
            .get(&url)
            .header("Authorization", &auth)
            .header(dfs_node::UID_HEADER, &uid)
            .call(),
        Some(body) => agent
            .post(&url)
            .header("Authorization", &auth)
            .header(dfs_node::UID_HEADER, &uid)
            .content_type("application/json")
            .send(body.as_bytes()),
    };
    let mut response = match sent {
        Ok(r) => r,
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => bail!(
            "no dfs peer is running on {} (its API at {} refuses connections; the peer \
             that wrote {} has stopped)",
            data.display(),
            endpoint.url,
            dfs_node::API_FILE
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot reach the peer's API at {url}")),
    };
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("cannot read the answer from {url}"))?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(String::from))
            .unwrap_or(body);
        let message = format!("the peer's API answered {status}: {message}");
        // A refusal of what was asked (4xx) is the user's to fix; anything else failed.
        if status.is_client_error() {
            return Err(crate::BadInput(message).into());
        }
        bail!(message);
    }
    serde_json::from_str(&body).with_context(|| format!("unexpected answer from {url}"))
}
