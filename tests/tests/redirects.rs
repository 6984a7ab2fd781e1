//! A credential never follows a redirect: an upstream that answers 3xx towards another host
//! (here: another port) is an error, and the target never sees the request or its key header.

use keeper_runtime::secret::Secret;
use keeper_sources::{CoinGecko, CoinGeckoTier, SourcesSettings};
use keeper_tests::sink::{Reply, Sink};

#[tokio::test]
async fn an_api_key_never_follows_a_redirect_to_another_host() {
    keeper_runtime::install_crypto_provider();
    let elsewhere = Sink::start().await;
    let redirector =
        Sink::with_default(Reply::status(302).header("location", &elsewhere.url_for("/steal")))
            .await;
    let settings = SourcesSettings {
        coingecko_base_url: Some(redirector.url()),
        coingecko_api_key: Some(Secret::shared("CG-REDIRECT-SECRET")),
        coingecko_tier: Some(CoinGeckoTier::Demo),
        ..SourcesSettings::default()
    };
    let cg = CoinGecko::from_settings(&settings, None);
    let result = cg.simple_price(&["tether"]).await;

    let first = redirector.requests();
    assert!(!first.is_empty(), "the source asked the configured host");
    assert_eq!(
        first[0].header("x-cg-demo-api-key"),
        Some("CG-REDIRECT-SECRET"),
        "the key went to the configured host"
    );
    assert!(result.is_err(), "a redirect is an error, not a price");
    assert_eq!(
        elsewhere.count(),
        0,
        "the redirect target was never contacted"
    );
}

#[tokio::test]
async fn the_pyth_bearer_token_never_follows_a_redirect() {
    keeper_runtime::install_crypto_provider();
    let elsewhere = Sink::start().await;
    let redirector =
        Sink::with_default(Reply::status(307).header("location", &elsewhere.url_for("/steal")))
            .await;
    let settings = SourcesSettings {
        pyth_hermes_url: redirector.url(),
        pyth_api_key: Some(Secret::shared("PYTH-REDIRECT-SECRET")),
        ..SourcesSettings::default()
    };
    let pyth = keeper_sources::Pyth::from_settings(&settings, None);
    let result = pyth
        .latest(&["2b89b9dc8fdf9f34709a5b106b472f0f39bb6ca9ce04b0fd7f2e971688e2e53b"])
        .await;
    let first = redirector.requests();
    assert_eq!(
        first.first().and_then(|r| r.header("authorization")),
        Some("Bearer PYTH-REDIRECT-SECRET")
    );
    let e = result.expect_err("a redirect is an error, not a price");
    assert!(!e.to_string().contains("PYTH-REDIRECT-SECRET"), "{e}");
    assert_eq!(
        elsewhere.count(),
        0,
        "the redirect target was never contacted"
    );
}
