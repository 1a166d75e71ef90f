//! Quantities and times as the CLI reads and writes them: byte counts (`512M`, `1.5 GiB`),
//! durations and op times. Every command module uses these; they live apart from the commands
//! so that no command module imports another's.

/// Format a byte count for people (binary units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A byte count with an optional binary unit: `1048576`, `512K`, `512M`, `1G`, `2GiB` (used
/// by `--capacity` and `--keep`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("expected a size like 512M or 1G, got {s:?}"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (give a whole number and K, M, G or T, \
                 like 512M or 1G)"
            ))
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// A duration in seconds for people: `42s`, `3m07s`, `5h12m`.
pub fn human_duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The op time as the sortable UTC name versions have (`.dfs/versions`).
pub fn utc(millis: u64) -> String {
    dfs_fs::versions::time_name(dfs_fs::model::Time {
        secs: (millis / 1000) as i64,
        nsec: (millis % 1000) as u32 * 1_000_000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2gib"), Ok(2 << 30));
        assert_eq!(parse_size("3 KB"), Ok(3 << 10));
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("12Q").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn times_print_in_utc() {
        assert_eq!(utc(0), "1970-01-01T00-00-00.000000000Z");
        assert_eq!(utc(951_782_400_123), "2000-02-29T00-00-00.123000000Z");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_duration(42.9), "42s");
        assert_eq!(human_duration(187.0), "3m07s");
        assert_eq!(human_duration(18_720.0), "5h12m");
    }
}
