//! One-shot metrics: a run that exits leaves nothing to scrape, so `--once` pushes its backup
//! metrics to a Pushgateway (`PUSHGATEWAY_URL`) and/or writes a node-exporter textfile
//! (`METRICS_TEXTFILE`).

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::metrics::{BACKUP_FAMILIES, RESTORE_FAMILIES};
use keeper_runtime::secret::SecretUrl;
use keeper_runtime::telemetry::Metrics;

/// The backup run's families, as the ops server renders them, in the classic text format.
pub fn backup_text(metrics: &Metrics) -> String {
    classic_text(&metrics.render(), &BACKUP_FAMILIES)
}

/// The restore-verification families alone (`verify`, drills): pushed with POST they replace
/// only themselves in the group, leaving the backup job's families as the last backup set them.
pub fn restore_text(metrics: &Metrics) -> String {
    classic_text(&metrics.render(), &RESTORE_FAMILIES)
}

/// Keeps the families named in `families` from the registry's OpenMetrics exposition and turns
/// them into the classic text format (0.0.4), the one both the Pushgateway and the textfile
/// collector parse: there a counter's `HELP`/`TYPE` lines carry the `_total` sample name and
/// `# EOF` does not exist.
fn classic_text(open_metrics: &str, families: &[&str]) -> String {
    let mut out = String::new();
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    for line in open_metrics.lines().filter(|l| *l != "# EOF") {
        match blocks.last_mut() {
            Some(block) if !line.starts_with("# HELP ") => block.push(line),
            _ => blocks.push(vec![line]),
        }
    }
    for block in blocks {
        let header = |prefix: &str| {
            block
                .iter()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|rest| rest.split_once(' '))
        };
        let Some((name, _)) = header("# HELP ") else {
            continue;
        };
        if !families.contains(&name) {
            continue;
        }
        let counter = header("# TYPE ").is_some_and(|(_, kind)| kind == "counter");
        for line in block {
            let renamed = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
                let rest = line.strip_prefix(prefix)?.strip_prefix(name)?;
                (counter && rest.starts_with(' ')).then(|| format!("{prefix}{name}_total{rest}"))
            });
            out.push_str(renamed.as_deref().unwrap_or(line));
            out.push('\n');
        }
    }
    out
}

/// Why exporting failed (never fatal for the run; logged).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The Pushgateway refused or could not be reached.
    #[error("pushgateway: {0}")]
    Push(String),
    /// The textfile could not be written.
    #[error("writing metrics textfile {path}: {source}")]
    Textfile {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// `POST {url}/metrics/job/db-backup/database/{label}`: replaces these families in that group.
pub async fn push(url: &SecretUrl, label: &str, body: String) -> Result<(), ExportError> {
    let mut u = url::Url::parse(url.expose()).map_err(|e| ExportError::Push(e.to_string()))?;
    let user = u.username().to_owned();
    let password = u.password().map(str::to_owned);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    {
        let mut seg = u
            .path_segments_mut()
            .map_err(|()| ExportError::Push("URL cannot take a path".into()))?;
        seg.pop_if_empty()
            .extend(["metrics", "job", "db-backup", "database", label]);
    }
    let timeout = Duration::from_secs(10);
    let client = keeper_runtime::http::client(timeout);
    let mut req = client
        .post(u)
        .header("Content-Type", "text/plain; version=0.0.4")
        .body(body);
    if !user.is_empty() || password.is_some() {
        req = req.basic_auth(user, password);
    }
    keeper_runtime::http::send("pushgateway", req, timeout)
        .await
        .map(|_| ())
        .map_err(|e| ExportError::Push(e.to_string()))
}

/// Writes the textfile atomically (temp file in the same directory, then rename), as the
/// collector may read at any moment.
pub fn write_textfile(path: &Path, body: &str) -> Result<(), ExportError> {
    let err = |source| ExportError::Textfile {
        path: path.display().to_string(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::BackupMetrics;
    use keeper_runtime::telemetry::metrics::labels;

    #[test]
    fn text_has_the_fixed_names() {
        let mut registry = keeper_runtime::telemetry::Metrics::new("db-backup");
        let b = BackupMetrics::register(&mut registry);
        b.last_success_timestamp.set(1_700_000_000);
        b.runs
            .get_or_create(&labels([("outcome", "success")]))
            .inc();
        let t = backup_text(&registry);
        assert!(
            t.contains("backup_last_success_timestamp_seconds 1700000000\n"),
            "{t}"
        );
        assert!(
            t.contains("backup_runs_total{outcome=\"success\"} 1\n"),
            "{t}"
        );
        assert!(t.contains("# TYPE backup_runs_total counter\n"), "{t}");
        assert!(!t.contains("# EOF"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("backup.prom");
        write_textfile(&p, &t).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), t);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// The export is the ops server's rendering cut to the chosen families: same help texts,
    /// types and samples, nothing hand-written beside the registry.
    #[test]
    fn export_is_the_registry_cut_to_its_families() {
        let mut registry = keeper_runtime::telemetry::Metrics::new("db-backup");
        let b = BackupMetrics::register(&mut registry);
        b.restore_verified.set(1);
        b.restore_duration_seconds.set(2.5);
        registry.record_cycle("success", 0.1);
        let backup = backup_text(&registry);
        let restore = restore_text(&registry);
        let scrape = registry.render();
        for family in BACKUP_FAMILIES.iter().chain(&RESTORE_FAMILIES) {
            let help = scrape
                .lines()
                .find(|l| l.starts_with(&format!("# HELP {family} ")))
                .unwrap();
            let help_text = help.split_once(&format!("{family} ")).unwrap().1;
            let exported = if RESTORE_FAMILIES.contains(family) {
                &restore
            } else {
                &backup
            };
            assert!(exported.contains(help_text), "{family}: {exported}");
        }
        assert!(restore.contains("backup_restore_verified 1\n"), "{restore}");
        assert!(
            restore.contains("backup_restore_duration_seconds 2.5\n"),
            "{restore}"
        );
        assert!(!restore.contains("backup_runs"), "{restore}");
        assert!(!backup.contains("backup_restore"), "{backup}");
        assert!(!backup.contains("keeper_cycles"), "{backup}");
        assert!(
            backup.contains("backup_runs_total{outcome=\"failure\"} 0\n"),
            "{backup}"
        );
    }
}
