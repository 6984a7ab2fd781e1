//! Backup names and the JSON manifest written beside every backup.
//!
//! A backup `{name}-{YYYYMMDDTHHMMSSZ}` is three files (or objects): `…dump.zst` (the
//! zstd-compressed `pg_dump -Fc` archive), `…dump.zst.sha256` (`sha256sum -c` format) and
//! `…manifest.json`. The manifest is written last: a backup exists only when its manifest does.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::VerifyMode;

/// Suffix of the archive.
pub const DUMP_SUFFIX: &str = ".dump.zst";
/// Suffix of the checksum sidecar (appended to the archive's name).
pub const SHA_SUFFIX: &str = ".dump.zst.sha256";
/// Suffix of the manifest.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// Suffix of the cluster globals (`pg_dumpall --globals-only`, zstd).
pub const GLOBALS_SUFFIX: &str = ".globals.sql.zst";
/// Suffix of the globals' checksum sidecar.
pub const GLOBALS_SHA_SUFFIX: &str = ".globals.sql.zst.sha256";
/// Appended to an artifact's name when it is age-encrypted (`….dump.zst.age`).
pub const AGE_SUFFIX: &str = ".age";

/// Every suffix a backup's file may have, longest first, with its kind.
const SUFFIXES: [(&str, FileKind); 9] = [
    (".globals.sql.zst.age.sha256", FileKind::GlobalsSha),
    (GLOBALS_SHA_SUFFIX, FileKind::GlobalsSha),
    (".globals.sql.zst.age", FileKind::Globals),
    (GLOBALS_SUFFIX, FileKind::Globals),
    (".dump.zst.age.sha256", FileKind::Sha),
    (SHA_SUFFIX, FileKind::Sha),
    (".dump.zst.age", FileKind::Dump),
    (DUMP_SUFFIX, FileKind::Dump),
    (MANIFEST_SUFFIX, FileKind::Manifest),
];
/// Format of the UTC timestamp in names.
const STAMP: &str = "%Y%m%dT%H%M%SZ";
/// Length of a formatted stamp (`20261123T160000Z`).
const STAMP_LEN: usize = 16;
/// Largest manifest read (row counts of some ten thousand tables fit in a fraction of this).
pub const MAX_MANIFEST_BYTES: u64 = 8 << 20;
/// Largest sidecar read (`sha256sum` format: one line).
pub const MAX_SIDECAR_BYTES: u64 = 4096;
/// Version of the manifest layout.
pub const MANIFEST_FORMAT: u32 = 1;

/// The identity of one backup: database label and the UTC second it started.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupId {
    /// When the run took its snapshot (second precision); orders backups.
    pub at: DateTime<Utc>,
    /// Database label (the database name or `BACKUP_NAME`).
    pub db: String,
}

impl BackupId {
    /// A new id, truncated to the second.
    pub fn new(db: &str, at: DateTime<Utc>) -> Self {
        let at = DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at);
        Self {
            at,
            db: db.to_owned(),
        }
    }

    /// `{db}-{stamp}`.
    pub fn base(&self) -> String {
        format!("{}-{}", self.db, self.at.format(STAMP))
    }

    /// The archive's file name.
    pub fn dump_name(&self) -> String {
        format!("{}{DUMP_SUFFIX}", self.base())
    }

    /// The sidecar's file name.
    pub fn sha_name(&self) -> String {
        format!("{}{SHA_SUFFIX}", self.base())
    }

    /// The manifest's file name.
    pub fn manifest_name(&self) -> String {
        format!("{}{MANIFEST_SUFFIX}", self.base())
    }

    /// The globals artifact's file name.
    pub fn globals_name(&self) -> String {
        format!("{}{GLOBALS_SUFFIX}", self.base())
    }

    /// The globals sidecar's file name.
    pub fn globals_sha_name(&self) -> String {
        format!("{}{GLOBALS_SHA_SUFFIX}", self.base())
    }

    /// The archive's file name, encrypted or not.
    pub fn archive_name(&self, encrypted: bool) -> String {
        if encrypted {
            format!("{}{AGE_SUFFIX}", self.dump_name())
        } else {
            self.dump_name()
        }
    }

    /// The globals' file name, encrypted or not.
    pub fn globals_file(&self, encrypted: bool) -> String {
        if encrypted {
            format!("{}{AGE_SUFFIX}", self.globals_name())
        } else {
            self.globals_name()
        }
    }

    /// Every file a backup may have (plain and encrypted variants), manifest first: the order
    /// deletion must follow, so a half-deleted backup is never listed.
    pub fn all_names(&self) -> Vec<String> {
        let base = self.base();
        let mut names: Vec<String> = SUFFIXES
            .iter()
            .map(|(suffix, _)| format!("{base}{suffix}"))
            .collect();
        names.rotate_right(1);
        names
    }

    /// Parses `{db}-{stamp}` followed by one of the known suffixes; `None` for other files.
    pub fn parse_file_name(name: &str) -> Option<(Self, FileKind)> {
        let (base, kind) = SUFFIXES
            .iter()
            .find_map(|(suffix, kind)| name.strip_suffix(suffix).map(|b| (b, *kind)))?;
        Self::parse_base(base).map(|id| (id, kind))
    }

    /// Parses `{db}-{stamp}`.
    pub fn parse_base(base: &str) -> Option<Self> {
        let split = base.len().checked_sub(STAMP_LEN + 1)?;
        if !base.is_char_boundary(split) || split == 0 {
            return None;
        }
        let (db, rest) = base.split_at(split);
        let stamp = rest.strip_prefix('-')?;
        let at = NaiveDateTime::parse_from_str(stamp, STAMP).ok()?.and_utc();
        Some(Self {
            at,
            db: db.to_owned(),
        })
    }
}

