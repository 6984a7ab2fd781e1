//! The backup job: settings, one run (dump, compress, checksum, store, verify, prune), the
//! artifacts and their manifests, retention, records and metrics. `main.rs` wires the commands.

pub mod app;
pub mod archive;
pub mod child;
pub mod commands;
pub mod config;
pub mod crypt;
pub mod cycle;
pub mod daemon;
pub mod dump;
pub mod env;
pub mod export;
pub mod file;
pub mod globals;
pub mod job;
pub mod libpq;
pub mod manifest;
pub mod metrics;
pub mod pg;
pub mod prune;
pub mod records;
pub mod restore;
pub mod retention;
pub mod store;
pub mod verify;
