use super::*;
use crate::config::{Check, SignalSpec};
use serde_json::json;

fn bridge() -> BridgeSpec {
    let spec = |name: &str| SignalSpec {
        name: name.into(),
        weight: 1.0,
        timeout: None,
        attempts: None,
        check: Check::WormholeHealth(toml::from_str("").unwrap()),
    };
    BridgeSpec {
        id: 2,
        name: "orbit".into(),
        display_name: "Orbit Bridge".into(),
        signals: vec![spec("tvl:orbit-bridge"), spec("peg:oUSDT")],
    }
}

fn r(name: &str, verdict: Verdict) -> SignalReport {
    SignalReport {
        signal: name.into(),
        kind: "tvl",
        verdict,
        value: if verdict == Verdict::Unknown {
            serde_json::Value::Null
        } else {
            json!({"x": 1})
        },
        why: format!("{name} says {verdict}"),
        active: false,
        weight: 1.0,
        held: None,
        observed_at: None,
    }
}

const NOW: i64 = 1_767_225_600;

#[test]
fn all_healthy_is_healthy_online_and_seen_now() {
    let mut m = Memory::default();
    let d = decide(
        &bridge(),
        vec![r("a", Verdict::Healthy), r("b", Verdict::Healthy)],
        &mut m,
        900,
        1,
        NOW,
    );
    assert_eq!(
        (d.status, d.score, d.is_online, d.last_seen),
        (Status::Healthy, 1.0, Some(true), Some(NOW))
    );
    assert_eq!(d.reason, "2 of 2 signals healthy");
}

#[test]
fn worst_verdict_decides_and_is_named() {
    let mut m = Memory {
        last_seen: Some(NOW - 500),
        ..Memory::default()
    };
    let d = decide(
        &bridge(),
        vec![
            r("tvl:orbit-bridge", Verdict::Critical),
            r("peg:oUSDT", Verdict::Degraded),
        ],
        &mut m,
        900,
        1,
        NOW,
    );
    assert_eq!(d.status, Status::Offline);
    assert_eq!(d.score, 0.0625);
    assert_eq!(d.is_online, Some(false));
    assert_eq!(
        d.last_seen,
        Some(NOW - 500),
        "offline keeps the last sighting"
    );
    assert_eq!(d.deciding, ["tvl:orbit-bridge"]);
    assert!(
        d.reason.starts_with("tvl:orbit-bridge critical:"),
        "{}",
        d.reason
    );

    let d = decide(
        &bridge(),
        vec![r("a", Verdict::Healthy), r("b", Verdict::Degraded)],
        &mut m,
        900,
        1,
        NOW,
    );
    assert_eq!(
        (d.status, d.score, d.is_online),
        (Status::Degraded, 0.5, Some(true))
    );
}

#[test]
fn activity_moves_last_seen_even_when_offline() {
    let mut m = Memory::default();
    let mut active = r("volume", Verdict::Healthy);
    active.active = true;
    let d = decide(
        &bridge(),
        vec![r("tvl", Verdict::Critical), active],
        &mut m,
        900,
        1,
        NOW,
    );
    assert_eq!((d.status, d.last_seen), (Status::Offline, Some(NOW)));
}

#[test]
fn unknown_is_never_healthy() {
    let mut m = Memory::default();
    // One unreadable signal: left out of the score, status from the rest.
    let d = decide(
        &bridge(),
        vec![r("a", Verdict::Healthy), r("b", Verdict::Unknown)],
        &mut m,
        900,
        1,
        NOW,
    );
    assert_eq!((d.status, d.score), (Status::Healthy, 1.0));
    assert_eq!(d.deciding, ["a"]);
    assert_eq!(d.reason, "1 of 2 signals healthy, 1 unknown");
    assert_eq!(d.signals[1].verdict, Verdict::Unknown);
    // Every signal unreadable: unknown, no is_online, nothing to publish.
    let d = decide(
        &bridge(),
        vec![r("a", Verdict::Unknown), r("b", Verdict::Unknown)],
        &mut m,
        900,
        1,
        NOW + 60,
    );
    assert_eq!(
        (d.status, d.score, d.is_online),
        (Status::Unknown, 0.0, None)
    );
    assert_eq!(d.last_seen, Some(NOW), "the earlier sighting is kept");
    assert!(matches!(plan(&d, &m, None, 900, true), Action::Withhold(_)));
}

