//! The in-flight journal: a signed external message is written down durably before its first
//! send and erased once it is confirmed or provably expired, so a restart, a rollout or a lease
//! takeover resumes that exact message instead of signing a new body for its seqno.
//!
//! One entry per signed body, keyed by (wallet, seqno) and carrying the body hash, `valid_until`
//! and the fencing token it was signed under. An entry is never replaced by another body while
//! it can still land (chain time up to `valid_until` + [`LANDING_MARGIN_SECS`]), is cleared only
//! by its own body hash, and a write under a fencing token older than one already written fails.
//!
//! Where: the `ton_inflight` table when PostgreSQL is configured; else files
//! `inflight-<wallet>-<seqno>.json` in the state directory (systemd's `$STATE_DIRECTORY`, or
//! `ton.state_dir` / `KEEPER_STATE_DIR`), written to a temporary name, fsynced and renamed;
//! else in memory, which only a single instance may choose. A state directory is read as well
//! when PostgreSQL is the journal, so an entry written before `DATABASE_URL` was added is found.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// Another body is journaled for this seqno and may still land.
    #[error(
        "in-flight journal: wallet {wallet} seqno {seqno} already holds body {held_body}, which may still land"
    )]
    Occupied {
        /// The wallet, raw form.
        wallet: String,
        /// The seqno.
        seqno: u32,
        /// Body hash (hex) of the entry that stays.
        held_body: String,
    },
    /// A holder with a newer fencing token wrote this wallet's journal: this one lost the lease.
    #[error("in-flight journal: wallet {wallet} was written under fencing token {newer}, newer than ours ({})",
        .token.map_or_else(|| "none".to_owned(), |t| t.to_string()))]
    Fenced {
        /// The wallet, raw form.
        wallet: String,
        /// The token of the refused write.
        token: Option<u64>,
        /// The newest token written.
        newer: u64,
    },
    /// The in-memory journal was told to fail (fault injection in tests and simulations).
    #[error("in-flight journal (memory): {0} failed")]
    Unavailable(&'static str),
}

impl JournalError {
    /// The journal's store is unreachable (PostgreSQL down), as opposed to refusing or failing.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_outage()) || matches!(self, Self::Unavailable(_))
    }

    /// A newer fencing token wrote the journal: the lease was taken over.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Self::Fenced { .. })
    }
}

/// Seconds past `valid_until` (chain time) during which a message still counts as able to land:
/// endpoints disagree on chain time by a few blocks, and an entry is never replaced on a guess.
pub const LANDING_MARGIN_SECS: u64 = 30;

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

    /// True while the message may still land at chain time `chain_now`.
    pub fn may_land_at(&self, chain_now: u64) -> bool {
        chain_now <= u64::from(self.valid_until).saturating_add(LANDING_MARGIN_SECS)
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

/// A journal held in this process's memory, shareable between the deliveries of one process (or
/// of a simulation's instances), with faults that can be switched on.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    state: std::sync::Mutex<MemoryState>,
    fail_writes: AtomicBool,
    fail_reads: AtomicBool,
}

#[derive(Debug, Default)]
struct MemoryState {
    entries: BTreeMap<(String, u32), JournalEntry>,
    fence: HashMap<String, u64>,
}

impl MemoryJournal {
    /// Makes every write fail ([`JournalError::Unavailable`]) until switched off.
    pub fn fail_writes(&self, on: bool) {
        self.fail_writes.store(on, Ordering::SeqCst);
    }

    /// Makes every read fail ([`JournalError::Unavailable`]) until switched off.
    pub fn fail_reads(&self, on: bool) {
        self.fail_reads.store(on, Ordering::SeqCst);
    }

