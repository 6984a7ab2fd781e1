//! TON keys, wallets and messages without a chain: the published vectors, round
//! trips of every message through its BoC with signature checks, tamper detection, action order,
//! limits, and the dry-run summary shape.

use std::sync::Arc;

use keeper_runtime::secret::Secret;
use keeper_ton::external::internal_message;
use keeper_ton::*;
use keeper_ton::{Network, WalletVersion};
use tonlib_core::cell::{BagOfCells, Cell, CellBuilder};
use tonlib_core::tlb_types::tlb::TLB;
use tonlib_core::wallet::versioned::v5::WalletExtMsgBodyV5;

const V4_MNEMONIC: &str = "fancy carpet hello mandate penalty trial consider property top vicious exit rebuild tragic profit urban major total month holiday sudden rib gather media vicious";
const V5_MNEMONIC: &str = "section garden tomato dinner season dice renew length useful spin trade intact use universe what post spike keen mandate behind concert egg doll rug";
const ORACLE: &str = "EQCDM_QGggZ3qMa_f3lRPk4_qLDnLTqdi6OkMAV2NB9r5TG3";

fn keys(seed: u8) -> Arc<WalletKeys> {
    Arc::new(WalletKeys::from_seed(&[seed; 32]).unwrap())
}

fn price(asset: &str, id: u16, micro: u64, ts: u32) -> OracleMessage {
    OracleMessage::new(
        parse_address(ORACLE).unwrap(),
        OracleUpdate::Price(PriceUpdate {
            asset: asset.into(),
            asset_id: id,
            price_micro: micro,
            timestamp: ts,
        }),
    )
}

fn bridge(name: &str, id: u8, online: bool, ts: u32) -> OracleMessage {
    OracleMessage::new(
        parse_address(ORACLE).unwrap(),
        OracleUpdate::BridgeStatus(BridgeStatusUpdate {
            bridge: name.into(),
            bridge_id: id,
            is_online: online,
            last_seen: ts,
        }),
    )
}

fn outgoing(wallet: &Wallet, msgs: &[OracleMessage]) -> Vec<OutgoingMessage> {
    keeper_ton::summary::outgoing(wallet, msgs, 50_000_000).unwrap()
}

#[test]
fn published_vectors_hold() {
    let v4 = WalletKeys::from_mnemonic(&Secret::new(V4_MNEMONIC)).unwrap();
    let w = Wallet::new(v4, WalletVersion::V4r2, Network::Mainnet).unwrap();
    assert_eq!(
        w.address_bounceable(),
        "EQCDM_QGggZ3qMa_f3lRPk4_qLDnLTqdi6OkMAV2NB9r5TG3"
    );
    assert_eq!(w.wallet_id(), 698_983_191);

    let v5 = Arc::new(WalletKeys::from_mnemonic(&Secret::new(V5_MNEMONIC)).unwrap());
    let main = Wallet::new(v5.clone(), WalletVersion::V5r1, Network::Mainnet).unwrap();
    assert_eq!(
        main.address_non_bounceable(),
        "UQDv2YSmlrlLH3hLNOVxC8FcQf4F9eGNs4vb2zKma4txo6i3"
    );
    assert_eq!(
        main.address_bounceable(),
        "EQDv2YSmlrlLH3hLNOVxC8FcQf4F9eGNs4vb2zKma4txo_Vy"
    );
    assert_eq!(main.wallet_id(), 0x7FFF_FF11);
    let test = Wallet::new(v5.clone(), WalletVersion::V5r1, Network::Testnet).unwrap();
    assert_eq!(
        test.address_non_bounceable(),
        "0QA_6fh0aRAkD7n1MNfAUx8TvyCUw2iTQfzVM-0isMze2anN"
    );
    assert!(
        test.address_bounceable().starts_with("kQ"),
        "{}",
        test.address_bounceable()
    );
    assert_eq!(test.wallet_id(), 0x7FFF_FFFD);
    // The raw form names the same account as the friendly ones.
    assert_eq!(parse_address(&main.address_raw()).unwrap(), *main.address());
    assert!(main.address_raw().starts_with("0:"));

    // The same words typed with extra spaces, newlines and capitals derive the same key.
    let messy = format!("  {}\n", V5_MNEMONIC.replace(' ', "  \n").to_uppercase());
    let again = WalletKeys::from_mnemonic(&Secret::new(messy)).unwrap();
    assert_eq!(again.public_key(), v5.public_key());
}

