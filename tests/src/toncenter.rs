//! A local toncenter v2 stand-in with a tiny chain behind it (toncenter v2 semantics: seqno, externals, get-methods).
//!
//! It answers JSON-RPC at `/api/v2/jsonRPC` and the REST paths (`/api/v2/{method}`) in
//! toncenter's envelope (`{"ok","result"}`, errors `{"ok":false,"error","code"}` with the HTTP
//! status equal to `code`), and keeps per-account state:
//!
//! - **wallets** (V5R1 and V4R2): balance, seqno, deployed or not, public key, wallet id. An
//!   external message is checked the way the wallet contracts do it (signature over the body
//!   hash, seqno, wallet id, `valid_until > now`, StateInit matching the address when not
//!   deployed); a refusal is HTTP 500 "cannot apply external message to current state". An
//!   accepted one bumps the seqno, records a transaction and executes the out-actions in chain
//!   order (V5R1 out-lists run deepest first), skipping any the balance cannot pay (mode +2);
//! - **a wallet with little money** ([`ToncenterServer::set_balance`], or `fund`/`deploy` with a
//!   small amount): its action phase skips the messages it cannot pay (send mode 3: fees paid
//!   separately, errors ignored) and the transaction lists what was sent and skipped
//!   (`description.action` in v3). Once the balance cannot cover the gas of accepting an external
//!   ([`ToncenterServer::set_external_fee`]), the external is refused before the wallet code
//!   runs, in toncenter's format: "inbound external message rejected by account … before
//!   smart-contract execution";
//! - **oracles**: internal `update_price` (0x03) / `update_bridge_status` (0x04) bodies are
//!   accepted when their `^signature` verifies against a registered keeper key and the timestamp
//!   is not older than the stored one; otherwise ignored (and bounced). `get_price(asset_id)` and
//!   `get_bridge_status(bridge_id)` answer from what was stored, numbers as `0x…` hex.
//!
//! Chain time follows the wall clock unless frozen; faults are injected per method for the next
//! N requests ([`Fault`]); everything that arrived is recorded.
//!
//! ```no_run
//! # async fn demo(keys: &keeper_ton::WalletKeys, wallet: &keeper_ton::Wallet) {
//! use keeper_tests::toncenter::{Fault, ToncenterServer};
//! let chain = ToncenterServer::start().await;
//! chain.fund(wallet.address(), 10_000_000_000);            // undeployed, 10 TON
//! let oracle = chain.new_oracle();
//! chain.register_keeper(&oracle, keys.public_key());
//! chain.inject("sendBocReturnHash", Fault::RateLimited { retry_after: None }, 1);
//! // point TON_RPC_URL at chain.jsonrpc_url() (or chain.rest_url()), run, then:
//! assert_eq!(chain.price(&oracle, 1).map(|p| p.0), Some(999_850));
//! # }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keeper_ton::WalletVersion;
use keeper_ton::verify_signature;
use serde_json::{Value, json};
use tonlib_core::TonAddress;
use tonlib_core::cell::{ArcCell, BagOfCells, Cell, CellBuilder};
use tonlib_core::tlb_types::block::coins::Grams;
use tonlib_core::tlb_types::block::message::{CommonMsgInfo, ExtInMsgInfo, Message};
use tonlib_core::tlb_types::block::msg_address::{MsgAddrNone, MsgAddressExt};
use tonlib_core::tlb_types::block::state_init::StateInit;
use tonlib_core::tlb_types::primitives::either::{EitherRef, EitherRefLayout};
use tonlib_core::tlb_types::tlb::TLB;
use tonlib_core::types::TonHash;
use tonlib_core::wallet::version_helper::VersionHelper;
use tonlib_core::wallet::versioned::v4::WalletDataV4;
use tonlib_core::wallet::versioned::v5::WalletDataV5;
use tonlib_core::wallet::wallet_version::WalletVersion as LibVersion;

/// Gas the wallet pays for accepting an external message, nanotons.
pub const EXTERNAL_FEE: u128 = 3_000_000;
/// Forwarding fee per outgoing message (mode +1 pays it on top of the value), nanotons.
pub const FORWARD_FEE: u128 = 1_000_000;
/// What the oracle's compute phase costs per update, nanotons: a message carrying less runs out
/// of gas (exit code -14) and changes nothing.
pub const ORACLE_GAS_FEE: u128 = 4_000_000;
/// The oracle's exit code for a signature that is not by a registered keeper.
pub const EXIT_UNKNOWN_KEEPER: i32 = 401;
/// The oracle's exit code for an update older than the stored one.
pub const EXIT_STALE_UPDATE: i32 = 409;
/// The oracle's exit code for a body it cannot parse.
pub const EXIT_BAD_BODY: i32 = 400;
/// TVM's out-of-gas exit code.
pub const EXIT_OUT_OF_GAS: i32 = -14;

/// What toncenter answers when a wallet refuses an external message (exit code appended).
pub const CANNOT_APPLY: &str = "LITE_SERVER_UNKNOWN: cannot apply external message to current state : External message was not accepted";

/// A way to misbehave, for the next N requests of a method.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// HTTP 429 `{"ok":false,"result":"Ratelimit exceed","code":429}`, optional `Retry-After`.
    RateLimited {
        /// Seconds, sent as `Retry-After`.
        retry_after: Option<u64>,
    },
    /// HTTP 503 with an HTML page, as a load balancer sends it.
    Unavailable,
    /// HTTP 504 `LITE_SERVER_NETWORK timeout`, without doing anything.
    LiteserverTimeout,
    /// Any status with a toncenter JSON error.
    Status(u16, String),
    /// Sleep this long, then answer normally (the client has usually given up by then).
    Hang(Duration),
    /// Apply the request (send the message), then answer 504: the reply is lost.
    LoseResponse,
    /// Apply the request, then hang this long before answering: the reply is lost by timeout.
    ApplyThenHang(Duration),
    /// `sendBoc*`: answer success but drop the message (it never lands).
    Swallow,
    /// `sendBoc*`: refuse the message with this wallet exit code and reason in toncenter's
    /// refusal format (HTTP 500, "cannot apply external message…"), without applying it: a
    /// liteserver whose view of the wallet is not the chain's.
    Refuse(i32, String),
}

/// One HTTP request that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// API method.
    pub method: String,
    /// Came through `/jsonRPC`.
    pub json_rpc: bool,
    /// The `X-API-Key` header (or `api_key` query parameter).
    pub api_key: Option<String>,
    /// HTTP status answered; 0 for a request held by [`Fault::Hang`] (recorded on arrival).
    pub status: u16,
    /// The port it arrived on (see [`ToncenterServer::add_port`]).
    pub port: u16,
    /// When it arrived.
    pub at: Instant,
}

/// What happened to an external message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalOutcome {
    /// Accepted: seqno bumped, actions executed.
    Accepted,
    /// Refused by the wallet (or unparseable), with the reason.
    Rejected(String),
    /// Dropped by [`Fault::Swallow`].
    Swallowed,
}

/// One external message that arrived through `sendBoc*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRecord {
    /// The BoC as sent.
    pub boc: Vec<u8>,
    /// Destination wallet, when the message parsed.
    pub wallet: Option<TonAddress>,
    /// Seqno in the signed body, when it parsed.
    pub seqno: Option<u32>,
    /// valid_until in the signed body, when it parsed.
    pub valid_until: Option<u32>,
    /// Hash of the signed body cell: equal for re-sends of the same message, different for a
    /// different body.
    pub body_hash: Option<[u8; 32]>,
    /// StateInit attached.
    pub state_init: bool,
    /// What happened.
    pub outcome: ExternalOutcome,
}

/// One internal message that reached an oracle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OracleEvent {
    /// The oracle.
    pub oracle: TonAddress,
    /// The sending wallet.
    pub from: TonAddress,
    /// 0x03 or 0x04 (or whatever op arrived).
    pub op: u32,
    /// Asset or bridge id.
    pub id: u16,
    /// Price, or 1/0 for online.
    pub value: u128,
    /// Timestamp / last_seen.
    pub timestamp: u32,
    /// Stored.
    pub accepted: bool,
    /// Why not, if not.
    pub reason: Option<String>,
}

#[derive(Debug, Clone)]
struct WalletAccount {
    version: WalletVersion,
    wallet_id: i32,
    public_key: [u8; 32],
    seqno: u32,
}

#[derive(Debug, Clone, Default)]
struct Oracle {
    keepers: Vec<[u8; 32]>,
    prices: HashMap<u16, (u128, u32)>,
    bridges: HashMap<u8, (bool, u32)>,
}

#[derive(Debug, Clone, Default)]
struct Account {
    balance: u128,
    /// Deployed wallet; `None` while uninitialized (or for a non-wallet account).
    wallet: Option<WalletAccount>,
    oracle: Option<Oracle>,
    transactions: Vec<Value>,
    last_lt: u64,
    last_hash: [u8; 32],
}

#[derive(Debug, Clone)]
struct FaultRule {
    method: String,
    fault: Fault,
    remaining: usize,
}

#[derive(Debug, Clone)]
struct PendingInternal {
    ready_at: Instant,
    created_lt: u64,
    hash: [u8; 32],
    from: TonAddress,
    to: TonAddress,
    value: u128,
    bounce: bool,
    body: ArcCell,
}

/// Number notation of get-method results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberStyle {
    /// `0x1f` / `-0x1` (what toncenter does).
    Hex,
    /// `31` / `-1`.
    Decimal,
}