    /// Every entry held, in (wallet, seqno) order.
    pub fn snapshot(&self) -> Vec<JournalEntry> {
        self.lock().entries.values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // Every change is a single insert or remove, so a poisoned state is still consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn put(&self, entry: &JournalEntry, chain_now: u64) -> Result<(), JournalError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(JournalError::Unavailable("write"));
        }
        let mut s = self.lock();
        if let Some(token) = entry.fencing_token {
            let newest = s.fence.get(&entry.wallet).copied().unwrap_or(0);
            if newest > token {
                return Err(JournalError::Fenced {
                    wallet: entry.wallet.clone(),
                    token: Some(token),
                    newer: newest,
                });
            }
            s.fence.insert(entry.wallet.clone(), token);
        }
        let key = (entry.wallet.clone(), entry.seqno);
        if let Some(held) = s.entries.get(&key) {
            check_replace(held, entry, chain_now)?;
        }
        s.entries.insert(key, entry.clone());
        Ok(())
    }

    fn entries(&self, wallet: &str) -> Result<Vec<JournalEntry>, JournalError> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(JournalError::Unavailable("read"));
        }
        Ok(self
            .lock()
            .entries
            .values()
            .filter(|e| e.wallet == wallet)
            .cloned()
            .collect())
    }

    fn clear(&self, wallet: &str, seqno: u32, body_hash: &str) -> Result<(), JournalError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(JournalError::Unavailable("clear"));
        }
        let mut s = self.lock();
        let key = (wallet.to_owned(), seqno);
        if s.entries
            .get(&key)
            .is_some_and(|e| e.body_hash == body_hash)
        {
            s.entries.remove(&key);
        }
        Ok(())
    }
}

/// `held` may be replaced by `new` only when it is the same body or can no longer land.
fn check_replace(
    held: &JournalEntry,
    new: &JournalEntry,
    chain_now: u64,
) -> Result<(), JournalError> {
    if held.body_hash == new.body_hash || !held.may_land_at(chain_now) {
        Ok(())
    } else {
        Err(JournalError::Occupied {
            wallet: held.wallet.clone(),
            seqno: held.seqno,
            held_body: held.body_hash.clone(),
        })
    }
}

/// One place entries are kept.
#[derive(Clone)]
enum Backend {
    Postgres(Store),
    Dir(PathBuf),
    Memory(Arc<MemoryJournal>),
}

impl Backend {
    fn describe(&self) -> String {
        match self {
            Self::Postgres(_) => "postgres".into(),
            Self::Dir(d) => format!("file in {}", d.display()),
            Self::Memory(_) => "memory".into(),
        }
    }
}

