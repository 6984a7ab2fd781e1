//! The bridge-health stand-ins answer like the real upstreams (reference §2 and §4): the
//! documented healthy shapes, the documented error bodies for unknown ids, slugs, paths and
//! methods, and scripted replies in the order they were queued.

use keeper_tests::bridges::{BridgeApis, Reply, Route, now};
use serde_json::Value;

fn client() -> reqwest::Client {
    keeper_runtime::http::client(std::time::Duration::from_secs(5))
}

async fn get(url: &str) -> (u16, Value) {
    let r = client().get(url).send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn healthy_defaults_have_the_documented_shapes() {
    let apis = BridgeApis::start().await;
    let (s, b) = get(&format!("{}/bridge/77", apis.defillama_bridges)).await;
    assert_eq!(s, 200);
    assert_eq!(b["id"], 77);
    assert!(
        b["lastHourlyVolume"].as_f64().is_some_and(|v| v > 0.0),
        "{b}"
    );
    assert_eq!(b["destinationChain"], "false");

    let (s, tvl) = get(&format!("{}/tvl/portal", apis.defillama_api)).await;
    assert_eq!(s, 200);
    assert!(tvl.is_number(), "/tvl is a bare number: {tvl}");

    let (_, p) = get(&format!("{}/protocol/orbit-bridge", apis.defillama_api)).await;
    let series = p["tvl"].as_array().expect("tvl series");
    let last = series.last().expect("points");
    assert!((now() - last["date"].as_i64().unwrap()).abs() < 60);
    assert!(p["chainTvls"]["Ethereum"]["tokens"].is_array());

    let (_, h) = get(&format!("{}/api/v1/health", apis.wormholescan)).await;
    assert_eq!(h, serde_json::json!({"status": "OK"}));
    let (_, q) = get(&format!(
        "{}/api/v1/governor/enqueued_vaas/",
        apis.wormholescan
    ))
    .await;
    assert_eq!(q["data"], serde_json::json!([]));
    assert_eq!(q["pagination"]["next"], "");
    let (_, l) = get(&format!("{}/api/v1/governor/limit", apis.wormholescan)).await;
    assert_eq!(l["data"][0]["chainId"], 2);
    assert_eq!(l["data"][0]["notionalLimit"], 50_000_000.0);

    let post = client()
        .post(format!("{}/api/getTVLAlert", apis.axelarscan))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    let a: Value = post.json().await.unwrap();
    assert_eq!(a["native_on_evm_total_status"], "ok");
    assert!(
        a.get("details").is_none(),
        "healthy answers carry no details"
    );
}

#[tokio::test]
async fn unknown_things_get_the_documented_errors() {
    let apis = BridgeApis::start().await;
    let (s, b) = get(&format!("{}/bridge/999", apis.defillama_bridges)).await;
    assert_eq!(
        (s, b["message"].as_str()),
        (400, Some("Bridge ID not found."))
    );
    let (s, p) = get(&format!("{}/protocol/no-such-protocol", apis.defillama_api)).await;
    assert_eq!(s, 400);
    assert!(p["message"].is_string());
    let (s, w) = get(&format!("{}/api/v1/nope", apis.wormholescan)).await;
    assert_eq!(s, 404);
    assert!(
        w["code"].is_number() && w["details"][0]["request_id"].is_string(),
        "{w}"
    );
    let (s, a) = get(&format!("{}/api/searchNothing", apis.axelarscan)).await;
    assert_eq!(
        (s, &a["error"], a["message"].as_str()),
        (400, &Value::Bool(true), Some("method not supported"))
    );
}

#[tokio::test]
async fn queued_replies_come_first_in_order_and_hits_are_counted() {
    let apis = BridgeApis::start().await;
    apis.push(Route::Limit, Reply::rate_limited(Some(7)));
    apis.push(Route::Limit, Reply::html(502));
    let url = format!("{}/api/v1/governor/limit", apis.wormholescan);
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 502);
    assert!(r.text().await.unwrap().starts_with("<!DOCTYPE html>"));
    let (s, l) = get(&url).await;
    assert_eq!((s, l["data"][0]["chainId"].as_i64()), (200, Some(2)));
    assert_eq!(apis.hits(&Route::Limit), 3);

    apis.set_tvl_history("orbit-bridge", 200.0, 80.0);
    let (_, tvl) = get(&format!("{}/tvl/orbit-bridge", apis.defillama_api)).await;
    assert_eq!(tvl, 80.0);
    apis.all_healthy();
    let (_, tvl) = get(&format!("{}/tvl/orbit-bridge", apis.defillama_api)).await;
    assert_ne!(tvl, 80.0);
}
