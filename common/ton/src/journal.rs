//! The in-flight journal: a signed external message is written down durably before its first
//! send and erased once it is confirmed or provably expired, so a restart, a rollout or a lease
//! takeover resumes that exact message instead of signing a new body for its seqno.
//!
//! Where: the `ton_inflight` table when PostgreSQL is configured (one row per wallet); else a
//! file `inflight-<wallet>.json` in the state directory (systemd's `$STATE_DIRECTORY`, or
//! `ton.state_dir` / `KEEPER_STATE_DIR`), written to a temporary name, fsynced and renamed;
//! else only in memory, and a restart may re-sign (said once at start).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::external::SignedExternal;
use keeper_runtime::store::{Store, StoreError, pg_err};

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The PostgreSQL journal failed.
    #[error("in-flight journal (PostgreSQL): {0}")]
    Store(#[from] StoreError),
    /// The journal file failed.
    #[error("in-flight journal file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// An entry did not parse (a hand-edited file, a newer format).
    #[error("in-flight journal entry is unreadable: {0}")]
    Corrupt(String),
}

impl JournalError {
    /// The journal's store is unreachable (PostgreSQL down), as opposed to refusing or failing.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_outage())
    }
}

/// One journaled message: everything needed to re-send it and to decide whether it landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The wallet, raw form.
    pub wallet: String,
    /// Seqno the message consumes.
    pub seqno: u32,
    /// Its `valid_until` (chain time).
    pub valid_until: u32,
    /// StateInit attached.
    pub state_init: bool,
    /// Oracle messages it carries.
    pub actions: usize,
    /// Op names of those messages, for metrics.
    pub ops: Vec<String>,
    /// The signed BoC, base64.
    pub boc: String,
    /// Message hash, hex.
    pub message_hash: String,
    /// Normalized (TEP-467) message hash, hex.
    pub normalized_hash: String,
    /// Body hash, hex.
    pub body_hash: String,
    /// Fencing token of the lease it was signed under.
    pub fencing_token: Option<u64>,
    /// Chain time when it was built.
    pub chain_at_build: u64,
    /// Local unix time when it was built, to estimate chain time after a restart.
    pub built_at_unix: u64,
}

impl JournalEntry {
    /// The entry for `ext`, built at chain time `chain_at_build`.
    pub fn new(
        wallet: &str,
        ext: &SignedExternal,
        ops: &[&str],
        fencing_token: Option<u64>,
        chain_at_build: u64,
    ) -> Self {
        Self {
            wallet: wallet.to_owned(),
            seqno: ext.seqno,
            valid_until: ext.valid_until,
            state_init: ext.with_state_init,
            actions: ext.actions,
            ops: ops.iter().map(|s| (*s).to_owned()).collect(),
            boc: ext.boc_base64(),
            message_hash: hex::encode(ext.message_hash),
            normalized_hash: hex::encode(ext.normalized_hash),
            body_hash: hex::encode(ext.body_hash),
            fencing_token,
            chain_at_build,
            built_at_unix: unix_now(),
        }
    }

