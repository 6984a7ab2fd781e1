//! Every subcommand of every binary, walked from the "Commands:" list of its parent's help (so a
//! new subcommand is walked too): `--help` exits 0, lists exactly the flags that act there, says
//! what `--output` formats there, and prints no secret even with every secret variable set.

use std::collections::{BTreeMap, BTreeSet};

use keeper_tests::process::{keeper, texts};

const MNEMONIC: &str = "fancy carpet hello mandate penalty trial consider property top vicious exit rebuild tragic profit urban major total month holiday sudden rib gather media vicious";

/// Secret variables of the three binaries, each holding a value that must never be printed.
const SECRET_ENV: [(&str, &str); 9] = [
    ("KEEPER_MNEMONIC", MNEMONIC),
    ("TON_API_KEY", "tonkeysecret"),
    ("DATABASE_URL", "postgres://keeper:hunter2pass@db/app"),
    ("REDIS_URL", "redis://:redispass77@cache/0"),
    ("TARGET_DATABASE_URL", "postgres://ops:targetpass55@db2/app"),
    ("AWS_SECRET_ACCESS_KEY", "awssecretvalue99"),
    ("PAGERDUTY_ROUTING_KEY", "pdroutingsecret"),
    (
        "SLACK_WEBHOOK_URL",
        "https://hooks.slack.com/services/T0/B0/XOXBSECRET",
    ),
    ("PUSHGATEWAY_URL", "http://push:pushpass33@gw:9091"),
];
const SECRET_VALUES: [&str; 10] = [
    "carpet",
    "tonkeysecret",
    "hunter2pass",
    "redispass77",
    "targetpass55",
    "awssecretvalue99",
    "pdroutingsecret",
    "XOXBSECRET",
    "pushpass33",
    "mandate",
];

/// One subcommand's expected help: its long flags, and a word its `--output` help must contain.
struct Expected {
    flags: &'static [&'static str],
    output_says: Option<&'static str>,
}

const fn expect(flags: &'static [&'static str], output_says: Option<&'static str>) -> Expected {
    Expected { flags, output_says }
}

const CHAIN_TOP: &[&str] = &[
    "--config",
    "--help",
    "--version",
    "--once",
    "--dry-run",
    "--force",
    "--output",
];
const CHAIN_RUN: &[&str] = &[
    "--config",
    "--help",
    "--once",
    "--dry-run",
    "--force",
    "--output",
];
const WALLET: &[&str] = &["--config", "--help", "--offline", "--output"];
const SWEEP: &[&str] = &[
    "--config",
    "--help",
    "--to",
    "--raw-address",
    "--dry-run",
    "--output",
];
const STATUS: &[&str] = &["--config", "--help", "--output"];
const MIGRATE: &[&str] = &["--config", "--help"];

/// Every subcommand path of `bin` and its expected help.
fn expected(bin: &str) -> BTreeMap<Vec<&'static str>, Expected> {
    let chain = || {
        BTreeMap::from([
            (vec![], expect(CHAIN_TOP, Some("cycle summary"))),
            (vec!["run"], expect(CHAIN_RUN, Some("cycle summary"))),
            (vec!["wallet"], expect(WALLET, Some("wallet"))),
            (vec!["wallet", "sweep"], expect(SWEEP, Some("sweep report"))),
            (vec!["status"], expect(STATUS, Some("oracle"))),
            (vec!["migrate"], expect(MIGRATE, None)),
        ])
    };
    match bin {
        "pricing-oracle-keeper" => {
            let mut all = chain();
            all.insert(
                vec!["history"],
                expect(
                    &["--config", "--help", "--asset", "--since", "--output"],
                    Some("decisions"),
                ),
            );
            all
        }
        "bridge-health-keeper" => chain(),
        "db-backup" => BTreeMap::from([
            (
                vec![],
                expect(
                    &[
                        "--config",
                        "--help",
                        "--version",
                        "--once",
                        "--dry-run",
                        "--output",
                    ],
                    Some("run report"),
                ),
            ),
            (
                vec!["run"],
                expect(
                    &["--config", "--help", "--once", "--dry-run", "--output"],
                    Some("run report"),
                ),
            ),
            (
                vec!["list"],
                expect(&["--config", "--help", "--output"], Some("list")),
            ),
            (
                vec!["restore"],
                expect(
                    &[
                        "--config",
                        "--help",
                        "--from",
                        "--target-database-url",
                        "--no-owner",
                        "--clean",
                        "--with-globals",
                        "--identity",
                        "--output",
                    ],
                    Some("restore report"),
                ),
            ),
            (
                vec!["verify"],
                expect(
                    &[
                        "--config",
                        "--help",
                        "--from",
                        "--all",
                        "--mode",
                        "--identity",
                        "--output",
                    ],
                    Some("verification"),
                ),
            ),
            (
                vec!["prune"],
                expect(
                    &["--config", "--help", "--dry-run", "--output"],
                    Some("retention"),
                ),
            ),
            (vec!["migrate"], expect(MIGRATE, None)),
        ]),
        other => panic!("no expectations for {other}"),
    }
}