#[test]
fn a_sick_signal_that_turns_unreadable_keeps_its_verdict_for_a_while() {
    let mut m = Memory::default();
    decide(
        &bridge(),
        vec![r("a", Verdict::Healthy), r("b", Verdict::Critical)],
        &mut m,
        900,
        1,
        NOW,
    );
    let d = decide(
        &bridge(),
        vec![r("a", Verdict::Healthy), r("b", Verdict::Unknown)],
        &mut m,
        900,
        1,
        NOW + 600,
    );
    assert_eq!(d.status, Status::Offline);
    assert_eq!(d.signals[1].held, Some(Verdict::Critical));
    assert!(d.reason.contains("held while unreadable"), "{}", d.reason);
    // After the hold, the unreadable signal no longer counts either way.
    let d = decide(
        &bridge(),
        vec![r("a", Verdict::Healthy), r("b", Verdict::Unknown)],
        &mut m,
        900,
        1,
        NOW + 1000,
    );
    assert_eq!(d.status, Status::Healthy);
    // A healthy reading clears the hold at once.
    let mut m = Memory::default();
    decide(
        &bridge(),
        vec![r("b", Verdict::Degraded)],
        &mut m,
        900,
        1,
        NOW,
    );
    decide(
        &bridge(),
        vec![r("b", Verdict::Healthy)],
        &mut m,
        900,
        1,
        NOW + 60,
    );
    let d = decide(
        &bridge(),
        vec![r("a", Verdict::Healthy), r("b", Verdict::Unknown)],
        &mut m,
        900,
        1,
        NOW + 120,
    );
    assert_eq!(d.status, Status::Healthy);
}

#[test]
fn weights_shape_the_score() {
    let mut m = Memory::default();
    let mut heavy = r("a", Verdict::Degraded);
    heavy.weight = 3.0;
    let d = decide(
        &bridge(),
        vec![heavy, r("b", Verdict::Healthy)],
        &mut m,
        900,
        1,
        NOW,
    );
    assert_eq!(d.score, 0.375, "mean 0.625 placed in the degraded band");
}

fn decided(status: Status) -> BridgeDecision {
    BridgeDecision {
        bridge_id: 2,
        bridge: "orbit".into(),
        status,
        score: 1.0,
        is_online: (status != Status::Unknown).then_some(status != Status::Offline),
        last_seen: Some(NOW),
        observed_at: Some(NOW),
        deciding: vec![],
        reason: "r".into(),
        signals: vec![],
    }
}

#[test]
fn publish_on_change_or_heartbeat_only() {
    let mut m = Memory::default();
    let healthy = decided(Status::Healthy);
    assert_eq!(
        plan(&healthy, &m, None, 900, false),
        Action::Publish(PublishReason::Initial)
    );
    // After a restart: the chain agrees and is fresh → skip; stale → heartbeat.
    let fresh = OnChain {
        is_online: true,
        last_seen: NOW - 100,
    };
    assert!(matches!(
        plan(&healthy, &m, Some(fresh), 900, false),
        Action::Skip(_)
    ));
    let stale = OnChain {
        is_online: true,
        last_seen: NOW - 900,
    };
    assert_eq!(
        plan(&healthy, &m, Some(stale), 900, false),
        Action::Publish(PublishReason::Heartbeat)
    );
    let off = OnChain {
        is_online: false,
        last_seen: NOW,
    };
    assert_eq!(
        plan(&healthy, &m, Some(off), 900, false),
        Action::Publish(PublishReason::StatusChange)
    );
    m.published = Some(Published {
        status: Status::Healthy,
        is_online: true,
        last_seen: NOW,
        at: NOW,
    });
    // The heartbeat follows the observation time, not the clock.
    let seen = |t: i64| BridgeDecision {
        last_seen: Some(t),
        observed_at: Some(t),
        ..decided(Status::Healthy)
    };
    assert!(matches!(
        plan(&seen(NOW + 899), &m, None, 900, false),
        Action::Skip(_)
    ));
    assert_eq!(
        plan(&seen(NOW + 900), &m, None, 900, false),
        Action::Publish(PublishReason::Heartbeat)
    );
    // healthy → degraded keeps is_online but is a status change.
    assert_eq!(
        plan(&decided(Status::Degraded), &m, None, 900, false),
        Action::Publish(PublishReason::StatusChange)
    );
    assert_eq!(
        plan(&healthy, &m, None, 900, true),
        Action::Publish(PublishReason::Forced)
    );
}

