//! "One wallet, one sender": a lease keyed by the wallet address that a keeper must
//! hold before it sends; a standby keeps fetching and takes over when the lease lapses.
//!
//! Backends, chosen from what is configured:
//! - **Redis** (preferred): `{prefix}lock:{wallet}` set with `SET NX PX ttl` to the holder id;
//!   renewed (`PEXPIRE`) only while the value is still ours, released (`DEL`) only if ours — both
//!   compare-and-act Lua scripts, so a slow instance can never extend or delete a successor's
//!   lease. Each acquisition sets `{prefix}lock:{wallet}:token` to a new fencing token (the counter
//!   plus one, or the Redis server's clock in milliseconds if that is larger) and returns it: it
//!   only grows, even across a Redis restart that lost the counter, so anything downstream (the
//!   journal fence) can reject a stale holder.
//! - **PostgreSQL** (no Redis): `pg_try_advisory_lock(hashtext(wallet))` on a dedicated session
//!   kept open while leading; the server frees it the moment that session dies. No fencing token.
//! - **Neither**: always held: a single instance per wallet is assumed (said once in the log).
//!
//! When the lease store cannot be reached, an instance that cannot prove it leads does not send,
//! so two senders never share a wallet:
//! - **Redis unreachable**: a holder keeps the lease only until the moment its last confirmed
//!   renewal could expire on the server (the renewal's start + TTL, less a tenth for clock
//!   drift). No rival can take the key before it expires there, so a Redis outage shorter than
//!   the TTL does not interrupt publishing, and a longer one pauses it until Redis
//!   answers again. A standby never acquires while Redis is down. Caveat: if Redis restarts
//!   *empty* (no persistence), the key and the fencing counter are gone — a rival may acquire at
//!   once, with a token taken from the server clock and so still larger than any before; the old
//!   holder learns it at its next renewal, within one tick, and its journal writes are refused
//!   by the fence meanwhile.
//! - **PostgreSQL** (without Redis): held exactly while the lease session answers; if it does
//!   not, the server may already have freed the lock, so it is not held.

use crate::metrics::ChainMetrics;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tracing::{info, warn};

use crate::cache::{self, ChainStore, redis_error};
use keeper_runtime::store::{StoreError, StoreKind};
use keeper_runtime::telemetry::metrics::labels;

// Here rather than in `cache`, so that the lease builds on the store and not the other way round.
impl ChainStore {
    /// The wallet lease for `wallet`, contended under the name `holder_id`: Redis when
    /// configured, else a PostgreSQL advisory lock, else always held.
    pub fn lease(&self, wallet: &str, holder_id: &str) -> WalletLease {
        WalletLease::new(self.clone(), wallet, holder_id)
    }
}

/// Acquire (`SET NX PX` and a new fencing token) or, if we already hold it, renew (`PEXPIRE`).
/// Returns `{held, holder, token}`; atomic, so no other client interleaves.
///
/// A new token is the larger of the counter plus one and the Redis server's clock in
/// milliseconds. The counter alone would restart at 1 when Redis restarts empty, and the journal
/// fence, which remembers the newest token that wrote, would then refuse every later holder for
/// good; the clock keeps tokens growing across such a restart.
static ACQUIRE_OR_RENEW: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local now = redis.call('TIME')
  local clock_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local token = math.max((tonumber(redis.call('GET', KEYS[2]) or '0') or 0) + 1, clock_ms)
  redis.call('SET', KEYS[2], string.format('%d', token))
  return {1, ARGV[1], token}
end
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, cur, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
return {0, cur or '', 0}
",
    )
});

/// Delete the lease only if we hold it.
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// Still ours, under the same fencing token? Read-only: `1` yes, `0` no.
static FENCE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  return 1
end
return 0
",
    )
});

/// Why this instance must not sign now, from [`WalletLease::check_fence`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    /// The last renewal did not hold the lease.
    #[error("the wallet lease is not held by this instance")]
    NotHeld,
    /// Another holding (a newer fencing token, or another holder) replaced ours.
    #[error("the wallet lease was taken over (our fencing token {} is no longer current)",
        .token.map_or_else(|| "null".to_owned(), |t| t.to_string()))]
    Superseded {
        /// The token this instance held.
        token: Option<u64>,
    },
    /// The lease store could not confirm the holding, and it may have lapsed.
    #[error("the wallet lease cannot be confirmed: {0}")]
    Unverifiable(String),
}

