//! Test harness shared by the workspace-level tests: where the real servers are, and local
//! stand-ins for the third-party services (answering in their documented formats).

pub mod env;
pub mod probe;
pub mod proxy;
pub mod sink;
