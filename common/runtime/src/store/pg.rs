//! PostgreSQL: connection options bound to the keepers' schema, the embedded migrations, and the
//! helpers keepers use to read and write their own tables (each keeper's `records` module).
//!
//! Plain `sqlx::query` with binds throughout (no compile-time checked macros: building must not
//! need a database). Calls through [`super::Store::pg`] are bounded and health-tracked.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migrate, MigrateError};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Connection, PgPool, Row};

use super::{StoreError, StoreKind, StoreTimeouts};
use crate::migrations::{MigrationSet, Migrations};
use crate::secret::SecretUrl;

/// Session name of the keepers' pooled connections (visible in `pg_stat_activity`).
const APPLICATION_NAME: &str = "keeper";

/// Maps a driver error of operation `op` to a [`StoreError`].
pub fn pg_err(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Postgres { op, source }
}

/// True when a driver error means the server could not be reached or the connection broke.
pub(super) fn is_outage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Server shutting down or refusing sessions: admin_shutdown, crash_shutdown,
        // cannot_connect_now, too_many_connections.
        sqlx::Error::Database(d) => matches!(
            d.code().as_deref(),
            Some("57P01" | "57P02" | "57P03" | "53300")
        ),
        _ => false,
    }
}

/// Rejects anything but a plain lower-case identifier: the schema name is spliced into SQL and
/// into the `search_path` startup option.
fn check_schema(schema: &str) -> Result<(), StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidSchema(schema.to_owned()))
    }
}

/// Connection options whose sessions start with `search_path` set to `schema` only, so every
/// unqualified name — the migrator's `_sqlx_migrations` included — lives in the keepers' schema
/// and `public` is never touched.
pub fn connect_options(url: &SecretUrl, schema: &str) -> Result<PgConnectOptions, StoreError> {
    check_schema(schema)?;
    let options = PgConnectOptions::from_str(url.expose()).map_err(|e| StoreError::InvalidUrl {
        store: StoreKind::Postgres,
        url: url.redacted(),
        // sqlx's message names the URL part at fault, never the URL itself.
        problem: e.to_string(),
    })?;
    Ok(options
        .options([("search_path", schema)])
        .application_name(APPLICATION_NAME))
}

/// A lazily connecting pool: building it never waits for the server.
pub(super) fn pool(
    url: &SecretUrl,
    schema: &str,
    timeouts: StoreTimeouts,
) -> Result<(PgPool, PgConnectOptions), StoreError> {
    let options = connect_options(url, schema)?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .min_connections(0)
        .acquire_timeout(timeouts.op)
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy_with(options.clone());
    Ok((pool, options))
}

/// Creates the schema when missing and applies `sets` on `conn` (whose `search_path` is that
/// schema). Applying twice is a no-op.
pub(super) async fn apply_migrations(
    conn: &mut PgConnection,
    schema: &str,
    sets: Migrations,
) -> Result<(), StoreError> {
    check_schema(schema)?;
    let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
    if let Err(e) = sqlx::raw_sql(AssertSqlSafe(create))
        .execute(&mut *conn)
        .await
    {
        // Two instances creating the schema at once: the loser sees a duplicate; that is fine.
        let duplicate = matches!(&e, sqlx::Error::Database(d)
            if matches!(d.code().as_deref(), Some("23505" | "42P06")));
        if !duplicate {
            return Err(StoreError::Postgres {
                op: "create schema",
                source: e,
            });
        }
    }
    let migrate_err = |source| StoreError::Migrate {
        schema: schema.to_owned(),
        source,
    };
    conn.lock().await.map_err(migrate_err)?;
    let mut result = Ok(());
    for set in sets {
        result = run_locked(conn, set).await;
        if result.is_err() {
            break;
        }
    }
    let unlocked = conn.unlock().await;
    result.map_err(migrate_err)?;
    unlocked.map_err(migrate_err)
}

/// What `Migrator::run` does, spelled out over the `Migrate` trait: `Migrator::run` is generic
/// over `Acquire`, and that bound makes any spawned future calling it fail the compiler's
/// "not general enough" check (the probe that migrates a late database is spawned).
async fn run_locked(conn: &mut PgConnection, set: &MigrationSet) -> Result<(), MigrateError> {
    let table = set.table;
    conn.ensure_migrations_table(table).await?;
    if let Some(version) = conn.dirty_version(table).await? {
        return Err(MigrateError::Dirty(version));
    }
    let applied = conn.list_applied_migrations(table).await?;
    if let Some(gone) = applied
        .iter()
        .find(|a| !set.migrator.version_exists(a.version))
    {
        return Err(MigrateError::VersionMissing(gone.version));
    }
    for migration in set.migrator.iter() {
        if migration.migration_type.is_down_migration() {
            continue;
        }
        match applied.iter().find(|a| a.version == migration.version) {
            Some(done) if done.checksum != migration.checksum => {
                return Err(MigrateError::VersionMismatch(migration.version));
            }
            Some(_) => {}
            None => {
                conn.apply(table, migration).await?;
            }
        }
    }
    Ok(())
}

/// Applies `sets` to the database at `url`, in `schema` (created if missing). Used by the
/// `migrate` subcommands; a store applies its settings' sets at start (`migrate_on_start`).
pub async fn migrate(url: &SecretUrl, schema: &str, sets: Migrations) -> Result<(), StoreError> {
    let options = connect_options(url, schema)?;
    migrate_with(
        &options,
        schema,
        sets,
        Duration::from_secs(30),
        Duration::from_secs(300),
    )
    .await
}

/// Migrates over a dedicated session, never a pooled one: the migrator holds a session-level
/// advisory lock, and if a timeout abandons the run, dropping the session is what frees it.
pub(super) async fn migrate_with(
    options: &PgConnectOptions,
    schema: &str,
    sets: Migrations,
    connect_limit: Duration,
    run_limit: Duration,
) -> Result<(), StoreError> {
    let mut conn = tokio::time::timeout(connect_limit, PgConnection::connect_with(options))
        .await
        .map_err(|_| StoreError::Timeout {
            store: StoreKind::Postgres,
            op: "connect",
            timeout: connect_limit,
        })?
        .map_err(pg_err("connect"))?;
    let result = tokio::time::timeout(run_limit, apply_migrations(&mut conn, schema, sets))
        .await
        .unwrap_or(Err(StoreError::Timeout {
            store: StoreKind::Postgres,
            op: "migrate",
            timeout: run_limit,
        }));
    // Closing politely is a courtesy; the outcome is the migration's.
    let _ = tokio::time::timeout(connect_limit, conn.close()).await;
    result
}

pub(super) async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(pg_err("ping"))
}

/// Reads one column of a row; a type mismatch is an error naming the column.
pub fn column<'r, T>(row: &'r PgRow, column: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(pg_err("decode row"))
}

/// Declares an enum stored as text in a column: `as_str`, `parse` (unknown text is
/// [`StoreError::BadValue`] naming the table and column) and `Display`.
#[macro_export]
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $table:literal, $column:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The text stored in the column.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// The variant stored as `value`.
            pub fn parse(value: &str) -> Result<Self, $crate::store::StoreError> {
                match value {
                    $($text => Ok(Self::$variant),)+
                    other => Err($crate::store::StoreError::BadValue {
                        table: $table,
                        column: $column,
                        value: other.to_owned(),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
