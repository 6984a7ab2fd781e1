//! The keeper's hot wallet: version, wallet id, address forms and the StateInit that deploys it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tonlib_core::TonAddress;
use tonlib_core::cell::ArcCell;
use tonlib_core::tlb_types::block::state_init::StateInit;
use tonlib_core::wallet::mnemonic::KeyPair;
use tonlib_core::wallet::version_helper::VersionHelper;
use tonlib_core::wallet::wallet_version::WalletVersion as LibVersion;

use super::BuildError;
use super::keys::WalletKeys;
use super::settings::{Network, WalletVersion};

/// V4R2 wallet id on every network (`698983191`).
pub const WALLET_ID_V4R2: i32 = 0x29a9_a317;
/// V5R1 wallet id on mainnet, workchain 0, subwallet 0.
pub const WALLET_ID_V5R1_MAINNET: i32 = 0x7FFF_FF11;
/// V5R1 wallet id on testnet, workchain 0, subwallet 0.
pub const WALLET_ID_V5R1_TESTNET: i32 = 0x7FFF_FFFD;

/// The wallet id of `version` on `network` (it is part of the data cell, so of the address).
pub fn wallet_id(version: WalletVersion, network: Network) -> i32 {
    match (version, network) {
        (WalletVersion::V4r2, _) => WALLET_ID_V4R2,
        (WalletVersion::V5r1, Network::Mainnet) => WALLET_ID_V5R1_MAINNET,
        (WalletVersion::V5r1, Network::Testnet) => WALLET_ID_V5R1_TESTNET,
    }
}

/// How many send actions one external message of `version` may carry.
pub fn max_actions(version: WalletVersion) -> usize {
    match version {
        WalletVersion::V5r1 => 255,
        WalletVersion::V4r2 => 4,
    }
}

/// The version's name as printed by `wallet` (`v5r1`, `v4r2`).
pub fn version_name(version: WalletVersion) -> &'static str {
    match version {
        WalletVersion::V5r1 => "v5r1",
        WalletVersion::V4r2 => "v4r2",
    }
}

/// The network's name as printed by `wallet` (`mainnet`, `testnet`).
pub fn network_name(network: Network) -> &'static str {
    match network {
        Network::Mainnet => "mainnet",
        Network::Testnet => "testnet",
    }
}

pub(crate) fn lib_version(version: WalletVersion) -> LibVersion {
    match version {
        WalletVersion::V5r1 => LibVersion::V5R1,
        WalletVersion::V4r2 => LibVersion::V4R2,
    }
}

/// The addresses and key of a wallet, as the `wallet` command prints them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletInfo {
    /// `v5r1` or `v4r2`.
    pub version: String,
    /// `mainnet` or `testnet`.
    pub network: String,
    /// `0:<64 hex>`.
    pub address_raw: String,
    /// `EQ…` (mainnet) or `kQ…` (testnet).
    pub address_bounceable: String,
    /// `UQ…` (mainnet) or `0Q…` (testnet).
    pub address_non_bounceable: String,
    /// The ed25519 public key, hex.
    pub public_key_hex: String,
}

/// A wallet contract owned by the keeper's key pair (workchain 0).
#[derive(Debug, Clone)]
pub struct Wallet {
    keys: Arc<WalletKeys>,
    version: WalletVersion,
    network: Network,
    wallet_id: i32,
    code: ArcCell,
    data: ArcCell,
    address: TonAddress,
}

impl Wallet {
    /// The wallet of `keys` with the standard wallet id of `version` on `network`.
    pub fn new(
        keys: impl Into<Arc<WalletKeys>>,
        version: WalletVersion,
        network: Network,
    ) -> Result<Self, BuildError> {
        let keys = keys.into();
        let id = wallet_id(version, network);
        // The library only reads the public half to build the data cell.
        let pair = KeyPair {
            public_key: keys.public_key().to_vec(),
            secret_key: Vec::new(),
        };
        let lib = lib_version(version);
        let data = VersionHelper::get_data(lib, &pair, id)?.to_arc();
        let code = VersionHelper::get_code(lib)?.clone();
        let address = TonAddress::derive(0, code.clone(), data.clone())?;
        Ok(Self {
            keys,
            version,
            network,
            wallet_id: id,
            code,
            data,
            address,
        })
    }

    /// The key pair that signs for this wallet.
    pub fn keys(&self) -> &WalletKeys {
        &self.keys
    }

    /// Wallet contract version.
    pub fn version(&self) -> WalletVersion {
        self.version
    }

    /// Network the address is meant for.
    pub fn network(&self) -> Network {
        self.network
    }

    /// The wallet id stored in the data cell and repeated in every signed body.
    pub fn wallet_id(&self) -> i32 {
        self.wallet_id
    }

    /// The address.
    pub fn address(&self) -> &TonAddress {
        &self.address
    }

    /// `0:<hex>`.
    pub fn address_raw(&self) -> String {
        self.address.to_hex()
    }

    /// User-friendly bounceable form (testnet flag set on testnet).
    pub fn address_bounceable(&self) -> String {
        self.address
            .to_base64_url_flags(false, self.network == Network::Testnet)
    }

    /// User-friendly non-bounceable form, the usual way to show a wallet (testnet flag on testnet).
    pub fn address_non_bounceable(&self) -> String {
        self.address
            .to_base64_url_flags(true, self.network == Network::Testnet)
    }

    /// The `wallet` label of metrics and leases: the non-bounceable form.
    pub fn label(&self) -> String {
        self.address_non_bounceable()
    }

    /// How many oracle messages fit in one external message.
    pub fn max_actions(&self) -> usize {
        max_actions(self.version)
    }

    /// Code and initial data that deploy this wallet.
    pub fn state_init(&self) -> StateInit {
        StateInit::new(self.code.clone(), self.data.clone())
    }

    /// The fields of the `wallet` command.
    pub fn info(&self) -> WalletInfo {
        WalletInfo {
            version: version_name(self.version).into(),
            network: network_name(self.network).into(),
            address_raw: self.address_raw(),
            address_bounceable: self.address_bounceable(),
            address_non_bounceable: self.address_non_bounceable(),
            public_key_hex: self.keys.public_key_hex(),
        }
    }
}

/// Reads the seqno out of a deployed wallet's data cell (V5R1: after the signature flag; V4R2: first).
pub fn seqno_from_data(
    version: WalletVersion,
    data: &tonlib_core::cell::Cell,
) -> Result<u32, BuildError> {
    let mut p = data.parser();
    if version == WalletVersion::V5r1 {
        p.load_bit()?;
    }
    Ok(p.load_u32(32)?)
}