impl std::fmt::Display for BackupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base())
    }
}

/// Which of a backup's three files a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// The compressed archive.
    Dump,
    /// The checksum sidecar.
    Sha,
    /// The manifest.
    Manifest,
    /// The cluster globals.
    Globals,
    /// The globals' sidecar.
    GlobalsSha,
}

/// How the artifacts are encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// Always `age`.
    pub algorithm: String,
    /// Fingerprints of the recipients (`SHA256:…`); any one of their identities decrypts.
    pub recipients: Vec<String>,
}

/// The second artifact of a backup: roles, role settings and memberships, tablespaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalsArtifact {
    /// File name (`{base}.globals.sql.zst`).
    pub file: String,
    /// Bytes of the file.
    pub size_bytes: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Whether role passwords (their hashes) are included (`BACKUP_GLOBALS_PASSWORDS`).
    pub role_passwords: bool,
}

/// How the archive was compressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compression {
    /// Always `zstd`.
    pub algorithm: String,
    /// zstd level.
    pub level: i32,
    /// zstd worker threads.
    pub threads: u32,
}

/// Where a backup was taken from, recorded at backup time, so `restore` can recognise the
/// source without its URL (the source may be gone, or reached under another name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceIdentity {
    /// The cluster's `system_identifier`, when the backup's role could read it.
    pub system_identifier: Option<String>,
    /// `current_database()`.
    pub database: String,
    /// Host as `DATABASE_URL` named it, lower case (`localhost` when it named none).
    pub host: String,
    /// Port as `DATABASE_URL` named it (5432 when it named none).
    pub port: u16,
    /// `inet_server_addr()`: the address the server answered on (none over a Unix socket).
    pub server_addr: Option<String>,
    /// The server's own `port` setting.
    pub server_port: Option<u16>,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// `list` or `restore`.
    pub mode: VerifyMode,
    /// Whether it passed.
    pub ok: bool,
    /// When it finished.
    pub at: DateTime<Utc>,
    /// What was checked (`412 TOC entries`, `7 tables, row counts equal`) or what failed.
    pub detail: String,
    /// Wall time of the verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// `restore`: tables compared with the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables_checked: Option<usize>,
    /// `restore`: every table whose restored row count differs from the manifest (empty when
    /// all are equal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_diff: Option<Vec<RowDiff>>,
}

/// One table whose restored row count is not the manifest's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowDiff {
    /// `schema.table`.
    pub table: String,
    /// Rows per the manifest (`None`: the table is not in the manifest).
    pub manifest_rows: Option<i64>,
    /// Rows restored (`None`: the table is missing after the restore).
    pub restored_rows: Option<i64>,
}

/// Everything known about one backup, stored as `{base}.manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version ([`MANIFEST_FORMAT`]).
    pub format: u32,
    /// Database label used in names.
    pub name: String,
    /// The database's real name on the server.
    pub database: String,
    /// File name of the archive.
    pub file: String,
    /// `server_version` of the source.
    pub server_version: String,
    /// `server_version_num` of the source.
    pub server_version_num: i32,
    /// First line of `pg_dump --version`.
    pub pg_dump_version: String,
    /// The exported snapshot the dump and the row counts share.
    pub snapshot: String,
    /// When the snapshot was taken.
    pub started_at: DateTime<Utc>,
    /// When the archive was complete and synced.
    pub finished_at: DateTime<Utc>,
    /// Bytes of the compressed archive.
    pub size_bytes: u64,
    /// Bytes `pg_dump` produced before compression.
    pub dump_bytes: u64,
    /// Hex SHA-256 of the compressed archive.
    pub sha256: String,
    /// How it was compressed.
    pub compression: Compression,
    /// Exact rows per table (`schema.table`, quoted where SQL needs it), in the dump's snapshot.
    pub row_counts: BTreeMap<String, i64>,
    /// The last verification, if any.
    pub verification: Option<Verification>,
    /// `db-backup {version}` that wrote it.
    pub tool: String,
    /// The source cluster's `system_identifier`: with `database`, what `restore` uses to
    /// refuse writing into the database the backup came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
    /// The source's identity (cluster, database, host and port) at backup time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceIdentity>,
    /// Set when the archive and the globals are age-encrypted (`BACKUP_AGE_RECIPIENTS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// The cluster globals taken with this backup (`BACKUP_GLOBALS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub globals: Option<GlobalsArtifact>,
}

