use std::collections::HashMap;

use super::*;
use crate::AssetList;
use keeper_runtime::config::Layers;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Demo {
    sources: SourcesSettings,
    aggregation: AggregationSettings,
    assets: AssetList,
}

fn load(toml_text: &str, env: &[(&str, &str)]) -> Result<Demo, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, toml_text).unwrap();
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let defaults = shipped_sections();
    let d: Demo = Layers {
        defaults: &defaults,
        file: Some(&f),
        env: &env,
        bindings: SOURCES_ENV,
        flags: vec![],
    }
    .load()?;
    d.sources.validate()?;
    d.aggregation.validate()?;
    d.assets.validate(&d.aggregation, &d.sources)?;
    Ok(d)
}

/// This module's sections of the pricing keeper's shipped file, its built-in defaults.
fn shipped_sections() -> String {
    let text = include_str!("../../../config/pricing-oracle.toml");
    let mut table: toml::Table = text.parse().unwrap();
    table.retain(|k, _| matches!(k, "sources" | "aggregation" | "assets"));
    toml::to_string(&table).unwrap()
}

#[test]
fn defaults_are_the_shipped_table_and_valid() {
    let d = load("", &[]).unwrap();
    assert_eq!(d.assets.len(), 6);
    assert_eq!(d.assets[3].symbol, "USDD");
    assert!(d.assets[3].chainlink.is_none());
    assert_eq!(d.assets[2].chainlink.as_ref().unwrap().heartbeat, 3_600);
    assert_eq!(d.aggregation.min_sources, 2);
    assert_eq!(d.aggregation.max_deviation_bps, 200);
    assert_eq!(d.aggregation.sanity_band, SanityBand::STABLECOIN);
    assert_eq!(d.sources.coingecko_tier(), CoinGeckoTier::Keyless);
    assert_eq!(d.sources.coingecko_base_url(), COINGECKO_PUBLIC_URL);
    // Three lineages for the five assets with a Chainlink feed, two for USDD.
    for a in d.assets.iter() {
        let want = if a.symbol == "USDD" {
            vec!["coingecko", "pyth"]
        } else {
            vec!["chainlink", "coingecko", "pyth"]
        };
        assert_eq!(a.lineages(&d.sources), want, "{}", a.symbol);
        assert_eq!(a.lineage_of(Source::Defillama), "coingecko");
    }
    assert_eq!(d.sources.pyth_hermes_url, PYTH_HERMES_URL);
    assert_eq!(d.sources.pyth_max_conf_bps, 100);
    assert!(!d.aggregation.allow_single_source);
    // Single-source mode must be asked for; the key never shows.
    let d = load(
        "",
        &[
            ("MIN_SOURCES", "1"),
            ("ALLOW_SINGLE_SOURCE", "true"),
            ("PYTH_API_KEY", "PYTH-SECRET"),
        ],
    )
    .unwrap();
    assert!(d.aggregation.single_source());
    assert!(!format!("{:?}", d.sources).contains("PYTH-SECRET"));
}

#[test]
fn env_overrides_and_pro_switches_host() {
    let d = load(
        "",
        &[
            ("ETH_RPC_URL", "https://a.example/v3/k1, https://b.example"),
            ("COINGECKO_API_KEY", "CG-abc"),
            ("COINGECKO_TIER", "pro"),
            ("MAX_DEVIATION_BPS", "150"),
        ],
    )
    .unwrap();
    assert_eq!(d.sources.eth_rpc_urls.len(), 2);
    assert_eq!(d.sources.coingecko_base_url(), COINGECKO_PRO_URL);
    assert_eq!(
        d.sources.coingecko_tier().key_header(),
        Some("x-cg-pro-api-key")
    );
    assert_eq!(d.aggregation.max_deviation_bps, 150);
    // USDD has no Chainlink feed, so 3 sources can never be met for it.
    let mut d = d;
    d.aggregation.min_sources = 3;
    let e = d.assets.validate(&d.aggregation, &d.sources).unwrap_err();
    assert!(e.setting.contains("USDD"), "{e}");
    // A key alone means demo on the public host; debug output hides keys and URL paths.
    let d = load("", &[("COINGECKO_API_KEY", "CG-abc")]).unwrap();
    assert_eq!(d.sources.coingecko_tier(), CoinGeckoTier::Demo);
    assert_eq!(d.sources.coingecko_base_url(), COINGECKO_PUBLIC_URL);
    let shown = format!(
        "{:?}",
        load(
            "",
            &[
                ("ETH_RPC_URL", "https://h.example/v3/SECRETKEY"),
                ("COINGECKO_API_KEY", "CG-SECRET")
            ]
        )
        .unwrap()
        .sources
    );
    assert!(
        !shown.contains("SECRET") && shown.contains("h.example"),
        "{shown}"
    );
}

