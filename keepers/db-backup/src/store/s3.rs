//! Remote backups in S3-compatible storage (`object_store`).
//!
//! Keys mirror the local names under the prefix. The archive goes up as a streamed multipart
//! upload (aborted on any failure, so no parts linger), then the sidecar, then the manifest with
//! a create-only conditional put: a backup exists remotely exactly when its manifest does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjPath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BackupStore, StoredBackup};
use crate::config::S3Location;
use crate::dump::HashingWriter;
use crate::manifest::{BackupId, FileKind, Manifest};
use keeper_runtime::config::BadInput;
use keeper_runtime::secret::Secret;

/// Parts uploaded at the same time; with the part size this bounds upload memory.
const UPLOAD_CONCURRENCY: usize = 2;
/// S3 allows at most 10 000 parts; parts grow beyond the default for huge archives.
const MAX_PARTS: u64 = 9_000;

/// A remote operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The store answered with an error or could not be reached.
    #[error("{what} {key}: {source}")]
    Store {
        /// The step.
        what: &'static str,
        /// The object key.
        key: String,
        /// object_store's error (URLs in it carry no credentials: requests are signed in headers).
        source: object_store::Error,
    },
    /// The store could not be configured from the environment.
    #[error("S3 configuration: {0}")]
    Config(object_store::Error),
    /// A local file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Local {
        /// The step.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The object exists but is not what its manifest says.
    #[error("{0}")]
    Invalid(String),
}

fn store_err(what: &'static str, key: &ObjPath) -> impl FnOnce(object_store::Error) -> RemoteError {
    let key = key.to_string();
    move |source| RemoteError::Store { what, key, source }
}

/// Static S3 credentials from the settings (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, each also from a file).
#[derive(Debug, Default)]
pub struct S3Keys {
    /// Access key id.
    pub access_key_id: Option<Arc<Secret>>,
    /// Secret access key.
    pub secret_access_key: Option<Arc<Secret>>,
    /// Session token of temporary credentials.
    pub session_token: Option<Arc<Secret>>,
}

/// The bucket and prefix.
#[derive(Debug, Clone)]
pub struct RemoteStore {
    store: Arc<dyn ObjectStore>,
    location: S3Location,
    part_size: usize,
}

