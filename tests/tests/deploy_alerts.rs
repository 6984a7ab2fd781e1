//! One name, one severity and one threshold per problem: the alerts the keepers raise themselves
//! (`Alert::new`, `Staleness::new` in the sources) and the Prometheus rules in
//! deploy/prometheus/keepers-rules.yml must agree, so a deployment with both pages once
//! (Alertmanager groups the two under one `alertname`; docs/operations.md, "Alerting: one page
//! per problem").
//!
//! Fails when the code raises an alert with no rule of the same name that is not listed below as
//! keeper-only with a reason, when a rule has no keeper twin and is not listed as rule-only, when
//! a paired alert's severity differs, or when a rule's threshold differs from the default of the
//! keeper setting it mirrors.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Alerts only a keeper can raise, and why no rule does.
const KEEPER_ONLY: [(&str, &str); 12] = [
    (
        "wallet_unfunded",
        "compares a batch's values and fees with the balance before signing, which no metric holds",
    ),
    (
        "wallet_runway_low",
        "needs the spend per day the keeper estimates from its own sends",
    ),
    (
        "update_not_applied",
        "needs the read-back of a message the keeper just confirmed",
    ),
    (
        "update_failed_onchain",
        "needs the exit code of the oracle transaction the keeper traced",
    ),
    (
        "endpoint_down",
        "the keeper fails over per request; the outcome counters are on the dashboard",
    ),
    (
        "bridge_unknown",
        "says the keeper could not read any signal, which only the keeper knows",
    ),
    (
        "quorum_lost",
        "decided from the quote set of one tick, which is not exported",
    ),
    (
        "source_divergence",
        "decided from the quote set of one tick, which is not exported",
    ),
    (
        "source_down",
        "decided from each source's last usable quote, which is not exported",
    ),
    (
        "price_move_held",
        "the circuit breaker's state lives in the keeper",
    ),
    (
        "clock_skew",
        "compares the host clock with chain time as the keeper reads it",
    ),
    (
        "oracle_unreadable",
        "needs the get-method answer the keeper just failed to read",
    ),
];

/// Rules with no keeper twin, and why.
const RULE_ONLY: [(&str, &str); 6] = [
    ("keeper_down", "a dead process cannot report itself"),
    ("keeper_absent", "nothing is running to report it"),
    (
        "keeper_cycle_failures",
        "a rate over 15 minutes of keeper_cycles_total; the keeper pages on keeper_stale",
    ),
    (
        "wallet_balance_critical",
        "a second, higher-severity step on keeper_wallet_balance_ton",
    ),
    (
        "backup_never_succeeded",
        "judged over a day of pushed metrics, across one-shot runs",
    ),
    (
        "backup_metrics_absent",
        "the absence of a job's metrics is seen only from outside",
    ),
];

/// Generic alert plumbing: keys built from a caller's name, resolved at the callers.
const PLUMBING: [&str; 2] = [
    "common/runtime/src/alert/",
    "common/runtime/src/runner/staleness.rs",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One rule of the rules file.
#[derive(Debug)]
struct Rule {
    alert: String,
    expr: String,
    severity: String,
}

/// The alerting rules of a rules file: name, expression (inline or block scalar) and severity.
fn rules(yaml: &str) -> Vec<Rule> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out: Vec<Rule> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        i += 1;
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            out.push(Rule {
                alert: name.trim().to_owned(),
                expr: String::new(),
                severity: String::new(),
            });
        } else if let (Some(rest), Some(rule)) = (trimmed.strip_prefix("expr:"), out.last_mut()) {
            let rest = rest.trim();
            if rest.starts_with('>') || rest.starts_with('|') {
                while i < lines.len() {
                    let l = lines[i];
                    let t = l.trim_start();
                    if !t.is_empty() && l.len() - t.len() <= indent {
                        break;
                    }
                    rule.expr.push_str(t);
                    rule.expr.push('\n');
                    i += 1;
                }
            } else {
                rule.expr = rest.to_owned();
            }
        } else if let (Some(sev), Some(rule)) = (trimmed.strip_prefix("severity:"), out.last_mut())
        {
            rule.severity = sev.trim().to_owned();
        }
    }
    out
}

/// The number of the first `>` or `<` comparison with a literal (`… > 180`, `… < 5`).
fn threshold(expr: &str) -> Option<f64> {
    let b = expr.as_bytes();
    for (i, c) in b.iter().enumerate() {
        if *c != b'>' && *c != b'<' {
            continue;
        }
        let rest = expr[i + 1..].trim_start_matches('=').trim_start();
        let num: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == 'e' || *c == '+')
            .collect();
        if let Ok(n) = num.parse() {
            return Some(n);
        }
    }
    None
}

/// Every `.rs` file under `dir`, without test files and directories.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            if !matches!(name.as_str(), "tests" | "benches" | "target") {
                sources(&p, out);
            }
        } else if name.ends_with(".rs") && !name.ends_with("_tests.rs") {
            out.push(p);
        }
    }
}

