//! `db-backup`: logical PostgreSQL backups an operator can bet on.
//!
//! `pg_dump -Fc -Z0` in an exported snapshot → zstd → SHA-256 → fsync'd file → manifest; optional
//! S3 copy; verification; GFS retention; a daemon on a cron schedule or one run (`--once`). The
//! command line is in `command/`, one file per subcommand.

use std::process::ExitCode;

mod command;

fn main() -> ExitCode {
    keeper_runtime::disable_core_dumps();
    command::main()
}
