//! The deployment artifacts query only metrics the keepers export: every metric named in the
//! Prometheus rules (deploy/prometheus/*.yml) and the Grafana dashboards (deploy/grafana/*.json)
//! must appear in a real `/metrics` scrape of each keeper's ops server, with every family touched.
//!
//! The scrapes are also written to `target/tmp/deploy-metrics-<keeper>.prom`, where
//! scripts/validate-deploy.sh runs `promtool check metrics` on them and repeats the comparison
//! with its own (Python) PromQL reader.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bridge_health::metrics::BridgeMetrics;
use db_backup::metrics::BackupMetrics;
use keeper_runtime::runner::Shutdown;
use keeper_runtime::telemetry::metrics::labels;
use keeper_runtime::telemetry::{Health, Metrics, serve_ops};
use keeper_sources::metrics::PriceMetrics;
use keeper_ton::metrics::ChainMetrics;

const KEEPERS: [&str; 3] = ["pricing-oracle", "bridge-health", "db-backup"];

/// Series Prometheus itself adds to every target.
const SYNTHETIC: [&str; 1] = ["up"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Gives every family at least one series, so the scrape lists its sample names.
fn touch(
    m: &Metrics,
    keeper: &str,
    bridge: Option<&BridgeMetrics>,
    backup: Option<&BackupMetrics>,
) {
    ChainMetrics::of(m)
        .oracle_last_update
        .get_or_create(&labels([("asset", "USDT")]))
        .set(1_700_000_000);
    ChainMetrics::of(m).update_success.inc();
    ChainMetrics::of(m).update_latency.observe(3.0);
    ChainMetrics::of(m)
        .wallet_balance
        .get_or_create(&labels([("wallet", "UQ")]))
        .set(12.5);
    m.record_cycle("success", 0.4);
    m.last_success
        .get_or_create(&labels([("keeper", keeper)]))
        .set(1_700_000_000);
    m.ticks_skipped
        .get_or_create(&labels([("keeper", keeper)]))
        .inc();
    m.record_source_request("coingecko", "ok", 0.2);
    PriceMetrics::of(m)
        .source_price
        .get_or_create(&labels([("asset", "USDT"), ("source", "coingecko")]))
        .set(0.9998);
    PriceMetrics::of(m)
        .aggregate_price
        .get_or_create(&labels([("asset", "USDT")]))
        .set(0.9999);
    ChainMetrics::of(m)
        .ton_messages
        .get_or_create(&labels([("op", "update_price"), ("outcome", "confirmed")]))
        .inc();
    ChainMetrics::of(m)
        .wallet_seqno
        .get_or_create(&labels([("wallet", "UQ")]))
        .set(7);
    ChainMetrics::of(m)
        .lock_held
        .get_or_create(&labels([("wallet", "UQ")]))
        .set(1);
    if let Some(b) = bridge {
        b.score
            .get_or_create(&labels([("bridge", "orbit")]))
            .set(0.75);
        b.online
            .get_or_create(&labels([("bridge", "orbit")]))
            .set(1);
    }
    m.alert_notifications
        .get_or_create(&labels([("channel", "slack"), ("outcome", "sent")]))
        .inc();
    m.alerts_firing
        .get_or_create(&labels([("alert", "bridge_degraded:orbit")]))
        .set(1);
    m.store_up
        .get_or_create(&labels([("store", "postgres")]))
        .set(1);
    m.store_errors
        .get_or_create(&labels([("store", "redis")]))
        .inc();
    if let Some(b) = backup {
        b.last_success_timestamp.set(1_700_000_000);
        b.duration_seconds.set(12.5);
        b.size_bytes.set(1 << 20);
        b.runs
            .get_or_create(&labels([("outcome", "success")]))
            .inc();
    }
}

/// Metric names a scrape offers: sample names, plus the names every `# TYPE` line implies (so a
/// family nobody touched still counts).
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (Some(name), Some(kind)) = (it.next(), it.next()) else {
                continue;
            };
            match kind {
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{s}"));
                    }
                }
                "counter" if !name.ends_with("_total") => {
                    names.insert(format!("{name}_total"));
                }
                _ => {
                    names.insert(name.to_owned());
                }
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

