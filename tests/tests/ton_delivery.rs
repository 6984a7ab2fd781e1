//! Delivery against the local toncenter stand-in, over real HTTP: first send with
//! StateInit, normal confirmation, V4R2 chunks, 429/503/hanging retries, 4xx not retried, a lost
//! response (no second body for that seqno), expiry and rebuild, rejection kept in flight, and
//! read-back mismatches reported as errors.

use std::sync::Arc;
use std::time::Duration;

use keeper_runtime::retry;
use keeper_runtime::secret::Secret;
use keeper_runtime::telemetry::metrics::Metrics;
use keeper_tests::toncenter::{ExternalOutcome, Fault, NumberStyle, ToncenterServer};
use keeper_ton::metrics::ChainMetrics;
use keeper_ton::*;
use keeper_ton::{Network, WalletVersion};

const TON: u128 = 1_000_000_000;

struct Rig {
    chain: ToncenterServer,
    wallet: Wallet,
    oracle: TonAddress,
    metrics: Arc<Metrics>,
}

fn config() -> DeliveryConfig {
    DeliveryConfig {
        value_nanoton: 50_000_000,
        auto_value: None,
        ttl: Duration::from_secs(60),
        poll_interval: Duration::from_millis(20),
        confirm_timeout: Duration::from_secs(10),
        readback_timeout: Duration::from_millis(300),
        max_rebuilds: 2,
    }
}

fn client(url: &str, key: Option<&str>, timeout: Duration) -> Toncenter {
    Toncenter::with_endpoint(url, key.map(Secret::shared), timeout)
        .unwrap()
        .with_retry(retry::backoff(
            4,
            Duration::from_millis(10),
            Duration::from_millis(50),
        ))
}

/// Moves the stand-in's chain time past each swallowed external's `valid_until` plus the landing
/// margin as soon as it is sent: expiry is proven only past the margin, which a test should not
/// wait out in real time.
fn expire_swallowed(chain: &ToncenterServer) -> tokio::task::JoinHandle<()> {
    let chain = chain.clone();
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let ext = chain.externals();
            for e in ext.iter().skip(seen) {
                if e.outcome == ExternalOutcome::Swallowed {
                    let past = u64::from(e.valid_until.unwrap_or(0)) + LANDING_MARGIN_SECS + 1;
                    chain.advance_chain_time(past.saturating_sub(chain.chain_time()));
                }
            }
            seen = ext.len();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// A chain with an oracle that knows the wallet's key; the wallet is funded, and deployed at
/// seqno 5 when `deployed`.
async fn rig(version: WalletVersion, seed: u8, deployed: bool) -> Rig {
    let chain = ToncenterServer::start().await;
    let keys = Arc::new(WalletKeys::from_seed(&[seed; 32]).unwrap());
    let wallet = Wallet::new(keys.clone(), version, Network::Mainnet).unwrap();
    if deployed {
        chain.deploy(&wallet, 5, 10 * TON);
    } else {
        chain.fund(wallet.address(), 10 * TON);
    }
    let oracle = chain.new_oracle();
    chain.register_keeper(&oracle, keys.public_key());
    Rig {
        chain,
        wallet,
        oracle,
        metrics: Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>()),
    }
}

impl Rig {
    fn delivery(&self, url: &str, config: DeliveryConfig) -> Delivery<Toncenter> {
        self.delivery_with(client(url, None, Duration::from_secs(2)), config)
    }

    fn delivery_with(&self, transport: Toncenter, config: DeliveryConfig) -> Delivery<Toncenter> {
        Delivery::new(transport, self.wallet.clone(), config).with_metrics(self.metrics.clone())
    }

    fn prices(&self, ids: &[u16], ts: u32) -> Vec<OracleMessage> {
        ids.iter()
            .map(|&id| {
                OracleMessage::new(
                    self.oracle.clone(),
                    OracleUpdate::Price(PriceUpdate {
                        asset: format!("A{id}"),
                        asset_id: id,
                        price_micro: 999_000 + u64::from(id),
                        timestamp: ts,
                    }),
                )
            })
            .collect()
    }

