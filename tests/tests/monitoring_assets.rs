//! The monitoring assets in deploy/ hold up against the tools that read them and the peers they
//! watch: `promtool` accepts the scrape config and the alert rules, the alerts' unit tests pass,
//! every Grafana dashboard query is valid PromQL, and every `dfs_` series named by a dashboard
//! query, a template variable, an alert or an alert test is served on `/metrics` by real processes
//! (three storage peers and a `--no-store` mount that wrote and read a file, plus a volume shared
//! by two peers, so FUSE, placement and op-log series exist).
//!
//! Needs `promtool` (Debian package `prometheus`) for the first three, FUSE (root) for the last;
//! each test says on stderr when it skips.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dfs_tests::{cannot_run, fuse_available, random_bytes, MountedNetwork};

/// The workspace root (deploy/ lives there).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

fn prometheus_dir() -> PathBuf {
    root().join("deploy/prometheus")
}

fn dashboard_path() -> PathBuf {
    root().join("deploy/grafana/dfs.json")
}

fn promtool() -> Option<PathBuf> {
    let found = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        cannot_run("no promtool binary (apt-get install prometheus)");
    }
    found
}

/// Run `promtool args...` in `dir`; panic with its output unless it succeeds.
fn promtool_ok(bin: &Path, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The identifiers of a PromQL expression (metric, label and function names, keywords), in
/// order. String literals, comments, numbers and durations (`0.99`, `5m`) and Grafana variables
/// (`$instance`, `${DS}`, `$__rate_interval`) are skipped.
fn identifiers(expr: &str) -> Vec<&str> {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' && q != b'`' { 2 } else { 1 };
                }
                i += 1;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'$' => {
                i += 1;
                if b.get(i) == Some(&b'{') {
                    while i < b.len() && b[i] != b'}' {
                        i += 1;
                    }
                } else {
                    while i < b.len() && ident(b[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit() || c == b'.' => {
                while i < b.len() && (ident(b[i]) || b[i] == b'.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
                out.push(&expr[start..i]);
            }
            _ => i += 1,
        }
    }
    out
}

/// The dfs series an expression names.
fn dfs_names(expr: &str) -> Vec<&str> {
    identifiers(expr)
        .into_iter()
        .filter(|id| id.starts_with("dfs_"))
        .collect()
}

/// A query of the assets: where it is (file and panel or alert) and its PromQL.
#[derive(Debug, Clone)]
struct Query {
    origin: String,
    expr: String,
}

/// Every query of the dashboard: panel targets (recursively through rows and nested panels)
/// and template variable queries (a string or `{"query": ...}`).
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<Query> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<Query>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push(Query {
                    origin: format!(
                        "dfs.json panel {title:?} target {}",
                        target["refId"].as_str().unwrap_or("?")
                    ),
                    expr: target["expr"].as_str().unwrap_or_default().to_string(),
                });
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        let query = &var["query"];
        let expr = query
            .as_str()
            .or_else(|| query["query"].as_str())
            .unwrap_or_default();
        out.push(Query {
            origin: format!("dfs.json variable {}", var["name"]),
            expr: expr.to_string(),
        });
    }
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(&dashboard_path())).expect("dfs.json is JSON")
}

/// The value of `key:` in a YAML line, unquoted, if the line is `key: value` or `- key: value`.
fn yaml_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.trim_start().trim_start_matches("- ");
    let value = rest.strip_prefix(key)?.strip_prefix(':')?.trim();
    let unquoted = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')));
    Some(unquoted.unwrap_or(value))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The values of `key:` in a YAML file written as deploy/prometheus writes it: one line, or a
/// block scalar (`|`, `>`) made of the more indented lines that follow. `name_key` names each
/// value after the last `name_key:` seen before it (an alert's name).
fn yaml_values(path: &Path, key: &str, name_key: &str) -> Vec<Query> {
    let text = read(path);
    let file = path.file_name().unwrap_or_default().to_string_lossy();
    let lines: Vec<&str> = text.lines().collect();
    let mut name = String::from("?");
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        if line.trim_start().starts_with('#') {
            continue;
        }
        if let Some(n) = yaml_value(line, name_key) {
            name = n.to_string();
        }
        let Some(value) = yaml_value(line, key) else {
            continue;
        };
        let expr = if value.starts_with('|') || value.starts_with('>') {
            let mut block = Vec::new();
            while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > indent(line))
            {
                block.push(lines[i].trim());
                i += 1;
            }
            block.join("\n")
        } else {
            value.to_string()
        };
        out.push(Query {
            origin: format!("{file} {name}"),
            expr,
        });
    }
    out
}

fn alert_queries() -> Vec<Query> {
    yaml_values(&prometheus_dir().join("alerts.yml"), "expr", "alert")
}

fn alert_test_series() -> Vec<Query> {
    yaml_values(&prometheus_dir().join("alerts_test.yml"), "series", "name")
}

/// Every query of the assets.
fn all_queries() -> Vec<Query> {
    let mut all = dashboard_queries(&dashboard());
    all.extend(alert_queries());
    all.extend(alert_test_series());
    all
}

/// The series names of a `/metrics` page: the families (`# TYPE name ...`) and the sample
/// names (a histogram's `_bucket`, `_sum` and `_count`).
fn served_names(page: &str, names: &mut BTreeSet<String>) {
    for line in page.lines() {
        let name = match line.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next(),
            None if line.starts_with('#') => None,
            None => line.split(['{', ' ']).next(),
        };
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            names.insert(name.to_string());
        }
    }
}