#[derive(Debug)]
struct Chain {
    accounts: HashMap<TonAddress, Account>,
    frozen_time: Option<u64>,
    time_offset: i64,
    lt: u64,
    block: u64,
    faults: Vec<FaultRule>,
    api_key: Option<String>,
    numbers: NumberStyle,
    internal_delay: Duration,
    pending: Vec<PendingInternal>,
    inclusion_delay: Duration,
    held: Vec<(Instant, Vec<u8>)>,
    oracle_gas_fee: u128,
    /// Gas the wallet pays for accepting an external.
    external_fee: u128,
    /// Every transaction in the toncenter v3 shape, for `/api/v3/transactionsByMessage`.
    v3: Vec<Value>,
    /// Whether `/api/v3/` answers (off: an endpoint with only the v2 API).
    v3_enabled: bool,
    /// `getTransactions` gives each transaction's BoC.
    transaction_data: bool,
    /// `runGetMethod` reports the account's last transaction (toncenter does).
    get_method_lt: bool,
    /// toncenter's rate limit, when on.
    rate_limit: Option<TokenBucket>,
    requests: Vec<RequestRecord>,
    /// Requests to `/api/v3/`, kept apart: they are neither JSON-RPC nor keyed like v2 ones.
    index_requests: Vec<RequestRecord>,
    externals: Vec<ExternalRecord>,
    oracle_events: Vec<OracleEvent>,
}

impl Chain {
    fn now(&self) -> u64 {
        self.frozen_time.unwrap_or_else(|| {
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            wall.saturating_add_signed(self.time_offset)
        })
    }
}

/// toncenter's rate limit: `rps` requests per second with bursts of `burst`, shared by every port
/// and client; over it, 429 with toncenter's error JSON.
#[derive(Debug)]
struct TokenBucket {
    rps: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
    retry_after: Option<u64>,
}

impl TokenBucket {
    /// Takes a token; false when there is none (the request is answered 429).
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.rps;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The running server. Clones share the chain.
#[derive(Clone)]
pub struct ToncenterServer {
    addr: SocketAddr,
    chain: Arc<Mutex<Chain>>,
    port: Arc<PortState>,
    _task: Arc<tokio::task::JoinHandle<()>>,
}

/// How one port of the server misbehaves, whatever the chain does.
#[derive(Debug, Default)]
struct PortState {
    /// Answer every request with this status (503: a load balancer's HTML page); 0: serve.
    status: AtomicU16,
    /// Answer wallet and address reads as a node 30 s and one seqno behind.
    lagging: AtomicBool,
    /// Answer address reads with a chain time this many seconds in the future; 0: the truth.
    ahead_secs: AtomicU64,
}

/// What the HTTP handler of one port serves.
#[derive(Clone)]
struct Served {
    chain: Arc<Mutex<Chain>>,
    port: Arc<PortState>,
    number: u16,
}

fn lock(m: &Mutex<Chain>) -> MutexGuard<'_, Chain> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn code_hash(v: LibVersion) -> Option<TonHash> {
    VersionHelper::get_code(v).ok().map(|c| Cell::cell_hash(c))
}

fn lib(v: WalletVersion) -> LibVersion {
    match v {
        WalletVersion::V5r1 => LibVersion::V5R1,
        WalletVersion::V4r2 => LibVersion::V4R2,
    }
}

fn data_cell(w: &WalletAccount) -> Cell {
    let pk = TonHash::from(w.public_key);
    let built = match w.version {
        WalletVersion::V5r1 => {
            let mut d = WalletDataV5::new(w.wallet_id, pk);
            d.seqno = w.seqno;
            d.to_cell()
        }
        WalletVersion::V4r2 => {
            let mut d = WalletDataV4::new(w.wallet_id, pk);
            d.seqno = w.seqno;
            d.to_cell()
        }
    };
    built.unwrap_or_default()
}

fn hash32(c: &Cell) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(c.cell_hash().as_slice());
    out
}

fn num(style: NumberStyle, v: i128) -> Value {
    let text = match style {
        NumberStyle::Hex if v < 0 => format!("-0x{:x}", v.unsigned_abs()),
        NumberStyle::Hex => format!("0x{v:x}"),
        NumberStyle::Decimal => v.to_string(),
    };
    json!(["num", text])
}

/// A random workchain-0 address (for oracles and strangers).
pub fn random_address() -> TonAddress {
    // 32 bytes from the system RNG, by way of a throwaway key.
    let bytes = *keeper_ton::WalletKeys::ephemeral().public_key();
    TonAddress::new(0, TonHash::from(bytes))
}

struct ApiError {
    status: u16,
    error: String,
}

fn api_err(status: u16, error: impl Into<String>) -> ApiError {
    ApiError {
        status,
        error: error.into(),
    }
}

fn reject(code: i32, what: &str) -> ApiError {
    api_err(
        500,
        format!(
            "{CANNOT_APPLY}\nCannot run message on account: inbound external message rejected by transaction: {what}\nexitcode={code}, steps=0, gas_used=0"
        ),
    )
}

impl ToncenterServer {
    /// Starts on `127.0.0.1:0` with an empty chain that follows the wall clock.
    pub async fn start() -> Self {
        let chain = Arc::new(Mutex::new(Chain {
            accounts: HashMap::new(),
            frozen_time: None,
            time_offset: 0,
            lt: 1_000_000,
            block: 1,
            faults: Vec::new(),
            api_key: None,
            numbers: NumberStyle::Hex,
            internal_delay: Duration::ZERO,
            pending: Vec::new(),
            inclusion_delay: Duration::ZERO,
            held: Vec::new(),
            oracle_gas_fee: ORACLE_GAS_FEE,
            external_fee: EXTERNAL_FEE,
            v3: Vec::new(),
            v3_enabled: true,
            transaction_data: true,
            get_method_lt: true,
            rate_limit: None,
            requests: Vec::new(),
            index_requests: Vec::new(),
            externals: Vec::new(),
            oracle_events: Vec::new(),
        }));
        Self::serve(chain).await
    }

    async fn serve(chain: Arc<Mutex<Chain>>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let port = Arc::new(PortState::default());
        let app = axum::Router::new().fallback(handle).with_state(Served {
            chain: chain.clone(),
            port: port.clone(),
            number: addr.port(),
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            chain,
            port,
            _task: Arc::new(task),
        }
    }

    /// Serves the same chain on another port (a second endpoint of the same network); its
    /// faults ([`ToncenterServer::set_port_status`], [`ToncenterServer::set_lagging`]) are its own.
    pub async fn add_port(&self) -> Self {
        Self::serve(self.chain.clone()).await
    }

    /// This port's number (see [`RequestRecord::port`]).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answers every request on this port with `status` (503: an HTML page; others: a toncenter
    /// JSON error); 0 serves again.
    pub fn set_port_status(&self, status: u16) {
        self.port.status.store(status, Ordering::Relaxed);
    }

    /// Holds every external that would be accepted for `delay` before applying it (a real
    /// network includes a message a block or more after `sendBoc` answers); copies of one
    /// message sent meanwhile are all held, and all but the first are refused on inclusion.
    pub fn set_inclusion_delay(&self, delay: Duration) {
        self.chain().inclusion_delay = delay;
    }

    /// Limits every port together to `rps` requests per second (bursts of `burst`), answering
    /// the rest 429 `{"ok":false,"error":"Ratelimit exceed","code":429}` with `Retry-After:
    /// retry_after` when given, as toncenter does; `rps` 0 lifts the limit. Rejected requests
    /// are recorded with status 429.
    pub fn set_rate_limit(&self, rps: f64, burst: u32, retry_after: Option<u64>) {
        self.chain().rate_limit = (rps > 0.0).then(|| TokenBucket {
            rps,
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            at: Instant::now(),
            retry_after,
        });
    }

    /// Requests answered 429 so far (injected or by the rate limit), all methods.
    pub fn rate_limited_count(&self) -> usize {
        let c = self.chain();
        c.requests
            .iter()
            .chain(&c.index_requests)
            .filter(|r| r.status == 429)
            .count()
    }

    /// Serve `/api/v3/` (the default) or answer it 404, like a v2-only endpoint.
    pub fn set_v3_index(&self, enabled: bool) {
        self.chain().v3_enabled = enabled;
    }

    /// Give `getTransactions` each transaction's BoC in `data` (the default), or leave it out,
    /// as an endpoint that lists transactions without them does: then no exit code shows.
    pub fn set_transaction_data(&self, enabled: bool) {
        self.chain().transaction_data = enabled;
    }

    /// Report the account's last transaction in `runGetMethod`'s `last_transaction_id` (the
    /// default, as toncenter does), or a zero lt, as an endpoint that does not say.
    pub fn set_get_method_lt(&self, enabled: bool) {
        self.chain().get_method_lt = enabled;
    }

    /// What the oracle's compute phase costs per update (default [`ORACLE_GAS_FEE`]).
    pub fn set_oracle_gas_fee(&self, nanoton: u128) {
        self.chain().oracle_gas_fee = nanoton;
    }

    /// Gas the wallet pays for accepting an external (default [`EXTERNAL_FEE`]): a wallet holding
    /// less refuses externals before its code runs.
    pub fn set_external_fee(&self, nanoton: u128) {
        self.chain().external_fee = nanoton;
    }

    /// Every internal message an oracle received: its value and the compute exit code, in
    /// order.
    pub fn oracle_inbound(&self) -> Vec<(u128, i32)> {
        let c = self.chain();
        c.v3.iter()
            .filter(|tx| !tx["in_msg"]["source"].is_null())
            .filter_map(|tx| {
                let value = tx["in_msg"]["value"].as_str()?.parse().ok()?;
                let code = tx["description"]["compute_ph"]["exit_code"].as_i64()?;
                Some((value, i32::try_from(code).ok()?))
            })
            .collect()
    }

    /// Externals accepted for broadcast and not yet included.
    pub fn held_externals(&self) -> usize {
        self.chain().held.len()
    }

    /// Makes this port answer wallet and address reads like a node that lags: one seqno and
    /// 30 s of chain time behind.
    pub fn set_lagging(&self, lagging: bool) {
        self.port.lagging.store(lagging, Ordering::Relaxed);
    }

    /// Makes this port answer address reads with a chain time `secs` in the future (0: the
    /// truth again): a node that runs ahead, or one that lies.
    pub fn set_ahead(&self, secs: u64) {
        self.port.ahead_secs.store(secs, Ordering::Relaxed);
    }

    fn chain(&self) -> MutexGuard<'_, Chain> {
        let mut c = lock(&self.chain);
        deliver_pending(&mut c);
        c
    }

