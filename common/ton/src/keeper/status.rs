//! `status`: what the oracle holds, read through toncenter and printed by the keeper.

use anyhow::Context as _;
use keeper_runtime::cli::{Needs, Output};

use super::{ChainKeeper, Loaded, RunArgs, oracle_address};
use crate::Toncenter;

/// The flags of `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct StatusArgs {
    /// Format of the oracle's table: text or one JSON document [default: text].
    #[arg(long, value_enum)]
    pub output: Option<Output>,
}

impl StatusArgs {
    /// Takes over `--output` written before `status`; any other flag of `run` there is a usage
    /// error.
    pub fn take_leading(&mut self, before: &RunArgs) -> Result<(), clap::Error> {
        self.output = self.output.or(before.before("status", true, false)?.output);
        Ok(())
    }

    /// Reading the oracle needs its address.
    pub fn needs(&self) -> Needs {
        Needs {
            oracle: true,
            ..Needs::default()
        }
    }
}

/// `status`: the keeper's table of what the oracle holds; the exit code.
pub async fn status<K: ChainKeeper>(
    loaded: Loaded<K::Config>,
    args: &StatusArgs,
) -> anyhow::Result<i32> {
    use super::ChainConfig as _;
    let config = &loaded.config;
    let oracle = oracle_address::<K>(config)?
        .with_context(|| format!("{} is required", K::ORACLE_SETTING))?;
    let transport = Toncenter::new(config.ton()).context("toncenter transport")?;
    K::status(config, oracle, &transport, args.output.unwrap_or_default()).await
}
