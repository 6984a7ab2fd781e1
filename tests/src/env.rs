//! Locations of the real servers started by `scripts/test.sh`.

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the suite through scripts/test.sh, which starts the servers")
    })
}

/// A PostgreSQL superuser URL (`KEEPERS_TEST_PG_URL`).
pub fn pg_url() -> String {
    required("KEEPERS_TEST_PG_URL")
}

/// A Redis URL (`KEEPERS_TEST_REDIS_URL`).
pub fn redis_url() -> String {
    required("KEEPERS_TEST_REDIS_URL")
}

/// The S3-compatible endpoint (`KEEPERS_TEST_S3_URL`, moto_server).
pub fn s3_url() -> String {
    required("KEEPERS_TEST_S3_URL")
}

/// Path of `redis-server`, for tests that run and kill their own instance.
pub fn redis_server_bin() -> String {
    std::env::var("KEEPERS_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// A name unique within this machine, for schemas, key prefixes and databases.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{n}_{t:x}", std::process::id())
}