    /// `http://127.0.0.1:PORT/api/v2/jsonRPC`.
    pub fn jsonrpc_url(&self) -> String {
        format!("http://{}/api/v2/jsonRPC", self.addr)
    }

    /// `http://127.0.0.1:PORT/api/v2/` (the REST base).
    pub fn rest_url(&self) -> String {
        format!("http://{}/api/v2/", self.addr)
    }

    // ---- accounts ----

    /// Credits `nanoton` to `address` (creating an uninitialized account if needed).
    pub fn fund(&self, address: &TonAddress, nanoton: u128) {
        self.chain()
            .accounts
            .entry(address.clone())
            .or_default()
            .balance += nanoton;
    }

    /// Sets the balance of `address` (a wallet with little money: see the module docs), creating
    /// an uninitialized account if needed.
    pub fn set_balance(&self, address: &TonAddress, nanoton: u128) {
        self.chain()
            .accounts
            .entry(address.clone())
            .or_default()
            .balance = nanoton;
    }

    /// Puts an already-deployed wallet at `address` (as if deployed earlier) with `seqno`.
    pub fn deploy_wallet(
        &self,
        address: &TonAddress,
        version: WalletVersion,
        wallet_id: i32,
        public_key: &[u8; 32],
        seqno: u32,
        balance: u128,
    ) {
        let mut c = self.chain();
        let acc = c.accounts.entry(address.clone()).or_default();
        acc.balance = balance;
        acc.wallet = Some(WalletAccount {
            version,
            wallet_id,
            public_key: *public_key,
            seqno,
        });
    }

    /// Deploys `wallet` (as if done earlier) at `seqno` with `balance` nanotons.
    pub fn deploy(&self, wallet: &keeper_ton::Wallet, seqno: u32, balance: u128) {
        self.deploy_wallet(
            wallet.address(),
            wallet.version(),
            wallet.wallet_id(),
            wallet.keys().public_key(),
            seqno,
            balance,
        );
    }

