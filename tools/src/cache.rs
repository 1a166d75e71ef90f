//! `dfs cache stats` and `dfs cache prune`: the local disk cache of chunks fetched from other
//! peers (`DATA/cache/`). Both work on the directory itself, so they run whether or not a peer
//! has the data directory open (they take no lock); a running peer sees pruned entries as misses.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use dfs_node::cache as diskcache;
use dfs_node::Config;
use serde::Serialize;

use crate::units::{human_bytes, parse_size};

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Show how many chunks the cache holds and their size against the limit
    Stats {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Remove the least recently used chunks from the cache
    #[command(
        long_about = "Remove chunks from the disk cache, least recently used first, until at \
most --keep bytes remain (all of them by default). The cache only holds copies of chunks \
stored on other peers: nothing is lost, later reads fetch them again."
    )]
    Prune {
        /// Bytes to keep, e.g. 512M or 1G [default: 0, i.e. empty the cache]
        #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "0")]
        keep: u64,
    },
}

/// What `dfs cache stats --json` prints.
#[derive(Serialize)]
struct StatsJson<'a> {
    path: &'a Path,
    entries: u64,
    bytes: u64,
    limit: u64,
}

/// Run a `dfs cache` command on the data directory `data`.
pub fn run(data: &Path, command: CacheCommand) -> Result<ExitCode> {
    let dir = diskcache::cache_dir(data);
    match command {
        CacheCommand::Stats { json } => {
            let config = Config::load(&data.join("config.toml"))?;
            let limit = config.cache.disk_bytes;
            let stats = diskcache::scan(&dir, limit)
                .with_context(|| format!("cannot read the disk cache {}", dir.display()))?;
            if json {
                let out = StatsJson {
                    path: &dir,
                    entries: stats.entries,
                    bytes: stats.bytes,
                    limit: stats.limit,
                };
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                let disabled = if limit == 0 {
                    " (disabled: [cache] disk_bytes = 0)"
                } else {
                    ""
                };
                println!(
                    "disk cache {}: {} chunks, {} of {} limit{disabled}",
                    dir.display(),
                    stats.entries,
                    human_bytes(stats.bytes),
                    human_bytes(limit)
                );
            }
        }
        CacheCommand::Prune { keep } => {
            let report = diskcache::prune_dir(&dir, keep)
                .with_context(|| format!("cannot prune the disk cache {}", dir.display()))?;
            println!(
                "removed {} chunks, freed {}",
                report.removed_entries,
                human_bytes(report.freed_bytes)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
