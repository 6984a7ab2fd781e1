//! Talking to PostgreSQL: the source session (advisory lock, exported snapshot, exact row
//! counts), version checks of the client tools, and how `pg_dump`/`pg_restore` get credentials
//! without the password ever appearing on a command line.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use keeper_runtime::secret::SecretUrl;
use sqlx::postgres::PgConnection;

use crate::child;
use crate::libpq::LibpqTarget;
use sqlx::{AssertSqlSafe, Connection, Row};

/// Advisory lock key of backup runs, a constant so every version of the job agrees (the ASCII
/// bytes of `db-backu`).
pub const LOCK_KEY: i64 = 0x6462_2d62_6163_6b75;

/// What went wrong talking to PostgreSQL or running its tools.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// Could not connect or a query failed; `what` says which step.
    #[error("{what} on {target}: {reason}")]
    Sql {
        /// The step (`connecting`, `exporting the snapshot`, …).
        what: &'static str,
        /// The database, with any password redacted.
        target: String,
        /// The server's or driver's message.
        reason: String,
    },
    /// The URL cannot be used.
    #[error(transparent)]
    Url(#[from] crate::libpq::UrlError),
    /// The client tool could not be run.
    #[error("cannot run {tool}: {reason}")]
    Tool {
        /// The tool's path.
        tool: String,
        /// Why.
        reason: String,
    },
    /// The `pg_dump` on hand cannot dump this server.
    #[error(
        "{tool} is version {client} but the server is {server}: pg_dump must be at least the server's major version (set PG_DUMP_PATH to a newer pg_dump)"
    )]
    TooOld {
        /// The tool's path.
        tool: String,
        /// Its major version.
        client: u32,
        /// The server's major version.
        server: u32,
    },
    /// Counting rows queued longer than the lock wait limit behind another session's lock.
    #[error(
        "could not read table {table} within {seconds} s (BACKUP_LOCK_WAIT_TIMEOUT): another session holds a conflicting lock (an ALTER, TRUNCATE, VACUUM FULL or explicit LOCK)"
    )]
    LockTimeout {
        /// The table (`schema.table`, quoted where needed).
        table: String,
        /// The limit that ran out.
        seconds: u64,
    },
    /// Another run holds the lock.
    #[error(
        "another db-backup run holds the backup lock on {target}{} ; not starting a second one",
        holder.map(|p| format!(" (server pid {p})")).unwrap_or_default()
    )]
    Locked {
        /// The database.
        target: String,
        /// Backend pid of the holder, when visible.
        holder: Option<i32>,
    },
}

fn sql_err<'a>(what: &'static str, url: &'a SecretUrl) -> impl FnOnce(sqlx::Error) -> PgError + 'a {
    move |e| PgError::Sql {
        what,
        target: url.redacted(),
        reason: scrub(&e.to_string(), url),
    }
}

pub use crate::libpq::scrub;

/// Opens one connection with `application_name=db-backup`.
pub async fn connect(url: &SecretUrl) -> Result<PgConnection, PgError> {
    let target = LibpqTarget::new(url)?;
    let opts = target
        .connect_options()
        .map_err(sql_err("parsing the database URL", url))?
        .application_name("db-backup");
    PgConnection::connect_with(&opts)
        .await
        .map_err(sql_err("connecting", url))
}

/// Facts about the source server, recorded in the manifest.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `current_database()`.
    pub database: String,
    /// `server_version`.
    pub version: String,
    /// `server_version_num`.
    pub version_num: i32,
    /// The cluster's `system_identifier` (`pg_control_system()`), when readable.
    pub system_identifier: Option<String>,
    /// `inet_server_addr()`, host part (none over a Unix socket).
    pub server_addr: Option<String>,
    /// The server's `port` setting.
    pub server_port: Option<u16>,
}

impl ServerInfo {
    /// Major version (15 for 150018).
    pub fn major(&self) -> u32 {
        (self.version_num / 10_000).max(0) as u32
    }
}

