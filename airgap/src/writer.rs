//! Writes the bundle archive: `bundle.json`, `bundle.json.sig`, then each entry in index
//! order, streamed and checked against the index as it goes, so a source that changed under
//! us can never produce a bundle whose index lies.

use std::io::{self, Read, Write};

use crate::digest::{copy_hashed, Digest};
use crate::index::{EntryRecord, INDEX_PATH, SIGNATURE_PATH};
use crate::signing::SigningKey;
use crate::tar::{padding, ustar_header, HeaderKind, TarError, END_OF_ARCHIVE, ENTRY_MODE};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("write failed: {0}")]
    Io(io::Error),
    #[error("the bundle would not verify: {0}")]
    Index(#[from] crate::index::IndexError),
    #[error("bundle.json would be {size} bytes, more than the {max} a verifier reads ({entries} entries); split the content into several bundles or use fewer, larger layers")]
    IndexTooLarge { size: u64, max: u64, entries: usize },
    #[error(transparent)]
    Tar(#[from] TarError),
    #[error("{path}: source holds at least {at_least} bytes, expected {expected_size}: it changed or is corrupt")]
    Oversized {
        path: String,
        expected_size: u64,
        at_least: u64,
    },
    #[error("{0} was never written")]
    Unwritten(String),
    #[error("{path}: source has sha256 {actual} and {actual_size} bytes, expected {expected} and {expected_size}: it changed or is corrupt")]
    SourceMismatch {
        path: String,
        expected: Digest,
        expected_size: u64,
        actual: Digest,
        actual_size: u64,
    },
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        WriteError::Io(e)
    }
}

pub struct BundleWriter<W> {
    out: W,
    mtime: u64,
    written: u64,
}

/// The signed index as written, refused when a verifier would refuse it: whatever the build
/// writes must verify (its invariants, and the size cap the verifier reads it under).
pub fn index_bytes(index: &crate::BundleIndex) -> Result<Vec<u8>, WriteError> {
    index.check()?;
    let bytes = index.to_bytes();
    if bytes.len() as u64 > crate::index::MAX_INDEX_SIZE {
        return Err(WriteError::IndexTooLarge {
            size: bytes.len() as u64,
            max: crate::index::MAX_INDEX_SIZE,
            entries: index.entries.len(),
        });
    }
    Ok(bytes)
}

impl<W: Write> BundleWriter<W> {
    /// Writes and signs the index. `mtime` stamps every header (the bundle's creation time).
    pub fn start(
        out: W,
        index_bytes: &[u8],
        key: &SigningKey,
        mtime: u64,
    ) -> Result<Self, WriteError> {
        let mut w = BundleWriter {
            out,
            mtime,
            written: 0,
        };
        w.write_small(INDEX_PATH, index_bytes)?;
        w.write_small(SIGNATURE_PATH, &key.sign(index_bytes).to_bytes())?;
        Ok(w)
    }

    fn write_small(&mut self, path: &str, bytes: &[u8]) -> Result<(), WriteError> {
        self.header(path, bytes.len() as u64)?;
        self.out.write_all(bytes)?;
        self.pad(bytes.len() as u64)
    }

    fn header(&mut self, path: &str, size: u64) -> Result<(), WriteError> {
        let h = ustar_header(path, HeaderKind::Regular, ENTRY_MODE, size, self.mtime)?;
        self.out.write_all(&h)?;
        self.written += 512;
        Ok(())
    }

    fn pad(&mut self, size: u64) -> Result<(), WriteError> {
        let pad = padding(size) as usize;
        self.out.write_all(&END_OF_ARCHIVE[..pad])?;
        self.written += size + pad as u64;
        Ok(())
    }

    /// Streams one entry from `source`, which must yield exactly what `record` says.
    pub fn write_entry(
        &mut self,
        record: &EntryRecord,
        source: &mut dyn Read,
    ) -> Result<(), WriteError> {
        self.header(record.path.as_str(), record.size)?;
        let mut limited = source.take(record.size + 1);
        let (actual, actual_size) = copy_hashed(&mut limited, &mut self.out)?;
        if actual != record.sha256 || actual_size != record.size {
            return Err(WriteError::SourceMismatch {
                path: record.path.to_string(),
                expected: record.sha256,
                expected_size: record.size,
                actual,
                actual_size,
            });
        }
        self.pad(record.size)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn finish(mut self) -> Result<W, WriteError> {
        self.out.write_all(&END_OF_ARCHIVE)?;
        self.out.flush()?;
        Ok(self.out)
    }
}
