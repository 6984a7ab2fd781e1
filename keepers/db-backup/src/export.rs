//! One-shot metrics: a run that exits leaves nothing to scrape, so `--once` pushes its backup
//! metrics to a Pushgateway (`PUSHGATEWAY_URL`) and/or writes a node-exporter textfile
//! (`METRICS_TEXTFILE`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::metrics::BackupMetrics;
use keeper_runtime::secret::SecretUrl;
use keeper_runtime::telemetry::metrics::labels;

/// The four backup families in the classic Prometheus text format (0.0.4), which both the
/// Pushgateway and the textfile collector parse.
pub fn backup_text(b: &BackupMetrics) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "backup_last_success_timestamp_seconds",
        "Unix time of the last successful backup",
        b.last_success_timestamp.get().to_string(),
    );
    gauge(
        "backup_duration_seconds",
        "Wall time of the last backup run",
        format!("{}", b.duration_seconds.get()),
    );
    gauge(
        "backup_size_bytes",
        "Size of the last successful backup artifact",
        b.size_bytes.get().to_string(),
    );
    let _ = writeln!(
        out,
        "# HELP backup_runs_total Backup runs by outcome\n# TYPE backup_runs_total counter"
    );
    for outcome in ["success", "failure"] {
        let n = b.runs.get_or_create(&labels([("outcome", outcome)])).get();
        let _ = writeln!(out, "backup_runs_total{{outcome=\"{outcome}\"}} {n}");
    }
    out
}

/// The restore-verification families alone (`verify`, drills): pushed with POST they replace
/// only themselves in the group, leaving the backup job's families as the last backup set them.
pub fn restore_text(b: &BackupMetrics) -> String {
    format!(
        "# HELP backup_restore_duration_seconds Wall time of the last restore verification
\
         # TYPE backup_restore_duration_seconds gauge
\
         backup_restore_duration_seconds {}
\
         # HELP backup_restore_verified 1 if the last restore verification passed, else 0
\
         # TYPE backup_restore_verified gauge
\
         backup_restore_verified {}
",
        b.restore_duration_seconds.get(),
        b.restore_verified.get()
    )
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

    #[test]
    fn text_has_the_fixed_names() {
        let mut registry = keeper_runtime::telemetry::Metrics::new("db-backup");
        let b = BackupMetrics::register(&mut registry);
        b.last_success_timestamp.set(1_700_000_000);
        b.runs
            .get_or_create(&labels([("outcome", "success")]))
            .inc();
        let t = backup_text(&b);
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
}