/// The source session: holds the advisory lock for the whole run and, during the dump, the
/// REPEATABLE READ transaction whose snapshot `pg_dump` imports.
pub struct Source {
    conn: PgConnection,
    url: SecretUrl,
    /// A query was abandoned mid-flight: the session must not be used again.
    abandoned: bool,
    /// The session's server process, to end it from outside when abandoned.
    backend_pid: i32,
    /// `lock_timeout` of the snapshot transaction, for the error message.
    lock_wait_seconds: u64,
    /// The server, read at connect.
    pub info: ServerInfo,
}

impl Source {
    /// Connects and reads the server's identity.
    pub async fn open(url: &SecretUrl) -> Result<Self, PgError> {
        let mut conn = connect(url).await?;
        let row = sqlx::query(
            "SELECT current_database(), current_setting('server_version'), \
             current_setting('server_version_num')::int, pg_backend_pid(), \
             (SELECT system_identifier::text FROM pg_control_system()), \
             host(inet_server_addr()), current_setting('port')::int",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(sql_err("reading the server version", url))?;
        let info = ServerInfo {
            database: row.get(0),
            version: row.get(1),
            version_num: row.get(2),
            system_identifier: row.try_get(4).ok(),
            server_addr: row.try_get(5).ok().flatten(),
            server_port: row
                .try_get::<i32, _>(6)
                .ok()
                .and_then(|p| u16::try_from(p).ok()),
        };
        Ok(Self {
            conn,
            url: SecretUrl::new(url.expose()),
            abandoned: false,
            backend_pid: row.get(3),
            lock_wait_seconds: 0,
            info,
        })
    }

    /// Takes the run lock, waiting up to `wait` (polling once a second) for another holder.
    pub async fn lock(&mut self, wait: Duration) -> Result<(), PgError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(LOCK_KEY)
                .fetch_one(&mut self.conn)
                .await
                .map_err(sql_err("taking the backup lock", &self.url))?;
            if got {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PgError::Locked {
                    target: self.url.redacted(),
                    holder: self.lock_holder().await,
                });
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn lock_holder(&mut self) -> Option<i32> {
        // The key is split into two int4 halves in pg_locks.
        sqlx::query_scalar(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND classid = ($1 >> 32)::oid AND objid = ($1 & 4294967295)::oid AND objsubid = 1 \
             LIMIT 1",
        )
        .bind(LOCK_KEY)
        .fetch_optional(&mut self.conn)
        .await
        .ok()
        .flatten()
    }

    /// Starts the REPEATABLE READ transaction and exports its snapshot for `pg_dump --snapshot`.
    /// Its row counts queue for a table lock at most `lock_wait_seconds`, like pg_dump: queued
    /// behind an ACCESS EXCLUSIVE request, every later reader of that table would queue behind
    /// us.
    pub async fn export_snapshot(&mut self, lock_wait_seconds: u64) -> Result<String, PgError> {
        sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut self.conn)
            .await
            .map_err(sql_err("starting the snapshot transaction", &self.url))?;
        // An integer from validated settings, not user text.
        sqlx::raw_sql(AssertSqlSafe(format!(
            "SET LOCAL lock_timeout = '{lock_wait_seconds}s'"
        )))
        .execute(&mut self.conn)
        .await
        .map_err(sql_err("setting the lock wait limit", &self.url))?;
        if self.info.major() >= 14 {
            // If this process dies while a count queues for a lock, the backend leaves the queue
            // within seconds instead of at the end of the lock wait.
            sqlx::raw_sql("SET LOCAL client_connection_check_interval = '2s'")
                .execute(&mut self.conn)
                .await
                .map_err(sql_err("setting the client connection check", &self.url))?;
        }
        self.lock_wait_seconds = lock_wait_seconds;
        sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut self.conn)
            .await
            .map_err(sql_err("exporting the snapshot", &self.url))
    }

    /// Exact row counts of every table `pg_dump` dumps data for, in the snapshot's view.
    pub async fn row_counts(&mut self) -> Result<BTreeMap<String, i64>, PgError> {
        let seconds = self.lock_wait_seconds;
        row_counts(&mut self.conn, &self.url)
            .await
            .map_err(|e| match e {
                PgError::LockTimeout { table, .. } => PgError::LockTimeout { table, seconds },
                other => other,
            })
    }

    /// Marks the session unusable after a query future was dropped mid-flight (the driver
    /// would otherwise wait for that query's answer, which may be blocked on a lock).
    pub fn abandon(&mut self) {
        self.abandoned = true;
    }

    /// Ends the snapshot transaction (the lock stays until [`Source::close`]).
    pub async fn end_snapshot(&mut self) -> Result<(), PgError> {
        if self.abandoned {
            return Ok(());
        }
        sqlx::raw_sql("COMMIT")
            .execute(&mut self.conn)
            .await
            .map_err(sql_err("ending the snapshot transaction", &self.url))
            .map(|_| ())
    }

    /// Releases the lock by closing the session.
    pub async fn close(self) {
        if self.abandoned {
            // The backend may sit in a lock wait and would keep the run lock until then: end it
            // from a second session (a role may terminate its own backends).
            drop(self.conn);
            let pid = self.backend_pid;
            let url = self.url;
            let _ = tokio::time::timeout(Duration::from_secs(10), async move {
                if let Ok(mut c) = connect(&url).await {
                    let _ = sqlx::query("SELECT pg_terminate_backend($1)")
                        .bind(pid)
                        .execute(&mut c)
                        .await;
                    let _ = c.close().await;
                }
            })
            .await;
            return;
        }
        // Closing the session releases session-level advisory locks; a failure to say goodbye
        // politely changes nothing, the server drops the backend either way.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.conn.close()).await;
    }
}