/// The arguments of the call whose `(` is at `open`, split at top-level commas.
fn call_args(src: &str, open: usize) -> Vec<String> {
    let mut args = vec![String::new()];
    let mut depth = 0usize;
    let mut in_str = false;
    let mut prev = ' ';
    for c in src[open..].chars() {
        let mut keep = true;
        if in_str {
            in_str = !(c == '"' && prev != '\\');
        } else {
            match c {
                '"' => in_str = true,
                '(' | '[' | '{' => {
                    depth += 1;
                    keep = depth > 1;
                }
                ')' | ']' | '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => {
                    args.push(String::new());
                    keep = false;
                }
                _ => {}
            }
        }
        if keep {
            args.last_mut().unwrap().push(c);
        }
        prev = c;
    }
    args.into_iter().map(|a| a.trim().to_owned()).collect()
}

/// `const NAME: &str = "value";` of one file.
fn consts(src: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in src.lines() {
        let Some(rest) = line.trim_start().split_once("const ").map(|(_, r)| r) else {
            continue;
        };
        if let Some((name, value)) = rest.split_once(": &str = \"")
            && let Some((value, _)) = value.split_once('"')
        {
            out.insert(name.trim().to_owned(), value.to_owned());
        }
    }
    out
}

/// The alert name an expression evaluates to: a literal, a constant, a `format!` key, a local
/// variable (its nearest `let` before `at`) or a key helper of the same file.
fn resolve(
    expr: &str,
    src: &str,
    at: usize,
    local: &HashMap<String, String>,
    global: &HashMap<String, String>,
) -> Option<String> {
    let e = expr.trim().trim_start_matches('&');
    let e = e
        .strip_suffix(".clone()")
        .or_else(|| e.strip_suffix(".to_owned()"))
        .or_else(|| e.strip_suffix(".into()"))
        .unwrap_or(e);
    let e = e.strip_prefix("self.").unwrap_or(e);
    let name_of = |key: &str| key.split(':').next().unwrap_or(key).to_owned();
    if let Some(lit) = e.strip_prefix('"') {
        return lit.split_once('"').map(|(l, _)| name_of(l));
    }
    if let Some(inner) = e.strip_prefix("format!(") {
        let lit = inner.split_once('"')?.1.split_once('"')?.0;
        if let Some(c) = lit.strip_prefix('{') {
            let ident = c.split_once('}')?.0;
            return local.get(ident).or_else(|| global.get(ident)).cloned();
        }
        return Some(name_of(lit));
    }
    let ident = e.rsplit("::").next().unwrap_or(e);
    if ident.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
        return local.get(ident).or_else(|| global.get(ident)).cloned();
    }
    if let Some(fun) = ident.split_once('(').map(|(f, _)| f) {
        let body = src.split_once(&format!("fn {fun}("))?.1;
        let open = body.find("format!(")?;
        let end = body[open..].find(')')? + open + 1;
        return resolve(&body[open..end], src, at, local, global);
    }
    let let_at = src[..at].rfind(&format!("let {ident} = "))?;
    let rhs = &src[let_at + format!("let {ident} = ").len()..];
    let rhs = rhs.split_once(';')?.0;
    resolve(rhs, src, let_at, local, global)
}

