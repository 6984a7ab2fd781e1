//! Signed external messages to the keeper wallet, carrying internal messages to the oracle,
//! and a decoder for them (tests, dry-run summaries, the test server).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use num_bigint::BigUint;
use tonlib_core::TonAddress;
use tonlib_core::cell::{ArcCell, BagOfCells, Cell, CellBuilder};
use tonlib_core::tlb_types::block::coins::{CurrencyCollection, Grams};
use tonlib_core::tlb_types::block::message::{CommonMsgInfo, ExtInMsgInfo, IntMsgInfo, Message};
use tonlib_core::tlb_types::block::msg_address::{MsgAddrNone, MsgAddress, MsgAddressExt};
use tonlib_core::tlb_types::primitives::either::{EitherRef, EitherRefLayout};
use tonlib_core::tlb_types::tlb::TLB;
use tonlib_core::wallet::versioned::v4::WalletExtMsgBodyV4;
use tonlib_core::wallet::versioned::v5::WalletExtMsgBodyV5;

use super::keys::verify_signature;
use super::oracle::{DecodedBody, biguint_to_u128, decode_body};
use super::settings::WalletVersion;
use super::wallet::Wallet;
use super::{BuildError, DecodeError};

/// Send mode of every action: pay fees separately (+1) and ignore errors (+2), which V5R1
/// requires of external sends.
pub const SEND_MODE: u8 = 3;

/// Prefix of a V5R1 signed request (`"sign"`).
const V5_SIGNED_EXTERNAL: u32 = 0x7369_676e;
/// Prefix of `action_send_msg` in an out-list.
const ACTION_SEND_MSG: u32 = 0x0ec3_c86d;

/// One internal message the wallet should send.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    /// Destination contract.
    pub to: TonAddress,
    /// TON attached, nanotons.
    pub value_nanoton: u64,
    /// Bounce back on failure (on for contracts).
    pub bounce: bool,
    /// Message body.
    pub body: ArcCell,
}

/// Serializes an internal message: bounce flag, no source (the wallet fills it in), body inline
/// when it fits, otherwise as a reference.
pub fn internal_message(msg: &OutgoingMessage) -> Result<ArcCell, BuildError> {
    let info = CommonMsgInfo::Int(IntMsgInfo {
        ihr_disabled: true,
        bounce: msg.bounce,
        bounced: false,
        src: MsgAddress::NONE,
        dest: msg.to.to_msg_address(),
        value: CurrencyCollection::new(BigUint::from(msg.value_nanoton)),
        ihr_fee: Grams::new(BigUint::default()),
        fwd_fee: Grams::new(BigUint::default()),
        created_lt: 0,
        created_at: 0,
    });
    Ok(Message::new(info, msg.body.clone()).to_cell()?.to_arc())
}

/// A signed external message, ready to send, with the hashes that identify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedExternal {
    /// The wallet's seqno this message consumes.
    pub seqno: u32,
    /// The wallet rejects it from this chain time on (`valid_until <= now`).
    pub valid_until: u32,
    /// StateInit attached (first message of an undeployed wallet).
    pub with_state_init: bool,
    /// Number of internal messages.
    pub actions: usize,
    /// The BoC (with CRC32C).
    pub boc: Vec<u8>,
    /// Representation hash of the whole external message.
    pub message_hash: [u8; 32],
    /// Normalized hash (src none, import_fee 0, no init, body as a reference): what explorers and
    /// toncenter v3 look messages up by.
    pub normalized_hash: [u8; 32],
    /// Hash of the signed body cell: toncenter v2 `in_msg.body_hash` of the wallet transaction.
    pub body_hash: [u8; 32],
}

impl SignedExternal {
    /// The BoC as standard base64, as toncenter takes it.
    pub fn boc_base64(&self) -> String {
        B64.encode(&self.boc)
    }
}

fn ext_in(wallet: &TonAddress) -> CommonMsgInfo {
    CommonMsgInfo::ExtIn(ExtInMsgInfo {
        src: MsgAddressExt::None(MsgAddrNone {}),
        dest: wallet.to_msg_address_int(),
        import_fee: Grams::new(BigUint::default()),
    })
}