    fn accepted_ids(&self) -> Vec<u16> {
        self.chain
            .oracle_events()
            .iter()
            .filter(|e| e.accepted)
            .map(|e| e.id)
            .collect()
    }

    fn metric(&self, line_start: &str) -> Option<f64> {
        keeper_tests::sample(&self.metrics.render(), line_start)
    }
}

#[tokio::test]
async fn first_send_deploys_with_state_init_and_lands_in_config_order() {
    let r = rig(WalletVersion::V5r1, 1, false).await;
    r.chain.require_api_key(Some("k-123"));
    let d = r.delivery_with(
        client(
            &r.chain.jsonrpc_url(),
            Some("k-123"),
            Duration::from_secs(2),
        ),
        config(),
    );
    let ids = [4u16, 1, 6, 2, 5, 3];
    let ts = keeper_tests::unix_now() - 5;
    let report = d.deliver(&r.prices(&ids, ts)).await.unwrap();

    assert_eq!(report.batches.len(), 1);
    let b = &report.batches[0];
    assert_eq!(
        (b.seqno, b.actions, b.state_init, b.rebuilds),
        (0, 6, true, 0)
    );
    assert!(
        b.transaction.is_some(),
        "the wallet transaction is found through getTransactions"
    );
    assert!(r.chain.is_deployed(r.wallet.address()));
    assert_eq!(r.chain.seqno(r.wallet.address()), Some(1));
    // The chain executed the oracle messages in config order, and every one is stored.
    assert_eq!(r.accepted_ids(), ids);
    for id in ids {
        assert_eq!(
            r.chain.price(&r.oracle, id),
            Some((999_000 + u128::from(id), ts))
        );
    }
    assert!(
        report
            .read_back
            .iter()
            .all(|x| x.landed && x.onchain_timestamp == Some(ts))
    );
    // One external, accepted; every request carried the key and went through JSON-RPC.
    let ext = r.chain.externals();
    assert_eq!(ext.len(), 1);
    assert_eq!(ext[0].outcome, ExternalOutcome::Accepted);
    assert!(ext[0].state_init);
    assert!(
        r.chain
            .requests()
            .iter()
            .all(|q| q.json_rpc && q.api_key.as_deref() == Some("k-123"))
    );
    // 10 TON - gas - 6 × (0.05 value + forward fee)
    assert_eq!(
        r.chain.balance(r.wallet.address()),
        10 * TON - 3_000_000 - 6 * 51_000_000
    );

    let op = "{op=\"update_price\",";
    assert_eq!(
        r.metric(&format!("keeper_ton_messages_total{op}outcome=\"sent\"}}")),
        Some(6.0)
    );
    assert_eq!(
        r.metric(&format!(
            "keeper_ton_messages_total{op}outcome=\"confirmed\"}}"
        )),
        Some(6.0)
    );
    assert_eq!(
        r.metric(&format!(
            "keeper_ton_messages_total{op}outcome=\"landed\"}}"
        )),
        Some(6.0)
    );
    assert_eq!(r.metric("keeper_update_success_total"), Some(6.0));
    assert_eq!(r.metric("keeper_update_latency_seconds_count"), Some(1.0));
    // Gauges hold the last read: after confirmation.
    assert_eq!(
        r.metric(&format!(
            "keeper_wallet_seqno{{wallet=\"{}\"}}",
            r.wallet.label()
        )),
        Some(1.0)
    );
    let left = (10 * TON - 3_000_000 - 6 * 51_000_000) as f64 / 1e9;
    assert_eq!(
        r.metric(&format!(
            "keeper_wallet_balance_ton{{wallet=\"{}\"}}",
            r.wallet.label()
        )),
        Some(left)
    );
    assert_eq!(
        r.metric("pricing_oracle_last_update_timestamp{asset=\"A4\"}"),
        Some(f64::from(ts))
    );
}