/// Who a server says it is: what the restore guard compares with the manifest's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The cluster's `system_identifier`, when readable.
    pub system_identifier: Option<String>,
    /// `current_database()`.
    pub database: String,
    /// `inet_server_addr()`, host part (none over a Unix socket).
    pub server_addr: Option<String>,
    /// The server's `port` setting.
    pub server_port: Option<u16>,
}

/// The identity of the server and database `conn` is on.
pub async fn identity(conn: &mut PgConnection, url: &SecretUrl) -> Result<Identity, PgError> {
    let row = sqlx::query(
        "SELECT (SELECT system_identifier::text FROM pg_control_system()), current_database(), \
         host(inet_server_addr()), current_setting('port')::int",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(sql_err("reading the server identity", url))?;
    Ok(Identity {
        system_identifier: row.try_get(0).ok().flatten(),
        database: row.get(1),
        server_addr: row.try_get(2).ok().flatten(),
        server_port: row
            .try_get::<i32, _>(3)
            .ok()
            .and_then(|p| u16::try_from(p).ok()),
    })
}

/// Tables (`schema.table`) that `pg_dump` would write rows for.
pub async fn user_tables(conn: &mut PgConnection, url: &SecretUrl) -> Result<Vec<String>, PgError> {
    sqlx::query_scalar(TABLES_SQL)
        .fetch_all(&mut *conn)
        .await
        .map_err(sql_err("listing tables", url))
}

/// Tables whose rows `pg_dump` writes: ordinary tables and partitions outside the system
/// schemas, not members of an extension (their data is not dumped), not temporary.
const TABLES_SQL: &str = "SELECT format('%I.%I', n.nspname, c.relname) \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind = 'r' AND c.relpersistence <> 't' \
       AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                       AND d.objid = c.oid AND d.deptype = 'e') \
     ORDER BY 1";

/// Exact `count(*)` of every dumped table on `conn`.
pub async fn row_counts(
    conn: &mut PgConnection,
    url: &SecretUrl,
) -> Result<BTreeMap<String, i64>, PgError> {
    let tables: Vec<String> = sqlx::query_scalar(TABLES_SQL)
        .fetch_all(&mut *conn)
        .await
        .map_err(sql_err("listing tables", url))?;
    let mut counts = BTreeMap::new();
    for t in tables {
        // `t` comes from format('%I.%I'), so it is a correctly quoted identifier.
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM ONLY {t}")))
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| {
                let lock_timeout = e
                    .as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|c| c == "55P03");
                if lock_timeout {
                    PgError::LockTimeout {
                        table: t.clone(),
                        seconds: 0,
                    }
                } else {
                    sql_err("counting rows", url)(e)
                }
            })?;
        counts.insert(t, n);
    }
    Ok(counts)
}

