//! `dfs events`: the running peer's event log (peers joined and lost, repairs, errors, user
//! actions), read through its API; `--follow` keeps printing new events as they come.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use dfs_node::{Event, EventKind};

use crate::api_client::api_get;

/// `--since`: a duration back from now (`90s`, `15m`, `2h`, `7d`) or milliseconds since the
/// epoch.
pub fn parse_since(s: &str) -> Result<u64, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let unit = |c: char| match c {
        's' => Some(1_000),
        'm' => Some(60_000),
        'h' => Some(3_600_000),
        'd' => Some(86_400_000),
        _ => None,
    };
    let bad =
        || format!("expected a duration like 90s, 15m, 2h or 7d, or epoch milliseconds, got {s:?}");
    match s.chars().last().and_then(unit) {
        Some(ms) => {
            let n: u64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
            Ok(now.saturating_sub(n.saturating_mul(ms)))
        }
        None => s.parse().map_err(|_| bad()),
    }
}

pub fn run(
    data: &Path,
    since: Option<u64>,
    kinds: &[EventKind],
    follow: bool,
    json: bool,
) -> Result<ExitCode> {
    let kind = kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(",");
    let mut since = since.unwrap_or(0);
    loop {
        let route = format!("/v1/events?since={since}&kind={kind}&limit=1000");
        let events: Vec<Event> = api_get(data, &route)?;
        for e in &events {
            if json {
                println!("{}", serde_json::to_string(e)?);
            } else {
                println!(
                    "{}  {:<15} {:<24} {}",
                    crate::units::utc(e.at_ms),
                    e.kind.name(),
                    e.subject,
                    e.detail
                );
            }
        }
        if let Some(last) = events.last() {
            // Events of the same millisecond as the last one shown are not shown twice.
            since = last.at_ms + 1;
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        if events.len() < 1000 {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Kinds given on the command line.
pub fn parse_kind(s: &str) -> Result<EventKind, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_epoch_millis() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let an_hour = parse_since("1h").unwrap();
        assert!(now - an_hour >= 3_600_000 && now - an_hour < 3_700_000);
        assert_eq!(parse_since("1700000000000").unwrap(), 1_700_000_000_000);
        for bad in ["", "h", "1y", "-1h", "soon"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