#[tokio::test]
async fn deployed_wallet_confirms_by_seqno_over_rest_with_decimal_stacks() {
    let r = rig(WalletVersion::V5r1, 2, true).await;
    r.chain.set_number_style(NumberStyle::Decimal);
    let d = r.delivery(&r.chain.rest_url(), config());
    let ts = keeper_tests::unix_now() - 1;
    let msgs = vec![
        OracleMessage::new(
            r.oracle.clone(),
            OracleUpdate::BridgeStatus(BridgeStatusUpdate {
                bridge: "wormhole".into(),
                bridge_id: 3,
                is_online: true,
                last_seen: ts,
            }),
        ),
        OracleMessage::new(
            r.oracle.clone(),
            OracleUpdate::BridgeStatus(BridgeStatusUpdate {
                bridge: "axelar".into(),
                bridge_id: 4,
                is_online: false,
                last_seen: ts,
            }),
        ),
    ];
    let report = d.deliver(&msgs).await.unwrap();
    assert_eq!(
        (report.batches[0].seqno, report.batches[0].state_init),
        (5, false)
    );
    assert_eq!(r.chain.seqno(r.wallet.address()), Some(6));
    assert_eq!(r.chain.bridge_status(&r.oracle, 3), Some((true, ts)));
    assert_eq!(r.chain.bridge_status(&r.oracle, 4), Some((false, ts)));
    assert_eq!(
        report
            .read_back
            .iter()
            .map(|x| x.onchain_value)
            .collect::<Vec<_>>(),
        [Some(1), Some(0)]
    );
    assert!(r.chain.requests().iter().all(|q| !q.json_rpc));
    assert_eq!(
        read_bridge_status(d.transport(), &r.oracle, 3)
            .await
            .unwrap(),
        (true, ts)
    );

    // A second delivery takes the next seqno.
    let again = d.deliver(&r.prices(&[1], ts)).await.unwrap();
    assert_eq!(again.batches[0].seqno, 6);
    assert_eq!(
        read_price(d.transport(), &r.oracle, 1).await.unwrap(),
        (999_001, ts)
    );
}

#[tokio::test]
async fn v4r2_sends_chunks_of_four_each_confirmed_before_the_next() {
    let r = rig(WalletVersion::V4r2, 3, false).await;
    let d = r.delivery(&r.chain.jsonrpc_url(), config());
    let ids = [6u16, 5, 4, 3, 2, 1];
    let report = d
        .deliver(&r.prices(&ids, keeper_tests::unix_now()))
        .await
        .unwrap();
    let shape: Vec<_> = report
        .batches
        .iter()
        .map(|b| (b.seqno, b.actions, b.state_init))
        .collect();
    assert_eq!(shape, [(0, 4, true), (1, 2, false)]);
    assert_eq!(r.accepted_ids(), ids);
    let ext = r.chain.externals();
    assert_eq!(
        ext.iter().map(|e| e.seqno).collect::<Vec<_>>(),
        [Some(0), Some(1)]
    );
    assert!(ext.iter().all(|e| e.outcome == ExternalOutcome::Accepted));
}