/// Prefix of the lease session's `application_name`, so a standby can name the holder.
const PG_APP_PREFIX: &str = "keeper-lease:";

/// What one acquisition/renewal attempt found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LeaseStatus {
    /// True when this instance holds the lease and may send.
    pub held: bool,
    /// Who holds it, when known (this instance's id when `held`).
    pub holder: Option<String>,
    /// Fencing token of the current holding (Redis only); grows with every acquisition.
    pub token: Option<u64>,
}

enum Backend {
    Redis,
    Postgres {
        conn: Option<PgConnection>,
        locked: bool,
    },
    Solo,
    /// A lease store is configured but its URL is unusable: never held.
    Blocked(StoreKind),
}

/// The wallet lease of one keeper instance; renew it every tick with
/// [`WalletLease::try_acquire_or_renew`] (the TTL must exceed the tick interval).
pub struct WalletLease {
    inner: ChainStore,
    wallet: String,
    holder_id: String,
    ttl: Duration,
    backend: Backend,
    last: Option<LeaseStatus>,
    /// Redis: until when the last confirmed renewal guarantees no rival can hold the key.
    valid_until: Option<Instant>,
    /// Whether "holding through a Redis outage" was logged for the current outage.
    riding_logged: bool,
}

impl std::fmt::Debug for WalletLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalletLease")
            .field("wallet", &self.wallet)
            .field("holder_id", &self.holder_id)
            .field("backend", &self.backend())
            .field("last", &self.last)
            .finish()
    }
}

impl WalletLease {
    pub(crate) fn new(inner: ChainStore, wallet: &str, holder_id: &str) -> Self {
        let backend = if inner.redis_configured() {
            Backend::Redis
        } else if inner.redis_unusable() {
            Backend::Blocked(StoreKind::Redis)
        } else if inner.postgres_configured() {
            Backend::Postgres {
                conn: None,
                locked: false,
            }
        } else if inner.postgres_unusable() {
            Backend::Blocked(StoreKind::Postgres)
        } else {
            Backend::Solo
        };
        Self {
            ttl: inner.lease_ttl(),
            inner,
            wallet: wallet.to_owned(),
            holder_id: holder_id.to_owned(),
            backend,
            last: None,
            valid_until: None,
            riding_logged: false,
        }
    }