    /// Environment for a keeper process pointed at this chain (`TON_RPC_URL`, JSON-RPC form).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TON_RPC_URL", self.jsonrpc_url()),
            ("TON_MAX_RPS", "1000".to_owned()),
        ]
    }

    /// Makes `address` an oracle contract with no registered keepers.
    pub fn add_oracle(&self, address: &TonAddress) {
        let mut c = self.chain();
        let fresh = c.accounts.get(address).is_none_or(|a| a.oracle.is_none());
        if fresh {
            deploy_transaction(&mut c, address);
        }
        let acc = c.accounts.entry(address.clone()).or_default();
        if acc.oracle.is_none() {
            acc.oracle = Some(Oracle::default());
        }
        acc.balance = acc.balance.max(1_000_000_000);
    }

    /// A fresh oracle at a random address.
    pub fn new_oracle(&self) -> TonAddress {
        let a = random_address();
        self.add_oracle(&a);
        a
    }

    /// Registers a keeper's public key with an oracle (creating the oracle if needed).
    pub fn register_keeper(&self, oracle: &TonAddress, public_key: &[u8; 32]) {
        self.add_oracle(oracle);
        let mut c = self.chain();
        if let Some(o) = c.accounts.get_mut(oracle).and_then(|a| a.oracle.as_mut())
            && !o.keepers.contains(public_key)
        {
            o.keepers.push(*public_key);
        }
    }

    /// Seeds an oracle's stored price.
    pub fn set_price(&self, oracle: &TonAddress, asset_id: u16, price: u128, timestamp: u32) {
        self.add_oracle(oracle);
        let mut c = self.chain();
        c.lt += 10;
        let lt = c.lt;
        if let Some(a) = c.accounts.get_mut(oracle)
            && let Some(o) = a.oracle.as_mut()
        {
            o.prices.insert(asset_id, (price, timestamp));
            // Someone else's transaction changed the oracle: its last lt moves, as on chain.
            a.last_lt = lt;
        }
    }

    /// Seeds an oracle's stored bridge status.
    pub fn set_bridge_status(
        &self,
        oracle: &TonAddress,
        bridge_id: u8,
        is_online: bool,
        last_seen: u32,
    ) {
        self.add_oracle(oracle);
        let mut c = self.chain();
        c.lt += 10;
        let lt = c.lt;
        if let Some(a) = c.accounts.get_mut(oracle)
            && let Some(o) = a.oracle.as_mut()
        {
            o.bridges.insert(bridge_id, (is_online, last_seen));
            // Someone else's transaction changed the oracle: its last lt moves, as on chain.
            a.last_lt = lt;
        }
    }

    /// The stored `(price, timestamp)` of an asset.
    pub fn price(&self, oracle: &TonAddress, asset_id: u16) -> Option<(u128, u32)> {
        self.chain()
            .accounts
            .get(oracle)?
            .oracle
            .as_ref()?
            .prices
            .get(&asset_id)
            .copied()
    }

    /// The stored `(is_online, last_seen)` of a bridge.
    pub fn bridge_status(&self, oracle: &TonAddress, bridge_id: u8) -> Option<(bool, u32)> {
        self.chain()
            .accounts
            .get(oracle)?
            .oracle
            .as_ref()?
            .bridges
            .get(&bridge_id)
            .copied()
    }

    /// A deployed wallet's seqno; `None` while not deployed.
    pub fn seqno(&self, wallet: &TonAddress) -> Option<u32> {
        self.chain()
            .accounts
            .get(wallet)?
            .wallet
            .as_ref()
            .map(|w| w.seqno)
    }

    /// Balance in nanotons.
    pub fn balance(&self, address: &TonAddress) -> u128 {
        self.chain().accounts.get(address).map_or(0, |a| a.balance)
    }

    /// Whether a wallet is deployed at `address`.
    pub fn is_deployed(&self, address: &TonAddress) -> bool {
        self.chain()
            .accounts
            .get(address)
            .is_some_and(|a| a.wallet.is_some())
    }

    // ---- time ----

    /// Current chain time.
    pub fn chain_time(&self) -> u64 {
        self.chain().now()
    }

    /// Freezes chain time at `t`.
    pub fn set_chain_time(&self, t: u64) {
        self.chain().frozen_time = Some(t);
    }

    /// Moves chain time forward (frozen or not).
    pub fn advance_chain_time(&self, secs: u64) {
        let mut c = self.chain();
        match &mut c.frozen_time {
            Some(t) => *t += secs,
            None => c.time_offset += secs as i64,
        }
    }

    /// Lets chain time follow the wall clock again (keeping any offset).
    pub fn follow_clock(&self) {
        self.chain().frozen_time = None;
    }

    // ---- behaviour ----

    /// Misbehaves on the next `times` requests of `method` (`"*"` for any method).
    pub fn inject(&self, method: &str, fault: Fault, times: usize) {
        self.chain().faults.push(FaultRule {
            method: method.to_owned(),
            fault,
            remaining: times,
        });
    }

    /// Drops every pending fault.
    pub fn clear_faults(&self) {
        self.chain().faults.clear();
    }

    /// Requires this `X-API-Key` (401 "API key does not exist" otherwise); `None` accepts any.
    pub fn require_api_key(&self, key: Option<&str>) {
        self.chain().api_key = key.map(str::to_owned);
    }

    /// Number notation of get-method results (toncenter: hex).
    pub fn set_number_style(&self, style: NumberStyle) {
        self.chain().numbers = style;
    }

    /// Delay between a wallet sending and the oracle receiving (0: same instant).
    pub fn set_internal_delay(&self, delay: Duration) {
        self.chain().internal_delay = delay;
    }

    // ---- records ----

    /// Every request so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.chain().requests.clone()
    }

    /// How many requests of `method` arrived (v3 ones too: `transactionsByMessage`).
    pub fn count(&self, method: &str) -> usize {
        let c = self.chain();
        c.requests
            .iter()
            .chain(&c.index_requests)
            .filter(|r| r.method == method)
            .count()
    }

    /// Every request to `/api/v3/` so far.
    pub fn index_requests(&self) -> Vec<RequestRecord> {
        self.chain().index_requests.clone()
    }

    /// Every external message that arrived, in order.
    pub fn externals(&self) -> Vec<ExternalRecord> {
        self.chain().externals.clone()
    }

    /// How many externals from `wallet` were accepted.
    pub fn accepted_from(&self, wallet: &TonAddress) -> usize {
        self.chain()
            .externals
            .iter()
            .filter(|e| e.outcome == ExternalOutcome::Accepted && e.wallet.as_ref() == Some(wallet))
            .count()
    }

    /// How many externals were accepted, from any wallet.
    pub fn accepted_externals(&self) -> usize {
        self.chain()
            .externals
            .iter()
            .filter(|e| e.outcome == ExternalOutcome::Accepted)
            .count()
    }

    /// Waits until at least `n` externals were accepted; panics with every outcome so far after
    /// `timeout`.
    pub async fn wait_accepted(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.accepted_externals() < n {
            assert!(
                Instant::now() < deadline,
                "expected {n} accepted external messages within {timeout:?}, got {}: {:?}",
                self.accepted_externals(),
                self.externals()
                    .iter()
                    .map(|e| &e.outcome)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every oracle message that arrived, in execution order.
    pub fn oracle_events(&self) -> Vec<OracleEvent> {
        self.chain().oracle_events.clone()
    }

    /// Waits until at least `n` externals arrived; false on timeout.
    pub async fn wait_for_externals(&self, n: usize, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.chain().externals.len() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Runs an external message BoC through the chain directly (no HTTP, no faults): for
    /// checking what a wallet would say about a message.
    pub fn submit(&self, boc: &[u8]) -> Result<(), String> {
        let mut c = self.chain();
        apply_external(&mut c, boc).map(|_| ()).map_err(|e| e.error)
    }
}

fn deliver_pending(c: &mut Chain) {
    let now = Instant::now();
    let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut c.held)
        .into_iter()
        .partition(|(at, _)| *at <= now);
    c.held = waiting;
    for (_, boc) in due {
        // A copy of a message that already got in is refused here, as a duplicate would be.
        let _ = apply_external(c, &boc);
    }
    let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut c.pending)
        .into_iter()
        .partition(|p| p.ready_at <= now);
    c.pending = later;
    for p in ready {
        receive_internal(c, p);
    }
}

async fn handle(State(served): State<Served>, req: Request) -> Response {
    let chain = served.chain;
    let port_number = served.number;
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(body, 4 * 1024 * 1024)
        .await
        .unwrap_or_default();
    if let Some(v3_method) = path.strip_prefix("/api/v3/") {
        let mut c = lock(&chain);
        let limited = c.rate_limit.as_mut().is_some_and(|b| !b.take());
        let status = match () {
            _ if limited => 429,
            _ if c.v3_enabled && v3_method == "transactionsByMessage" => 200,
            _ => 404,
        };
        c.index_requests.push(RequestRecord {
            method: v3_method.to_owned(),
            json_rpc: false,
            api_key: header_key(&parts.headers).or_else(|| query.get("api_key").cloned()),
            status,
            port: port_number,
            at: Instant::now(),
        });
        return match status {
            429 => rate_limit_reply(None, c.rate_limit.as_ref().and_then(|b| b.retry_after)),
            200 => transactions_by_message(&c, &query),
            _ => reply(
                404,
                None,
                &json!({"ok": false, "error": "Not Found", "code": 404}),
            ),
        };
    }
    let Some(rest) = path.strip_prefix("/api/v2/") else {
        return reply(
            404,
            None,
            &json!({"ok": false, "error": "Not Found", "code": 404}),
        );
    };
    let json_rpc = rest.eq_ignore_ascii_case("jsonRPC");
    let (method, params, id) = if json_rpc {
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
            return reply(
                422,
                None,
                &json!({"ok": false, "error": "invalid JSON-RPC request", "code": 422}),
            );
        };
        (
            v.get("method")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            v.get("params").cloned().unwrap_or(json!({})),
            Some(v.get("id").cloned().unwrap_or(json!("1"))),
        )
    } else if parts.method == Method::POST {
        let params = if bytes.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => v,
                Err(_) => {
                    return reply(
                        422,
                        None,
                        &json!({"ok": false, "error": "body is not JSON", "code": 422}),
                    );
                }
            }
        };
        (rest.to_owned(), params, None)
    } else {
        let obj: serde_json::Map<String, Value> = query
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        (rest.to_owned(), Value::Object(obj), None)
    };
    let api_key = header_key(&parts.headers).or_else(|| query.get("api_key").cloned());
    let port_status = served.port.status.load(Ordering::Relaxed);
    if port_status != 0 {
        lock(&chain).requests.push(RequestRecord {
            method: method.clone(),
            json_rpc,
            api_key: api_key.clone(),
            status: port_status,
            port: port_number,
            at: Instant::now(),
        });
        if port_status == 503 {
            return Response::builder()
                .status(503)
                .header("content-type", "text/html")
                .body(Body::from("<html><head><title>503 Service Temporarily Unavailable</title></head><body><center><h1>503 Service Temporarily Unavailable</h1></center></body></html>"))
                .expect("static response");
        }
        return reply(
            port_status,
            id,
            &json!({"ok": false, "error": "endpoint failing", "code": port_status}),
        );
    }

    // Decide the fault and the key check under the lock, act on them outside it.
    let (fault, key_ok, limited) = {
        let mut c = lock(&chain);
        let mut limited = false;
        deliver_pending(&mut c);
        let key_ok = c
            .api_key
            .as_ref()
            .is_none_or(|k| api_key.as_deref() == Some(k.as_str()));
        let mut fault = None;
        if key_ok {
            if let Some(rule) = c
                .faults
                .iter_mut()
                .find(|r| r.remaining > 0 && (r.method == "*" || r.method == method))
            {
                rule.remaining -= 1;
                fault = Some(rule.fault.clone());
            }
            c.faults.retain(|r| r.remaining > 0);
            if fault.is_none()
                && let Some(bucket) = c.rate_limit.as_mut()
                && !bucket.take()
            {
                fault = Some(Fault::RateLimited {
                    retry_after: bucket.retry_after,
                });
                limited = true;
            }
        }
        (fault, key_ok, limited)
    };
    let record = |status: u16| {
        lock(&chain).requests.push(RequestRecord {
            method: method.clone(),
            json_rpc,
            api_key: api_key.clone(),
            status,
            port: port_number,
            at: Instant::now(),
        });
    };
    if !key_ok {
        record(401);
        return reply(
            401,
            id,
            &json!({"ok": false, "error": "API key does not exist", "code": 401}),
        );
    }
    let mut lose = false;
    let mut hung = false;
    let mut hang_after = None;
    match fault {
        Some(Fault::RateLimited { retry_after }) if limited => {
            record(429);
            return rate_limit_reply(id, retry_after);
        }
        Some(Fault::RateLimited { retry_after }) => {
            record(429);
            let mut r = reply(
                429,
                id,
                &json!({"ok": false, "result": "Ratelimit exceed", "code": 429}),
            );
            if let Some(s) = retry_after {
                r.headers_mut()
                    .insert("retry-after", s.to_string().parse().expect("digits"));
            }
            return r;
        }
        Some(Fault::Unavailable) => {
            record(503);
            return Response::builder()
                .status(503)
                .header("content-type", "text/html")
                .body(Body::from("<html><head><title>503 Service Temporarily Unavailable</title></head><body><center><h1>503 Service Temporarily Unavailable</h1></center></body></html>"))
                .expect("static response");
        }
        Some(Fault::LiteserverTimeout) => {
            record(504);
            return reply(
                504,
                id,
                &json!({"ok": false, "error": "LITE_SERVER_NETWORK timeout", "code": 504}),
            );
        }
        Some(Fault::Status(status, text)) => {
            record(status);
            return reply(
                status,
                id,
                &json!({"ok": false, "error": text, "code": status}),
            );
        }
        Some(Fault::Hang(d)) => {
            // Recorded on arrival: the client usually hangs up before the answer.
            record(0);
            hung = true;
            tokio::time::sleep(d).await;
        }
        Some(Fault::LoseResponse) => lose = true,
        Some(Fault::ApplyThenHang(d)) => hang_after = Some(d),
        Some(Fault::Swallow) if method.starts_with("sendBoc") => {
            let boc = params
                .get("boc")
                .and_then(Value::as_str)
                .and_then(|b| B64.decode(b).ok())
                .unwrap_or_default();
            let mut c = lock(&chain);
            let mut rec = parse_record(&boc);
            rec.outcome = ExternalOutcome::Swallowed;
            c.externals.push(rec);
            c.requests.push(RequestRecord {
                method: method.clone(),
                json_rpc,
                api_key: api_key.clone(),
                status: 200,
                port: port_number,
                at: Instant::now(),
            });
            let hash = BagOfCells::parse(&boc)
                .ok()
                .and_then(|b| b.single_root().ok())
                .map(|c| B64.encode(Cell::cell_hash(&c).as_slice()))
                .unwrap_or_default();
            return reply(
                200,
                id,
                &json!({"ok": true, "result": {"@type": "raw.extMessageInfo", "hash": hash, "hash_norm": hash}}),
            );
        }
        Some(Fault::Refuse(code, reason)) if method.starts_with("sendBoc") => {
            let boc = params
                .get("boc")
                .and_then(Value::as_str)
                .and_then(|b| B64.decode(b).ok())
                .unwrap_or_default();
            let e = reject(code, &reason);
            let mut c = lock(&chain);
            let mut rec = parse_record(&boc);
            rec.outcome = ExternalOutcome::Rejected(e.error.clone());
            c.externals.push(rec);
            c.requests.push(RequestRecord {
                method: method.clone(),
                json_rpc,
                api_key: api_key.clone(),
                status: e.status,
                port: port_number,
                at: Instant::now(),
            });
            return reply(
                e.status,
                id,
                &json!({"ok": false, "error": e.error, "code": e.status}),
            );
        }
        Some(Fault::Swallow | Fault::Refuse(..)) | None => {}
    }
    let result = {
        let mut c = lock(&chain);
        dispatch(&mut c, &method, &params)
    };
    let result = if served.port.lagging.load(Ordering::Relaxed) {
        result.map(lag_behind)
    } else {
        result
    };
    let ahead = served.port.ahead_secs.load(Ordering::Relaxed);
    let result = result.map(|v| run_ahead(v, ahead));
    let status = match &result {
        Ok(_) => 200,
        Err(e) => e.status,
    };
    if let Some(d) = hang_after {
        record(status);
        hung = true;
        tokio::time::sleep(d).await;
    }
    if lose {
        record(504);
        return reply(
            504,
            id,
            &json!({"ok": false, "error": "LITE_SERVER_NETWORK timeout", "code": 504}),
        );
    }
    if !hung {
        record(status);
    }
    match result {
        Ok(v) => reply(200, id, &json!({"ok": true, "result": v})),
        Err(e) => reply(
            e.status,
            id,
            &json!({"ok": false, "error": e.error, "code": e.status}),
        ),
    }
}

