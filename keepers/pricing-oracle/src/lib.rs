//! The pricing keeper's policy: its settings, one tick (fetch, aggregate, decide, publish), the
//! decision rules, its records and its report. `main.rs` wires it to the shared runtime.

pub mod config;
pub mod cycle;
pub mod policy;
pub mod records;
pub mod report;
