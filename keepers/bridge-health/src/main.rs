//! `bridge-health-keeper`: watches TON Bridge, Orbit, Wormhole and Axelar through typed signals
//! and pushes signed `update_bridge_status` messages to the TON oracle on change or heartbeat.
//! The command line is in `command/`, one file per subcommand.

mod command;

fn main() -> std::process::ExitCode {
    keeper_runtime::disable_core_dumps();
    command::main()
}