impl Manifest {
    /// The backup's identity, from its name and start time.
    pub fn id(&self) -> BackupId {
        BackupId::new(&self.name, self.started_at)
    }

    /// True when the last verification passed.
    pub fn verified(&self) -> bool {
        self.verification.as_ref().is_some_and(|v| v.ok)
    }

    /// Parses a manifest, saying what is wrong with it.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Parses the manifest stored under `id`'s name and requires it to describe that backup:
    /// its name, time and archive file must be the ones its own file name says. Paths are
    /// derived from ids, so a manifest naming another backup (or `../x`) must never be trusted.
    pub fn for_id(bytes: &[u8], id: &BackupId) -> Result<Self, String> {
        let m = Self::from_json(bytes).map_err(|e| format!("malformed manifest: {e}"))?;
        let encrypted = m.encryption.is_some();
        let globals_ok = m
            .globals
            .as_ref()
            .is_none_or(|g| g.file == id.globals_file(encrypted));
        if m.id() != *id || m.file != id.archive_name(encrypted) || !globals_ok {
            return Err(format!(
                "manifest stored as {} describes {} (file {:?}) instead; not trusting it",
                id.manifest_name(),
                m.id(),
                m.file
            ));
        }
        Ok(m)
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// The sidecar's content, in `sha256sum` format; for an encrypted archive a comment line
    /// (which `sha256sum -c` skips) first names the recipients.
    pub fn sidecar(&self) -> String {
        format!("{}{}  {}\n", self.sidecar_comment(), self.sha256, self.file)
    }

    /// The sidecar's file name.
    pub fn sidecar_name(&self) -> String {
        format!("{}.sha256", self.file)
    }

    /// The globals sidecar's content, if there are globals.
    pub fn globals_sidecar(&self) -> Option<String> {
        self.globals
            .as_ref()
            .map(|g| format!("{}{}  {}\n", self.sidecar_comment(), g.sha256, g.file))
    }

    fn sidecar_comment(&self) -> String {
        self.encryption
            .as_ref()
            .map(|e| format!("# age-encrypted for {}\n", e.recipients.join(", ")))
            .unwrap_or_default()
    }

    /// The recipients' fingerprints when the artifacts are encrypted.
    pub fn encrypted_for(&self) -> Option<&[String]> {
        self.encryption.as_ref().map(|e| e.recipients.as_slice())
    }
}

/// Reads the hex digest out of a `sha256sum`-format sidecar.
pub fn parse_sidecar(text: &str) -> Option<String> {
    let line = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())?;
    let digest = line.split_whitespace().next()?;
    (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| digest.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_even_with_dashes_and_stamp_like_db_names() {
        let at = DateTime::parse_from_rfc3339("2026-11-23T16:05:09.734Z")
            .unwrap()
            .to_utc();
        for db in ["app", "my-app", "x-20200101T000000Z", "a.b_c"] {
            let id = BackupId::new(db, at);
            assert_eq!(id.base(), format!("{db}-20261123T160509Z"));
            for (name, kind) in [
                (id.dump_name(), FileKind::Dump),
                (id.sha_name(), FileKind::Sha),
                (id.manifest_name(), FileKind::Manifest),
                (id.globals_name(), FileKind::Globals),
                (id.globals_sha_name(), FileKind::GlobalsSha),
                (id.archive_name(true), FileKind::Dump),
                (format!("{}.sha256", id.archive_name(true)), FileKind::Sha),
                (id.globals_file(true), FileKind::Globals),
                (
                    format!("{}.sha256", id.globals_file(true)),
                    FileKind::GlobalsSha,
                ),
            ] {
                assert_eq!(BackupId::parse_file_name(&name), Some((id.clone(), kind)));
                assert!(id.all_names().contains(&name), "{name}");
            }
        }
        for bad in [
            "app.dump.zst",
            "-20261123T160509Z.dump.zst",
            "app-2026112xT160509Z.dump.zst",
            ".app-20261123T160509Z.dump.zst.tmp",
            "app-20261123T160509Z.sql",
        ] {
            assert_eq!(BackupId::parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn sidecar_is_sha256sum_format() {
        let d = "ab".repeat(32);
        assert_eq!(
            parse_sidecar(&format!("{d}  f.dump.zst\n")),
            Some(d.clone())
        );
        assert_eq!(parse_sidecar(&d.to_uppercase()), Some(d));
        assert_eq!(parse_sidecar("zz  f"), None);
        assert_eq!(parse_sidecar(""), None);
    }
}