/// toncenter v3 `transactionsByMessage`: `msg_hash` (hex, base64 or base64url) matches a
/// transaction's inbound message hash or its normalized hash.
fn transactions_by_message(c: &Chain, query: &HashMap<String, String>) -> Response {
    let Some(text) = query.get("msg_hash") else {
        return reply(
            422,
            None,
            &json!({"error": "msg_hash, body_hash or opcode is required", "code": 422}),
        );
    };
    let t = text.trim().trim_start_matches("0x");
    let wanted = hex::decode(t)
        .ok()
        .filter(|b| b.len() == 32)
        .or_else(|| B64.decode(t).ok())
        .or_else(|| base64::engine::general_purpose::URL_SAFE.decode(t).ok());
    let Some(wanted) = wanted else {
        return reply(
            422,
            None,
            &json!({"error": "invalid msg_hash", "code": 422}),
        );
    };
    let wanted = B64.encode(wanted);
    let found: Vec<Value> =
        c.v3.iter()
            .filter(|tx| {
                let m = &tx["in_msg"];
                m["hash"].as_str() == Some(wanted.as_str())
                    || m["hash_norm"].as_str() == Some(wanted.as_str())
            })
            .cloned()
            .collect();
    reply(
        200,
        None,
        &json!({"transactions": found, "address_book": {}}),
    )
}

/// A wallet or address answer as a node one seqno and 30 s behind would give it.
fn lag_behind(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        if let Some(seqno) = o.get("seqno").and_then(Value::as_u64) {
            o.insert("seqno".into(), json!(seqno.saturating_sub(1)));
        }
        if let Some(t) = o.get("sync_utime").and_then(Value::as_u64) {
            o.insert("sync_utime".into(), json!(t.saturating_sub(30)));
        }
    }
    v
}

/// An address answer as a node `secs` ahead of the chain would give it.
fn run_ahead(mut v: Value, secs: u64) -> Value {
    if let Some(o) = v.as_object_mut().filter(|_| secs > 0)
        && let Some(t) = o.get("sync_utime").and_then(Value::as_u64)
    {
        o.insert("sync_utime".into(), json!(t.saturating_add(secs)));
    }
    v
}

fn header_key(h: &HeaderMap) -> Option<String> {
    h.get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// toncenter's documented answer over its rate limit.
fn rate_limit_reply(id: Option<Value>, retry_after: Option<u64>) -> Response {
    let mut r = reply(
        429,
        id,
        &json!({"ok": false, "error": "Ratelimit exceed", "code": 429}),
    );
    if let Some(s) = retry_after {
        r.headers_mut()
            .insert("retry-after", s.to_string().parse().expect("digits"));
    }
    r
}

fn reply(status: u16, id: Option<Value>, body: &Value) -> Response {
    let mut body = body.clone();
    if let (Some(id), Some(o)) = (id, body.as_object_mut()) {
        o.insert("jsonrpc".into(), json!("2.0"));
        o.insert("id".into(), id);
    }
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("static response")
}

fn param<'a>(params: &'a Value, name: &str) -> Result<&'a Value, ApiError> {
    params
        .get(name)
        .filter(|v| !v.is_null())
        .ok_or_else(|| api_err(422, format!("field required: {name}")))
}

fn address_param(params: &Value) -> Result<TonAddress, ApiError> {
    let text = param(params, "address")?
        .as_str()
        .ok_or_else(|| api_err(422, "address must be a string"))?;
    text.parse::<TonAddress>()
        .map_err(|_| api_err(416, "Incorrect address"))
}

/// The transaction that deployed a contract at `address`, as a chain has one for every deployed
/// account: an internal message from a deployer carrying its code and data.
fn deploy_transaction(c: &mut Chain, address: &TonAddress) {
    const DEPLOY_VALUE: u128 = 1_000_000_000;
    c.lt += 10;
    let lt = c.lt;
    let now = c.now();
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&lt.to_be_bytes());
    hash[8..16].copy_from_slice(b"deployed");
    let deployer = random_address();
    let data = transaction_boc(address, lt, now, 0, DEPLOY_VALUE, 0);
    let acc = c.accounts.entry(address.clone()).or_default();
    acc.transactions.push(json!({
        "@type": "raw.transaction",
        "address": {"@type": "accountAddress", "account_address": address.to_base64_url()},
        "utime": now,
        "data": data,
        "transaction_id": tx_id(lt, &hash),
        "fee": "0", "storage_fee": "0", "other_fee": "0",
        "in_msg": {"@type": "raw.message", "hash": B64.encode(hash), "source": deployer.to_base64_url(),
            "destination": address.to_base64_url(), "value": DEPLOY_VALUE.to_string(), "fwd_fee": "0",
            "ihr_fee": "0", "created_lt": (lt - 1).to_string(), "body_hash": B64.encode([0u8; 32])},
        "out_msgs": [],
    }));
    acc.last_lt = lt;
    acc.last_hash = hash;
}

fn tx_id(lt: u64, hash: &[u8; 32]) -> Value {
    json!({"@type": "internal.transactionId", "lt": lt.to_string(), "hash": B64.encode(hash)})
}

fn dispatch(c: &mut Chain, method: &str, params: &Value) -> Result<Value, ApiError> {
    match method {
        "getWalletInformation" => {
            let addr = address_param(params)?;
            let acc = c.accounts.get(&addr).cloned().unwrap_or_default();
            let last = tx_id(acc.last_lt, &acc.last_hash);
            Ok(match &acc.wallet {
                Some(w) => json!({
                    "wallet": true,
                    "balance": acc.balance.to_string(),
                    "account_state": "active",
                    "wallet_type": match w.version { WalletVersion::V5r1 => "wallet v5 r1", WalletVersion::V4r2 => "wallet v4 r2" },
                    "seqno": w.seqno,
                    "wallet_id": w.wallet_id,
                    "is_signature_allowed": true,
                    "last_transaction_id": last,
                }),
                None => json!({
                    "wallet": false,
                    "balance": acc.balance.to_string(),
                    "account_state": if acc.oracle.is_some() { "active" } else { "uninitialized" },
                    "last_transaction_id": last,
                }),
            })
        }
        "getAddressInformation" => {
            let addr = address_param(params)?;
            let acc = c.accounts.get(&addr).cloned().unwrap_or_default();
            let (state, code, data) = match &acc.wallet {
                Some(w) => {
                    let code = VersionHelper::get_code(lib(w.version))
                        .ok()
                        .and_then(|cell| {
                            BagOfCells::new(std::slice::from_ref(cell))
                                .serialize(false)
                                .ok()
                        })
                        .map(|b| B64.encode(b))
                        .unwrap_or_default();
                    let data = BagOfCells::from_root(data_cell(w))
                        .serialize(false)
                        .map(|b| B64.encode(b))
                        .unwrap_or_default();
                    ("active", code, data)
                }
                None if acc.oracle.is_some() => ("active", String::new(), String::new()),
                None => ("uninitialized", String::new(), String::new()),
            };
            Ok(json!({
                "@type": "raw.fullAccountState",
                "balance": acc.balance.to_string(),
                "code": code,
                "data": data,
                "last_transaction_id": tx_id(acc.last_lt, &acc.last_hash),
                "block_id": {"@type": "ton.blockIdExt", "workchain": -1, "shard": "-9223372036854775808", "seqno": c.block, "root_hash": "", "file_hash": ""},
                "frozen_hash": "",
                "sync_utime": c.now(),
                "state": state,
            }))
        }
        "runGetMethod" => run_get_method(c, params),
        "sendBoc" | "sendBocReturnHash" => {
            let b64 = param(params, "boc")?
                .as_str()
                .ok_or_else(|| api_err(422, "boc must be a string"))?;
            let boc = B64
                .decode(b64.trim())
                .map_err(|_| api_err(422, "boc is not base64"))?;
            let (hash, hash_norm) = if !c.inclusion_delay.is_zero() && would_accept(c, &boc) {
                // Accepted for broadcast; the chain includes it a while later, as a block would.
                let at = Instant::now() + c.inclusion_delay;
                c.held.push((at, boc.clone()));
                let hash = BagOfCells::parse(&boc)
                    .ok()
                    .and_then(|b| b.single_root().ok())
                    .map(|root| hash32(&root))
                    .unwrap_or_default();
                (hash, hash)
            } else {
                apply_external(c, &boc)?
            };
            if method == "sendBoc" {
                Ok(json!({"@type": "ok", "@extra": "0"}))
            } else {
                Ok(
                    json!({"@type": "raw.extMessageInfo", "hash": B64.encode(hash), "hash_norm": B64.encode(hash_norm)}),
                )
            }
        }
        "getTransactions" => {
            let addr = address_param(params)?;
            let limit = match params.get("limit") {
                Some(Value::Number(n)) => n.as_u64().unwrap_or(10),
                Some(Value::String(s)) => s
                    .parse()
                    .map_err(|_| api_err(422, "limit must be an integer"))?,
                _ => 10,
            };
            if limit > 100 {
                return Err(api_err(422, "limit must be at most 100"));
            }
            let txs = c
                .accounts
                .get(&addr)
                .map(|a| a.transactions.clone())
                .unwrap_or_default();
            let mut txs: Vec<Value> = txs.into_iter().rev().take(limit as usize).collect();
            if !c.transaction_data {
                for t in &mut txs {
                    t["data"] = json!("");
                }
            }
            Ok(Value::Array(txs))
        }
        other => Err(api_err(404, format!("method {other} not found"))),
    }
}