fn hash32(cell: &Cell) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(cell.cell_hash().as_slice());
    out
}

/// Builds and signs the wallet body for `messages` (in execution order) and wraps it in an
/// external message. `messages.len()` must be within the version's limit (255 / 4).
pub fn build_external(
    wallet: &Wallet,
    seqno: u32,
    valid_until: u32,
    with_state_init: bool,
    messages: &[OutgoingMessage],
) -> Result<SignedExternal, BuildError> {
    build_external_with_mode(
        wallet,
        seqno,
        valid_until,
        with_state_init,
        messages,
        SEND_MODE,
    )
}

/// Send mode of a sweep: the whole remaining balance (+128), ignore errors (+2); fees come out
/// of the value.
pub const SWEEP_MODE: u8 = 130;

/// [`build_external`] with `mode` on every action instead of [`SEND_MODE`] (sweeps).
pub fn build_external_with_mode(
    wallet: &Wallet,
    seqno: u32,
    valid_until: u32,
    with_state_init: bool,
    messages: &[OutgoingMessage],
    mode: u8,
) -> Result<SignedExternal, BuildError> {
    let limit = wallet.max_actions();
    if messages.is_empty() || messages.len() > limit {
        return Err(BuildError::Actions {
            count: messages.len(),
            limit,
        });
    }
    let mut cells = Vec::with_capacity(messages.len());
    for m in messages {
        cells.push(internal_message(m)?);
    }
    let body = match wallet.version() {
        WalletVersion::V5r1 => {
            // tonlib-core puts its first message on top of the out-list, and the action phase
            // runs the list bottom-up: reverse so the chain executes them in our order.
            cells.reverse();
            WalletExtMsgBodyV5 {
                wallet_id: wallet.wallet_id(),
                valid_until,
                msg_seqno: seqno,
                msgs_modes: vec![mode; cells.len()],
                msgs: cells,
            }
            .to_cell()?
        }
        WalletVersion::V4r2 => WalletExtMsgBodyV4 {
            subwallet_id: wallet.wallet_id(),
            valid_until,
            msg_seqno: seqno,
            opcode: 0,
            msgs_modes: vec![mode; cells.len()],
            msgs: cells,
        }
        .to_cell()?,
    };
    let signature = wallet.keys().sign(body.cell_hash().as_slice());
    let mut b = CellBuilder::new();
    match wallet.version() {
        // V5R1 puts the signature last, V4R2 first.
        WalletVersion::V5r1 => b.store_cell(&body)?.store_slice(&signature)?,
        WalletVersion::V4r2 => b.store_slice(&signature)?.store_cell(&body)?,
    };
    let signed: ArcCell = b.build()?.to_arc();
    let body_hash = hash32(&signed);

    let mut message = Message {
        info: ext_in(wallet.address()),
        init: None,
        body: EitherRef {
            value: signed.clone(),
            layout: EitherRefLayout::ToRef,
        },
    };
    if with_state_init {
        message.init = Some(EitherRef {
            value: wallet.state_init(),
            layout: EitherRefLayout::ToRef,
        });
    }
    let cell = message.to_cell()?;
    let message_hash = hash32(&cell);
    let boc = BagOfCells::from_root(cell).serialize(true)?;
    let normalized_hash = normalized_hash(wallet.address(), signed)?;
    Ok(SignedExternal {
        seqno,
        valid_until,
        with_state_init,
        actions: messages.len(),
        boc,
        message_hash,
        normalized_hash,
        body_hash,
    })
}

/// The normalized external-message hash (TEP-467): src none, import_fee 0, no init, body by reference.
pub fn normalized_hash(wallet: &TonAddress, signed_body: ArcCell) -> Result<[u8; 32], BuildError> {
    let norm = Message {
        info: ext_in(wallet),
        init: None,
        body: EitherRef {
            value: signed_body,
            layout: EitherRefLayout::ToRef,
        },
    };
    Ok(hash32(&norm.to_cell()?))
}

