//! Test harness shared by the workspace-level tests: where the real servers are, and local
//! stand-ins for the third-party services (answering in their documented formats).

pub mod bridges;
pub mod env;
pub mod pricing;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod sink;
pub mod toncenter;
pub mod upstreams;