fn run_get_method(c: &mut Chain, params: &Value) -> Result<Value, ApiError> {
    let addr = address_param(params)?;
    let method = param(params, "method")?;
    let method = match method {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let stack = params
        .get("stack")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut args = Vec::new();
    for entry in &stack {
        let arr = entry
            .as_array()
            .ok_or_else(|| api_err(422, "stack entries are [type, value]"))?;
        let text = match arr.get(1) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(api_err(422, "stack value missing")),
        };
        let v = if let Some(h) = text.strip_prefix("0x") {
            i128::from_str_radix(h, 16)
        } else {
            text.parse::<i128>()
        };
        args.push(v.map_err(|_| api_err(422, format!("bad number {text}")))?);
    }
    let style = c.numbers;
    // The account state the method ran at, as toncenter reports it.
    let last_transaction = c
        .accounts
        .get(&addr)
        .filter(|_| c.get_method_lt)
        .map_or_else(
            || tx_id(0, &[0; 32]),
            |acc| tx_id(acc.last_lt, &acc.last_hash),
        );
    let ok = |stack: Vec<Value>| {
        json!({"@type": "smc.runResult", "gas_used": 1000, "stack": stack, "exit_code": 0,
               "block_id": {"@type": "ton.blockIdExt", "workchain": -1, "seqno": c.block}, "last_transaction_id": last_transaction.clone()})
    };
    let fail = |code: i32| json!({"@type": "smc.runResult", "gas_used": 0, "stack": [], "exit_code": code});
    let Some(acc) = c.accounts.get(&addr) else {
        return Ok(fail(-13));
    };
    if let Some(w) = &acc.wallet {
        return Ok(match method.as_str() {
            "seqno" => ok(vec![num(style, i128::from(w.seqno))]),
            "get_public_key" => ok(vec![num(style, 0)]),
            "get_subwallet_id" => ok(vec![num(style, i128::from(w.wallet_id))]),
            _ => fail(11),
        });
    }
    if let Some(o) = &acc.oracle {
        let arg = |i: usize| args.get(i).copied();
        return Ok(match (method.as_str(), arg(0)) {
            ("get_price", Some(id)) => {
                let (p, t) = u16::try_from(id)
                    .ok()
                    .and_then(|id| o.prices.get(&id).copied())
                    .unwrap_or((0, 0));
                ok(vec![num(style, p as i128), num(style, i128::from(t))])
            }
            ("get_bridge_status", Some(id)) => {
                let (on, t) = u8::try_from(id)
                    .ok()
                    .and_then(|id| o.bridges.get(&id).copied())
                    .unwrap_or((false, 0));
                ok(vec![
                    num(style, if on { -1 } else { 0 }),
                    num(style, i128::from(t)),
                ])
            }
            // Missing argument: stack underflow.
            ("get_price" | "get_bridge_status", None) => fail(2),
            _ => fail(11),
        });
    }
    Ok(fail(-13))
}

/// The checks a liteserver makes before it broadcasts an external: the wallet's current seqno
/// and a `valid_until` still ahead (the signature is checked on inclusion).
fn would_accept(c: &Chain, boc: &[u8]) -> bool {
    let rec = parse_record(boc);
    let (Some(wallet), Some(seqno), Some(valid_until)) = (rec.wallet, rec.seqno, rec.valid_until)
    else {
        return false;
    };
    let current = c
        .accounts
        .get(&wallet)
        .and_then(|a| a.wallet.as_ref())
        .map_or(0, |w| w.seqno);
    seqno == current && u64::from(valid_until) > c.now()
}

fn parse_record(boc: &[u8]) -> ExternalRecord {
    let mut rec = ExternalRecord {
        boc: boc.to_vec(),
        wallet: None,
        seqno: None,
        valid_until: None,
        body_hash: None,
        state_init: false,
        outcome: ExternalOutcome::Rejected("unparsed".into()),
    };
    let Some(root) = BagOfCells::parse(boc)
        .ok()
        .and_then(|b| b.single_root().ok())
    else {
        return rec;
    };
    let Ok(msg) = Message::from_cell(&root) else {
        return rec;
    };
    if let CommonMsgInfo::ExtIn(info) = &msg.info {
        rec.wallet = TonAddress::try_from(info.dest.clone()).ok();
    }
    rec.state_init = msg.init.is_some();
    let body = &msg.body.value;
    rec.body_hash = Some(hash32(body));
    // Both layouts keep wallet id / valid_until / seqno as three u32s; V5R1 after its prefix,
    // V4R2 after the leading signature.
    let mut p = body.parser();
    if let Ok(prefix) = p.load_u32(32) {
        if prefix == 0x7369_676e {
            let _ = p.load_u32(32);
        } else {
            let mut p2 = body.parser();
            if p2.skip_bits(512).is_ok() && p2.load_u32(32).is_ok() {
                rec.valid_until = p2.load_u32(32).ok();
                rec.seqno = p2.load_u32(32).ok();
            }
            return rec;
        }
        rec.valid_until = p.load_u32(32).ok();
        rec.seqno = p.load_u32(32).ok();
    }
    rec
}

/// The wallet contract's `recv_external`, condensed. Returns (message hash, normalized hash).
fn apply_external(c: &mut Chain, boc: &[u8]) -> Result<([u8; 32], [u8; 32]), ApiError> {
    let mut rec = parse_record(boc);
    let result = apply_external_inner(c, boc);
    rec.outcome = match &result {
        Ok(_) => ExternalOutcome::Accepted,
        Err(e) => ExternalOutcome::Rejected(e.error.clone()),
    };
    c.externals.push(rec);
    result
}

