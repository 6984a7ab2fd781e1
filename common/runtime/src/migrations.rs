//! Which migrations a binary applies: one set per owner of tables, each with its own
//! bookkeeping table. A type of its own, below both `config` (whose storage section carries a
//! binary's sets) and `store` (which applies them).

use sqlx::migrate::Migrator;

/// One owner's migrations and the table recording which of them ran. Every binary applies
/// only the sets of the tables it uses, each with its own bookkeeping, so binaries sharing a
/// schema (or db-backup's records in an application database) never create each other's
/// tables nor trip over each other's history.
#[derive(Debug)]
pub struct MigrationSet {
    /// Who owns the tables, for messages (`pricing-oracle`, `ton`, …).
    pub owner: &'static str,
    /// The migrations, embedded at build time by the owning crate (`sqlx::migrate!`).
    pub migrator: Migrator,
    /// Bookkeeping table, unqualified: it lands in the schema beside the tables.
    pub table: &'static str,
}

/// The sets a binary applies, in order.
pub type Migrations = &'static [&'static MigrationSet];