/// The first line of `TOOL --version` and its major version.
pub async fn tool_version(tool: &Path) -> Result<(String, u32), PgError> {
    let err = |reason: String| PgError::Tool {
        tool: tool.display().to_string(),
        reason,
    };
    let killer = crate::dump::Killer::default();
    let run = {
        let (tool, killer) = (tool.to_path_buf(), killer.clone());
        tokio::task::spawn_blocking(move || version_output(&tool, &killer))
    };
    let joined = match tokio::time::timeout(VERSION_TIMEOUT, run).await {
        Ok(j) => j,
        Err(_) => {
            killer.kill("--version did not answer");
            return Err(err(format!(
                "--version did not answer within {} s",
                VERSION_TIMEOUT.as_secs()
            )));
        }
    };
    let (status, stdout, stderr) = joined
        .map_err(|e| err(e.to_string()))?
        .map_err(|e| err(e.to_string()))?;
    if !status.success() {
        return Err(err(format!("--version exited with {status}: {stderr}")));
    }
    let line = stdout.lines().next().unwrap_or("").trim().to_owned();
    let major =
        parse_major(&line).ok_or_else(|| err(format!("cannot read a version from {line:?}")))?;
    Ok((line, major))
}

/// How long `TOOL --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `tool --version`, reading at most 4 KiB of its stdout and the tail of its stderr.
fn version_output(
    tool: &Path,
    killer: &crate::dump::Killer,
) -> std::io::Result<(std::process::ExitStatus, String, String)> {
    use std::io::Read;
    let mut cmd = child::command(tool);
    cmd.arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut run = child::Running::spawn(&mut cmd)?;
    if killer.register_child(run.handle()).is_err() {
        return Err(std::io::Error::other("stopped"));
    }
    let stderr = crate::dump::stderr_tail(run.child_mut().stderr.take());
    let mut out = Vec::new();
    if let Some(o) = run.child_mut().stdout.take() {
        // Drain the rest so the tool never blocks on a full pipe; keep the first 4 KiB.
        let mut o = o;
        o.by_ref().take(4096).read_to_end(&mut out)?;
        std::io::copy(&mut o, &mut std::io::sink())?;
    }
    let status = run.wait()?;
    let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok((status, String::from_utf8_lossy(&out).into_owned(), stderr))
}

/// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` → 15; `9.6.24` → 9.
pub fn parse_major(line: &str) -> Option<u32> {
    let version = line
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Refuses a `pg_dump` older than the server.
pub fn check_dump_version(tool: &Path, client: u32, server: &ServerInfo) -> Result<(), PgError> {
    if client < server.major() {
        return Err(PgError::TooOld {
            tool: tool.display().to_string(),
            client,
            server: server.major(),
        });
    }
    Ok(())
}

/// The same server as `url`, another database.
pub fn with_database(url: &SecretUrl, database: &str) -> SecretUrl {
    match url::Url::parse(url.expose()) {
        Ok(mut u) => {
            u.set_path(&format!("/{database}"));
            SecretUrl::new(u.to_string())
        }
        Err(_) => SecretUrl::new(url.expose()),
    }
}

/// Quotes an identifier for SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(
            parse_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("pg_dump (PostgreSQL) 17devel"), Some(17));
        assert_eq!(parse_major("nothing here"), None);
        let server = ServerInfo {
            database: "x".into(),
            version: "16.1".into(),
            version_num: 160001,
            system_identifier: None,
            server_addr: None,
            server_port: None,
        };
        let e = check_dump_version(Path::new("/usr/bin/pg_dump"), 15, &server).unwrap_err();
        assert!(
            e.to_string().contains("version 15 but the server is 16"),
            "{e}"
        );
        assert!(check_dump_version(Path::new("pg_dump"), 17, &server).is_ok());
    }

    #[test]
    fn urls_and_identifiers() {
        let u = with_database(&SecretUrl::new("postgres://a:b@h/app?x=1"), "scratch");
        assert_eq!(u.expose(), "postgres://a:b@h/scratch?x=1");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
