//! `dfs stats`: usage analytics of the running peer's mount: the most read files (opens for
//! reading, bytes read and written) and the users (uids) that used it, active ones first.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use dfs_node::AnalyticsReport as Report;

use crate::api_client::api_get;
use crate::units::human_bytes;

pub fn run(data: &Path, top: usize, json: bool) -> Result<ExitCode> {
    let r: Report = api_get(data, &format!("/v1/stats?top={top}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} files tracked, {} read, {} written, {} active users (seen in the last 15 min)",
        r.files_tracked,
        human_bytes(r.bytes_read),
        human_bytes(r.bytes_written),
        r.active_users
    );
    if !r.popular_files.is_empty() {
        println!(
            "\n{:>6} {:>10} {:>10}  MOST READ FILES",
            "OPENS", "READ", "WRITTEN"
        );
        for f in &r.popular_files {
            println!(
                "{:>6} {:>10} {:>10}  {}",
                f.opens,
                human_bytes(f.bytes_read),
                human_bytes(f.bytes_written),
                f.path
            );
        }
    }
    if !r.users.is_empty() {
        println!(
            "\n{:>8} {:>8} {:>10} {:>10}  STATE",
            "UID", "OPS", "READ", "WRITTEN"
        );
        for u in &r.users {
            println!(
                "{:>8} {:>8} {:>10} {:>10}  {}",
                u.uid,
                u.ops,
                human_bytes(u.bytes_read),
                human_bytes(u.bytes_written),
                if u.active { "active" } else { "idle" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