/// One decoded send action of an external message.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedAction {
    /// Send mode.
    pub mode: u8,
    /// Destination.
    pub to: TonAddress,
    /// TON attached, nanotons.
    pub value_nanoton: u128,
    /// Bounce flag.
    pub bounce: bool,
    /// Body cell of the internal message.
    pub body: ArcCell,
}

impl DecodedAction {
    /// Decodes the body as an oracle message.
    pub fn oracle_body(&self) -> Result<DecodedBody, DecodeError> {
        decode_body(&self.body)
    }
}

/// A decoded external message to a wallet.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedExternal {
    /// Destination wallet.
    pub wallet: TonAddress,
    /// StateInit attached.
    pub state_init: Option<ArcCell>,
    /// Wallet id in the signed body.
    pub wallet_id: i32,
    /// Seqno in the signed body.
    pub seqno: u32,
    /// valid_until in the signed body.
    pub valid_until: u32,
    /// Send actions, in the order the chain executes them.
    pub actions: Vec<DecodedAction>,
    /// The wallet signature.
    pub signature: [u8; 64],
    /// Hash of the body without the signature: what the signature covers.
    pub signed_hash: [u8; 32],
    /// Hash of the body including the signature.
    pub body_hash: [u8; 32],
    /// Normalized message hash.
    pub normalized_hash: [u8; 32],
}

impl DecodedExternal {
    /// True when the wallet signature is by `public_key`.
    pub fn verify(&self, public_key: &[u8]) -> bool {
        verify_signature(public_key, &self.signed_hash, &self.signature)
    }
}

fn dec(problem: impl Into<String>) -> DecodeError {
    DecodeError::new("external message", problem)
}

/// Decodes an external message BoC (binary or base64 text) sent to a wallet of `version`.
pub fn decode_external(boc: &[u8], version: WalletVersion) -> Result<DecodedExternal, DecodeError> {
    let bag = match BagOfCells::parse(boc) {
        Ok(b) => b,
        Err(_) => {
            let text = std::str::from_utf8(boc).map_err(|_| dec("not a BoC"))?;
            let raw = B64
                .decode(text.trim())
                .map_err(|_| dec("neither a BoC nor base64"))?;
            BagOfCells::parse(&raw).map_err(|e| dec(format!("BoC: {e}")))?
        }
    };
    let root = bag
        .single_root()
        .map_err(|e| dec(format!("BoC root: {e}")))?;
    let msg = Message::from_cell(&root).map_err(|e| dec(format!("message: {e}")))?;
    let CommonMsgInfo::ExtIn(info) = &msg.info else {
        return Err(dec("not an inbound external message"));
    };
    let wallet =
        TonAddress::try_from(info.dest.clone()).map_err(|e| dec(format!("destination: {e}")))?;
    let state_init = match &msg.init {
        Some(init) => Some(
            init.value
                .to_cell()
                .map_err(|e| dec(format!("state init: {e}")))?
                .to_arc(),
        ),
        None => None,
    };
    let signed: ArcCell = msg.body.value.clone();
    let body_hash = hash32(&signed);
    let normalized_hash =
        normalized_hash(&wallet, signed.clone()).map_err(|e| dec(format!("hash: {e}")))?;
    let bits = signed.bit_len();
    if bits < 512 {
        return Err(dec(format!("body of {bits} bits cannot hold a signature")));
    }
    let mut signature = [0u8; 64];
    let unsigned = match version {
        WalletVersion::V5r1 => {
            let mut p = signed.parser();
            let data = p.load_bits(bits - 512).map_err(|e| dec(e.to_string()))?;
            p.load_slice(&mut signature)
                .map_err(|e| dec(e.to_string()))?;
            CellBuilder::new()
                .store_bits(bits - 512, &data)
                .and_then(|b| b.store_references(signed.references()))
                .and_then(|b| b.build())
                .map_err(|e| dec(e.to_string()))?
        }
        WalletVersion::V4r2 => {
            let mut p = signed.parser();
            p.load_slice(&mut signature)
                .map_err(|e| dec(e.to_string()))?;
            p.load_remaining().map_err(|e| dec(e.to_string()))?
        }
    };
    let signed_hash = hash32(&unsigned);
    let (wallet_id, seqno, valid_until, cells, modes) = match version {
        WalletVersion::V5r1 => {
            let mut p = unsigned.parser();
            let prefix = p.load_u32(32).map_err(|e| dec(e.to_string()))?;
            if prefix != V5_SIGNED_EXTERNAL {
                return Err(dec(format!(
                    "V5R1 body prefix 0x{prefix:08x}, expected 0x7369676e"
                )));
            }
            let wallet_id = p.load_i32(32).map_err(|e| dec(e.to_string()))?;
            let valid_until = p.load_u32(32).map_err(|e| dec(e.to_string()))?;
            let seqno = p.load_u32(32).map_err(|e| dec(e.to_string()))?;
            let has_list = p.load_bit().map_err(|e| dec(e.to_string()))?;
            let mut cells = Vec::new();
            let mut modes = Vec::new();
            if has_list {
                let list = p.next_reference().map_err(|e| dec(e.to_string()))?;
                walk_out_list(&list, &mut cells, &mut modes)?;
            }
            if p.load_bit().map_err(|e| dec(e.to_string()))? {
                return Err(dec("extended actions are not used by keepers"));
            }
            (wallet_id, seqno, valid_until, cells, modes)
        }
        WalletVersion::V4r2 => {
            let body = WalletExtMsgBodyV4::from_cell(&unsigned)
                .map_err(|e| dec(format!("V4R2 body: {e}")))?;
            (
                body.subwallet_id,
                body.msg_seqno,
                body.valid_until,
                body.msgs,
                body.msgs_modes,
            )
        }
    };
    let mut actions = Vec::with_capacity(cells.len());
    for (cell, mode) in cells.into_iter().zip(modes) {
        actions.push(decode_internal(&cell, mode)?);
    }
    Ok(DecodedExternal {
        wallet,
        state_init,
        wallet_id,
        seqno,
        valid_until,
        actions,
        signature,
        signed_hash,
        body_hash,
        normalized_hash,
    })
}