const KEYWORDS: [&str; 13] = [
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
];
const LABEL_LIST_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Skips a bracketed group starting at `i` (which holds `open`), honouring quoted strings.
fn skip_group(c: &[char], mut i: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    while i < c.len() {
        match c[i] {
            q @ ('"' | '\'' | '`') => i = skip_string(c, i, q),
            ch if ch == open => {
                depth += 1;
                i += 1;
            }
            ch if ch == close => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    i
}

fn skip_string(c: &[char], mut i: usize, quote: char) -> usize {
    i += 1;
    while i < c.len() && c[i] != quote {
        if c[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// Metric names a PromQL expression selects (Grafana `$vars` allowed): identifiers that are not
/// functions, keywords, label names in matchers or grouping lists, numbers or durations.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    let c: Vec<char> = expr.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if matches!(ch, '"' | '\'' | '`') {
            i = skip_string(&c, i, ch);
        } else if ch == '{' {
            i = skip_group(&c, i, '{', '}');
        } else if ch == '[' {
            i = skip_group(&c, i, '[', ']');
        } else if ch == '$' {
            i += 1;
            if i < c.len() && c[i] == '{' {
                i = skip_group(&c, i, '{', '}');
            } else {
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            }
        } else if ch.is_ascii_digit()
            || (ch == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '.' || c[i] == '_') {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                i += 1;
            }
            let ident: String = c[start..i].iter().collect();
            let mut j = i;
            while j < c.len() && c[j].is_whitespace() {
                j += 1;
            }
            let rest: String = c[j..c.len().min(j + 8)].iter().collect();
            // `sum by (…) (…)`: an aggregation with its grouping first.
            let grouped = ["by", "without"].iter().any(|k| {
                rest.strip_prefix(k)
                    .is_some_and(|r| r.starts_with(|ch: char| ch == '(' || ch.is_whitespace()))
            });
            let call = (j < c.len() && c[j] == '(') || grouped;
            let lower = ident.to_ascii_lowercase();
            if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                if call {
                    i = skip_group(&c, j, '(', ')');
                }
            } else if !call && !KEYWORDS.contains(&lower.as_str()) {
                out.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The `expr:` values of a rule file, inline or block scalars (`>-`, `|`).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        i += 1;
        let Some(rest) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest.starts_with('>') || rest.starts_with('|') {
            let mut body = String::new();
            while i < lines.len() {
                let l = lines[i];
                let t = l.trim_start();
                if !t.is_empty() && l.len() - t.len() <= indent {
                    break;
                }
                body.push_str(t);
                body.push('\n');
                i += 1;
            }
            out.push(body);
        } else {
            out.push(rest.trim_matches(|ch| ch == '\'' || ch == '"').to_owned());
        }
    }
    out
}

/// PromQL of a Grafana dashboard: every target `expr` and every query variable.
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map {
                match (k.as_str(), val) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("templating", serde_json::Value::Object(t)) => {
                        for var in t
                            .get("list")
                            .and_then(|l| l.as_array())
                            .into_iter()
                            .flatten()
                        {
                            if var.get("type").and_then(|t| t.as_str()) != Some("query") {
                                continue;
                            }
                            let q = match var.get("query") {
                                Some(serde_json::Value::String(s)) => s.clone(),
                                Some(o) => o
                                    .get("query")
                                    .and_then(|q| q.as_str())
                                    .unwrap_or_default()
                                    .to_owned(),
                                None => String::new(),
                            };
                            // label_values(metric{…}, label): the label is not a metric.
                            let q = match q.strip_prefix("label_values(") {
                                Some(rest) => rest
                                    .rsplit_once(',')
                                    .map(|(metric, _)| metric.to_owned())
                                    .unwrap_or(rest.trim_end_matches(')').to_owned()),
                                None => q,
                            };
                            out.push(q);
                        }
                    }
                    _ => dashboard_exprs(val, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| dashboard_exprs(x, out)),
        _ => {}
    }
}

fn files_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .collect();
    v.sort();
    v
}

/// Every metric the deploy/ artifacts reference, with where it was found.
fn referenced_metrics(root: &Path) -> Vec<(String, String)> {
    let mut refs = Vec::new();
    let rules = files_in(&root.join("deploy/prometheus"), |n| {
        n.ends_with(".yml") && !n.ends_with(".test.yml")
    });
    assert!(!rules.is_empty(), "no rule files in deploy/prometheus");
    for path in rules {
        let text = std::fs::read_to_string(&path).unwrap();
        let exprs = rule_exprs(&text);
        let rules = text
            .lines()
            .filter(|l| {
                let t = l.trim_start();
                t.starts_with("- alert:") || t.starts_with("- record:")
            })
            .count();
        assert_eq!(exprs.len(), rules, "{}: one expr per rule", path.display());
        for e in exprs {
            let names = promql_metrics(&e);
            assert!(!names.is_empty(), "{}: no metric in {e:?}", path.display());
            refs.extend(names.into_iter().map(|n| (n, path.display().to_string())));
        }
    }
    let dashboards = files_in(&root.join("deploy/grafana"), |n| n.ends_with(".json"));
    assert!(!dashboards.is_empty(), "no dashboards in deploy/grafana");
    for path in dashboards {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut exprs = Vec::new();
        dashboard_exprs(&json, &mut exprs);
        assert!(
            exprs.len() >= 10,
            "{}: only {} queries",
            path.display(),
            exprs.len()
        );
        for e in exprs {
            refs.extend(
                promql_metrics(&e)
                    .into_iter()
                    .map(|n| (n, path.display().to_string())),
            );
        }
    }
    refs
}