#[tokio::test]
async fn rate_limits_unavailable_and_hanging_requests_are_retried() {
    let r = rig(WalletVersion::V5r1, 4, true).await;
    r.chain
        .inject("getWalletInformation", Fault::Unavailable, 1);
    r.chain.inject(
        "getAddressInformation",
        Fault::Hang(Duration::from_secs(3)),
        1,
    );
    r.chain.inject(
        "sendBocReturnHash",
        Fault::RateLimited {
            retry_after: Some(1),
        },
        2,
    );
    let d = r.delivery_with(
        client(&r.chain.jsonrpc_url(), None, Duration::from_millis(500)),
        config(),
    );
    let started = std::time::Instant::now();
    let report = d
        .deliver(&r.prices(&[1, 2], keeper_tests::unix_now()))
        .await
        .unwrap();
    assert!(report.read_back.iter().all(|x| x.landed));
    // Retry-After: 1 was honoured between the 429s.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let statuses = |m: &str| {
        r.chain
            .requests()
            .iter()
            .filter(|q| q.method == m)
            .map(|q| q.status)
            .collect::<Vec<_>>()
    };
    // The oracle's transactions told the result: nothing was read back.
    assert_eq!(r.chain.count("runGetMethod"), 0);
    r.chain.inject("runGetMethod", Fault::LiteserverTimeout, 1);
    let stored = keeper_ton::read_price(d.transport(), &r.oracle, 1)
        .await
        .unwrap();
    assert_eq!(
        stored.0, 999_001,
        "the retried get-method read what was delivered"
    );
    assert_eq!(statuses("sendBocReturnHash"), [429, 429, 200]);
    assert_eq!(&statuses("getWalletInformation")[..2], [503, 200]);
    assert_eq!(statuses("runGetMethod"), [504, 200]);
    // The hanging getAddressInformation timed out and was asked again.
    assert!(r.chain.count("getAddressInformation") >= 2);
    // Only one message, accepted once.
    let ext = r.chain.externals();
    assert_eq!(ext.len(), 1);
    assert_eq!(ext[0].outcome, ExternalOutcome::Accepted);
}