fn apply_external_inner(c: &mut Chain, boc: &[u8]) -> Result<([u8; 32], [u8; 32]), ApiError> {
    let root = BagOfCells::parse(boc)
        .and_then(|b| b.single_root())
        .map_err(|e| {
            api_err(
                500,
                format!("LITE_SERVER_UNKNOWN: failed to deserialize bag of cells: {e}"),
            )
        })?;
    let msg = Message::from_cell(&root).map_err(|e| reject(-1, &format!("bad message: {e}")))?;
    let CommonMsgInfo::ExtIn(info) = &msg.info else {
        return Err(reject(-1, "not an inbound external message"));
    };
    let dest =
        TonAddress::try_from(info.dest.clone()).map_err(|_| reject(-1, "bad destination"))?;
    let message_hash = hash32(&root);
    let norm = Message {
        info: CommonMsgInfo::ExtIn(ExtInMsgInfo {
            src: MsgAddressExt::None(MsgAddrNone {}),
            dest: info.dest.clone(),
            import_fee: Grams::new(Default::default()),
        }),
        init: None,
        body: EitherRef {
            value: msg.body.value.clone(),
            layout: EitherRefLayout::ToRef,
        },
    };
    let norm_hash = norm.to_cell().map(|c| hash32(&c)).unwrap_or_default();
    let now = c.now();

    let acc = c.accounts.get(&dest).cloned().unwrap_or_default();
    // An undeployed wallet needs a StateInit whose hash is the address.
    let mut wallet = match (&acc.wallet, &msg.init) {
        (Some(w), _) => w.clone(),
        (None, Some(init)) => wallet_from_init(&init.value, &dest)?,
        (None, None) => {
            return Err(reject(
                0,
                "account is not initialized and no StateInit was attached",
            ));
        }
    };
    let external_fee = c.external_fee;
    if acc.balance < external_fee {
        // The compute phase is skipped for lack of gas money: the liteserver's wording for a
        // refusal before the wallet code runs.
        return Err(api_err(
            500,
            format!(
                "{CANNOT_APPLY}\nCannot run message on account: inbound external message rejected by account {} before smart-contract execution",
                dest.to_hex()
            ),
        ));
    }
    let body = msg.body.value.clone();
    let bits = body.bit_len();
    if bits < 512 {
        return Err(reject(9, "body too short for a signature"));
    }
    let (signature, signed) = split_signature(&body, wallet.version).map_err(|e| reject(9, &e))?;
    let mut p = signed.parser();
    let (wallet_id, valid_until, seqno, actions) = match wallet.version {
        WalletVersion::V5r1 => {
            let prefix = p.load_u32(32).map_err(|_| reject(9, "cell underflow"))?;
            if prefix != 0x7369_676e {
                return Err(reject(65535, "unknown op for an external message"));
            }
            let wallet_id = p.load_i32(32).map_err(|_| reject(9, "cell underflow"))?;
            let valid_until = p.load_u32(32).map_err(|_| reject(9, "cell underflow"))?;
            let seqno = p.load_u32(32).map_err(|_| reject(9, "cell underflow"))?;
            if !verify_signature(&wallet.public_key, &hash32(&signed), &signature) {
                return Err(reject(135, "invalid signature"));
            }
            if seqno != wallet.seqno {
                return Err(reject(133, "seqno mismatch"));
            }
            if wallet_id != wallet.wallet_id {
                return Err(reject(134, "wallet id mismatch"));
            }
            if u64::from(valid_until) <= now {
                return Err(reject(136, "expired"));
            }
            // After acceptance: the out-list (executed deepest first) and no extended actions.
            let mut actions = Vec::new();
            if p.load_bit().map_err(|_| reject(9, "cell underflow"))? {
                let list = p
                    .next_reference()
                    .map_err(|_| reject(9, "no out-list reference"))?;
                actions = out_list_in_execution_order(&list).map_err(|e| reject(9, &e))?;
            }
            (wallet_id, valid_until, seqno, actions)
        }
        WalletVersion::V4r2 => {
            let wallet_id = p.load_i32(32).map_err(|_| reject(9, "cell underflow"))?;
            let valid_until = p.load_u32(32).map_err(|_| reject(9, "cell underflow"))?;
            let seqno = p.load_u32(32).map_err(|_| reject(9, "cell underflow"))?;
            if u64::from(valid_until) <= now {
                return Err(reject(36, "expired"));
            }
            if seqno != wallet.seqno {
                return Err(reject(33, "seqno mismatch"));
            }
            if wallet_id != wallet.wallet_id {
                return Err(reject(34, "wallet id mismatch"));
            }
            if !verify_signature(&wallet.public_key, &hash32(&signed), &signature) {
                return Err(reject(35, "invalid signature"));
            }
            let op = p.load_u8(8).map_err(|_| reject(9, "cell underflow"))?;
            let mut actions = Vec::new();
            if op == 0 {
                while p.remaining_refs() > 0 {
                    let mode = p.load_u8(8).map_err(|_| reject(9, "cell underflow"))?;
                    let m = p
                        .next_reference()
                        .map_err(|_| reject(9, "cell underflow"))?;
                    actions.push((mode, m));
                }
            }
            (wallet_id, valid_until, seqno, actions)
        }
    };
    let _ = (wallet_id, valid_until, seqno);

    // Accepted: commit seqno and deployment, pay for the external.
    wallet.seqno += 1;
    c.lt += 10;
    c.block += 1;
    let lt = c.lt;
    // Room for each outgoing message's own creation lt.
    c.lt += actions.len() as u64;
    let tx_hash = {
        let mut h = message_hash;
        h[..8].copy_from_slice(&lt.to_be_bytes());
        h
    };
    let mut out_msgs = Vec::new();
    let mut out_hashes = Vec::new();
    let mut sends = Vec::new();
    {
        let acc = c.accounts.entry(dest.clone()).or_default();
        acc.wallet = Some(wallet.clone());
        acc.balance -= external_fee;
        let v5_bad_mode =
            wallet.version == WalletVersion::V5r1 && actions.iter().any(|(mode, _)| mode & 2 == 0);
        if !v5_bad_mode {
            for (index, (mode, m)) in actions.iter().enumerate() {
                // Each message of a transaction is created at its own lt, as on chain.
                let created_lt = lt + 1 + index as u64;
                let Ok(im) = Message::from_cell(m) else {
                    continue;
                };
                let CommonMsgInfo::Int(info) = &im.info else {
                    continue;
                };
                let Ok(to) = TonAddress::try_from(info.dest.clone()) else {
                    continue;
                };
                let asked = u128::try_from(info.value.grams.amount.clone()).unwrap_or(u128::MAX);
                // Mode +128 carries the whole remaining balance, the forwarding fee taken out of it.
                let (value, cost) = if mode & 128 != 0 {
                    (acc.balance.saturating_sub(FORWARD_FEE), acc.balance)
                } else {
                    let fee = if mode & 1 == 1 { FORWARD_FEE } else { 0 };
                    (asked, asked.saturating_add(fee))
                };
                if acc.balance < cost {
                    // Mode +2: a send that cannot be paid is skipped silently.
                    continue;
                }
                acc.balance -= cost;
                out_msgs.push(json!({"hash": B64.encode(hash32(m)), "source": dest.to_base64_url(), "destination": to.to_base64_url(), "value": value.to_string(),
                    "fwd_fee": FORWARD_FEE.to_string(), "ihr_fee": "0", "created_lt": created_lt.to_string(), "body_hash": B64.encode(Cell::cell_hash(&im.body.value).as_slice()),
                    "msg_data": {"@type": "msg.dataRaw", "body": BagOfCells::new(std::slice::from_ref(&im.body.value)).serialize(false).map(|b| B64.encode(b)).unwrap_or_default(), "init_state": ""}}));
                let fwd_fee = cost - value.min(cost);
                out_hashes.push(
                    json!({"hash": B64.encode(hash32(m)), "destination": to.to_hex(),
                    "value": value.to_string(), "fwd_fee": fwd_fee.to_string()}),
                );
                sends.push(PendingInternal {
                    ready_at: Instant::now(),
                    created_lt,
                    hash: hash32(m),
                    from: dest.clone(),
                    to,
                    value,
                    bounce: info.bounce,
                    body: im.body.value.clone(),
                });
            }
        }
        acc.transactions.push(json!({
            "@type": "raw.transaction",
            "address": {"@type": "accountAddress", "account_address": dest.to_base64_url()},
            "utime": now,
            "data": "",
            "transaction_id": tx_id(lt, &tx_hash),
            "fee": external_fee.to_string(),
            "storage_fee": "0",
            "other_fee": external_fee.to_string(),
            "in_msg": {"@type": "raw.message", "hash": B64.encode(message_hash), "source": "", "destination": dest.to_base64_url(),
                "value": "0", "fwd_fee": "0", "ihr_fee": "0", "created_lt": "0", "body_hash": B64.encode(hash32(&body)),
                "msg_data": {"@type": "msg.dataRaw", "body": BagOfCells::new(std::slice::from_ref(&body)).serialize(false).map(|b| B64.encode(b)).unwrap_or_default(),
                    "init_state": if msg.init.is_some() { "present" } else { "" }},
                "message": ""},
            "out_msgs": out_msgs,
        }));
        acc.last_lt = lt;
        acc.last_hash = tx_hash;
    }
    c.v3.push(json!({
        "account": dest.to_hex(), "hash": B64.encode(tx_hash), "lt": lt.to_string(), "now": now,
        "total_fees": external_fee.to_string(),
        "description": {"aborted": false, "compute_ph": {"success": true, "exit_code": 0},
            "action": {"success": true, "result_code": 0, "tot_actions": actions.len(),
                "skipped_actions": actions.len() - out_hashes.len(), "msgs_created": out_hashes.len()}},
        "in_msg": {"hash": B64.encode(message_hash), "hash_norm": B64.encode(norm_hash), "source": null,
            "destination": dest.to_hex(), "value": null},
        "out_msgs": out_hashes,
    }));
    let delay = c.internal_delay;
    for mut s in sends {
        s.ready_at = Instant::now() + delay;
        if delay.is_zero() {
            receive_internal(c, s);
        } else {
            c.pending.push(s);
        }
    }
    Ok((message_hash, norm_hash))
}

fn wallet_from_init(init: &StateInit, dest: &TonAddress) -> Result<WalletAccount, ApiError> {
    let cell = init.to_cell().map_err(|_| reject(0, "bad StateInit"))?;
    if cell.cell_hash() != dest.hash_part {
        return Err(reject(
            0,
            "StateInit does not match the destination address",
        ));
    }
    let code = init
        .code
        .as_ref()
        .ok_or_else(|| reject(0, "StateInit without code"))?
        .0
        .clone();
    let data = init
        .data
        .as_ref()
        .ok_or_else(|| reject(0, "StateInit without data"))?
        .0
        .clone();
    let h = Some(Cell::cell_hash(&code));
    if h == code_hash(LibVersion::V5R1) {
        let d = WalletDataV5::from_cell(&data).map_err(|_| reject(0, "bad V5R1 data"))?;
        Ok(WalletAccount {
            version: WalletVersion::V5r1,
            wallet_id: d.wallet_id,
            public_key: d.public_key.into(),
            seqno: d.seqno,
        })
    } else if h == code_hash(LibVersion::V4R2) {
        let d = WalletDataV4::from_cell(&data).map_err(|_| reject(0, "bad V4R2 data"))?;
        Ok(WalletAccount {
            version: WalletVersion::V4r2,
            wallet_id: d.wallet_id,
            public_key: d.public_key.into(),
            seqno: d.seqno,
        })
    } else {
        Err(reject(0, "StateInit code is not a wallet V5R1 or V4R2"))
    }
}

/// Splits a signed wallet body into (signature, the signed cell): V5R1 signs all but its last
/// 512 bits, V4R2 all after its first 512 bits; references stay with the signed part.
fn split_signature(body: &Cell, version: WalletVersion) -> Result<([u8; 64], Cell), String> {
    let bits = body.bit_len();
    let mut p = body.parser();
    let mut sig = [0u8; 64];
    let signed = match version {
        WalletVersion::V5r1 => {
            let data = p.load_bits(bits - 512).map_err(|e| e.to_string())?;
            p.load_slice(&mut sig).map_err(|e| e.to_string())?;
            let mut b = CellBuilder::new();
            b.store_bits(bits - 512, &data).map_err(|e| e.to_string())?;
            b.store_references(body.references())
                .map_err(|e| e.to_string())?;
            b.build().map_err(|e| e.to_string())?
        }
        WalletVersion::V4r2 => {
            p.load_slice(&mut sig).map_err(|e| e.to_string())?;
            p.load_remaining().map_err(|e| e.to_string())?
        }
    };
    Ok((sig, signed))
}

/// The action phase runs an out-list from its deepest entry up to the head.
fn out_list_in_execution_order(head: &ArcCell) -> Result<Vec<(u8, ArcCell)>, String> {
    let mut node = head.clone();
    let mut head_first = Vec::new();
    while node.bit_len() > 0 {
        if head_first.len() >= 255 {
            return Err("more than 255 actions".into());
        }
        let mut p = node.parser();
        let prev = p.next_reference().map_err(|e| e.to_string())?;
        let tag = p.load_u32(32).map_err(|e| e.to_string())?;
        if tag != 0x0ec3_c86d {
            return Err(format!("action 0x{tag:08x} is not action_send_msg"));
        }
        let mode = p.load_u8(8).map_err(|e| e.to_string())?;
        let m = p.next_reference().map_err(|e| e.to_string())?;
        head_first.push((mode, m));
        node = prev;
    }
    head_first.reverse();
    Ok(head_first)
}

