//! Paths on object storage (`s3://bucket/prefix`) for the filesystem connector, through the
//! `object_store` crate: S3 and what speaks its API (MinIO, Ceph, moto, ...).
//!
//! Objects are named by the same paths a local table's files have (`s3://b/t/k=v/part-...`),
//! so the connector keeps one naming; a name is an object's key under its bucket. Calls are
//! synchronous for the connector's threads: they run on this storage's own small runtime.

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sluice_common::{Options, Result, SluiceError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The table options of object storage, by the names of Flink's S3 file systems.
pub const OPTIONS: &[&str] = &[
    "s3.endpoint",
    "s3.access-key",
    "s3.secret-key",
    "s3.session-token",
    "s3.region",
    "s3.path.style.access",
];

/// True if `path` is on object storage.
pub fn is_object_path(path: &str) -> bool {
    path.starts_with("s3://") || path.starts_with("s3a://")
}

/// `path` with one scheme for S3 (`s3a://`, Hadoop's, is `s3://`), so that the names of
/// objects listed under it start with it.
pub fn normalize(path: &str) -> String {
    match path.strip_prefix("s3a://") {
        Some(rest) => format!("s3://{rest}"),
        None => path.to_string(),
    }
}

/// A failure on this side of a request (a local file, the runtime) as object_store's error.
fn local_error(source: Box<dyn std::error::Error + Send + Sync>) -> object_store::Error {
    object_store::Error::Generic {
        store: "S3",
        source,
    }
}

/// One bucket.
pub struct ObjectStorage {
    store: AmazonS3,
    /// `s3://bucket`: what a name starts with.
    base: String,
    runtime: tokio::runtime::Runtime,
}

/// Files larger than this are uploaded in parts.
const MULTIPART_BYTES: u64 = 16 << 20;

impl ObjectStorage {
    /// The bucket of `url` (`s3://bucket/...`), with the table's `s3.*` options, then the
    /// environment's (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, ...).
    pub fn open(url: &str, options: &Options) -> Result<Arc<ObjectStorage>> {
        let owner = &options.owner;
        let rest = url
            .strip_prefix("s3://")
            .or_else(|| url.strip_prefix("s3a://"))
            .ok_or_else(|| SluiceError::Config(format!("{owner}: '{url}' is not an s3:// path")))?;
        let bucket = rest.split('/').next().unwrap_or("");
        if bucket.is_empty() {
            return Err(SluiceError::Config(format!(
                "{owner}: option 'path' = '{url}' names no bucket (s3://bucket/prefix)"
            )));
        }
        // rustls (for https endpoints) with ring, as ureq's: rustls deprecates ring's provider
        // for its lack of post-quantum key exchange, but the other (aws-lc) is a large C build.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(e) = options.get("s3.endpoint") {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        if let Some(k) = options.get("s3.access-key") {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = options.get("s3.secret-key") {
            b = b.with_secret_access_key(k);
        }
        if let Some(t) = options.get("s3.session-token") {
            b = b.with_token(t);
        }
        if let Some(r) = options.get("s3.region") {
            b = b.with_region(r);
        }
        if options.get("s3.path.style.access").is_some() {
            let path_style = options.bool("s3.path.style.access", false)?;
            b = b.with_virtual_hosted_style_request(!path_style);
        }
        // A few retries, then the job fails and its restart strategy decides.
        let retry = object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: std::time::Duration::from_secs(30),
            ..Default::default()
        };
        b = b.with_retry(retry);
        let store = b
            .build()
            .map_err(|e| SluiceError::Config(format!("{owner}: object storage at '{url}': {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-object-storage")
            .enable_all()
            .build()
            .map_err(|e| SluiceError::Runtime(format!("starting object storage's runtime: {e}")))?;
        Ok(Arc::new(ObjectStorage {
            store,
            base: format!("s3://{bucket}"),
            runtime,
        }))
    }

    /// The key of the object named `name` (`s3://bucket/key`).
    fn key(&self, name: &Path) -> Result<Key> {
        let s = normalize(&name.to_string_lossy());
        let rest = s
            .strip_prefix(&self.base)
            .ok_or_else(|| SluiceError::Runtime(format!("'{s}' is not in {}", self.base)))?;
        Key::parse(rest.trim_start_matches('/'))
            .map_err(|e| SluiceError::Runtime(format!("'{s}' is not a valid object key: {e}")))
    }

    /// The name of the object with `key`.
    fn name(&self, key: &Key) -> PathBuf {
        PathBuf::from(format!("{}/{key}", self.base))
    }

    /// Runs `f` on the storage's runtime and waits for it (from any thread, even one of
    /// another runtime).
    fn block<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> object_store::Result<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(local_error("the object storage runtime stopped".into())))
    }

    fn error(what: &str, name: &Path, e: object_store::Error) -> SluiceError {
        SluiceError::Runtime(format!("{what} {}: {e}", name.display()))
    }

    /// Uploads the local file `local` as the object `name` (in parts if it is large).
    pub fn upload(&self, local: &Path, name: &Path) -> Result<()> {
        let key = self.key(name)?;
        let size = std::fs::metadata(local)
            .map_err(|e| SluiceError::io(local.display().to_string(), e))?
            .len();
        let store = self.store.clone();
        let result = if size < MULTIPART_BYTES {
            let data = std::fs::read(local)
                .map_err(|e| SluiceError::io(local.display().to_string(), e))?;
            self.block(async move { store.put(&key, PutPayload::from(data)).await.map(|_| ()) })
        } else {
            let local = local.to_path_buf();
            self.block(async move {
                let upload = store.put_multipart(&key).await?;
                let mut w = WriteMultipart::new(upload);
                let mut file = std::fs::File::open(&local).map_err(|e| local_error(e.into()))?;
                let mut buf = vec![0u8; 8 << 20];
                loop {
                    use std::io::Read;
                    let n = file.read(&mut buf).map_err(|e| local_error(e.into()))?;
                    if n == 0 {
                        break;
                    }
                    w.wait_for_capacity(4).await?;
                    w.write(&buf[..n]);
                }
                w.finish().await.map(|_| ())
            })
        };
        result.map_err(|e| Self::error("uploading", name, e))
    }

    /// Writes `data` as the object `name`.
    pub fn put(&self, name: &Path, data: Vec<u8>) -> Result<()> {
        let key = self.key(name)?;
        let store = self.store.clone();
        self.block(async move { store.put(&key, PutPayload::from(data)).await.map(|_| ()) })
            .map_err(|e| Self::error("writing", name, e))
    }

    /// Renames object `from` to `to` (a copy, then a delete); done already if only `to` is
    /// there. Fails if neither is.
    pub fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let (f, t) = (self.key(from)?, self.key(to)?);
        let store = self.store.clone();
        let renamed = self.block(async move { store.rename(&f, &t).await });
        match renamed {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) if self.exists(to)? => Ok(()),
            Err(e) => Err(Self::error("renaming", from, e)),
        }
    }

    /// True if object `name` exists.
    pub fn exists(&self, name: &Path) -> Result<bool> {
        let key = self.key(name)?;
        let store = self.store.clone();
        match self.block(async move { store.head(&key).await }) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Self::error("looking up", name, e)),
        }
    }

    /// The visible objects under `prefix` (a name), sorted: none of the parts of the key
    /// below the prefix starts with `.` or `_` (Flink's hidden files).
    pub fn list(&self, prefix: &Path) -> Result<Vec<PathBuf>> {
        let key = self.key(prefix)?;
        let store = self.store.clone();
        let listed = self.block(async move {
            use futures_util::TryStreamExt;
            store.list(Some(&key)).try_collect::<Vec<_>>().await
        });
        let metas = listed.map_err(|e| Self::error("listing", prefix, e))?;
        let key = self.key(prefix)?;
        let mut out: Vec<PathBuf> = metas
            .into_iter()
            .filter(|m| {
                m.location
                    .prefix_match(&key)
                    .map(|mut parts| !parts.any(|p| p.as_ref().starts_with(['.', '_'])))
                    .unwrap_or(false)
            })
            .map(|m| self.name(&m.location))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Writes object `name` into `file` (streamed: an object larger than memory is fine).
    pub fn download(&self, name: &Path, file: std::fs::File) -> Result<std::fs::File> {
        let key = self.key(name)?;
        let store = self.store.clone();
        self.block(async move {
            use futures_util::StreamExt;
            use std::io::Write;
            let mut file = file;
            let mut chunks = store.get(&key).await?.into_stream();
            while let Some(chunk) = chunks.next().await {
                file.write_all(&chunk?).map_err(|e| local_error(e.into()))?;
            }
            Ok(file)
        })
        .map_err(|e| Self::error("reading", name, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn options() -> Options {
        let mut o = BTreeMap::new();
        o.insert("s3.endpoint".to_string(), "http://127.0.0.1:1".to_string());
        o.insert("s3.access-key".to_string(), "k".to_string());
        o.insert("s3.secret-key".to_string(), "s".to_string());
        o.insert("s3.region".to_string(), "us-east-1".to_string());
        Options::new("table 't'", o)
    }

    #[test]
    fn names_are_keys_in_the_bucket() {
        let s = ObjectStorage::open("s3://bucket/a/b", &options()).unwrap();
        assert_eq!(
            s.key(Path::new("s3://bucket/a/k=v/part-1"))
                .unwrap()
                .as_ref(),
            "a/k=v/part-1"
        );
        assert!(s.key(Path::new("s3://other/a")).is_err());
        assert_eq!(
            s.key(Path::new("s3a://bucket/a/b")).unwrap().as_ref(),
            "a/b"
        );
        assert_eq!(normalize("s3a://b/p"), "s3://b/p");
        assert_eq!(normalize("/tmp/p"), "/tmp/p");
        assert_eq!(s.name(&Key::from("a/b")), PathBuf::from("s3://bucket/a/b"));
        let err = ObjectStorage::open("s3:///x", &options())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("names no bucket"), "{err}");
    }

    #[test]
    fn an_unreachable_endpoint_is_named() {
        let s = ObjectStorage::open("s3://bucket/a", &options()).unwrap();
        let err = s
            .download(Path::new("s3://bucket/a/x"), tempfile::tempfile().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("s3://bucket/a/x"), "{err}");
    }
}