async fn scrape(keeper: &str) -> String {
    // What each binary registers: the chain families in both chain keepers, the price families
    // in the pricing keeper, neither in db-backup.
    let mut registry = Metrics::new(keeper);
    if keeper != "db-backup" {
        registry.add::<ChainMetrics>();
    }
    if keeper == "pricing-oracle" {
        registry.add::<PriceMetrics>();
    }
    let bridge = (keeper == "bridge-health").then(|| BridgeMetrics::register(&mut registry));
    let backup = (keeper == "db-backup").then(|| BackupMetrics::register(&mut registry));
    touch(&registry, keeper, bridge.as_ref(), backup.as_ref());
    let metrics = Arc::new(registry);
    let shutdown = Shutdown::new();
    let health = Health::new(keeper, Duration::from_secs(60), &[]);
    let ops = serve_ops(
        "127.0.0.1:0".parse().unwrap(),
        metrics,
        health,
        shutdown.clone(),
    )
    .await
    .unwrap();
    let resp = keeper_runtime::http::client(Duration::from_secs(5))
        .get(format!("http://{}/metrics", ops.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.text().await.unwrap();
    shutdown.trigger();
    ops.stopped().await;
    body
}

#[tokio::test]
async fn deploy_artifacts_query_only_exported_metrics() {
    let root = repo_root();
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let mut exported: BTreeSet<String> = SYNTHETIC.iter().map(|s| s.to_string()).collect();
    for keeper in KEEPERS {
        let text = scrape(keeper).await;
        let names = exported_names(&text);
        // The touched series are really in the scrape, so the comparison below is meaningful.
        // db-backup links no TON code, so it exports no wallet family.
        let wallet = (keeper != "db-backup").then_some("keeper_wallet_balance_ton");
        for sample in [
            "keeper_cycles_total",
            "keeper_cycle_duration_seconds_bucket",
            "keeper_build_info",
        ]
        .into_iter()
        .chain(wallet)
        {
            assert!(
                text.lines().any(|l| l.starts_with(sample)),
                "{keeper}: no {sample} sample in\n{text}"
            );
        }
        std::fs::write(out_dir.join(format!("deploy-metrics-{keeper}.prom")), &text).unwrap();
        exported.extend(names);
    }
    // The fixed metric names, as Prometheus sees them.
    for fixed in [
        "pricing_oracle_last_update_timestamp",
        "keeper_update_success_total",
        "keeper_update_latency_seconds_bucket",
        "bridge_health_score",
        "keeper_wallet_balance_ton",
        "keeper_cycles_total",
        "keeper_last_success_timestamp_seconds",
        "keeper_source_requests_total",
        "pricing_oracle_price",
        "pricing_oracle_aggregate_price",
        "keeper_ton_messages_total",
        "bridge_online",
        "backup_last_success_timestamp_seconds",
        "backup_size_bytes",
        "backup_runs_total",
    ] {
        assert!(exported.contains(fixed), "{fixed} is not exported");
    }

    let refs = referenced_metrics(&root);
    let distinct: BTreeSet<&str> = refs.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        distinct.len() >= 15,
        "the artifacts reference only {distinct:?}"
    );
    let missing: Vec<String> = refs
        .iter()
        .filter(|(n, _)| !exported.contains(n))
        .map(|(n, file)| format!("{n} (in {file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/ queries metrics no keeper exports: {missing:?}\nexported: {exported:?}"
    );
}

#[test]
fn promql_reader_finds_metrics_not_labels_functions_or_durations() {
    let cases: [(&str, &[&str]); 7] = [
        (
            r#"histogram_quantile(0.95, sum by (le, keeper) (rate(keeper_cycle_duration_seconds_bucket{job=~"$job"}[$__rate_interval])))"#,
            &["keeper_cycle_duration_seconds_bucket"],
        ),
        (
            r#"max by (job, namespace, bridge) (label_replace(keeper_alerts_firing{alert=~"bridge_degraded:.+"}, "bridge", "$1", "alert", "x:(.+)")) == 1"#,
            &["keeper_alerts_firing"],
        ),
        (
            "time() - max_over_time(backup_last_success_timestamp_seconds[1d]) > 4.32e4",
            &["backup_last_success_timestamp_seconds"],
        ),
        (
            "a_total offset 5m / ignoring(outcome) group_left(x) b_total unless on (j) c",
            &["a_total", "b_total", "c"],
        ),
        ("absent(up{job=\"keepers\"})", &["up"]),
        ("sum(rate(x_total[5m:1m])) BY (a) > bool 0", &["x_total"]),
        ("${__interval} + foo:bar", &["foo:bar"]),
    ];
    for (expr, want) in cases {
        let got: Vec<String> = promql_metrics(expr).into_iter().collect();
        assert_eq!(got, want, "{expr}");
    }
}

#[test]
fn rule_reader_handles_inline_and_block_expressions() {
    let yaml = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 1m\n      - alert: B\n        expr: >-\n          sum(x)\n          > 1\n        labels: {}\n      - record: r\n        expr: 'y'\n";
    assert_eq!(rule_exprs(yaml), vec!["up == 0", "sum(x)\n> 1\n", "y"]);
}