/// Walks an out-list down to its empty end and returns actions in execution order (deepest first).
fn walk_out_list(
    top: &ArcCell,
    cells: &mut Vec<ArcCell>,
    modes: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let mut node = top.clone();
    let mut top_first = Vec::new();
    while node.bit_len() > 0 {
        if top_first.len() > 255 {
            return Err(dec("out-list longer than 255 actions"));
        }
        let mut p = node.parser();
        let prev = p
            .next_reference()
            .map_err(|e| dec(format!("out-list prev: {e}")))?;
        let tag = p.load_u32(32).map_err(|e| dec(e.to_string()))?;
        if tag != ACTION_SEND_MSG {
            return Err(dec(format!(
                "out action 0x{tag:08x} is not action_send_msg"
            )));
        }
        let mode = p.load_u8(8).map_err(|e| dec(e.to_string()))?;
        let msg = p
            .next_reference()
            .map_err(|e| dec(format!("out message: {e}")))?;
        top_first.push((msg, mode));
        node = prev;
    }
    for (msg, mode) in top_first.into_iter().rev() {
        cells.push(msg);
        modes.push(mode);
    }
    Ok(())
}

fn decode_internal(cell: &Cell, mode: u8) -> Result<DecodedAction, DecodeError> {
    let msg = Message::from_cell(cell).map_err(|e| dec(format!("internal message: {e}")))?;
    let CommonMsgInfo::Int(info) = msg.info else {
        return Err(dec("action is not an internal message"));
    };
    let to =
        TonAddress::try_from(info.dest).map_err(|e| dec(format!("internal destination: {e}")))?;
    let value_nanoton =
        biguint_to_u128(&info.value.grams.amount).ok_or_else(|| dec("value exceeds 128 bits"))?;
    Ok(DecodedAction {
        mode,
        to,
        value_nanoton,
        bounce: info.bounce,
        body: Arc::clone(&msg.body.value),
    })
}
