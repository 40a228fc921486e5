//! The bundles a cache built, used as the cache: a build with `--cache` writes each
//! downloaded blob once, into the bundle, and records where that bundle went
//! (`<cache>/bundles/<id>.json`). The next build reads the recorded bundles' indexes and copies
//! any blob they hold from there, so a cold build costs one write of the bundle's bytes (not
//! two: bundle and cache), and a cache of 200 GB bundles takes no second copy on disk.
//!
//! Nothing here is trusted. A recorded bundle's index is read without its signature (it only
//! says where to look); every byte copied out is hashed by the entry slot it goes into, and a
//! bundle whose entry fails that check is dropped from the records and the blob downloaded.
//! A bundle moved or deleted since is simply forgotten: its blobs are fetched again.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airgap::parts::{BundleFile, BundleRange, PartsReader};
use airgap::tar::{entry_span, padding, Strictness, TarReader, BLOCK};
use airgap::verify::UnverifiedHeader;
use airgap::Digest;

use crate::cache::{BlobCache, CacheError};

#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    path: PathBuf,
}

/// Where one blob sits in one recorded bundle.
#[derive(Clone)]
struct Location {
    bundle: usize,
    data_offset: u64,
    size: u64,
}

struct Recorded {
    record: PathBuf,
    file: Arc<BundleFile>,
}

/// Every blob the recorded bundles hold, by digest.
#[derive(Default)]
pub struct PreviousBundles {
    bundles: Vec<Recorded>,
    blobs: HashMap<Digest, Vec<Location>>,
}

fn records_dir(cache: &BlobCache) -> PathBuf {
    cache.root().join("bundles")
}

/// A record's name: the bundle's absolute path hashed, so one location has one record.
fn record_path(cache: &BlobCache, bundle: &Path) -> PathBuf {
    let id = Digest::of(bundle.as_os_str().as_encoded_bytes());
    records_dir(cache).join(format!("{}.json", id.hex()))
}

impl PreviousBundles {
    /// Reads every recorded bundle's index; records of bundles that are gone or unreadable are
    /// removed.
    pub fn load(cache: &BlobCache) -> Self {
        let mut found = PreviousBundles::default();
        let Ok(dir) = fs::read_dir(records_dir(cache)) else {
            return found;
        };
        for entry in dir.flatten() {
            let record_file = entry.path();
            if record_file.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let bundle = fs::read(&record_file)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok());
            let opened = bundle
                .as_ref()
                .and_then(|r| found.add(&r.path, &record_file));
            if opened.is_none() {
                tracing::debug!(record = %record_file.display(), "recorded bundle is gone; forgetting it");
                let _ = fs::remove_file(&record_file);
            }
        }
        found
    }

    fn add(&mut self, bundle: &Path, record: &Path) -> Option<()> {
        let file = Arc::new(BundleFile::open(bundle).ok()?);
        let mut tar = TarReader::new(PartsReader::open(bundle).ok()?, Strictness::Strict);
        let header = UnverifiedHeader::read(&mut tar).ok()?;
        let index = header.index_unverified().ok()?;
        // The layout follows from the index alone (see airgap::archive).
        let mut offset = tar.position() + padding(tar.position());
        let position = self.bundles.len();
        for entry in &index.claims().entries {
            let location = Location {
                bundle: position,
                data_offset: offset + BLOCK,
                size: entry.size,
            };
            offset += entry_span(entry.size);
            if offset > file.len() {
                return None;
            }
            self.blobs.entry(entry.sha256).or_default().push(location);
        }
        self.bundles.push(Recorded {
            record: record.to_path_buf(),
            file,
        });
        Some(())
    }

    /// Remembers the bundle just placed at `bundle` for later builds.
    pub fn record(cache: &BlobCache, bundle: &Path) -> Result<(), CacheError> {
        let absolute = std::path::absolute(bundle).unwrap_or_else(|_| bundle.to_path_buf());
        let dir = records_dir(cache);
        let err = |cause: io::Error| CacheError {
            path: dir.display().to_string(),
            cause,
        };
        fs::create_dir_all(&dir).map_err(err)?;
        let body = serde_json::to_vec(&Record {
            path: absolute.clone(),
        })
        .map_err(|e| err(io::Error::other(e)))?;
        let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(err)?;
        fs::write(tmp.path(), body).map_err(err)?;
        tmp.persist(record_path(cache, &absolute))
            .map_err(|e| err(e.error))?;
        Ok(())
    }

    /// Where `digest`'s bytes can be read, one recorded bundle after another. Each candidate
    /// is `(bundle, reader)`; pass `bundle` to [`PreviousBundles::corrupt`] when its bytes
    /// fail the digest check.
    pub fn candidates(&self, digest: &Digest) -> Vec<(usize, BundleRange)> {
        self.blobs
            .get(digest)
            .into_iter()
            .flatten()
            .map(|l| {
                (
                    l.bundle,
                    self.bundles[l.bundle].file.range(l.data_offset, l.size),
                )
            })
            .collect()
    }

    /// A recorded bundle held bytes that did not match its own index: changed since it was
    /// built. Later builds forget it; this one still reads its other blobs, each of which is
    /// checked like this one was.
    pub fn corrupt(&self, bundle: usize) {
        if let Some(recorded) = self.bundles.get(bundle) {
            tracing::warn!(
                record = %recorded.record.display(),
                "a bundle recorded in the cache changed since it was built; no longer reading blobs from it"
            );
            let _ = fs::remove_file(&recorded.record);
        }
    }
}
