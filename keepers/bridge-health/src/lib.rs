//! The bridge-health keeper: watches TON Bridge, Orbit, Wormhole and Axelar through typed
//! signals, decides a status per bridge and publishes `update_bridge_status` on change or
//! heartbeat.

pub mod clients;
pub mod config;
pub mod cycle;
pub mod decision;
pub mod metrics;
pub mod records;
pub mod report;
pub mod signals;