/// `(origin, name)` of every `dfs_` name in `queries` that is not in `served`.
fn unserved(queries: &[Query], served: &BTreeSet<String>) -> Vec<(String, String)> {
    queries
        .iter()
        .flat_map(|q| {
            dfs_names(&q.expr)
                .into_iter()
                .filter(|n| !served.contains(*n))
                .map(|n| (q.origin.clone(), n.to_string()))
        })
        .collect()
}

#[test]
fn the_scanner_finds_metric_names_and_skips_the_rest() {
    let expr = r#"histogram_quantile(0.99, sum by (op, le) (rate(dfs_fuse_operation_duration_seconds_bucket{instance=~"$instance", op!="dfs_not_a_name"}[$__rate_interval]))) / on(instance) dfs_x:y > 1e3 # dfs_comment"#;
    assert_eq!(
        identifiers(expr),
        [
            "histogram_quantile",
            "sum",
            "by",
            "op",
            "le",
            "rate",
            "dfs_fuse_operation_duration_seconds_bucket",
            "instance",
            "op",
            "on",
            "instance",
            "dfs_x:y",
        ]
    );
    assert_eq!(
        dfs_names("label_values(dfs_uptime_seconds, instance)"),
        ["dfs_uptime_seconds"]
    );
    assert_eq!(
        dfs_names("increase(dfs_a_total[15m]) + increase(dfs_b_total[1h30m])"),
        ["dfs_a_total", "dfs_b_total"]
    );
    // A misspelt name is reported with where it is.
    let served: BTreeSet<String> = ["dfs_uptime_seconds".to_string()].into();
    let queries = [Query {
        origin: "here".into(),
        expr: "dfs_uptime_seconds + dfs_uptime_second".into(),
    }];
    assert_eq!(
        unserved(&queries, &served),
        [("here".to_string(), "dfs_uptime_second".to_string())]
    );
}

#[test]
fn the_assets_are_read_completely() {
    let alerts = alert_queries();
    let names: BTreeSet<&str> = alerts
        .iter()
        .map(|q| q.origin.trim_start_matches("alerts.yml "))
        .collect();
    for alert in [
        "DfsPeerDown",
        "DfsPeersDead",
        "DfsChunksDegraded",
        "DfsChunksLost",
        "DfsDiskNearlyFull",
        "DfsStorageNearlyFull",
        "DfsRepairStalled",
        "DfsScrubFoundCorruptShards",
        "DfsFuseIoErrors",
    ] {
        assert!(names.contains(alert), "no alert {alert} in {names:?}");
    }
    let alert_lines = read(&prometheus_dir().join("alerts.yml"))
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(alerts.len(), alert_lines, "one expr per alert: {alerts:#?}");
    let stalled = alerts
        .iter()
        .find(|q| q.origin.ends_with("DfsRepairStalled"))
        .expect("DfsRepairStalled");
    assert!(
        stalled.expr.contains("dfs_repair_pending_shards")
            && stalled.expr.contains("dfs_rebalance_moved_shards_total"),
        "the block scalar is read whole: {stalled:?}"
    );
    assert!(alert_test_series().len() >= 20);

    let dash = dashboard();
    assert_eq!(dash["schemaVersion"], 39);
    assert_eq!(dash["uid"], "dfs-overview");
    let rows: Vec<&str> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    assert_eq!(
        rows,
        [
            "Network overview",
            "Throughput",
            "Latency",
            "Storage",
            "Health"
        ]
    );
    let queries = dashboard_queries(&dash);
    assert!(queries.len() > 40, "{}", queries.len());
    for q in &queries {
        let ids = identifiers(&q.expr);
        assert!(
            ids.iter().any(|id| id.starts_with("dfs_") || *id == "up"),
            "{} names no series: {:?}",
            q.origin,
            q.expr
        );
    }
    // Every panel but rows queries something, on the dashboard's data source.
    for panel in dash["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{panel}");
        assert!(
            panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "panel without query: {}",
            panel["title"]
        );
    }
}

