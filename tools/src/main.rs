//! `dfs`: the command-line tool. Parses arguments, opens the data directory, calls into the fs
//! and node crates and prints results; every failure reaches the user as one `dfs: error:` line.

mod cache;
mod cli;
mod peer;
mod volume;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`dfs put x | head -1`) like other Unix tools, instead of
    // reporting EPIPE as an error: Rust ignores SIGPIPE by default.
    // SAFETY: called before any thread starts; SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DFS_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if args.verbose {
                    "info,fuser=warn"
                } else {
                    // fuser warns when the mount it would undo is already gone (`dfs umount`).
                    "warn,fuser=error,libp2p_kad=error"
                })
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dfs: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

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