/// The oracle contract's `recv_internal`, condensed; a failure bounces the value back.
fn receive_internal(c: &mut Chain, m: PendingInternal) {
    let is_oracle = c.accounts.get(&m.to).is_some_and(|a| a.oracle.is_some());
    if !is_oracle {
        c.accounts.entry(m.to.clone()).or_default().balance += m.value;
        return;
    }
    let gas = c.oracle_gas_fee;
    let exit_code = if m.value < gas {
        // Out of gas before it could do anything: the oracle keeps what the gas cost.
        c.oracle_events.push(OracleEvent {
            oracle: m.to.clone(),
            from: m.from.clone(),
            op: m.body.parser().load_u32(32).unwrap_or(0),
            id: 0,
            value: 0,
            timestamp: 0,
            accepted: false,
            reason: Some("out of gas".into()),
        });
        EXIT_OUT_OF_GAS
    } else {
        match oracle_update(c, &m) {
            Some(ev) => {
                let code = match ev.reason.as_deref() {
                    None => 0,
                    Some(r) if r.contains("registered keeper") => EXIT_UNKNOWN_KEEPER,
                    Some(r) if r.contains("older") => EXIT_STALE_UPDATE,
                    Some(_) => EXIT_BAD_BODY,
                };
                c.oracle_events.push(ev);
                code
            }
            None => EXIT_BAD_BODY,
        }
    };
    let fee = gas.min(m.value);
    let rest = m.value - fee;
    let mut out_msgs = Vec::new();
    let mut v2_out = Vec::new();
    c.lt += 10;
    let lt = c.lt;
    if exit_code != 0 && m.bounce {
        let back = rest.saturating_sub(FORWARD_FEE);
        c.accounts.entry(m.from.clone()).or_default().balance += back;
        let mut hash = m.hash;
        hash[0] ^= 0xff;
        out_msgs.push(
            json!({"hash": B64.encode(hash), "destination": m.from.to_hex(),
            "value": back.to_string(), "fwd_fee": FORWARD_FEE.min(rest).to_string()}),
        );
        v2_out.push(json!({"@type": "raw.message", "hash": B64.encode(hash), "source": m.to.to_base64_url(),
            "destination": m.from.to_base64_url(), "value": back.to_string(),
            "fwd_fee": FORWARD_FEE.min(rest).to_string(), "ihr_fee": "0", "created_lt": (lt + 1).to_string()}));
    }
    let now = c.now();
    let tx_hash = {
        let mut h = m.hash;
        h[..8].copy_from_slice(&lt.to_be_bytes());
        h
    };
    let data = transaction_boc(&m.to, lt, now, fee, m.value, exit_code);
    c.accounts.entry(m.to.clone()).or_default().transactions.push(json!({
        "@type": "raw.transaction",
        "address": {"@type": "accountAddress", "account_address": m.to.to_base64_url()},
        "utime": now,
        "data": data,
        "transaction_id": tx_id(lt, &tx_hash),
        "fee": fee.to_string(), "storage_fee": "0", "other_fee": fee.to_string(),
        "in_msg": {"@type": "raw.message", "hash": B64.encode(m.hash), "source": m.from.to_base64_url(),
            "destination": m.to.to_base64_url(), "value": m.value.to_string(), "fwd_fee": "0", "ihr_fee": "0",
            "created_lt": m.created_lt.to_string(), "body_hash": B64.encode(Cell::cell_hash(&m.body).as_slice())},
        "out_msgs": v2_out,
    }));
    let acc = c.accounts.entry(m.to.clone()).or_default();
    acc.balance += if exit_code != 0 && m.bounce {
        fee
    } else {
        m.value
    };
    acc.last_lt = lt;
    acc.last_hash = tx_hash;
    c.v3.push(json!({
        "account": m.to.to_hex(), "hash": B64.encode(m.hash), "lt": lt.to_string(), "now": now,
        "total_fees": fee.to_string(),
        "description": {"aborted": exit_code != 0,
            "compute_ph": {"success": exit_code == 0, "exit_code": exit_code}},
        "in_msg": {"hash": B64.encode(m.hash), "source": m.from.to_hex(), "destination": m.to.to_hex(),
            "value": m.value.to_string()},
        "out_msgs": out_msgs,
    }));
}

/// An ordinary transaction as a BoC (base64), enough for a reader of its compute phase:
/// `transaction$0111 … description:^(trans_ord … compute_ph:tr_phase_compute_vm …)`.
fn transaction_boc(
    account: &TonAddress,
    lt: u64,
    now: u64,
    fee: u128,
    credit: u128,
    exit_code: i32,
) -> String {
    use num_bigint::BigUint;
    let build = || -> Result<Cell, tonlib_core::cell::TonCellError> {
        let vm = CellBuilder::new()
            .store_u8(3, 2)?
            .store_u16(16, 5_000)? // gas_used
            .store_u8(3, 2)?
            .store_u16(16, 10_000)? // gas_limit
            .store_bit(false)? // no gas_credit
            .store_i8(8, 0)? // mode
            .store_i32(32, exit_code)?
            .store_bit(false)? // no exit_arg
            .store_u32(32, 100)? // vm_steps
            .store_slice(&[0u8; 32])?
            .store_slice(&[0u8; 32])?
            .build()?
            .to_arc();
        let descr = CellBuilder::new()
            .store_u8(4, 0)? // trans_ord
            .store_bit(false)? // credit_first
            .store_bit(false)? // no storage phase
            .store_bit(true)? // credit phase
            .store_bit(false)? // no due fees collected
            .store_coins(&BigUint::from(credit))?
            .store_bit(false)? // no extra currencies
            .store_bit(true)? // tr_phase_compute_vm
            .store_bit(exit_code == 0)? // success
            .store_bit(false)?
            .store_bit(false)?
            .store_coins(&BigUint::from(fee))?
            .store_reference(&vm)?
            .store_bit(false)? // no action phase
            .store_bit(exit_code != 0)? // aborted
            .store_bit(false)? // no bounce phase
            .store_bit(false)? // destroyed
            .build()?
            .to_arc();
        let msgs = CellBuilder::new()
            .store_bit(false)?
            .store_bit(false)?
            .build()?
            .to_arc();
        let state_update = CellBuilder::new().build()?.to_arc();
        CellBuilder::new()
            .store_u8(4, 0b0111)?
            .store_slice(account.hash_part.as_slice())?
            .store_u64(64, lt)?
            .store_slice(&[0u8; 32])?
            .store_u64(64, 0)?
            .store_u32(32, u32::try_from(now).unwrap_or(0))?
            .store_u16(15, 0)?
            .store_u8(2, 0b10)?
            .store_u8(2, 0b10)?
            .store_reference(&msgs)?
            .store_coins(&BigUint::from(fee))?
            .store_bit(false)?
            .store_reference(&state_update)?
            .store_reference(&descr)?
            .build()
    };
    build()
        .ok()
        .and_then(|cell| BagOfCells::from_root(cell).serialize(true).ok())
        .map(|b| B64.encode(b))
        .unwrap_or_default()
}

fn oracle_update(c: &mut Chain, m: &PendingInternal) -> Option<OracleEvent> {
    let oracle = c.accounts.get_mut(&m.to)?.oracle.as_mut()?;
    let body = &m.body;
    let mut p = body.parser();
    let mut ev = OracleEvent {
        oracle: m.to.clone(),
        from: m.from.clone(),
        op: 0,
        id: 0,
        value: 0,
        timestamp: 0,
        accepted: false,
        reason: None,
    };
    let Ok(op) = p.load_u32(32) else {
        ev.reason = Some("empty body".into());
        return Some(ev);
    };
    ev.op = op;
    let parsed: Result<(), String> = (|| {
        match op {
            3 => {
                ev.id = p.load_u16(16).map_err(|e| e.to_string())?;
                ev.value = u128::try_from(p.load_coins().map_err(|e| e.to_string())?)
                    .map_err(|_| "price too large".to_string())?;
                ev.timestamp = p.load_u32(32).map_err(|e| e.to_string())?;
            }
            4 => {
                ev.id = u16::from(p.load_u8(8).map_err(|e| e.to_string())?);
                ev.value = u128::from(p.load_bit().map_err(|e| e.to_string())?);
                ev.timestamp = p.load_u32(32).map_err(|e| e.to_string())?;
            }
            other => return Err(format!("unknown op 0x{other:x}")),
        }
        if p.remaining_bits() != 0 {
            return Err("trailing bits".into());
        }
        Ok(())
    })();
    if let Err(e) = parsed {
        ev.reason = Some(e);
        return Some(ev);
    }
    let sig_cell = match body.references() {
        [s] if s.bit_len() == 512 => s.clone(),
        _ => {
            ev.reason = Some("^signature missing or not 512 bits".into());
            return Some(ev);
        }
    };
    let payload = CellBuilder::new()
        .store_bits(body.bit_len(), body.data())
        .and_then(|b| b.build());
    let Ok(payload) = payload else {
        ev.reason = Some("payload cell".into());
        return Some(ev);
    };
    let hash = hash32(&payload);
    let sig = &sig_cell.data()[..64];
    if !oracle
        .keepers
        .iter()
        .any(|k| verify_signature(k, &hash, sig))
    {
        ev.reason = Some("signature is not by a registered keeper".into());
        return Some(ev);
    }
    let stale = match op {
        3 => oracle
            .prices
            .get(&ev.id)
            .is_some_and(|(_, t)| *t > ev.timestamp),
        _ => u8::try_from(ev.id)
            .ok()
            .and_then(|id| oracle.bridges.get(&id))
            .is_some_and(|(_, t)| *t > ev.timestamp),
    };
    if stale {
        ev.reason = Some("older than the stored update".into());
        return Some(ev);
    }
    match op {
        3 => {
            oracle.prices.insert(ev.id, (ev.value, ev.timestamp));
        }
        _ => {
            if let Ok(id) = u8::try_from(ev.id) {
                oracle.bridges.insert(id, (ev.value != 0, ev.timestamp));
            }
        }
    }
    ev.accepted = true;
    Some(ev)
}