#[test]
fn promtool_accepts_the_scrape_config_and_the_alert_rules() {
    let Some(bin) = promtool() else {
        return;
    };
    let dir = prometheus_dir();
    let out = promtool_ok(&bin, &dir, &["check", "config", "prometheus.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool_ok(&bin, &dir, &["check", "rules", "alerts.yml"]);
    assert!(out.contains("SUCCESS: 9 rules found"), "{out}");
}

#[test]
fn promtool_unit_tests_of_the_alerts_pass() {
    let Some(bin) = promtool() else {
        return;
    };
    let out = promtool_ok(
        &bin,
        &prometheus_dir(),
        &["test", "rules", "alerts_test.yml"],
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let Some(bin) = promtool() else {
        return;
    };
    // promtool checks PromQL in rule files: make each panel query a recording rule, with the
    // Grafana variables given values as Grafana would.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let queries: Vec<Query> = dashboard_queries(&dashboard())
        .into_iter()
        .filter(|q| !q.expr.starts_with("label_values("))
        .collect();
    for (i, q) in queries.iter().enumerate() {
        let expr = q
            .expr
            .replace("$__rate_interval", "1m")
            .replace("$__interval", "1m")
            .replace("$instance", ".*")
            .replace('\'', "''");
        assert!(!expr.contains('$'), "unknown variable in {q:?}");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: '{expr}'\n"
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("dashboard.yml"), rules).expect("write rules");
    let out = promtool_ok(&bin, dir.path(), &["check", "rules", "dashboard.yml"]);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );
}

#[test]
fn every_series_the_assets_name_is_served_by_real_peers() {
    if !fuse_available() {
        return;
    }
    let queries = all_queries();
    let MountedNetwork {
        nodes,
        peers,
        client,
        mnt,
        mount,
    } = MountedNetwork::start(3);

    // FUSE series: a file written, fsynced and read twice (the memory cache), a missing name
    // looked up (an error).
    let data = random_bytes(6 << 20, 11);
    let mut f = std::fs::File::create(mnt.join("file")).expect("create");
    f.write_all(&data).expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    for _ in 0..2 {
        assert_eq!(std::fs::read(mnt.join("file")).expect("read back"), data);
    }
    assert!(std::fs::metadata(mnt.join("absent")).is_err());

    // Op-log series: a volume, with a second member that pulls its log.
    nodes[0].run(&["volume", "create", "team"]).ok();
    let ticket = nodes[0]
        .run(&["volume", "invite", "team"])
        .ok()
        .last_line()
        .to_string();
    nodes[1].run(&["volume", "join", &ticket]).ok();

    // State series appear as the peers get there (RTTs measured, a repair round run, the
    // log pulled): wait until every name is served, or report those that are not.
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    let (served, missing) = loop {
        let mut served = BTreeSet::new();
        for n in nodes.iter().chain([&client]) {
            served_names(&n.metrics(), &mut served);
        }
        let missing = unserved(&queries, &served);
        if missing.is_empty() || Instant::now() > deadline {
            break (served, missing);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        missing.is_empty(),
        "series named in deploy/ that no peer serves:\n{}\nserved: {served:#?}",
        missing
            .iter()
            .map(|(origin, name)| format!("  {name} ({origin})"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let checked: BTreeSet<&str> = queries.iter().flat_map(|q| dfs_names(&q.expr)).collect();
    eprintln!(
        "{} dfs series named in {} queries, all served after {:?}",
        checked.len(),
        queries.len(),
        start.elapsed()
    );
    assert!(checked.len() >= 35, "{checked:?}");
    drop(mount);
    drop(peers);
}
