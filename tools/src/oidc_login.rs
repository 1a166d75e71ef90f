//! `dfs login --oidc ISSUER`: the person's side of an OIDC login (RFC 8252, native apps).
//!
//! The CLI listens on a loopback port, asks the running peer to start the login with that port
//! as the redirect (the peer holds the PKCE verifier and the nonce, and verifies the ID
//! token: see `dfs_node`'s `oidc` module), opens the issuer's page in `$BROWSER` (or prints
//! it), and waits for the issuer to send the browser back with a code. The code goes to the
//! peer, never anywhere else; the page the browser lands on only says to look at the terminal.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::routing::get;
use dfs_node::{OidcFinish, OidcLoggedIn, OidcStart, OidcStarted};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::api_client::api_post;
use crate::user::{short, target_uid};
use crate::BadInput;

/// What `dfs login --oidc` was asked.
pub struct OidcLogin {
    pub issuer: String,
    pub client_id: String,
    pub user: Option<String>,
    pub uid: Option<u32>,
    pub wait: Duration,
}

/// The query the issuer redirects the browser back with (RFC 6749 4.1.2).
#[derive(Debug, Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// What the callback learned: a code, or the issuer's refusal.
type Answer = Result<String, String>;

pub fn run(data: &Path, login: OidcLogin) -> Result<ExitCode> {
    let uid = target_uid(login.uid)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot listen on a loopback port for the issuer's redirect")?;
    let port = listener.local_addr()?.port();
    let started: OidcStarted = api_post(
        data,
        "/v1/login/oidc",
        &OidcStart {
            issuer: login.issuer.clone(),
            client_id: login.client_id,
            redirect_uri: format!("http://127.0.0.1:{port}/callback"),
            user: login.user,
        },
    )?;
    open_browser(&started.authorize_url);
    let code = wait_for_code(listener, &started.state, login.wait)?;
    let done: OidcLoggedIn = api_post(
        data,
        "/v1/login/oidc/finish",
        &OidcFinish {
            state: started.state,
            code,
            uid,
        },
    )?;
    println!(
        "logged in as {} ({}) for uid {}: {} vouches for it as subject {:?}{}",
        done.session.user,
        short(&done.session.id),
        done.session.uid,
        done.issuer,
        done.subject,
        if done.created { " (a new user)" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

/// Open `url` with `$BROWSER` if set (a command, given the URL as its last argument);
/// always print it too, for a browser elsewhere.
fn open_browser(url: &str) {
    eprintln!("dfs: open this page to log in: {url}");
    let Ok(browser) = std::env::var("BROWSER") else {
        return;
    };
    let mut words = browser.split_whitespace();
    let Some(program) = words.next() else {
        return;
    };
    let spawned = std::process::Command::new(program)
        .args(words)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        eprintln!("dfs: cannot start $BROWSER ({program}): {e}; open the page by hand");
    }
}

/// Serve the loopback redirect until the issuer's answer for `state` comes, or `wait` passes.
fn wait_for_code(listener: std::net::TcpListener, state: &str, wait: Duration) -> Result<String> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the loopback listener")?;
    let expected = state.to_string();
    let answer = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (tx, mut rx) = mpsc::channel::<Answer>(1);
        let app = axum::Router::new()
            .route("/callback", get(callback))
            .with_state((tx, expected));
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let answer = tokio::time::timeout(wait, rx.recv()).await;
        server.abort();
        anyhow::Ok(answer)
    })?;
    match answer {
        Ok(Some(Ok(code))) => Ok(code),
        Ok(Some(Err(refusal))) => Err(BadInput(format!("the issuer refused the login: {refusal}")).into()),
        Ok(None) | Err(_) => Err(BadInput(format!(
            "no answer from the issuer within {}: the page was not opened or not finished (see --wait)",
            humantime::format_duration(wait)
        ))
        .into()),
    }
}

/// The redirect: hand the code (or the refusal) to the waiting CLI if the state is the one
/// the login started with; any other request gets a refusal and changes nothing.
async fn callback(
    State((tx, expected)): State<(mpsc::Sender<Answer>, String)>,
    Query(query): Query<Callback>,
) -> (axum::http::StatusCode, &'static str) {
    use axum::http::StatusCode;
    if query.state.as_deref() != Some(expected.as_str()) {
        return (
            StatusCode::BAD_REQUEST,
            "dfs: this is not the login dfs is waiting for (its state differs).\n",
        );
    }
    let answer = match (query.code, query.error) {
        (Some(code), None) => Ok(code),
        (_, Some(error)) => Err(match query.error_description {
            Some(description) => format!("{error}: {description}"),
            None => error,
        }),
        (None, None) => Err("the redirect carried neither a code nor an error".to_string()),
    };
    let ok = answer.is_ok();
    // A second answer for the same state finds the CLI gone or busy: it is dropped.
    let _ = tx.try_send(answer);
    if ok {
        (
            StatusCode::OK,
            "dfs: the issuer answered; the terminal says whether the login worked. You can close this page.\n",
        )
    } else {
        (
            StatusCode::BAD_REQUEST,
            "dfs: the issuer refused the login; see the terminal.\n",
        )
    }
}
