//! Local backups in `BACKUP_DIR`.
//!
//! A run writes `.{base}.dump.zst.tmp`, fsyncs, renames it to `{base}.dump.zst`, then writes the
//! sidecar and the manifest the same way (temp, fsync, rename) and fsyncs the directory. Only a
//! manifest makes a backup: a crash at any point leaves at most temp files and a manifest-less
//! archive, which the next run of the same database removes.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{BackupStore, StoredBackup};
use crate::file::read_bounded;
use crate::manifest::{BackupId, FileKind, MAX_MANIFEST_BYTES, Manifest};
use keeper_runtime::config::BadInput;

/// Suffix of in-progress files.
const TMP_SUFFIX: &str = ".tmp";
/// Marker in the names of downloads being checked before a restore.
const DOWNLOAD_MARK: &str = ".download-";
/// Downloads older than this are leftovers of a killed restore.
const DOWNLOAD_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// A local file operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct LocalError {
    /// The step.
    pub what: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The OS error.
    pub source: io::Error,
}

fn err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LocalError {
    let path = path.to_path_buf();
    move |source| LocalError { what, path, source }
}

/// The backup directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    /// Uses `dir`, creating it if missing.
    pub fn open(dir: &Path) -> Result<Self, LocalError> {
        fs::create_dir_all(dir).map_err(err("creating backup directory", dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a run writes its archive before it is complete.
    pub fn temp_path(&self, id: &BackupId) -> PathBuf {
        self.dir.join(format!(".{}{TMP_SUFFIX}", id.dump_name()))
    }

    /// A fresh path for a download of `id` (restore/verify from S3).
    pub fn download_path(&self, id: &BackupId) -> PathBuf {
        self.dir.join(format!(
            ".{}{DOWNLOAD_MARK}{}{TMP_SUFFIX}",
            id.dump_name(),
            std::process::id()
        ))
    }

    /// Where a run writes its globals before the backup is complete.
    pub fn globals_temp_path(&self, id: &BackupId) -> PathBuf {
        self.dir.join(format!(".{}{TMP_SUFFIX}", id.globals_name()))
    }

    /// Path of the unencrypted archive of `id`.
    pub fn dump_path(&self, id: &BackupId) -> PathBuf {
        self.dir.join(id.dump_name())
    }

    /// Path of the archive of `id` that exists here, encrypted or not.
    pub fn existing_archive(&self, id: &BackupId) -> Option<PathBuf> {
        [false, true]
            .into_iter()
            .map(|enc| self.dir.join(id.archive_name(enc)))
            .find(|p| p.is_file())
    }

    /// Whether any file of `id` exists (names must not be reused).
    pub fn exists(&self, id: &BackupId) -> bool {
        id.all_names().iter().any(|n| self.dir.join(n).exists())
    }

    /// Removes what failed or killed runs of `db` left: temp files, archives and sidecars with
    /// no manifest, and downloads older than a day. Call only while holding the run lock.
    pub fn clean_leftovers(&self, db: &str) -> Result<Vec<PathBuf>, LocalError> {
        let mut removed = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(err("listing", &self.dir))?;
        let names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        for name in &names {
            let path = self.dir.join(name);
            let leftover = if let Some(inner) = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(TMP_SUFFIX))
            {
                if let Some((file, _pid)) = inner.split_once(DOWNLOAD_MARK) {
                    // A download may belong to a restore running right now: only old ones go.
                    owned_by(file, db) && older_than(&path, DOWNLOAD_MAX_AGE)
                } else {
                    owned_by(inner, db)
                }
            } else {
                match BackupId::parse_file_name(name) {
                    Some((id, kind)) if id.db == db && kind != FileKind::Manifest => {
                        !names.contains(&id.manifest_name())
                    }
                    _ => false,
                }
            };
            if leftover {
                fs::remove_file(&path).map_err(err("removing leftover", &path))?;
                removed.push(path);
            }
        }
        if !removed.is_empty() {
            self.sync_dir()?;
        }
        Ok(removed)
    }

    /// Publishes a complete, synced archive at `tmp` (and the globals at `globals_tmp`):
    /// rename, sidecars, manifest (last). On failure everything it renamed or wrote is removed
    /// again: a manifest-less archive is never listed, but it would hold its disk space until
    /// the next run.
    pub fn publish(
        &self,
        tmp: &Path,
        globals_tmp: Option<&Path>,
        manifest: &Manifest,
    ) -> Result<PathBuf, LocalError> {
        let id = manifest.id();
        let dump = self.dir.join(&manifest.file);
        fs::rename(tmp, &dump).map_err(err("renaming", tmp))?;
        let rest = (|| {
            if let (Some(tmp), Some(g), Some(sidecar)) =
                (globals_tmp, &manifest.globals, manifest.globals_sidecar())
            {
                fs::rename(tmp, self.dir.join(&g.file)).map_err(err("renaming", tmp))?;
                self.write_atomic(&format!("{}.sha256", g.file), sidecar.as_bytes())?;
            }
            self.write_atomic(&manifest.sidecar_name(), manifest.sidecar().as_bytes())?;
            self.write_atomic(&id.manifest_name(), &manifest.to_json())?;
            self.sync_dir()
        })();
        if let Err(e) = rest {
            // The manifest first, as in `delete`: never a listed backup without its archive.
            for name in id.all_names() {
                Self::remove_file(&self.dir.join(name));
            }
            let _ = self.sync_dir();
            return Err(e);
        }
        Ok(dump)
    }

    /// Runs `f` on the blocking pool: file-system calls may stall (NFS, a full disk) and must
    /// not hold up the runtime's timers, signals and metrics server.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LocalStore) -> Result<T, LocalError> + Send + 'static,
    ) -> Result<T, LocalError> {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || f(&me)).await {
            Ok(r) => r,
            Err(e) => Err(LocalError {
                what: "file-system worker failed on",
                path: self.dir.clone(),
                source: io::Error::other(e.to_string()),
            }),
        }
    }

    /// Replaces the manifest of an existing backup (after a verification).
    pub fn rewrite_manifest(&self, manifest: &Manifest) -> Result<(), LocalError> {
        self.write_atomic(&manifest.id().manifest_name(), &manifest.to_json())?;
        self.sync_dir()
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), LocalError> {
        let tmp = self.dir.join(format!(".{name}{TMP_SUFFIX}"));
        let target = self.dir.join(name);
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(err("writing", &tmp)(e));
        }
        fs::rename(&tmp, &target).map_err(err("renaming", &tmp))
    }

    fn sync_dir(&self) -> Result<(), LocalError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(err("syncing directory", &self.dir))
    }

    /// Every backup with a manifest, of every database, oldest first.
    pub fn list(&self) -> Result<Vec<StoredBackup>, LocalError> {
        let entries = fs::read_dir(&self.dir).map_err(err("listing", &self.dir))?;
        let mut out = Vec::new();
        for e in entries.filter_map(|e| e.ok()) {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let Some((id, FileKind::Manifest)) = BackupId::parse_file_name(&name) else {
                continue;
            };
            let path = e.path();
            let shown = path.display().to_string();
            let manifest = read_bounded(&path, MAX_MANIFEST_BYTES)
                .map_err(|e| BadInput::new(&shown, format!("cannot read {shown}: {e}")))
                .and_then(|b| {
                    Manifest::for_id(&b, &id)
                        .map_err(|e| BadInput::new(&shown, format!("{shown}: {e}")))
                });
            let dump = match &manifest {
                Ok(m) => self.dir.join(&m.file),
                Err(_) => self.dump_path(&id),
            };
            out.push(StoredBackup {
                dump_present: dump.is_file(),
                id,
                manifest,
                archive: dump.display().to_string(),
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Deletes a backup: the manifest first, so a half-deleted backup is never listed.
    pub fn delete(&self, id: &BackupId) -> Result<(), LocalError> {
        for name in id.all_names() {
            let p = self.dir.join(name);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(err("deleting", &p)(e)),
            }
        }
        self.sync_dir()
    }

    /// Removes one file, ignoring a missing one.
    pub fn remove_file(path: &Path) {
        if let Err(e) = fs::remove_file(path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove temp file");
        }
    }
}

impl BackupStore for LocalStore {
    type Error = LocalError;

    fn kind(&self) -> &'static str {
        "local"
    }

    async fn list_backups(&self) -> Result<Vec<StoredBackup>, LocalError> {
        self.blocking(|l| l.list()).await
    }

    async fn delete_backup(&self, id: &BackupId) -> Result<(), LocalError> {
        let id = id.clone();
        self.blocking(move |l| l.delete(&id)).await
    }
}

/// Whether `file` (an archive, sidecar or manifest name) belongs to `db`.
fn owned_by(file: &str, db: &str) -> bool {
    let base = file
        .strip_suffix(crate::manifest::GLOBALS_SHA_SUFFIX)
        .or_else(|| file.strip_suffix(crate::manifest::GLOBALS_SUFFIX))
        .or_else(|| file.strip_suffix(crate::manifest::SHA_SUFFIX))
        .or_else(|| file.strip_suffix(crate::manifest::DUMP_SUFFIX))
        .or_else(|| file.strip_suffix(crate::manifest::MANIFEST_SUFFIX));
    base.and_then(BackupId::parse_base)
        .is_some_and(|id| id.db == db)
}

fn older_than(path: &Path, age: Duration) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|d| d > age)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_for(id: &BackupId) -> Manifest {
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "format": 1, "name": id.db, "database": id.db, "file": id.dump_name(),
            "server_version": "15", "server_version_num": 150000, "pg_dump_version": "15",
            "snapshot": "s", "started_at": id.at, "finished_at": id.at, "size_bytes": 1,
            "dump_bytes": 1, "sha256": "0".repeat(64),
            "compression": {"algorithm": "zstd", "level": 1, "threads": 0},
            "row_counts": {}, "verification": null, "tool": "t"
        }))
        .unwrap();
        m.size_bytes = 1;
        m
    }

    #[test]
    fn a_failed_publish_removes_what_it_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let id = BackupId::new("app", chrono::Utc::now());
        let tmp = store.temp_path(&id);
        std::fs::write(&tmp, b"x").unwrap();
        // The manifest's temp name is taken by a directory: its write fails after the archive
        // was renamed and the sidecar written.
        let blocker = dir
            .path()
            .join(format!(".{}{TMP_SUFFIX}", id.manifest_name()));
        std::fs::create_dir(&blocker).unwrap();
        let e = store.publish(&tmp, None, &manifest_for(&id)).unwrap_err();
        assert!(e.to_string().contains("writing"), "{e}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(left, vec![blocker], "left behind");
    }

    #[test]
    fn globals_are_published_listed_and_deleted_with_their_backup() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let id = BackupId::new("app", chrono::Utc::now());
        let (tmp, gtmp) = (store.temp_path(&id), store.globals_temp_path(&id));
        std::fs::write(&tmp, b"x").unwrap();
        std::fs::write(&gtmp, b"g").unwrap();
        let mut m = manifest_for(&id);
        m.globals = Some(crate::manifest::GlobalsArtifact {
            file: id.globals_name(),
            size_bytes: 1,
            sha256: "1".repeat(64),
            role_passwords: false,
        });
        store.publish(&tmp, Some(&gtmp), &m).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut want = vec![
            id.dump_name(),
            id.sha_name(),
            id.globals_name(),
            id.globals_sha_name(),
            id.manifest_name(),
        ];
        want.sort();
        assert_eq!(names, want);
        let listed = store.list().unwrap();
        assert!(listed[0].complete());
        assert_eq!(listed[0].manifest.as_ref().unwrap().globals, m.globals);
        store.delete(&id).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn manifests_must_match_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let at = chrono::Utc::now();
        let real = BackupId::new("app", at);
        let other = BackupId::new("app", at - chrono::Duration::days(1));
        let escape = BackupId::new("../../etc/app", at);
        std::fs::write(
            dir.path().join(real.manifest_name()),
            manifest_for(&other).to_json(),
        )
        .unwrap();
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        let e = listed[0].manifest.as_ref().unwrap_err().to_string();
        assert!(e.contains("describes app-"), "{e}");
        assert!(Manifest::for_id(&manifest_for(&escape).to_json(), &real).is_err());
    }

    #[test]
    fn leftovers_of_other_databases_and_fresh_downloads_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let at = chrono::Utc::now();
        let mine = BackupId::new("app", at);
        let other = BackupId::new("app-2", at);
        let files = [
            store.temp_path(&mine),
            store.temp_path(&other),
            store.dump_path(&mine),
            dir.path().join(mine.sha_name()),
            store.dump_path(&other),
            dir.path().join(mine.globals_name()),
            store.globals_temp_path(&mine),
            store.download_path(&mine),
            dir.path().join("notes.txt"),
        ];
        for f in &files {
            std::fs::write(f, b"x").unwrap();
        }
        let removed = store.clean_leftovers("app").unwrap();
        assert_eq!(removed.len(), 5, "{removed:?}");
        for gone in [0, 2, 3, 5, 6] {
            assert!(!files[gone].exists(), "{:?}", files[gone]);
        }
        for kept in [1, 4, 7, 8] {
            assert!(files[kept].exists(), "{:?}", files[kept]);
        }
    }
}