impl RemoteStore {
    /// Builds the client from the given static keys, if any, and the standard AWS environment
    /// for the rest (`AWS_REGION`, `AWS_ENDPOINT_URL`, web identity and container
    /// credentials). The keys are passed in because the process scrubs them from its
    /// environment at start. An `http://` endpoint (MinIO, moto) is allowed as given.
    pub fn from_env(
        location: &S3Location,
        part_size: usize,
        keys: &S3Keys,
    ) -> Result<Self, RemoteError> {
        keeper_runtime::install_crypto_provider();
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&location.bucket);
        if let (Some(id), Some(secret)) = (&keys.access_key_id, &keys.secret_access_key) {
            builder = builder
                .with_access_key_id(id.expose())
                .with_secret_access_key(secret.expose());
            if let Some(token) = &keys.session_token {
                builder = builder.with_token(token.expose());
            }
        }
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
        if endpoint.is_some_and(|e| e.starts_with("http://")) {
            builder = builder.with_allow_http(true);
        }
        if builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        let allow_http = builder
            .get_config_value(&AmazonS3ConfigKey::Client(
                object_store::ClientConfigKey::AllowHttp,
            ))
            .is_some_and(|v| v == "true");
        let store = builder
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(allow_http)
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(120)),
            )
            .with_retry(RetryConfig {
                max_retries: 4,
                retry_timeout: Duration::from_secs(120),
                ..RetryConfig::default()
            })
            .build()
            .map_err(RemoteError::Config)?;
        Ok(Self {
            store: Arc::new(store),
            location: location.clone(),
            part_size,
        })
    }

    /// `s3://bucket/prefix`.
    pub fn location(&self) -> &S3Location {
        &self.location
    }

    /// The full key of a file name.
    pub fn key(&self, name: &str) -> ObjPath {
        if self.location.prefix.is_empty() {
            ObjPath::from(name)
        } else {
            ObjPath::from(format!("{}/{name}", self.location.prefix))
        }
    }

    /// `s3://bucket/key` of a file name, as shown to operators.
    pub fn url_of(&self, name: &str) -> String {
        format!("s3://{}/{}", self.location.bucket, self.key(name))
    }

    /// Uploads a published local backup: archive (multipart), sidecar, manifest last.
    /// On failure nothing of this backup is left listed; the caller keeps the local copy.
    pub async fn upload(&self, dump: &Path, manifest: &Manifest) -> Result<String, RemoteError> {
        let id = manifest.id();
        let dump_key = self.key(&manifest.file);
        if let Err(e) = self.upload_file(dump, &dump_key, manifest.size_bytes).await {
            // The archive may have completed before a later step failed; without its manifest
            // it is not a backup, but do not leave it either.
            self.remove_quietly(&dump_key).await;
            return Err(e);
        }
        let sha_key = self.key(&manifest.sidecar_name());
        let rest = async {
            if let (Some(g), Some(sidecar)) = (&manifest.globals, manifest.globals_sidecar()) {
                let path = dump.with_file_name(&g.file);
                let key = self.key(&g.file);
                self.upload_file(&path, &key, g.size_bytes).await?;
                let gsha = self.key(&format!("{}.sha256", g.file));
                self.store
                    .put(&gsha, PutPayload::from(sidecar.into_bytes()))
                    .await
                    .map_err(store_err("uploading", &gsha))?;
            }
            self.store
                .put(&sha_key, PutPayload::from(manifest.sidecar().into_bytes()))
                .await
                .map_err(store_err("uploading", &sha_key))?;
            self.put_manifest(manifest, PutMode::Create).await
        };
        if let Err(e) = rest.await {
            for name in id.all_names().iter().skip(1) {
                self.remove_quietly(&self.key(name)).await;
            }
            return Err(e);
        }
        Ok(self.url_of(&manifest.file))
    }

    async fn upload_file(
        &self,
        path: &Path,
        key: &ObjPath,
        size_bytes: u64,
    ) -> Result<(), RemoteError> {
        let local = |what: &'static str| {
            let path = path.to_path_buf();
            move |source| RemoteError::Local { what, path, source }
        };
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(local("opening"))?;
        let part = self.part_size.max(size_bytes.div_ceil(MAX_PARTS) as usize);
        let upload = self
            .store
            .put_multipart(key)
            .await
            .map_err(store_err("starting upload of", key))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
        let mut buf = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        let streamed: Result<(), RemoteError> = async {
            loop {
                let n = file.read(&mut buf).await.map_err(local("reading"))?;
                if n == 0 {
                    break;
                }
                writer
                    .wait_for_capacity(UPLOAD_CONCURRENCY)
                    .await
                    .map_err(store_err("uploading", key))?;
                writer.write(&buf[..n]);
                sent += n as u64;
            }
            if sent != size_bytes {
                return Err(RemoteError::Invalid(format!(
                    "{} changed while uploading: read {sent} bytes, manifest says {size_bytes}",
                    path.display(),
                )));
            }
            Ok(())
        }
        .await;
        match streamed {
            Ok(()) => writer
                .finish()
                .await
                .map(|_| ())
                .map_err(store_err("completing upload of", key)),
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(key = %key, error = %abort, "aborting the multipart upload failed; a bucket lifecycle rule for incomplete uploads cleans it");
                }
                Err(e)
            }
        }
    }

    /// Writes a manifest (`Create` for a new backup, `Overwrite` after a re-verification).
    pub async fn put_manifest(
        &self,
        manifest: &Manifest,
        mode: PutMode,
    ) -> Result<(), RemoteError> {
        let key = self.key(&manifest.id().manifest_name());
        self.store
            .put_opts(
                &key,
                PutPayload::from(manifest.to_json()),
                PutOptions {
                    mode,
                    ..PutOptions::default()
                },
            )
            .await
            .map(|_| ())
            .map_err(store_err("writing manifest", &key))
    }

    async fn remove_quietly(&self, key: &ObjPath) {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(key = %key, error = %e, "cannot remove partial object"),
        }
    }

    /// Names of the objects directly under the prefix.
    async fn names(&self) -> Result<Vec<String>, RemoteError> {
        let prefix = (!self.location.prefix.is_empty())
            .then(|| ObjPath::from(self.location.prefix.as_str()));
        let listed = self
            .store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(|source| RemoteError::Store {
                what: "listing",
                key: self.location.to_string(),
                source,
            })?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|o| o.location.filename().map(str::to_owned))
            .collect())
    }

    /// Every backup with a manifest, of every database, oldest first.
    pub async fn list(&self) -> Result<Vec<StoredBackup>, RemoteError> {
        let names = self.names().await?;
        let mut out = Vec::new();
        for name in &names {
            let Some((id, FileKind::Manifest)) = BackupId::parse_file_name(name) else {
                continue;
            };
            let manifest = self
                .get_manifest(&id)
                .await
                .map_err(|e| BadInput::new(&id.to_string(), e.to_string()));
            let archive = match &manifest {
                Ok(m) => m.file.clone(),
                Err(_) => id.dump_name(),
            };
            out.push(StoredBackup {
                dump_present: names.contains(&archive),
                archive: self.url_of(&archive),
                id,
                manifest,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Reads and checks one manifest.
    pub async fn get_manifest(&self, id: &BackupId) -> Result<Manifest, RemoteError> {
        let key = self.key(&id.manifest_name());
        let got = self
            .store
            .get(&key)
            .await
            .map_err(store_err("reading", &key))?;
        if got.meta.size > crate::manifest::MAX_MANIFEST_BYTES {
            return Err(RemoteError::Invalid(format!(
                "manifest {key} is {} bytes, more than a manifest can be ({}); not reading it",
                got.meta.size,
                crate::manifest::MAX_MANIFEST_BYTES
            )));
        }
        let bytes = got.bytes().await.map_err(store_err("reading", &key))?;
        let m = Manifest::for_id(&bytes, id)
            .map_err(|e| RemoteError::Invalid(format!("{key}: {e}")))?;
        Ok(m)
    }

    /// Streams the object `name` (under the prefix) into a new file at `dest`; returns its
    /// digest and size.
    pub async fn download_name(
        &self,
        name: &str,
        dest: &Path,
    ) -> Result<(String, u64), RemoteError> {
        let key = self.key(name);
        let local = |what: &'static str| {
            let path = dest.to_path_buf();
            move |source| RemoteError::Local { what, path, source }
        };
        let mut stream = self
            .store
            .get(&key)
            .await
            .map_err(store_err("downloading", &key))?
            .into_stream();
        let file = tokio::fs::File::options()
            .write(true)
            .create_new(true)
            .open(dest)
            .await
            .map_err(local("creating"))?;
        let mut out = tokio::io::BufWriter::new(file);
        let mut hashing = HashingWriter::new(std::io::sink());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(store_err("downloading", &key))?;
            std::io::Write::write_all(&mut hashing, &chunk).map_err(local("hashing"))?;
            out.write_all(&chunk).await.map_err(local("writing"))?;
        }
        out.flush().await.map_err(local("writing"))?;
        out.into_inner()
            .sync_all()
            .await
            .map_err(local("syncing"))?;
        let (_, sha, n) = hashing.finish();
        Ok((sha, n))
    }

    /// Deletes a backup: the manifest first, so a half-deleted backup is never listed.
    pub async fn delete(&self, id: &BackupId) -> Result<(), RemoteError> {
        for name in id.all_names() {
            let key = self.key(&name);
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err("deleting", &key)(e)),
            }
        }
        Ok(())
    }

    /// Removes archives and sidecars of `db` that have no manifest (an upload cut short by a
    /// killed process). Call only while holding the run lock.
    pub async fn clean_leftovers(&self, db: &str) -> Result<Vec<String>, RemoteError> {
        let names = self.names().await?;
        let mut removed = Vec::new();
        for name in &names {
            if let Some((id, kind)) = BackupId::parse_file_name(name)
                && kind != FileKind::Manifest
                && id.db == db
                && !names.contains(&id.manifest_name())
            {
                let key = self.key(name);
                match self.store.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                        removed.push(key.to_string())
                    }
                    Err(e) => return Err(store_err("removing leftover", &key)(e)),
                }
            }
        }
        Ok(removed)
    }
}

impl BackupStore for RemoteStore {
    type Error = RemoteError;

    fn kind(&self) -> &'static str {
        "remote"
    }

    async fn list_backups(&self) -> Result<Vec<StoredBackup>, RemoteError> {
        self.list().await
    }

    async fn delete_backup(&self, id: &BackupId) -> Result<(), RemoteError> {
        self.delete(id).await
    }
}