/// `bin PATH… --help` with every secret variable set: exits 0, prints no secret; its stdout.
fn help(bin: &str, path: &[String]) -> String {
    let out = keeper(bin)
        .args(path)
        .arg("--help")
        .envs(SECRET_ENV)
        .output()
        .expect("run the binary");
    let (stdout, stderr) = texts(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{bin} {path:?} --help\nstdout: {stdout}\nstderr: {stderr}"
    );
    for secret in SECRET_VALUES {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{bin} {path:?} --help printed the secret {secret:?}:\n{stdout}{stderr}"
        );
    }
    stdout
}

/// The subcommands under "Commands:", without clap's `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// The long flags of the option lines (`  -h, --help`, `      --config <FILE>  text`).
fn flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| {
            // The flag's spelling ends where its description starts (two spaces), if on one line.
            let spec = l.split("  ").next().unwrap_or_default();
            spec.split([' ', ','])
                .filter(|t| t.starts_with("--"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The description of `--output`: the text after its line, up to the next blank line.
fn output_help(help: &str) -> String {
    let mut lines = help.lines().map(str::trim);
    let Some(first) = lines.find(|l| l.starts_with("--output")) else {
        return String::new();
    };
    let inline = first.split_once("  ").map(|(_, d)| d.trim()).unwrap_or("");
    let rest: Vec<&str> = lines.take_while(|l| !l.is_empty()).collect();
    format!("{inline} {}", rest.join(" "))
}

/// Walks `bin`'s subcommands depth first from `path`, calling `visit` with each one's help.
fn walk(bin: &str, path: Vec<String>, visit: &mut dyn FnMut(&[String], &str)) {
    let text = help(bin, &path);
    visit(&path, &text);
    for sub in subcommands(&text) {
        let mut next = path.clone();
        next.push(sub);
        walk(bin, next, visit);
    }
}

#[test]
fn every_subcommand_help_lists_only_the_flags_that_act_there() {
    for bin in ["pricing-oracle-keeper", "bridge-health-keeper", "db-backup"] {
        let expected = expected(bin);
        let mut walked = BTreeSet::new();
        walk(bin, Vec::new(), &mut |path, text| {
            let key: Vec<&str> = path.iter().map(String::as_str).collect();
            let Some(want) = expected.get(&key) else {
                panic!("{bin} {path:?}: a subcommand without expectations here:\n{text}");
            };
            let want_flags: BTreeSet<String> = want.flags.iter().map(|f| (*f).to_owned()).collect();
            assert_eq!(flags(text), want_flags, "{bin} {path:?}:\n{text}");
            if let Some(word) = want.output_says {
                let said = output_help(text);
                assert!(said.contains(word), "{bin} {path:?} --output: {said:?}");
            }
            walked.insert(key.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        });
        let listed: BTreeSet<Vec<String>> = expected
            .keys()
            .map(|k| k.iter().map(|s| (*s).to_owned()).collect())
            .collect();
        assert_eq!(walked, listed, "{bin}: expected subcommands not walked");
    }
}

#[test]
fn misplaced_flags_are_absent_where_they_do_nothing() {
    let restore = help("db-backup", &["restore".to_owned()]);
    assert!(!restore.contains("--dry-run"), "{restore}");
    assert!(
        !restore.contains("BoC") && !restore.contains("chain"),
        "{restore}"
    );
    let prune = help("db-backup", &["prune".to_owned()]);
    assert!(
        !prune.contains("BoC") && !prune.contains("chain"),
        "{prune}"
    );
    for bin in ["pricing-oracle-keeper", "bridge-health-keeper"] {
        let wallet = help(bin, &["wallet".to_owned()]);
        assert!(
            !wallet.contains("--once") && !wallet.contains("--force"),
            "{wallet}"
        );
        // Only `wallet sweep` dry-runs (its line under "Commands:" says so).
        assert!(!flags(&wallet).contains("--dry-run"), "{wallet}");
        let status = help(bin, &["status".to_owned()]);
        assert!(
            !status.contains("--once") && !status.contains("--dry-run"),
            "{status}"
        );
        let migrate = help(bin, &["migrate".to_owned()]);
        assert!(!migrate.contains("--output"), "{migrate}");
    }
}

#[test]
fn sweep_help_says_how_the_destination_decides_bounce() {
    for bin in ["pricing-oracle-keeper", "bridge-health-keeper"] {
        let sweep = help(bin, &["wallet".to_owned(), "sweep".to_owned()]);
        // The operator picks bounce through the form of --to: it must be said where they look.
        assert!(sweep.contains("UQ… is sent non-bounceable"), "{sweep}");
        assert!(sweep.contains("EQ… bounceable"), "{sweep}");
        assert!(sweep.contains("workchain 0 or -1"), "{sweep}");
    }
}

#[test]
fn flags_of_run_before_another_subcommand_are_a_usage_error() {
    for (bin, args) in [
        (
            "pricing-oracle-keeper",
            &["--once", "wallet", "--offline"][..],
        ),
        ("bridge-health-keeper", &["--force", "status"]),
        ("db-backup", &["--once", "list"]),
        ("db-backup", &["--dry-run", "restore", "--from", "latest"]),
    ] {
        let out = keeper(bin).args(args).output().expect("run the binary");
        let (stdout, stderr) = texts(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bin} {args:?}: {stdout}{stderr}"
        );
        assert!(
            stderr.contains("act only on `run`"),
            "{bin} {args:?}: {stderr}"
        );
    }
}