#[test]
fn last_seen_is_the_newest_observation_behind_the_verdict_and_never_goes_back() {
    let mut m = Memory::default();
    let at = |name: &str, t: i64| SignalReport {
        observed_at: Some(t),
        ..r(name, Verdict::Healthy)
    };
    // Lagging upstreams: the clock says NOW, the data says earlier.
    let d = decide(
        &bridge(),
        vec![at("a", NOW - 600), at("b", NOW - 300)],
        &mut m,
        900,
        1,
        NOW,
    );
    assert_eq!(
        (d.last_seen, d.observed_at),
        (Some(NOW - 300), Some(NOW - 300))
    );
    // An older observation later (another upstream answering from a cache) keeps last_seen.
    let d = decide(
        &bridge(),
        vec![at("a", NOW - 700), r("b", Verdict::Unknown)],
        &mut m,
        900,
        1,
        NOW + 60,
    );
    assert_eq!(
        (d.last_seen, d.observed_at),
        (Some(NOW - 300), Some(NOW - 700))
    );
    // Flat status with signals that lag by more than the heartbeat: not due on every tick.
    m.published = Some(Published {
        status: Status::Healthy,
        is_online: true,
        last_seen: NOW - 300,
        at: NOW,
    });
    assert!(matches!(plan(&d, &m, None, 240, false), Action::Skip(_)));
}

#[test]
fn alerts_follow_the_status_and_unknown_clears_nothing() {
    let b = bridge();
    let mut d = decided(Status::Offline);
    d.reason = "tvl:orbit-bridge critical: TVL of orbit-bridge fell 60.0% in 24 h".into();
    let a = alerts(&b, &d);
    let AlertAction::Fire(fire) = &a[0] else {
        panic!("expected a fire, got {a:?}")
    };
    assert_eq!(fire.key, "bridge_offline:orbit");
    assert_eq!(fire.severity, Severity::Critical);
    assert!(
        fire.summary.contains("Orbit Bridge offline"),
        "{}",
        fire.summary
    );
    assert!(
        fire.summary.contains("tvl:orbit-bridge"),
        "{}",
        fire.summary
    );
    assert!(a.contains(&AlertAction::Resolve("bridge_degraded:orbit".into())));

    let a = alerts(&b, &decided(Status::Healthy));
    assert_eq!(a.len(), 3);
    assert!(a.iter().all(|x| matches!(x, AlertAction::Resolve(_))));

    let a = alerts(&b, &decided(Status::Unknown));
    assert_eq!(a.len(), 1);
    assert!(matches!(&a[0], AlertAction::Fire(f) if f.key == "bridge_unknown:orbit"));
}

#[test]
fn a_fallback_judges_against_the_chain_not_its_own_old_record() {
    let mut m = Memory::default();
    let healthy = decided(Status::Healthy);
    // Its own publication long ago says nothing: the primary keeps the chain fresh.
    m.published = Some(Published {
        status: Status::Healthy,
        is_online: true,
        last_seen: NOW - 5000,
        at: NOW - 5000,
    });
    let fresh = OnChain {
        is_online: true,
        last_seen: NOW - 100,
    };
    assert!(matches!(
        plan_fallback(&healthy, &m, Some(fresh), 900, NOW, false),
        Action::Skip(_)
    ));
    let stale = OnChain {
        is_online: true,
        last_seen: NOW - 1000,
    };
    assert_eq!(
        plan_fallback(&healthy, &m, Some(stale), 900, NOW, false),
        Action::Publish(PublishReason::Heartbeat)
    );
    // What it published itself within the heartbeat is not sent again, whatever the median.
    m.published = Some(Published {
        status: Status::Healthy,
        is_online: true,
        last_seen: NOW - 10,
        at: NOW - 10,
    });
    let off = OnChain {
        is_online: false,
        last_seen: NOW - 10,
    };
    assert!(matches!(
        plan_fallback(&healthy, &m, Some(off), 900, NOW, false),
        Action::Skip(_)
    ));
}