#[test]
fn wallet_info_has_the_design_fields() {
    let w = Wallet::new(keys(1), WalletVersion::V5r1, Network::Testnet).unwrap();
    let v = serde_json::to_value(w.info()).unwrap();
    let mut fields: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "address_bounceable",
            "address_non_bounceable",
            "address_raw",
            "network",
            "public_key_hex",
            "version"
        ]
    );
    assert_eq!(v["version"], "v5r1");
    assert_eq!(v["network"], "testnet");
    assert_eq!(v["public_key_hex"], w.keys().public_key_hex());
    assert_eq!(w.keys().public_key_hex().len(), 64);
}

fn check_round_trip(version: WalletVersion, msgs: &[OracleMessage]) {
    let w = Wallet::new(keys(9), version, Network::Mainnet).unwrap();
    let ext = build_external(&w, 41, 1_760_000_060, true, &outgoing(&w, msgs)).unwrap();
    // The BoC parses back as one root cell whose hash is the message hash.
    let root = BagOfCells::parse(&ext.boc).unwrap().single_root().unwrap();
    assert_eq!(Cell::cell_hash(&root).as_slice(), &ext.message_hash);

    let d = decode_external(&ext.boc, version).unwrap();
    assert_eq!(&d.wallet, w.address());
    assert_eq!(
        (d.seqno, d.valid_until, d.wallet_id),
        (41, 1_760_000_060, w.wallet_id())
    );
    assert!(d.state_init.is_some());
    assert_eq!(d.body_hash, ext.body_hash);
    assert_eq!(d.normalized_hash, ext.normalized_hash);
    // Wallet signature: by the wallet key over the body hash, and by nobody else.
    assert!(d.verify(w.keys().public_key()));
    assert!(!d.verify(keys(10).public_key()));

    assert_eq!(d.actions.len(), msgs.len());
    for (action, m) in d.actions.iter().zip(msgs) {
        assert_eq!(action.mode, 3);
        assert!(action.bounce);
        assert_eq!(action.value_nanoton, 50_000_000);
        assert_eq!(action.to, m.to);
        let body = action.oracle_body().unwrap();
        // Payload signature: by the wallet key over the payload cell's hash.
        assert!(body.verify(w.keys().public_key()));
        assert_eq!(
            &body.payload_hash,
            m.update.payload_cell().unwrap().cell_hash().as_slice()
        );
        let expected = match &m.update {
            OracleUpdate::Price(p) => DecodedPayload::Price {
                asset_id: p.asset_id,
                price_micro: u128::from(p.price_micro),
                timestamp: p.timestamp,
            },
            OracleUpdate::BridgeStatus(b) => DecodedPayload::BridgeStatus {
                bridge_id: b.bridge_id,
                is_online: b.is_online,
                last_seen: b.last_seen,
            },
        };
        assert_eq!(body.payload, expected);
    }
}

#[test]
fn every_message_round_trips_through_its_boc() {
    let mixed = vec![
        price("USDT", 1, 999_850, 1_760_000_000),
        bridge("wormhole", 3, false, 1_759_999_000),
        price("DAI", 3, 1_000_123, 1_760_000_001),
        bridge("axelar", 4, true, 1_760_000_002),
    ];
    check_round_trip(WalletVersion::V5r1, &mixed);
    check_round_trip(WalletVersion::V4r2, &mixed);
    // Extremes of every field.
    check_round_trip(
        WalletVersion::V5r1,
        &[
            price("MAX", u16::MAX, u64::MAX, u32::MAX),
            price("ZERO", 0, 0, 0),
            bridge("b", u8::MAX, true, u32::MAX),
        ],
    );
}