/// Where in-flight messages are written down: one place written, and every place an earlier
/// run on this host may have written read as well.
#[derive(Clone)]
pub struct Journal {
    write: Backend,
    also_read: Vec<Backend>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Journal {
    /// The `ton_inflight` table of `store`.
    pub fn postgres(store: Store) -> Self {
        Self::only(Backend::Postgres(store))
    }

    /// Files in `dir`.
    pub fn dir(dir: impl Into<PathBuf>) -> Self {
        Self::only(Backend::Dir(dir.into()))
    }

    /// This process's memory: a restart forgets the message in flight, so only a single
    /// instance that accepts that may choose it.
    pub fn memory() -> Self {
        Self::shared(Arc::default())
    }

    /// `journal`, shared with whoever else holds it (deliveries of one process, a simulation).
    pub fn shared(journal: Arc<MemoryJournal>) -> Self {
        Self::only(Backend::Memory(journal))
    }

    fn only(write: Backend) -> Self {
        Self {
            write,
            also_read: Vec::new(),
        }
    }

    /// PostgreSQL when `store` has it (reading `state_dir` too, where an earlier run without
    /// `DATABASE_URL` may have journaled), else `state_dir`; `None` when neither is durable.
    pub fn choose(store: &Store, state_dir: Option<PathBuf>) -> Option<Self> {
        if store.postgres_configured() {
            let mut j = Self::postgres(store.clone());
            j.also_read.extend(state_dir.map(Backend::Dir));
            Some(j)
        } else {
            state_dir.map(Self::dir)
        }
    }

    /// For logs: `postgres`, `file in <dir>` or `memory`, and what else is read.
    pub fn describe(&self) -> String {
        let mut text = self.write.describe();
        for b in &self.also_read {
            text.push_str(&format!(" (also reading {})", b.describe()));
        }
        text
    }

    /// True when a restart still finds the journaled message.
    pub fn is_durable(&self) -> bool {
        !matches!(self.write, Backend::Memory(_))
    }

    /// Writes `entry` down; returns once it is durable. Fails when another body holds its seqno
    /// and may still land at chain time `chain_now` ([`JournalError::Occupied`]), or when a newer
    /// fencing token wrote this wallet ([`JournalError::Fenced`]): one statement in PostgreSQL.
    pub async fn put(&self, entry: &JournalEntry, chain_now: u64) -> Result<(), JournalError> {
        match &self.write {
            Backend::Postgres(store) => pg_put(store, entry, chain_now).await,
            Backend::Dir(dir) => {
                let text = serde_json::to_vec_pretty(entry)
                    .map_err(|e| JournalError::Corrupt(e.to_string()))?;
                let (dir, entry) = (dir.clone(), entry.clone());
                tokio::task::spawn_blocking(move || dir_put(&dir, &entry, &text, chain_now))
                    .await
                    .map_err(|e| JournalError::Corrupt(e.to_string()))?
            }
            Backend::Memory(m) => m.put(entry, chain_now),
        }
    }

    /// Every journaled message of `wallet` in every place read, by seqno.
    pub async fn entries(&self, wallet: &str) -> Result<Vec<JournalEntry>, JournalError> {
        let mut all = Vec::new();
        for b in std::iter::once(&self.write).chain(&self.also_read) {
            let found = match b {
                Backend::Postgres(store) => pg_entries(store, wallet).await?,
                Backend::Dir(dir) => dir_entries(dir, wallet).await?,
                Backend::Memory(m) => m.entries(wallet)?,
            };
            for e in found {
                if !all
                    .iter()
                    .any(|a: &JournalEntry| a.seqno == e.seqno && a.body_hash == e.body_hash)
                {
                    all.push(e);
                }
            }
        }
        all.sort_by_key(|e| e.seqno);
        Ok(all)
    }

    /// The journaled message of `wallet` with the lowest seqno, if any.
    pub async fn get(&self, wallet: &str) -> Result<Option<JournalEntry>, JournalError> {
        Ok(self.entries(wallet).await?.into_iter().next())
    }

    /// Erases the entry of `wallet` for `seqno` if it still holds the body `body_hash` (hex), in
    /// every place read.
    pub async fn clear(
        &self,
        wallet: &str,
        seqno: u32,
        body_hash: &str,
    ) -> Result<(), JournalError> {
        for b in std::iter::once(&self.write).chain(&self.also_read) {
            match b {
                Backend::Postgres(store) => pg_clear(store, wallet, seqno, body_hash).await?,
                Backend::Dir(dir) => {
                    for (path, e) in dir_read(dir, wallet).await? {
                        if e.seqno == seqno && e.body_hash == body_hash {
                            match tokio::fs::remove_file(&path).await {
                                Ok(()) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                                Err(source) => return Err(JournalError::File { path, source }),
                            }
                        }
                    }
                }
                Backend::Memory(m) => m.clear(wallet, seqno, body_hash)?,
            }
        }
        Ok(())
    }
}

async fn pg_put(store: &Store, entry: &JournalEntry, chain_now: u64) -> Result<(), JournalError> {
    let doc = serde_json::to_value(entry).map_err(|e| JournalError::Corrupt(e.to_string()))?;
    let e = entry.clone();
    let token = e
        .fencing_token
        .map(|t| i64::try_from(t).unwrap_or(i64::MAX));
    let now = i64::try_from(chain_now).unwrap_or(i64::MAX);
    let margin = i64::try_from(LANDING_MARGIN_SECS).unwrap_or(i64::MAX);
    let written: Option<i32> = store
        .pg("journal in-flight message", |pool| async move {
            // The fence row moves only forward; without it (an older token) nothing is written.
            sqlx::query_scalar(
                "WITH fence AS ( \
                   INSERT INTO ton_journal_fence (wallet, token) VALUES ($1, COALESCE($5, 0)) \
                   ON CONFLICT (wallet) DO UPDATE SET token = GREATEST(ton_journal_fence.token, EXCLUDED.token) \
                   WHERE $5 IS NULL OR ton_journal_fence.token <= EXCLUDED.token \
                   RETURNING token) \
                 INSERT INTO ton_inflight (wallet, seqno, body_hash, valid_until, fencing_token, entry) \
                 SELECT $1, $2, $3, $4, $5, $6 FROM fence \
                 ON CONFLICT (wallet, seqno) DO UPDATE \
                 SET body_hash = EXCLUDED.body_hash, valid_until = EXCLUDED.valid_until, \
                     fencing_token = EXCLUDED.fencing_token, entry = EXCLUDED.entry, created_at = now() \
                 WHERE ton_inflight.body_hash = EXCLUDED.body_hash \
                    OR ton_inflight.valid_until + $7 < $8 \
                 RETURNING 1",
            )
            .bind(e.wallet)
            .bind(i64::from(e.seqno))
            .bind(e.body_hash)
            .bind(i64::from(e.valid_until))
            .bind(token)
            .bind(doc)
            .bind(margin)
            .bind(now)
            .fetch_optional(&pool)
            .await
            .map_err(pg_err("journal in-flight message"))
        })
        .await?;
    if written.is_some() {
        return Ok(());
    }
    // Refused: say by whom (read after the fact, only for the message).
    let (wallet, seqno) = (entry.wallet.clone(), i64::from(entry.seqno));
    let (newest, held): (Option<i64>, Option<String>) = store
        .pg("read in-flight journal", |pool| async move {
            sqlx::query_as(
                "SELECT (SELECT token FROM ton_journal_fence WHERE wallet = $1), \
                        (SELECT body_hash FROM ton_inflight WHERE wallet = $1 AND seqno = $2)",
            )
            .bind(wallet)
            .bind(seqno)
            .fetch_one(&pool)
            .await
            .map_err(pg_err("read in-flight journal"))
        })
        .await?;
    let newest = newest.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
    match entry.fencing_token {
        Some(t) if newest > t => Err(JournalError::Fenced {
            wallet: entry.wallet.clone(),
            token: Some(t),
            newer: newest,
        }),
        _ => Err(JournalError::Occupied {
            wallet: entry.wallet.clone(),
            seqno: entry.seqno,
            held_body: held.unwrap_or_default(),
        }),
    }
}

async fn pg_entries(store: &Store, wallet: &str) -> Result<Vec<JournalEntry>, JournalError> {
    let wallet = wallet.to_owned();
    let docs: Vec<serde_json::Value> = store
        .pg("read in-flight journal", |pool| async move {
            sqlx::query_scalar("SELECT entry FROM ton_inflight WHERE wallet = $1 ORDER BY seqno")
                .bind(wallet)
                .fetch_all(&pool)
                .await
                .map_err(pg_err("read in-flight journal"))
        })
        .await?;
    docs.into_iter()
        .map(|d| serde_json::from_value(d).map_err(|e| JournalError::Corrupt(e.to_string())))
        .collect()
}

async fn pg_clear(
    store: &Store,
    wallet: &str,
    seqno: u32,
    body_hash: &str,
) -> Result<(), JournalError> {
    let (wallet, body) = (wallet.to_owned(), body_hash.to_owned());
    store
        .pg("clear in-flight journal", |pool| async move {
            sqlx::query(
                "DELETE FROM ton_inflight WHERE wallet = $1 AND seqno = $2 AND body_hash = $3",
            )
            .bind(wallet)
            .bind(i64::from(seqno))
            .bind(body)
            .execute(&pool)
            .await
            .map_err(pg_err("clear in-flight journal"))?;
            Ok(())
        })
        .await?;
    Ok(())
}

/// The file-name stem of `wallet`: the raw address with its colon replaced.
fn safe_name(wallet: &str) -> String {
    wallet
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// `inflight-<workchain>_<hex>-<seqno>.json`.
fn file_for(dir: &Path, wallet: &str, seqno: u32) -> PathBuf {
    dir.join(format!("inflight-{}-{seqno}.json", safe_name(wallet)))
}

/// `fence-<workchain>_<hex>`: the newest fencing token that wrote the wallet's entries.
fn fence_file(dir: &Path, wallet: &str) -> PathBuf {
    dir.join(format!("fence-{}", safe_name(wallet)))
}

/// Entries of `wallet` in `dir`, with their files: this format and the one-file-per-wallet
/// `inflight-<wallet>.json` of earlier releases.
async fn dir_read(dir: &Path, wallet: &str) -> Result<Vec<(PathBuf, JournalEntry)>, JournalError> {
    let stem = format!("inflight-{}", safe_name(wallet));
    let mut listing = match tokio::fs::read_dir(dir).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(JournalError::File {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    loop {
        let item = listing
            .next_entry()
            .await
            .map_err(|source| JournalError::File {
                path: dir.to_owned(),
                source,
            })?;
        let Some(item) = item else { break };
        let name = item.file_name().to_string_lossy().into_owned();
        let ours = name
            .strip_prefix(&stem)
            .and_then(|rest| rest.strip_suffix(".json"))
            .is_some_and(|mid| {
                mid.is_empty()
                    || mid
                        .strip_prefix('-')
                        .is_some_and(|n| n.parse::<u32>().is_ok())
            });
        if !ours {
            continue;
        }
        let path = item.path();
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                let entry: JournalEntry = serde_json::from_slice(&bytes)
                    .map_err(|e| JournalError::Corrupt(format!("{}: {e}", path.display())))?;
                out.push((path, entry));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(JournalError::File { path, source }),
        }
    }
    Ok(out)
}

async fn dir_entries(dir: &Path, wallet: &str) -> Result<Vec<JournalEntry>, JournalError> {
    Ok(dir_read(dir, wallet)
        .await?
        .into_iter()
        .map(|(_, e)| e)
        .collect())
}

/// Checks the fence and the entry already there, then writes the fence and the entry durably.
fn dir_put(
    dir: &Path,
    entry: &JournalEntry,
    text: &[u8],
    chain_now: u64,
) -> Result<(), JournalError> {
    let fence = fence_file(dir, &entry.wallet);
    if let Some(token) = entry.fencing_token {
        let newest = match std::fs::read_to_string(&fence) {
            Ok(t) => t.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => {
                return Err(JournalError::File {
                    path: fence,
                    source,
                });
            }
        };
        if newest > token {
            return Err(JournalError::Fenced {
                wallet: entry.wallet.clone(),
                token: Some(token),
                newer: newest,
            });
        }
        if newest < token {
            write_durably(dir, &fence, token.to_string().as_bytes())?;
        }
    }
    let path = file_for(dir, &entry.wallet, entry.seqno);
    match std::fs::read(&path) {
        Ok(bytes) => {
            if let Ok(held) = serde_json::from_slice::<JournalEntry>(&bytes) {
                check_replace(&held, entry, chain_now)?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(JournalError::File { path, source }),
    }
    write_durably(dir, &path, text)
}

/// Temp file, fsync, rename, fsync the directory: after this returns, a crash keeps the entry.
fn write_durably(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    use std::io::Write as _;
    let io = |source| JournalError::File {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("tmp");
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
