//! `bridge-health-keeper`: watches TON Bridge, Orbit, Wormhole and Axelar through typed signals
//! and pushes signed `update_bridge_status` messages to the TON oracle on change or heartbeat.

fn main() -> std::process::ExitCode {
    keeper_ton::keeper::main::<bridge_health::BridgeKeeper>()
}
