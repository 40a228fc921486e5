//! The local metadata backend: `<store>/.airgap/metadata.jsonl`, one JSON array of changes per
//! line, appended and never rewritten in place.
//!
//! Why a log and not an embedded database: the registry already serves every read from its
//! in-memory catalog (it must, to follow etcd on installed nodes), so the only job left here
//! is durability of a stream of changes. An append is one `write` and, for batches that store
//! a manifest, one `fdatasync`, whatever the number of manifests; a torn last line (power
//! loss mid-append) is detected and cut on the next open; the log is compacted into a
//! snapshot when it has grown well past what it describes. No dependency, no page cache
//! competing with the blobs, nothing to tune.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{BoxFuture, MetadataBackend, MetadataError, Requirement};
use crate::catalog::{Catalog, Change};

pub struct MetadataLog {
    path: PathBuf,
    file: Arc<Mutex<fs::File>>,
}

/// Compact when the log holds this many more changes than a snapshot would.
const COMPACT_SLACK: usize = 4096;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MetadataError + '_ {
    move |cause| MetadataError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

impl MetadataLog {
    /// Opens (creating when absent) the log of the store at `root`.
    pub fn open(root: &Path) -> Result<Self, MetadataError> {
        let dir = root.join(".airgap");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join("metadata.jsonl");
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(MetadataLog {
            path,
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Replays the log into a catalog; cuts a torn last line; compacts a log that has grown
    /// far past its content.
    fn replay(&self) -> Result<Catalog, MetadataError> {
        let file = fs::File::open(&self.path).map_err(io_err(&self.path))?;
        let mut reader = BufReader::new(file);
        let mut catalog = Catalog::default();
        let (mut good_end, mut changes, mut line_no) = (0u64, 0usize, 0usize);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(io_err(&self.path))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            if line.last() != Some(&b'\n') {
                // A torn append: the batch never returned as written; drop it.
                tracing::warn!(path = %self.path.display(), "cutting a torn last metadata record");
                break;
            }
            let batch: Vec<Change> =
                serde_json::from_slice(&line).map_err(|cause| MetadataError::Corrupt {
                    path: self.path.clone(),
                    line: line_no,
                    cause,
                })?;
            for change in &batch {
                catalog.apply(change);
            }
            changes += batch.len();
            good_end += n as u64;
        }
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if file.metadata().map_err(io_err(&self.path))?.len() != good_end {
            file.set_len(good_end).map_err(io_err(&self.path))?;
        }
        drop(file);
        let snapshot = catalog.snapshot();
        if changes > snapshot.len() * 2 + COMPACT_SLACK {
            self.compact(&snapshot)?;
        }
        Ok(catalog)
    }

    /// Replaces the log by a snapshot, atomically (a new file renamed over the old one).
    fn compact(&self, snapshot: &[Change]) -> Result<(), MetadataError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
        {
            let mut w = std::io::BufWriter::new(tmp.as_file_mut());
            for chunk in snapshot.chunks(256) {
                serde_json::to_writer(&mut w, chunk).map_err(|e| MetadataError::Io {
                    path: self.path.clone(),
                    cause: e.into(),
                })?;
                w.write_all(b"\n").map_err(io_err(&self.path))?;
            }
            w.flush().map_err(io_err(&self.path))?;
        }
        tmp.as_file().sync_all().map_err(io_err(&self.path))?;
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let persisted = tmp.persist(&self.path).map_err(|e| MetadataError::Io {
            path: self.path.clone(),
            cause: e.error,
        })?;
        drop(persisted);
        *file = fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        tracing::info!(path = %self.path.display(), records = snapshot.len(), "compacted the registry metadata log");
        Ok(())
    }

    /// One batch as one line: a record is a whole line or nothing.
    fn encode(&self, batch: &[Change]) -> Result<Vec<u8>, MetadataError> {
        let mut line = serde_json::to_vec(batch).map_err(|e| MetadataError::Io {
            path: self.path.clone(),
            cause: e.into(),
        })?;
        line.push(b'\n');
        Ok(line)
    }
}

/// Appends one line (blocking): one write, then `fdatasync` when asked.
fn append(
    file: &Mutex<fs::File>,
    path: &Path,
    line: &[u8],
    sync: bool,
) -> Result<(), MetadataError> {
    let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
    let before = file.metadata().map_err(io_err(path))?.len();
    if let Err(cause) = file.write_all(line) {
        // A short write (disk full) must not leave half a record for the next append to
        // follow: cut back to where this one started.
        let _ = file.set_len(before);
        return Err(MetadataError::Io {
            path: path.to_path_buf(),
            cause,
        });
    }
    if sync {
        file.sync_data().map_err(io_err(path))?;
    }
    Ok(())
}

impl MetadataBackend for MetadataLog {
    fn describe(&self) -> String {
        format!("log at {}", self.path.display())
    }

    fn load(&self) -> BoxFuture<'_, Result<Catalog, MetadataError>> {
        // Once, at startup, before anything is served: reading inline is fine.
        Box::pin(async move { self.replay() })
    }

    fn commit<'a>(
        &'a self,
        batch: &'a [Change],
        _requires: &'a [Requirement],
    ) -> BoxFuture<'a, Result<bool, MetadataError>> {
        // The layout store checks requirements under its write lock; this process is the
        // log's only writer.
        Box::pin(async move {
            let line = self.encode(batch)?;
            let sync = batch.iter().any(|c| !matches!(c, Change::LinkBlob { .. }));
            let (file, path) = (self.file.clone(), self.path.clone());
            tokio::task::spawn_blocking(move || append(&file, &path, &line, sync))
                .await
                .map_err(|e| MetadataError::Io {
                    path: self.path.clone(),
                    cause: std::io::Error::other(e),
                })??;
            Ok(true)
        })
    }
}