    /// The signed message back.
    pub fn external(&self) -> Result<SignedExternal, JournalError> {
        let hash = |h: &str| -> Result<[u8; 32], JournalError> {
            hex::decode(h)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(|| JournalError::Corrupt(format!("hash {h:?} is not 32 hex bytes")))
        };
        Ok(SignedExternal {
            seqno: self.seqno,
            valid_until: self.valid_until,
            with_state_init: self.state_init,
            actions: self.actions,
            boc: B64
                .decode(&self.boc)
                .map_err(|_| JournalError::Corrupt("boc is not base64".into()))?,
            message_hash: hash(&self.message_hash)?,
            normalized_hash: hash(&self.normalized_hash)?,
            body_hash: hash(&self.body_hash)?,
        })
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where in-flight messages are written down.
#[derive(Clone)]
pub enum Journal {
    /// The `ton_inflight` table.
    Postgres(Store),
    /// A file per wallet in this directory.
    Dir(PathBuf),
    /// Nowhere: a restart forgets the message in flight.
    Memory,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Journal {
    /// PostgreSQL when `store` has it, else `state_dir` when given, else memory only.
    pub fn choose(store: &Store, state_dir: Option<PathBuf>) -> Self {
        if store.postgres_configured() {
            Self::Postgres(store.clone())
        } else if let Some(dir) = state_dir {
            Self::Dir(dir)
        } else {
            Self::Memory
        }
    }

    /// For logs: `postgres`, `file <dir>` or `memory`.
    pub fn describe(&self) -> String {
        match self {
            Self::Postgres(_) => "postgres".into(),
            Self::Dir(d) => format!("file in {}", d.display()),
            Self::Memory => "memory".into(),
        }
    }

    /// True when a restart still finds the journaled message.
    pub fn is_durable(&self) -> bool {
        !matches!(self, Self::Memory)
    }

    /// Writes `entry` down (replacing the wallet's previous one); returns once it is durable.
    pub async fn put(&self, entry: &JournalEntry) -> Result<(), JournalError> {
        match self {
            Self::Postgres(store) => {
                let doc = serde_json::to_value(entry)
                    .map_err(|e| JournalError::Corrupt(e.to_string()))?;
                let (wallet, seqno) = (entry.wallet.clone(), i64::from(entry.seqno));
                store
                    .pg("journal in-flight message", |pool| async move {
                        sqlx::query(
                            "INSERT INTO ton_inflight (wallet, seqno, entry) VALUES ($1, $2, $3) \
                             ON CONFLICT (wallet) DO UPDATE \
                             SET seqno = EXCLUDED.seqno, entry = EXCLUDED.entry, \
                                 created_at = now()",
                        )
                        .bind(wallet)
                        .bind(seqno)
                        .bind(doc)
                        .execute(&pool)
                        .await
                        .map_err(pg_err("journal in-flight message"))?;
                        Ok(())
                    })
                    .await?;
                Ok(())
            }
            Self::Dir(dir) => {
                let path = file_for(dir, &entry.wallet);
                let text = serde_json::to_vec_pretty(entry)
                    .map_err(|e| JournalError::Corrupt(e.to_string()))?;
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || write_durably(&dir, &path, &text))
                    .await
                    .map_err(|e| JournalError::Corrupt(e.to_string()))?
            }
            Self::Memory => Ok(()),
        }
    }

    /// The journaled message of `wallet`, if any.
    pub async fn get(&self, wallet: &str) -> Result<Option<JournalEntry>, JournalError> {
        match self {
            Self::Postgres(store) => {
                let wallet = wallet.to_owned();
                let doc: Option<serde_json::Value> = store
                    .pg("read in-flight journal", |pool| async move {
                        sqlx::query_scalar("SELECT entry FROM ton_inflight WHERE wallet = $1")
                            .bind(wallet)
                            .fetch_optional(&pool)
                            .await
                            .map_err(pg_err("read in-flight journal"))
                    })
                    .await?;
                doc.map(|d| {
                    serde_json::from_value(d).map_err(|e| JournalError::Corrupt(e.to_string()))
                })
                .transpose()
            }
            Self::Dir(dir) => {
                let path = file_for(dir, wallet);
                match tokio::fs::read(&path).await {
                    Ok(bytes) => serde_json::from_slice(&bytes)
                        .map(Some)
                        .map_err(|e| JournalError::Corrupt(e.to_string())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(JournalError::File { path, source }),
                }
            }
            Self::Memory => Ok(None),
        }
    }

    /// Erases `wallet`'s entry if it is still the one for `seqno`.
    pub async fn clear(&self, wallet: &str, seqno: u32) -> Result<(), JournalError> {
        match self {
            Self::Postgres(store) => {
                let wallet = wallet.to_owned();
                store
                    .pg("clear in-flight journal", |pool| async move {
                        sqlx::query("DELETE FROM ton_inflight WHERE wallet = $1 AND seqno = $2")
                            .bind(wallet)
                            .bind(i64::from(seqno))
                            .execute(&pool)
                            .await
                            .map_err(pg_err("clear in-flight journal"))?;
                        Ok(())
                    })
                    .await?;
                Ok(())
            }
            Self::Dir(dir) => {
                if self.get(wallet).await?.is_some_and(|e| e.seqno == seqno) {
                    let path = file_for(dir, wallet);
                    match tokio::fs::remove_file(&path).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(source) => return Err(JournalError::File { path, source }),
                    }
                }
                Ok(())
            }
            Self::Memory => Ok(()),
        }
    }
}

/// `inflight-<workchain>_<hex>.json`: the raw address without its colon.
fn file_for(dir: &Path, wallet: &str) -> PathBuf {
    let safe: String = wallet
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    dir.join(format!("inflight-{safe}.json"))
}

/// Temp file, fsync, rename, fsync the directory: after this returns, a crash keeps the entry.
fn write_durably(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    use std::io::Write as _;
    let io = |source| JournalError::File {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// The journal's table (`ton_inflight`) and its bookkeeping: both chain keepers apply it.
pub static TON_MIGRATIONS: keeper_runtime::store::MigrationSet =
    keeper_runtime::store::MigrationSet {
        owner: "ton",
        migrator: sqlx::migrate!("../../migrations/ton"),
        table: "_ton_migrations",
    };