/// What the code raises: alert name → (where, severity when it is written at the call).
fn raised(root: &Path) -> BTreeMap<String, (String, Option<String>)> {
    let mut files = Vec::new();
    for dir in ["common", "keepers"] {
        sources(&root.join(dir), &mut files);
    }
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let text = std::fs::read_to_string(p).unwrap();
            let text = text.split("#[cfg(test)]").next().unwrap().to_owned();
            (rel, text)
        })
        .collect();
    let global: HashMap<String, String> = texts.iter().flat_map(|(_, t)| consts(t)).collect();
    let mut out = BTreeMap::new();
    for (rel, src) in &texts {
        if PLUMBING.iter().any(|p| rel.starts_with(p)) {
            continue;
        }
        let local = consts(src);
        // (call, index of the name argument, index of the severity argument)
        for (call, name_arg, sev_arg) in [("Alert::new(", 0, 1), ("Staleness::new(", 1, 2)] {
            for (at, _) in src.match_indices(call) {
                let args = call_args(src, at + call.len() - 1);
                let severity = args
                    .get(sev_arg)
                    .and_then(|s| s.strip_prefix("Severity::"))
                    .map(str::to_lowercase);
                let names = match resolve(&args[name_arg], src, at, &local, &global) {
                    Some(n) => vec![n],
                    // A key passed through a closure: the file's key helpers name them.
                    None => src
                        .split("fn ")
                        .skip(1)
                        .filter_map(|def| def.split_once('(').map(|(f, _)| f))
                        .filter(|f| f.ends_with("_key"))
                        .filter_map(|f| resolve(&format!("{f}()"), src, at, &local, &global))
                        .collect(),
                };
                assert!(
                    !names.is_empty(),
                    "{rel}: cannot tell which alert {call}{}… raises",
                    args[name_arg]
                );
                for n in names {
                    out.entry(n).or_insert((rel.clone(), severity.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn keeper_alerts_and_rules_share_names_severities_and_thresholds() {
    let root = repo_root();
    let yaml = std::fs::read_to_string(root.join("deploy/prometheus/keepers-rules.yml")).unwrap();
    let rules = rules(&yaml);
    assert!(rules.len() >= 14, "{rules:?}");
    let by_name: BTreeMap<&str, &Rule> = rules.iter().map(|r| (r.alert.as_str(), r)).collect();
    let raised = raised(&root);
    // The scan really sees the keepers' alerts, so the comparisons below mean something.
    for known in [
        "keeper_stale",
        "wallet_balance_low",
        "backup_failed",
        "bridge_offline",
    ] {
        assert!(
            raised.contains_key(known),
            "{known} not found in {raised:?}"
        );
    }
    assert!(raised.len() >= 18, "{raised:?}");

    let keeper_only: BTreeMap<&str, &str> = KEEPER_ONLY.into_iter().collect();
    let rule_only: BTreeMap<&str, &str> = RULE_ONLY.into_iter().collect();
    let mut problems = Vec::new();
    for (name, (file, severity)) in &raised {
        match (
            by_name.get(name.as_str()),
            keeper_only.contains_key(name.as_str()),
        ) {
            (Some(_), true) => {
                problems.push(format!("{name} has a rule but is listed keeper-only"))
            }
            (None, false) => problems.push(format!(
                "{name} (raised in {file}) has no rule of that name and is not listed keeper-only"
            )),
            (Some(rule), false) => {
                if let Some(sev) = severity
                    && *sev != rule.severity
                {
                    problems.push(format!(
                        "{name}: the keeper raises it {sev}, the rule {}",
                        rule.severity
                    ));
                }
            }
            (None, true) => {}
        }
    }
    for name in keeper_only.keys() {
        if !raised.contains_key(*name) {
            problems.push(format!(
                "{name} is listed keeper-only but no keeper raises it"
            ));
        }
    }
    for rule in &rules {
        let twin = raised.contains_key(&rule.alert);
        match (twin, rule_only.contains_key(rule.alert.as_str())) {
            (true, true) => problems.push(format!(
                "{} is raised by a keeper but listed rule-only",
                rule.alert
            )),
            (false, false) => problems.push(format!(
                "rule {} has no keeper alert of that name and is not listed rule-only",
                rule.alert
            )),
            _ => {}
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");

    // Thresholds: each rule against the keeper setting's default.
    let env: HashMap<String, String> = HashMap::new();
    let pricing = pricing_oracle::config::PricingConfig::load(None, &env).unwrap();
    let bridge = bridge_health::config::Config::load(None, &env).unwrap();
    let backup_env: HashMap<String, String> = [(
        "DATABASE_URL".to_owned(),
        "postgres://u@db:5432/app".to_owned(),
    )]
    .into();
    let backup = db_backup::config::Settings::load(None, &backup_env).unwrap();
    let stale_after = |r: &keeper_runtime::config::RunnerSettings| {
        r.period().as_secs_f64() * f64::from(r.stale_intervals)
    };
    assert_eq!(
        stale_after(&pricing.runner),
        stale_after(&bridge.settings.runner),
        "one keeper_stale rule serves both chain keepers"
    );
    let expected = [
        ("keeper_stale", stale_after(&pricing.runner)),
        ("oracle_stale", pricing.policy.stale_after as f64),
        (
            "wallet_balance_low",
            pricing.policy.wallet_balance_low_nanoton as f64 / 1e9,
        ),
        ("backup_stale", backup.stale_after().as_secs_f64()),
    ];
    for (name, want) in expected {
        let rule = by_name
            .get(name)
            .unwrap_or_else(|| panic!("no rule {name}"));
        assert_eq!(
            threshold(&rule.expr),
            Some(want),
            "{name}: the rule's threshold differs from the keeper's default ({want}): {}",
            rule.expr
        );
    }
}

#[test]
fn readers_find_rules_thresholds_and_call_arguments() {
    let yaml = "groups:\n  - name: g\n    rules:\n      - alert: a\n        expr: x < 5\n        labels:\n          severity: warning\n      - alert: b\n        expr: >-\n          time() - y{k=~\"p|q\"}\n          > 180\n        labels:\n          severity: critical\n";
    let r = rules(yaml);
    assert_eq!(r.len(), 2);
    assert_eq!(
        (r[0].alert.as_str(), r[0].severity.as_str()),
        ("a", "warning")
    );
    assert_eq!(threshold(&r[0].expr), Some(5.0));
    assert_eq!(threshold(&r[1].expr), Some(180.0));
    let src = "fn f() { let key = format!(\"source_down:{}\", s); x(Alert::new(key.clone(), Severity::Warning, format!(\"a, b\"))); }";
    let at = src.find("Alert::new(").unwrap();
    let args = call_args(src, at + "Alert::new".len());
    assert_eq!(
        args,
        ["key.clone()", "Severity::Warning", "format!(\"a, b\")"]
    );
    let none = HashMap::new();
    assert_eq!(
        resolve(&args[0], src, at, &none, &none).as_deref(),
        Some("source_down")
    );
}