type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[test]
fn bad_settings_are_named() {
    let cases: &[Case<'_>] = &[
        (
            "[sources]\ncoingecko_tier = \"pro\"\n",
            &[],
            "coingecko_api_key",
        ),
        (
            "",
            &[("COINGECKO_TIER", "keyless"), ("COINGECKO_API_KEY", "x")],
            "coingecko_tier",
        ),
        ("", &[("ETH_RPC_URL", "ftp://x")], "eth_rpc_urls[0]"),
        (
            "",
            &[("DEFILLAMA_SEARCH_WIDTH", "4 hours")],
            "defillama_search_width",
        ),
        ("", &[("MIN_SOURCES", "0")], "min_sources"),
        ("", &[("MIN_SOURCES", "1")], "allow_single_source"),
        ("", &[("MIN_SOURCES", "5")], "exceeds"),
        ("", &[("PYTH_HERMES_URL", "hermes")], "pyth_hermes_url"),
        (
            "[[assets]]\nsymbol = \"X\"\nid = 9\ncoingecko_id = \"x\"\npyth_id = \"0x12\"\n",
            &[],
            "pyth_id",
        ),
        (
            "[[assets]]\nsymbol = \"X\"\nid = 9\ncoingecko_id = \"x\"\ndefillama_key = \"coingecko:x\"\n",
            &[],
            "1 independent lineage(s) among its enabled sources (coingecko)",
        ),
        (
            "[[assets]]\nsymbol = \"X\"\nid = 9\ncoingecko_id = \"x\"\ndefillama_key = \"coingecko:x\"\ndefillama_lineage = \"Llama!\"\n",
            &[],
            "defillama_lineage",
        ),
        ("", &[("MAX_DEVIATION_BPS", "ten")], "max_deviation_bps"),
        (
            "[aggregation]\nsanity_band = [2.0, 0.5]\n",
            &[],
            "sanity_band",
        ),
        ("[sources]\nbogus = 1\n", &[], "bogus"),
        (
            "[sources]\nenabled = [\"coingecko\", \"bloomberg\"]\n",
            &[],
            "enabled",
        ),
        (
            "[[assets]]\nsymbol = \"USDT\"\nid = 1\nchainlink = { proxy = \"0x3E7d1eAB13ad0104d2750B8863b489D65364e32d\", heartbeat = 86400 }\ncoingecko_id = \"tether\"\n",
            &[],
            "chainlink.proxy",
        ),
        (
            "[[assets]]\nsymbol = \"USDT\"\nid = 1\ncoingecko_id = \"tether\"\ndefillama_key = \"coingecko:tether\"\ndefillama_lineage = \"defillama\"\n[[assets]]\nsymbol = \"USDC\"\nid = 1\ncoingecko_id = \"usd-coin\"\ndefillama_key = \"coingecko:usd-coin\"\n",
            &[],
            "assets[1].id",
        ),
        (
            "[[assets]]\nsymbol = \"X\"\nid = 9\ncoingecko_id = \"x\"\ndefillama_key = \"ton:EQ/..\"\n",
            &[],
            "defillama_key",
        ),
    ];
    for (text, env, want) in cases {
        let e = load(text, env).unwrap_err();
        assert!(e.to_string().contains(want), "{text:?} {env:?}: {e}");
    }
    let e = load(
        "",
        &[
            ("COINGECKO_TIER", "keyless"),
            ("COINGECKO_API_KEY", "CG-SECRET"),
        ],
    )
    .unwrap_err();
    assert!(!e.to_string().contains("CG-SECRET"));
}

#[test]
fn shipped_example_config_is_the_defaults() {
    let text = include_str!("../../../config/pricing-oracle.toml");
    let mut table: toml::Table = text.parse().unwrap();
    // The file also holds the keeper's other sections; these three are ours.
    let mut ours = toml::Table::new();
    for key in ["sources", "aggregation", "assets"] {
        ours.insert(key.into(), table.remove(key).unwrap());
    }
    let d: Demo = toml::Value::Table(ours).try_into().unwrap();
    assert!(d.sources == SourcesSettings::default(), "{:?}", d.sources);
    assert_eq!(d.aggregation, AggregationSettings::default());
    assert_eq!(d.assets, AssetList::from_toml(text).unwrap());
    assert_eq!(d.assets.len(), 6);
    d.assets.validate(&d.aggregation, &d.sources).unwrap();
}

#[test]
fn custom_asset_with_band_and_ton_key() {
    let d = load(
        "[[assets]]\nsymbol = \"jUSDT\"\nid = 7\ndefillama_key = \"ton:EQBynBO23ywHy_CgarY9NK9FTz0yDsG82PtcbSTQgGoXwiuA\"\ncoingecko_id = \"tether\"\ndefillama_lineage = \"defillama\"\nsanity_band = [\"0.9\", 1.1]\n",
        &[],
    )
    .unwrap();
    let a = &d.assets[0];
    assert_eq!(a.sanity_band.unwrap().low.to_string(), "0.9");
    assert_eq!(a.sanity_band.unwrap().high.to_string(), "1.1");
    assert_eq!(d.aggregation.policy_for(a).band.low.to_string(), "0.9");
    assert_eq!(parse_search_width("12h"), Ok(43_200));
    assert!(parse_search_width("99999999999999999999w").is_err());
    assert_eq!(parse_search_width("1w"), Ok(604_800));
    assert!(parse_search_width("0h").is_err());
}
