//! `dfs`: the command-line tool. Parses arguments, opens the data directory, calls into the fs
//! and node crates and prints results; every failure reaches the user as one `dfs: error:` line.

use std::process::ExitCode;

use clap::Parser;

/// Whether log lines (and the peer's notices) are JSON objects (`--log-format json`).
static JSON_LOGS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Tell the user what a long-running command is doing: `dfs: ...` on stderr, or an info log
/// line when logs are JSON (so a log collector sees only JSON).
macro_rules! notice {
    ($($arg:tt)*) => {
        if crate::JSON_LOGS.get().copied().unwrap_or(false) {
            tracing::info!(target: "dfs_notice", "{}", format_args!($($arg)*));
        } else {
            eprintln!("dfs: {}", format_args!($($arg)*));
        }
    };
}
pub(crate) use notice;

mod api_client;
mod cache;
mod cli;
mod events;
mod history;
mod oidc_login;
mod peer;
mod progress;
mod stats;
mod status;
mod top;
mod units;
mod user;
mod volume;

/// Keep memory that the process frees for its next allocations instead of handing it back to
/// the kernel. glibc serves the megabyte buffers of shards and chunks from fresh `mmap`s, or
/// trims them off its heaps as soon as they are freed, so each new one faults in new pages;
/// on the virtual machines we measure on, pages the host has taken back cost about a second
/// of CPU per GiB to touch again (docs/placement.md). With a fixed mmap threshold of 32 MiB
/// (glibc's largest) and a trim threshold of 512 MiB, a peer's footprint stays at its working
/// set, which the inbound permits, the chunk workers and the cache sizes bound.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`dfs put x | head -1`) like other Unix tools, instead of
    // reporting EPIPE as an error: Rust ignores SIGPIPE by default.
    // SAFETY: called before any thread starts; SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_freed_memory();
    let args = cli::Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("DFS_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if args.verbose {
            "info,fuser=warn,libp2p_request_response=error,dfs_notice=info"
        } else {
            // fuser warns when the mount it would undo is already gone (`dfs umount`);
            // request-response warns of every inbound stream it drops at capacity, which a
            // hostile peer could turn into a flood of log lines (dfs_inbound_refused_total and
            // the per-connection stream cap count and bound them instead).
            "warn,fuser=error,libp2p_kad=error,libp2p_request_response=error,dfs_notice=info"
        })
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = JSON_LOGS.set(args.log_format == cli::LogFormat::Json);
    match args.log_format {
        cli::LogFormat::Text => logs.init(),
        cli::LogFormat::Json => logs.json().init(),
    }
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dfs: error: {}", one_line(&e));
            if e.chain().any(|cause| cause.is::<BadInput>()) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// An error in what the user gave (a wrong passphrase, an unknown user, a malformed ticket, a
/// request the peer's API refused as bad): `dfs` exits with status 2 for it, 1 for failures.
#[derive(Debug)]
pub(crate) struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// The error and its causes on one line, skipping causes whose text the message already holds
/// (many errors quote their source).
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
}