#[tokio::test]
async fn client_errors_are_not_retried_and_keep_the_status() {
    let r = rig(WalletVersion::V5r1, 5, true).await;
    r.chain.require_api_key(Some("right"));
    let d = r.delivery_with(
        client(
            &r.chain.jsonrpc_url(),
            Some("wrong-key-hunter2"),
            Duration::from_secs(2),
        ),
        config(),
    );
    let err = d
        .deliver(&r.prices(&[1], keeper_tests::unix_now()))
        .await
        .unwrap_err();
    let DeliveryError::Transport { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(source.status(), Some(401));
    assert!(err.to_string().contains("API key does not exist"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert_eq!(r.chain.requests().len(), 1, "a 401 is not retried");
    assert!(r.chain.externals().is_empty());
}

#[tokio::test]
async fn lost_response_never_produces_a_second_body_for_the_seqno() {
    for fault in [
        Fault::LoseResponse,
        Fault::ApplyThenHang(Duration::from_secs(2)),
    ] {
        let r = rig(WalletVersion::V5r1, 6, true).await;
        r.chain.inject("sendBocReturnHash", fault.clone(), 1);
        let d = r.delivery_with(
            client(&r.chain.jsonrpc_url(), None, Duration::from_millis(700)),
            config(),
        );
        let report = d
            .deliver(&r.prices(&[1, 2, 3], keeper_tests::unix_now()))
            .await
            .unwrap();
        assert_eq!(report.batches[0].seqno, 5, "{fault:?}");
        assert_eq!(r.chain.seqno(r.wallet.address()), Some(6));
        let ext = r.chain.externals();
        assert!(!ext.is_empty());
        // Every copy that arrived for seqno 5 is the same body.
        let first = ext[0].body_hash;
        assert!(
            ext.iter()
                .all(|e| e.seqno == Some(5) && e.body_hash == first),
            "{fault:?}: {ext:?}"
        );
        assert_eq!(
            ext.iter()
                .filter(|e| e.outcome == ExternalOutcome::Accepted)
                .count(),
            1
        );
        // Each update landed exactly once.
        assert_eq!(r.accepted_ids(), [1, 2, 3]);
        assert!(report.read_back.iter().all(|x| x.landed));
        assert_eq!(d.in_flight().await, None);
    }
}

#[tokio::test]
async fn expired_message_is_rebuilt_only_after_it_cannot_land() {
    let r = rig(WalletVersion::V5r1, 7, true).await;
    // The first copy is acknowledged but never included.
    r.chain.inject("sendBocReturnHash", Fault::Swallow, 1);
    let cfg = DeliveryConfig {
        ttl: Duration::from_secs(2),
        ..config()
    };
    let d = r.delivery(&r.chain.jsonrpc_url(), cfg);
    let clock = expire_swallowed(&r.chain);
    let report = d
        .deliver(&r.prices(&[1, 2], keeper_tests::unix_now() - 10))
        .await
        .unwrap();
    clock.abort();
    let b = &report.batches[0];
    assert_eq!((b.seqno, b.rebuilds), (5, 1));
    let ext = r.chain.externals();
    assert_eq!(ext.len(), 2);
    assert_eq!(ext[0].outcome, ExternalOutcome::Swallowed);
    assert_eq!(ext[1].outcome, ExternalOutcome::Accepted);
    // Same seqno, a new body with a later valid_until: signed only once the first had expired.
    assert_eq!((ext[0].seqno, ext[1].seqno), (Some(5), Some(5)));
    assert_ne!(ext[0].body_hash, ext[1].body_hash);
    assert!(ext[1].valid_until > ext[0].valid_until);
    // The first body can no longer land anywhere: its seqno is used and it is expired.
    let e = r.chain.submit(&ext[0].boc).unwrap_err();
    assert!(e.contains("cannot apply external message"), "{e}");
    assert_eq!(r.accepted_ids(), [1, 2]);
    let expired = "keeper_ton_messages_total{op=\"update_price\",outcome=\"expired\"}";
    assert_eq!(r.metric(expired), Some(2.0));
}

#[tokio::test]
async fn expiry_gives_up_after_the_allowed_rebuilds() {
    let r = rig(WalletVersion::V5r1, 8, true).await;
    r.chain.inject("sendBocReturnHash", Fault::Swallow, 10);
    let cfg = DeliveryConfig {
        ttl: Duration::from_secs(1),
        max_rebuilds: 1,
        ..config()
    };
    let d = r.delivery(&r.chain.jsonrpc_url(), cfg);
    let clock = expire_swallowed(&r.chain);
    let err = d
        .deliver(&r.prices(&[1], keeper_tests::unix_now()))
        .await
        .unwrap_err();
    clock.abort();
    assert!(
        matches!(
            err,
            DeliveryError::Expired {
                seqno: 5,
                attempts: 2
            }
        ),
        "{err:?}"
    );
    assert_eq!(r.chain.externals().len(), 2);
    assert_eq!(r.chain.seqno(r.wallet.address()), Some(5));
    assert_eq!(
        d.in_flight().await,
        None,
        "expired messages cannot land: nothing stays in flight"
    );
}

#[tokio::test]
async fn a_rejected_message_stays_in_flight_until_it_expires() {
    let r = rig(WalletVersion::V5r1, 9, false).await;
    // Refused for a reason the keeper cannot judge (a wallet too poor for gas is not one: that
    // ends the delivery as unfunded, see wallet_unfunded.rs): it may still land elsewhere.
    let poor = ToncenterServer::start().await;
    let oracle = poor.new_oracle();
    poor.register_keeper(&oracle, r.wallet.keys().public_key());
    poor.fund(r.wallet.address(), 10 * TON);
    poor.inject(
        "sendBocReturnHash",
        Fault::Refuse(0, "state not yet known to this liteserver".into()),
        1,
    );
    let cfg = DeliveryConfig {
        ttl: Duration::from_secs(2),
        confirm_timeout: Duration::from_millis(400),
        ..config()
    };
    let d = r.delivery(&poor.jsonrpc_url(), cfg);
    let msgs = vec![OracleMessage::new(
        oracle.clone(),
        OracleUpdate::Price(PriceUpdate {
            asset: "USDT".into(),
            asset_id: 1,
            price_micro: 1_000_000,
            timestamp: keeper_tests::unix_now() - 5,
        }),
    )];
    let err = d.deliver(&msgs).await.unwrap_err();
    let DeliveryError::Rejected { seqno: 0, error } = &err else {
        panic!("{err:?}")
    };
    assert!(error.contains("cannot apply external message"), "{error}");
    let (seqno, valid_until) = d.in_flight().await.expect("kept in flight");
    assert_eq!(seqno, 0);

    // While it could still land, a new call signs nothing new.
    let err = d.deliver(&msgs).await.unwrap_err();
    assert!(
        matches!(err, DeliveryError::InFlight { seqno: 0, .. }),
        "{err:?}"
    );
    assert_eq!(poor.externals().len(), 1);

    // At valid_until plus the landing margin it still counts as able to land.
    let margin_end = u64::from(valid_until) + LANDING_MARGIN_SECS;
    poor.set_chain_time(margin_end);
    let err = d.deliver(&msgs).await.unwrap_err();
    assert!(
        matches!(err, DeliveryError::InFlight { seqno: 0, .. }),
        "{err:?}"
    );
    // Once chain time passes its valid_until and the margin the old body is dead and a new one
    // goes out.
    poor.set_chain_time(margin_end + 1);
    let report = d.deliver(&msgs).await.unwrap();
    assert_eq!(report.batches[0].seqno, 0);
    let ext = poor.externals();
    assert_eq!(ext.len(), 2);
    assert!(ext[1].valid_until > ext[0].valid_until);
    assert_eq!(poor.price(&oracle, 1).map(|p| p.0), Some(1_000_000));
}

#[tokio::test]
async fn updates_that_did_not_land_are_an_error() {
    let r = rig(WalletVersion::V5r1, 10, true).await;
    // An oracle that never registered this keeper ignores (and bounces) its updates.
    let stranger = r.chain.new_oracle();
    let ts = keeper_tests::unix_now() - 3;
    let msgs: Vec<_> = r
        .prices(&[1, 2], ts)
        .into_iter()
        .map(|m| OracleMessage::new(stranger.clone(), m.update))
        .collect();
    let err = d_deliver(&r, &msgs).await;
    let DeliveryError::NotLanded { missing, report } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(missing.len(), 2);
    assert_eq!(report.batches.len(), 1, "the external itself was confirmed");
    assert!(
        missing
            .iter()
            .all(|m| !m.landed && m.onchain_timestamp == Some(0))
    );
    assert!(
        err.to_string().contains("2 of 2 updates did not land"),
        "{err}"
    );
    assert!(
        r.chain.oracle_events().iter().all(|e| !e.accepted
            && e.reason.as_deref() == Some("signature is not by a registered keeper"))
    );
    assert_eq!(r.chain.price(&stranger, 1), None);
    assert_eq!(
        r.metric("keeper_ton_messages_total{op=\"update_price\",outcome=\"not_landed\"}"),
        Some(2.0)
    );

    // Mixed: updates to the oracle that knows the keeper land, the others are reported.
    let mixed = vec![
        r.prices(&[1], ts).remove(0),
        OracleMessage::new(stranger.clone(), r.prices(&[2], ts).remove(0).update),
    ];
    let err = d_deliver(&r, &mixed).await;
    let DeliveryError::NotLanded { missing, report } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(missing.iter().map(|m| m.id).collect::<Vec<_>>(), [2]);
    assert!(report.read_back[0].landed);
    assert_eq!(r.chain.price(&r.oracle, 1), Some((999_001, ts)));

    // A newer value already on chain (another keeper published later) supersedes ours: that is
    // not a failure to deliver.
    r.chain.set_price(&r.oracle, 3, 1, ts + 100);
    let report = r
        .delivery(&r.chain.jsonrpc_url(), config())
        .deliver(&r.prices(&[3], ts))
        .await
        .unwrap();
    assert_eq!(report.read_back[0].onchain_timestamp, Some(ts + 100));
    assert!(report.read_back[0].landed);
}

async fn d_deliver(r: &Rig, msgs: &[OracleMessage]) -> DeliveryError {
    r.delivery(&r.chain.jsonrpc_url(), config())
        .deliver(msgs)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn dry_run_signs_everything_and_sends_nothing() {
    let r = rig(WalletVersion::V5r1, 11, false).await;
    let d = r.delivery(&r.chain.jsonrpc_url(), config());
    let (run, chain_now) = d
        .dry_run(&r.prices(&[3, 1, 2], 1_760_000_000))
        .await
        .unwrap();
    assert_eq!(chain_now, r.chain.chain_time());
    assert_eq!(r.chain.count("sendBocReturnHash"), 0);
    assert!(r.chain.externals().is_empty());
    assert_eq!(run.externals.len(), 1);
    assert!(
        run.externals[0].state_init,
        "the wallet is not deployed yet"
    );
    assert_eq!(
        run.messages
            .iter()
            .map(|m| m.to.clone())
            .collect::<Vec<_>>(),
        vec![r.oracle.to_base64_url(); 3]
    );
    let ids: Vec<_> = run
        .messages
        .iter()
        .map(|m| match &m.subject {
            keeper_ton::SummarySubject::Price { asset_id, .. } => *asset_id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, [3, 1, 2]);
    // Really signed by the wallet key, but valid_until lies in the past: submitted by hand,
    // over the same HTTP API the keeper uses, the wallet refuses it as expired.
    assert_eq!(
        u64::from(run.externals[0].valid_until),
        chain_now - DRY_RUN_EXPIRED_BY_SECONDS
    );
    let answer = reqwest::Client::new()
        .post(format!("{}sendBoc", r.chain.rest_url()))
        .json(&serde_json::json!({ "boc": run.boc }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 500);
    let body = answer.text().await.unwrap();
    assert!(body.contains("cannot apply external message"), "{body}");
    assert_eq!(r.chain.externals().len(), 1);
    match &r.chain.externals()[0].outcome {
        ExternalOutcome::Rejected(why) => assert!(why.contains("exitcode=136"), "{why}"),
        other => panic!("a dry run was not rejected: {other:?}"),
    }
    assert_eq!(r.chain.price(&r.oracle, 3), None, "nothing landed");
    assert!(!r.chain.is_deployed(r.wallet.address()));
    assert_eq!(
        r.metric("keeper_ton_messages_total{op=\"update_price\",outcome=\"dry_run\"}"),
        Some(3.0)
    );
}

#[tokio::test]
async fn unreachable_chain_is_a_transport_error() {
    let r = rig(WalletVersion::V5r1, 12, true).await;
    let d = r.delivery_with(
        client(
            "http://127.0.0.1:9/api/v2/jsonRPC",
            None,
            Duration::from_millis(300),
        ),
        config(),
    );
    let err = d
        .deliver(&r.prices(&[1], keeper_tests::unix_now()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "transport");
    assert!(err.to_string().contains("getWalletInformation"), "{err}");
}

#[tokio::test]
async fn a_seqno_taken_by_another_body_is_reported_as_such_not_as_ours() {
    let r = rig(WalletVersion::V5r1, 13, true).await;
    // The first body is acknowledged and never included.
    r.chain.inject("sendBocReturnHash", Fault::Swallow, 1);
    let cfg = DeliveryConfig {
        confirm_timeout: Duration::from_millis(300),
        ..config()
    };
    let d = r.delivery(&r.chain.jsonrpc_url(), cfg.clone());
    let err = d
        .deliver(&r.prices(&[1], keeper_tests::unix_now() - 5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "unconfirmed", "{err:?}");
    // Another sender (its own journal) takes seqno 5 with another body.
    let other = r.delivery(&r.chain.jsonrpc_url(), cfg);
    let report = other
        .deliver(&r.prices(&[2], keeper_tests::unix_now() - 4))
        .await
        .unwrap();
    assert_eq!(report.batches[0].seqno, 5);
    // The seqno moved, the wallet's listing reaches back past the build and holds the other
    // external, not ours: not counted as confirmed; the update goes out again at seqno 6.
    let report = d
        .deliver(&r.prices(&[1], keeper_tests::unix_now() - 3))
        .await
        .unwrap();
    assert_eq!(report.batches[0].seqno, 6);
    let other_landed = "keeper_ton_messages_total{op=\"update_price\",outcome=\"other_landed\"}";
    assert_eq!(r.metric(other_landed), Some(1.0));
    let confirmed = "keeper_ton_messages_total{op=\"update_price\",outcome=\"confirmed\"}";
    assert_eq!(
        r.metric(confirmed),
        Some(2.0),
        "the other sender's and the resend"
    );
}

/// A cycle timeout cuts a delivery while its message waits for a slow block. The next call must
/// not spend its own cycle waiting for that message: within the earlier-settle bound it reports
/// it as in flight. Once the message is included, the next call confirms it and sends its own.
#[tokio::test]
async fn a_delivery_cut_by_the_cycle_timeout_is_settled_without_cutting_the_next_cycle() {
    let r = rig(WalletVersion::V5r1, 21, true).await;
    r.chain.set_inclusion_delay(Duration::from_millis(2500));
    let cfg = DeliveryConfig {
        poll_interval: Duration::from_secs(2),
        confirm_timeout: Duration::from_secs(60),
        ..config()
    };
    let d = r
        .delivery(&r.chain.jsonrpc_url(), cfg)
        .with_earlier_settle_timeout(Duration::from_millis(400));
    let msgs = r.prices(&[1], keeper_tests::unix_now() - 5);

    // Cycle 1: cut one second in, after the send and before the block.
    let cut = tokio::time::timeout(Duration::from_secs(1), d.deliver(&msgs)).await;
    assert!(cut.is_err(), "the first cycle was cut: {cut:?}");
    assert_eq!(
        r.chain.held_externals(),
        1,
        "its message went out, not yet in a block"
    );
    assert_eq!(d.in_flight().await.map(|(seqno, _)| seqno), Some(5));

    // Cycle 2, still before the block: answers well inside a one-second cycle.
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(1), d.deliver(&msgs))
        .await
        .expect("the second cycle is not cut")
        .unwrap_err();
    assert!(
        matches!(err, DeliveryError::InFlight { seqno: 5, .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        r.chain.held_externals() + r.chain.externals().len(),
        1,
        "nothing new signed meanwhile"
    );

    // After the block: the earlier message is confirmed and this call's own goes out at seqno 6.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let report = d.deliver(&msgs).await.unwrap();
    assert_eq!(report.batches[0].seqno, 6);
    let seqnos: Vec<Option<u32>> = r.chain.externals().iter().map(|e| e.seqno).collect();
    assert_eq!(seqnos, [Some(5), Some(6)]);
}

/// Confirmation polls start soon after the send and back off to the poll interval.
#[test]
fn confirmation_polls_start_soon_and_back_off_to_the_poll_interval() {
    let every = Duration::from_secs(2);
    let delays: Vec<u128> = (0..6)
        .map(|round| confirmation_poll_delay(round, every).as_millis())
        .collect();
    assert_eq!(delays, [250, 500, 1000, 2000, 2000, 2000]);
    assert_eq!(
        confirmation_poll_delay(u32::MAX, every),
        every,
        "no overflow however long it waits"
    );
    assert_eq!(
        confirmation_poll_delay(0, Duration::from_millis(100)),
        Duration::from_millis(100),
        "never slower than a shorter poll interval"
    );
}