    /// Overrides the lease TTL (`LEASE_TTL`); Redis counts it in milliseconds.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// `redis`, `postgres`, `none` (always held) or `unusable` (configured but broken: never held).
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Redis => "redis",
            Backend::Postgres { .. } => "postgres",
            Backend::Solo => "none",
            Backend::Blocked(_) => "unusable",
        }
    }

    /// The wallet this lease is for.
    pub fn wallet(&self) -> &str {
        &self.wallet
    }

    /// The outcome of the last attempt (not held before the first).
    pub fn status(&self) -> LeaseStatus {
        self.last.clone().unwrap_or_default()
    }

    /// Takes the lease if free, renews it if ours; never blocks longer than the store timeouts
    /// and never fails: any doubt means "not held". Sets `keeper_lock_held{wallet}`.
    pub async fn try_acquire_or_renew(&mut self) -> LeaseStatus {
        let status = match self.backend {
            Backend::Redis => self.redis_step().await,
            Backend::Postgres { .. } => self.pg_step().await,
            Backend::Solo => LeaseStatus {
                held: true,
                holder: Some(self.holder_id.clone()),
                token: None,
            },
            Backend::Blocked(_) => LeaseStatus::default(),
        };
        self.note(status.clone());
        status
    }

    /// Proves, right before a signature, that this instance still holds the lease under the
    /// token of its last renewal: Redis is asked again (key and token unchanged), a PostgreSQL
    /// lease session must still answer. Returns that token (`None` without Redis). While Redis
    /// cannot be reached the holding counts only until its last renewal could expire.
    pub async fn check_fence(&mut self) -> Result<Option<u64>, FenceError> {
        let last = self.last.clone().unwrap_or_default();
        if !last.held {
            return Err(FenceError::NotHeld);
        }
        let verdict = match self.backend {
            Backend::Redis => self.redis_fence(last.token).await,
            Backend::Postgres { .. } => self.pg_fence().await,
            Backend::Solo => Ok(None),
            Backend::Blocked(_) => Err(FenceError::NotHeld),
        };
        if let Err(e) = &verdict {
            warn!(wallet = %self.wallet, holder = %self.holder_id, error = %e, "fencing check failed: not signing");
            // Taken over, or a PostgreSQL session (and so its lock) gone: standing by.
            let lost = matches!(e, FenceError::Superseded { .. })
                || matches!(self.backend, Backend::Postgres { .. });
            if lost {
                self.valid_until = None;
                self.note(LeaseStatus::default());
            }
        }
        verdict
    }

    async fn redis_fence(&self, token: Option<u64>) -> Result<Option<u64>, FenceError> {
        let riding = || match self.valid_until {
            Some(until) if Instant::now() < until => Ok(token),
            _ => Err(FenceError::Unverifiable(
                "Redis unreachable and the last renewal may have expired".into(),
            )),
        };
        let Some(r) = &self.inner.redis_state() else {
            return Err(FenceError::NotHeld);
        };
        let Some(expected) = token else {
            return Err(FenceError::Superseded { token });
        };
        if !r.health.is_up() {
            return riding();
        }
        let mut call = FENCE.prepare_invoke();
        call.key(cache::lock_key(self.inner.redis_prefix(), &self.wallet))
            .key(cache::token_key(self.inner.redis_prefix(), &self.wallet))
            .arg(&self.holder_id)
            .arg(expected.to_string());
        let mut conn = r.conn();
        match tokio::time::timeout(
            self.inner.timeouts().op,
            call.invoke_async::<i64>(&mut conn),
        )
        .await
        {
            Ok(Ok(1)) => Ok(token),
            Ok(Ok(_)) => Err(FenceError::Superseded { token }),
            Ok(Err(source)) => {
                let e = redis_error("check fencing token", source);
                r.health.count_error();
                r.health.failed(&e);
                riding()
            }
            Err(_) => riding(),
        }
    }

    async fn pg_fence(&mut self) -> Result<Option<u64>, FenceError> {
        let limit = self.inner.timeouts().op;
        let Backend::Postgres { conn, locked } = &mut self.backend else {
            return Err(FenceError::NotHeld);
        };
        let Some(c) = conn.as_mut().filter(|_| *locked) else {
            return Err(FenceError::NotHeld);
        };
        // The advisory lock lives exactly as long as this session.
        match tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(&mut *c)).await {
            Ok(Ok(_)) => Ok(None),
            Ok(Err(e)) => {
                *conn = None;
                *locked = false;
                Err(FenceError::Unverifiable(format!(
                    "the lease session failed: {e}"
                )))
            }
            Err(_) => {
                *conn = None;
                *locked = false;
                Err(FenceError::Unverifiable(
                    "the lease session did not answer".into(),
                ))
            }
        }
    }

    /// Gives the lease up if held (Redis: deleted only if still ours; PostgreSQL: unlocked and
    /// the session closed), so a standby can take over without waiting for the TTL.
    pub async fn release(&mut self) -> Result<(), StoreError> {
        let result = match &mut self.backend {
            Backend::Redis => self.redis_release().await,
            Backend::Postgres { conn, locked } => {
                let taken = conn.take();
                let was_locked = std::mem::replace(locked, false);
                match taken {
                    Some(mut c) if was_locked => {
                        let unlock = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
                            .bind(&self.wallet)
                            .execute(&mut c);
                        let r = tokio::time::timeout(self.inner.timeouts().op, unlock).await;
                        // Closing the session frees the lock even if the unlock did not answer.
                        let _ = tokio::time::timeout(self.inner.timeouts().op, c.close()).await;
                        match r {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err(source)) => Err(StoreError::Postgres {
                                op: "release lease",
                                source,
                            }),
                            Err(_) => Err(StoreError::Timeout {
                                store: StoreKind::Postgres,
                                op: "release lease",
                                timeout: self.inner.timeouts().op,
                            }),
                        }
                    }
                    _ => Ok(()),
                }
            }
            Backend::Solo | Backend::Blocked(_) => Ok(()),
        };
        if self.last.as_ref().is_some_and(|s| s.held) {
            info!(wallet = %self.wallet, holder = %self.holder_id, "wallet lease released");
        }
        self.valid_until = None;
        self.last = Some(LeaseStatus::default());
        self.set_gauge(false);
        result
    }

    fn set_gauge(&self, held: bool) {
        ChainMetrics::of(self.inner.metrics())
            .lock_held
            .get_or_create(&labels([("wallet", self.wallet.as_str())]))
            .set(i64::from(held));
    }

    /// Logs transitions (not every renewal) and updates the gauge.
    fn note(&mut self, status: LeaseStatus) {
        let before = self.last.as_ref();
        let was_held = before.is_some_and(|s| s.held);
        let first = before.is_none();
        let other = status.holder.as_deref().unwrap_or("unknown");
        match (&self.backend, was_held, status.held) {
            (Backend::Solo, false, true) => info!(
                wallet = %self.wallet,
                "no Redis or PostgreSQL configured: the wallet lease is always held by this \
                 instance; run a single instance per wallet"
            ),
            (Backend::Blocked(store), _, _) if first => warn!(
                wallet = %self.wallet,
                store = %store,
                "the wallet lease store is configured but unusable: this instance will not send"
            ),
            (_, false, true) => info!(
                wallet = %self.wallet,
                holder = %self.holder_id,
                token = status.token,
                backend = self.backend(),
                "wallet lease acquired: this instance sends"
            ),
            (_, true, false) => warn!(
                wallet = %self.wallet,
                holder = other,
                backend = self.backend(),
                "wallet lease lost: standing by"
            ),
            (_, false, false)
                if first
                    || before.and_then(|s| s.holder.as_deref()) != status.holder.as_deref() =>
            {
                info!(wallet = %self.wallet, holder = other, backend = self.backend(), "wallet lease not held: standing by")
            }
            _ => {}
        }
        self.set_gauge(status.held);
        self.last = Some(status);
    }

    async fn redis_step(&mut self) -> LeaseStatus {
        let Some(r) = &self.inner.redis_state() else {
            return LeaseStatus::default();
        };
        if !r.health.is_up() {
            return self.riding_out();
        }
        let lock = cache::lock_key(self.inner.redis_prefix(), &self.wallet);
        let token = cache::token_key(self.inner.redis_prefix(), &self.wallet);
        let ttl_ms = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut conn = r.conn();
        let mut call = ACQUIRE_OR_RENEW.prepare_invoke();
        call.key(&lock).key(&token).arg(&self.holder_id).arg(ttl_ms);
        let limit = self.inner.timeouts().op;
        // The key's expiry on the server is at least this instant + TTL.
        let started = Instant::now();
        let answer =
            match tokio::time::timeout(limit, call.invoke_async::<(i64, String, i64)>(&mut conn))
                .await
            {
                Ok(Ok(a)) => Ok(a),
                Ok(Err(source)) => Err(redis_error("acquire lease", source)),
                Err(_) => Err(StoreError::Timeout {
                    store: StoreKind::Redis,
                    op: "acquire lease",
                    timeout: limit,
                }),
            };
        match answer {
            Ok((held, holder, tok)) => {
                r.health.ok();
                self.riding_logged = false;
                let held = held == 1;
                self.valid_until = held.then(|| started + self.ttl - self.ttl / 10);
                LeaseStatus {
                    held,
                    holder: (!holder.is_empty()).then_some(holder),
                    token: held.then(|| u64::try_from(tok).unwrap_or(0)),
                }
            }
            Err(e) => {
                r.health.count_error();
                r.health.failed(&e);
                self.riding_out()
            }
        }
    }

    /// Redis cannot be asked: still held while the last confirmed renewal is valid.
    fn riding_out(&mut self) -> LeaseStatus {
        match self.valid_until {
            Some(until) if Instant::now() < until => {
                let last = self.last.clone().unwrap_or_default();
                if last.held {
                    if !self.riding_logged {
                        self.riding_logged = true;
                        let left = until.saturating_duration_since(Instant::now());
                        warn!(
                            wallet = %self.wallet,
                            remaining_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
                            "Redis unreachable: keeping the wallet lease only until its last \
                             renewal could expire"
                        );
                    }
                    return last;
                }
                self.valid_until = None;
                LeaseStatus::default()
            }
            _ => {
                self.valid_until = None;
                LeaseStatus::default()
            }
        }
    }

    async fn redis_release(&self) -> Result<(), StoreError> {
        let Some(r) = &self.inner.redis_state() else {
            return Ok(());
        };
        let lock = cache::lock_key(self.inner.redis_prefix(), &self.wallet);
        let mut conn = r.conn();
        let mut call = RELEASE.prepare_invoke();
        call.key(&lock).arg(&self.holder_id);
        let limit = self.inner.timeouts().op;
        match tokio::time::timeout(limit, call.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => {
                let e = redis_error("release lease", source);
                r.health.count_error();
                r.health.failed(&e);
                Err(e)
            }
            Err(_) => Err(StoreError::Timeout {
                store: StoreKind::Redis,
                op: "release lease",
                timeout: limit,
            }),
        }
    }

    async fn pg_step(&mut self) -> LeaseStatus {
        let Some(options) = self.inner.pg_connect_options().cloned() else {
            return LeaseStatus::default();
        };
        let store = self.inner.clone();
        let Backend::Postgres { conn, locked } = &mut self.backend else {
            return LeaseStatus::default();
        };
        // No health gate here: the lease session's own answer is the truth about the lock.
        let timeouts = self.inner.timeouts();
        let (wallet, holder_id) = (&self.wallet, &self.holder_id);
        let result = tokio::time::timeout(timeouts.connect + timeouts.op, async {
            if conn.is_none() {
                let app: String = format!("{PG_APP_PREFIX}{}", holder_id)
                    .chars()
                    .take(63)
                    .collect();
                let options = options.application_name(&app);
                let c = PgConnection::connect_with(&options)
                    .await
                    .map_err(|source| StoreError::Postgres {
                        op: "connect lease session",
                        source,
                    })?;
                *conn = Some(c);
                *locked = false;
            }
            let Some(c) = conn.as_mut() else {
                return Ok(LeaseStatus::default());
            };
            if *locked {
                // The lock lives as long as the session: a live session means we still hold it.
                sqlx::query("SELECT 1")
                    .execute(&mut *c)
                    .await
                    .map_err(|source| StoreError::Postgres {
                        op: "renew lease",
                        source,
                    })?;
                return Ok(LeaseStatus {
                    held: true,
                    holder: Some(holder_id.clone()),
                    token: None,
                });
            }
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
                .bind(wallet)
                .fetch_one(&mut *c)
                .await
                .map_err(|source| StoreError::Postgres {
                    op: "acquire lease",
                    source,
                })?;
            if got {
                *locked = true;
                return Ok(LeaseStatus {
                    held: true,
                    holder: Some(holder_id.clone()),
                    token: None,
                });
            }
            Ok(LeaseStatus {
                held: false,
                holder: pg_holder(c, wallet).await,
                token: None,
            })
        })
        .await
        .unwrap_or(Err(StoreError::Timeout {
            store: StoreKind::Postgres,
            op: "acquire lease",
            timeout: timeouts.connect + timeouts.op,
        }));
        match result {
            Ok(status) => status,
            Err(e) => {
                // Whatever state the session is in, it cannot prove we lead: drop it.
                *conn = None;
                *locked = false;
                store.report_pg_failure(&e);
                LeaseStatus::default()
            }
        }
    }
}

/// Names the session holding the advisory lock, from its `application_name` (best effort: a
/// role without `pg_read_all_stats` may not see other roles' sessions).
async fn pg_holder(conn: &mut PgConnection, wallet: &str) -> Option<String> {
    let name: Option<String> = sqlx::query_scalar(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtext($1)::bigint \
         LIMIT 1",
    )
    .bind(wallet)
    .fetch_optional(conn)
    .await
    .ok()
    .flatten();
    name.map(|n| {
        n.strip_prefix(PG_APP_PREFIX)
            .map(str::to_owned)
            .unwrap_or(n)
    })
}

impl Drop for WalletLease {
    fn drop(&mut self) {
        // The Redis key lapses by its TTL; a dropped Postgres session frees its lock.
        self.set_gauge(false);
    }
}