/// Rebuilds `body` with one payload bit flipped, keeping its `^signature`.
fn flip_payload_bit(body: &Cell, bit: usize) -> Cell {
    let mut data = body.data().to_vec();
    data[bit / 8] ^= 0x80 >> (bit % 8);
    CellBuilder::new()
        .store_bits(body.bit_len(), &data)
        .unwrap()
        .store_references(body.references())
        .unwrap()
        .build()
        .unwrap()
}

#[test]
fn tampered_fields_fail_verification() {
    let k = keys(5);
    let update = price("USDT", 1, 999_850, 1_760_000_000).update;
    let body = update.body(&k).unwrap();
    assert!(decode_body(&body).unwrap().verify(k.public_key()));
    // Flip a bit of asset_id, of the price and of the timestamp in turn.
    for bit in [40, 60, 100] {
        let forged = flip_payload_bit(&body, bit);
        let d = decode_body(&forged).unwrap();
        assert_ne!(
            d.payload,
            decode_body(&body).unwrap().payload,
            "bit {bit} changed nothing"
        );
        assert!(
            !d.verify(k.public_key()),
            "forged payload (bit {bit}) still verifies"
        );
    }
    // A forged signature bit fails too.
    let mut sig = body.references()[0].data().to_vec();
    sig[10] ^= 1;
    let forged = CellBuilder::new()
        .store_bits(body.bit_len(), body.data())
        .unwrap()
        .store_child(
            CellBuilder::new()
                .store_slice(&sig)
                .unwrap()
                .build()
                .unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
    assert!(!decode_body(&forged).unwrap().verify(k.public_key()));

    // Tampering with the external's signed body (its seqno) breaks the wallet signature.
    for version in [WalletVersion::V5r1, WalletVersion::V4r2] {
        let w = Wallet::new(k.clone(), version, Network::Mainnet).unwrap();
        let ext = build_external(
            &w,
            7,
            1_760_000_060,
            false,
            &outgoing(&w, &[price("USDT", 1, 1, 1)]),
        )
        .unwrap();
        let d = decode_external(&ext.boc, version).unwrap();
        assert!(d.verify(k.public_key()));
        let mut forged = d.clone();
        forged.signed_hash[0] ^= 1;
        assert!(!forged.verify(k.public_key()));
        // And a flipped bit inside the BoC either fails to decode or fails to verify.
        let mut boc = ext.boc.clone();
        let n = boc.len();
        boc[n - 20] ^= 0x04;
        match decode_external(&boc, version) {
            Err(_) => {}
            Ok(d) => assert!(!d.verify(k.public_key()), "a corrupted BoC still verifies"),
        }
    }
}

#[test]
fn v5r1_actions_execute_in_config_order() {
    let w = Wallet::new(keys(3), WalletVersion::V5r1, Network::Mainnet).unwrap();
    let ids = [4u16, 1, 6, 2, 5, 3];
    let msgs: Vec<_> = ids
        .iter()
        .map(|&i| price(&format!("A{i}"), i, 1_000_000 + u64::from(i), 1_760_000_000))
        .collect();
    let ext = build_external(&w, 0, 1_760_000_060, false, &outgoing(&w, &msgs)).unwrap();

    // Our decoder walks the out-list to its deepest action first (the action phase's order).
    let decoded: Vec<u16> = decode_external(&ext.boc, WalletVersion::V5r1)
        .unwrap()
        .actions
        .iter()
        .map(|a| match a.oracle_body().unwrap().payload {
            DecodedPayload::Price { asset_id, .. } => asset_id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(decoded, ids);

    // tonlib-core's own parser lists the out-list head first: the reverse of execution order,
    // which is exactly what the builder compensates for.
    let root = BagOfCells::parse(&ext.boc).unwrap().single_root().unwrap();
    let signed = root.references().last().unwrap().clone();
    let bits = signed.bit_len() - 512;
    let unsigned = CellBuilder::new()
        .store_bits(bits, &signed.parser().load_bits(bits).unwrap())
        .unwrap()
        .store_references(signed.references())
        .unwrap()
        .build()
        .unwrap();
    let lib = WalletExtMsgBodyV5::from_cell(&unsigned).unwrap();
    let head_first: Vec<u16> = lib
        .msgs
        .iter()
        .map(|m| {
            let a = DecodedAction {
                mode: 3,
                to: w.address().clone(),
                value_nanoton: 0,
                bounce: true,
                body: message_body(m),
            };
            match a.oracle_body().unwrap().payload {
                DecodedPayload::Price { asset_id, .. } => asset_id,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    let mut reversed = ids.to_vec();
    reversed.reverse();
    assert_eq!(head_first, reversed);
}

fn message_body(msg: &Cell) -> tonlib_core::cell::ArcCell {
    tonlib_core::tlb_types::block::message::Message::from_cell(msg)
        .unwrap()
        .body
        .value
}

#[test]
fn action_limits_per_version() {
    let v5 = Wallet::new(keys(4), WalletVersion::V5r1, Network::Mainnet).unwrap();
    let one = outgoing(&v5, &[price("USDT", 1, 1, 1)]);
    let many: Vec<_> = std::iter::repeat_n(one[0].clone(), 256).collect();
    assert!(matches!(
        build_external(&v5, 0, 1, false, &many),
        Err(BuildError::Actions {
            count: 256,
            limit: 255
        })
    ));
    let ext = build_external(&v5, 0, 1, false, &many[..255]).unwrap();
    assert_eq!(
        decode_external(&ext.boc, WalletVersion::V5r1)
            .unwrap()
            .actions
            .len(),
        255
    );
    assert!(matches!(
        build_external(&v5, 0, 1, false, &[]),
        Err(BuildError::Actions { count: 0, .. })
    ));

    let v4 = Wallet::new(keys(4), WalletVersion::V4r2, Network::Mainnet).unwrap();
    assert!(matches!(
        build_external(&v4, 0, 1, false, &many[..5]),
        Err(BuildError::Actions { count: 5, limit: 4 })
    ));
    let ext = build_external(&v4, 0, 1, true, &many[..4]).unwrap();
    assert_eq!(
        decode_external(&ext.boc, WalletVersion::V4r2)
            .unwrap()
            .actions
            .len(),
        4
    );
}

#[test]
fn state_init_only_when_asked_and_it_matches_the_address() {
    let w = Wallet::new(keys(6), WalletVersion::V5r1, Network::Mainnet).unwrap();
    let out = outgoing(&w, &[price("USDT", 1, 1, 1)]);
    let without = decode_external(
        &build_external(&w, 3, 9, false, &out).unwrap().boc,
        WalletVersion::V5r1,
    )
    .unwrap();
    assert!(without.state_init.is_none());
    let with = decode_external(
        &build_external(&w, 0, 9, true, &out).unwrap().boc,
        WalletVersion::V5r1,
    )
    .unwrap();
    let init = with.state_init.unwrap();
    assert_eq!(Cell::cell_hash(&init), w.address().hash_part);
}

#[test]
fn internal_messages_carry_value_and_bounce() {
    let w = Wallet::new(keys(8), WalletVersion::V5r1, Network::Mainnet).unwrap();
    let m = OutgoingMessage {
        to: parse_address(ORACLE).unwrap(),
        value_nanoton: 123_456_789,
        bounce: true,
        body: price("USDT", 1, 1, 1)
            .update
            .body(w.keys())
            .unwrap()
            .to_arc(),
    };
    let cell = internal_message(&m).unwrap();
    let parsed = tonlib_core::tlb_types::block::message::Message::from_cell(&cell).unwrap();
    let tonlib_core::tlb_types::block::message::CommonMsgInfo::Int(info) = parsed.info else {
        panic!("not internal")
    };
    assert!(info.bounce);
    assert!(!info.bounced);
    assert_eq!(info.value.grams.amount, 123_456_789u64.into());
    assert_eq!(parsed.body.value, m.body);
}

#[test]
fn dry_run_summary_matches_design_shape() {
    let w = Wallet::new(
        Arc::new(WalletKeys::ephemeral()),
        WalletVersion::V4r2,
        Network::Mainnet,
    )
    .unwrap();
    let msgs = vec![
        price("USDT", 1, 999_850, 1_760_000_000),
        price("USDC", 2, 1_000_010, 1_760_000_000),
        bridge("wormhole", 3, true, 1_760_000_005),
        price("DAI", 3, 999_990, 1_760_000_000),
        price("TUSD", 5, 998_000, 1_760_000_000),
    ];
    let run = dry_run_offline(&w, &msgs, 50_000_000, 12, 1_760_000_060, true).unwrap();
    // V4R2: 4 + 1, consecutive seqnos, StateInit only for an undeployed wallet.
    assert_eq!(
        run.externals
            .iter()
            .map(|e| (e.seqno, e.actions, e.state_init))
            .collect::<Vec<_>>(),
        [(12, 4, false), (13, 1, false)]
    );
    assert_eq!(run.boc, run.externals[0].boc);
    let v = serde_json::to_value(&run).unwrap();
    let first = &v["messages"][0];
    let mut keys: Vec<_> = first.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "asset",
            "asset_id",
            "op",
            "price_micro",
            "timestamp",
            "to",
            "value_nanoton"
        ]
    );
    assert_eq!(first["op"], "update_price");
    assert_eq!(first["asset"], "USDT");
    assert_eq!(first["price_micro"], 999_850);
    assert_eq!(first["to"], ORACLE);
    assert_eq!(first["value_nanoton"], 50_000_000);
    let b = &v["messages"][2];
    let mut keys: Vec<_> = b.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "bridge",
            "bridge_id",
            "is_online",
            "last_seen",
            "op",
            "to",
            "value_nanoton"
        ]
    );
    assert_eq!(b["op"], "update_bridge_status");
    assert_eq!(b["is_online"], true);
    // Parses back into the typed summary.
    let back: DryRun = serde_json::from_value(v).unwrap();
    assert_eq!(back, run);
    // And every BoC in it verifies with the (ephemeral) wallet key.
    for e in &run.externals {
        let d = decode_external(e.boc.as_bytes(), WalletVersion::V4r2).unwrap();
        assert!(d.verify(w.keys().public_key()));
        assert_eq!(d.seqno, e.seqno);
    }
    let deployed = dry_run_offline(&w, &msgs[..1], 1, 0, 1, false).unwrap();
    assert!(deployed.externals[0].state_init);
}

#[test]
fn garbage_never_panics_the_decoders() {
    for junk in [
        &b""[..],
        b"not a boc",
        b"te6cckEBAQEAAgAAAEysuc0=",
        &[0xb5, 0xee, 0x9c, 0x72, 0, 0, 0],
    ] {
        assert!(decode_external(junk, WalletVersion::V5r1).is_err());
        assert!(decode_external(junk, WalletVersion::V4r2).is_err());
    }
    // A V4R2 message read as V5R1 is an error, not a wrong answer.
    let w = Wallet::new(keys(2), WalletVersion::V4r2, Network::Mainnet).unwrap();
    let ext = build_external(&w, 0, 1, false, &outgoing(&w, &[price("USDT", 1, 1, 1)])).unwrap();
    assert!(decode_external(&ext.boc, WalletVersion::V5r1).is_err());
    assert!(decode_body(&Cell::default()).is_err());
}
