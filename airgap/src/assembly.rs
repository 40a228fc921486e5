//! Writes a bundle out of order: every entry's offset follows from the index (the layout is
//! canonical, see [`crate::archive`]), so the archive is sized and its headers written first,
//! and then any number of threads fill entries as their bytes arrive — a download straight
//! from a registry, a copy from a cache — with no staging copy and no ordering between them.
//!
//! Each [`EntrySlot`] hashes what it is given and is accepted only when size and digest match
//! the index, exactly as [`crate::BundleWriter`] checks a sequential write; [`BundleAssembly::finish`]
//! refuses an archive with an entry never accepted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::digest::DigestHasher;
use crate::index::{BundleIndex, EntryRecord, INDEX_PATH, SIGNATURE_PATH};
use crate::parts::BundleFile;
use crate::signing::SigningKey;
use crate::tar::{entry_span, ustar_header, HeaderKind, BLOCK, END_OF_ARCHIVE, ENTRY_MODE};
use crate::writer::WriteError;

pub struct BundleAssembly {
    file: Arc<BundleFile>,
    paths: Vec<PathBuf>,
    entries: Vec<EntryRecord>,
    /// Data offset of each entry, in index order.
    offsets: Vec<u64>,
    accepted: Vec<AtomicBool>,
}

impl BundleAssembly {
    /// Creates the archive's parts in `dir` (at most `split` bytes each) and writes the signed
    /// index, every entry header and the end-of-archive marker. `mtime` stamps every header.
    pub fn create(
        dir: &Path,
        index: &BundleIndex,
        key: &SigningKey,
        mtime: u64,
        split: Option<u64>,
    ) -> Result<Arc<Self>, WriteError> {
        let index_bytes = crate::writer::index_bytes(index)?;
        let signature = key.sign(&index_bytes).to_bytes();
        let small = [
            (INDEX_PATH, &index_bytes[..]),
            (SIGNATURE_PATH, &signature[..]),
        ];
        let mut offsets = Vec::with_capacity(index.entries.len());
        let mut len = 0;
        for (_, bytes) in &small {
            len += entry_span(bytes.len() as u64);
        }
        for entry in &index.entries {
            offsets.push(len + BLOCK);
            len += entry_span(entry.size);
        }
        let total = len + END_OF_ARCHIVE.len() as u64;
        let (file, paths) = BundleFile::create(dir, total, split)?;
        let header = |path: &str, size: u64| {
            ustar_header(path, HeaderKind::Regular, ENTRY_MODE, size, mtime)
        };
        let mut at = 0;
        for (path, bytes) in small {
            file.write_all_at(&header(path, bytes.len() as u64)?, at)?;
            file.write_all_at(bytes, at + BLOCK)?;
            at += entry_span(bytes.len() as u64);
        }
        for (entry, &offset) in index.entries.iter().zip(&offsets) {
            file.write_all_at(&header(entry.path.as_str(), entry.size)?, offset - BLOCK)?;
        }
        Ok(Arc::new(BundleAssembly {
            file: Arc::new(file),
            paths,
            entries: index.entries.clone(),
            accepted: index
                .entries
                .iter()
                .map(|_| AtomicBool::new(false))
                .collect(),
            offsets,
        }))
    }

    pub fn entries(&self) -> &[EntryRecord] {
        &self.entries
    }

    /// A writer for entry `position` (in index order), starting at its first byte. Taking a new
    /// slot for an entry starts it over, so a failed source can be replaced by another.
    pub fn slot(self: &Arc<Self>, position: usize) -> EntrySlot {
        EntrySlot {
            assembly: self.clone(),
            position,
            written: 0,
            written_back: 0,
            hasher: DigestHasher::new(),
        }
    }

    /// The data of entry `position` if it was accepted (its digest matched), else `None`:
    /// what a failed build still has to give.
    pub fn accepted_entry(&self, position: usize) -> Option<crate::parts::BundleRange> {
        let accepted = self.accepted.get(position)?.load(Ordering::Acquire);
        accepted.then(|| {
            self.file
                .range(self.offsets[position], self.entries[position].size)
        })
    }

    /// Flushes the parts to disk and returns their paths, once every entry was accepted.
    pub fn finish(&self) -> Result<Vec<PathBuf>, WriteError> {
        if let Some(i) = self
            .accepted
            .iter()
            .position(|a| !a.load(Ordering::Acquire))
        {
            return Err(WriteError::Unwritten(self.entries[i].path.to_string()));
        }
        self.file.sync_all()?;
        Ok(self.paths.clone())
    }
}

/// The data region of one entry, filled front to back.
pub struct EntrySlot {
    assembly: Arc<BundleAssembly>,
    position: usize,
    written: u64,
    /// How much of `written` was handed to the kernel's writeback already.
    written_back: u64,
    hasher: DigestHasher,
}

/// Writeback is started every this many bytes of an entry (and at its end).
const WRITEBACK_STEP: u64 = 8 << 20;

impl EntrySlot {
    pub fn record(&self) -> &EntryRecord {
        &self.assembly.entries[self.position]
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Starts the entry over from its first byte (a source that must be read again).
    pub fn restart(&mut self) {
        self.written = 0;
        self.written_back = 0;
        self.hasher = DigestHasher::new();
    }

    /// Appends `bytes`; refuses more than the index says the entry holds.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        let record = &self.assembly.entries[self.position];
        if self.written + bytes.len() as u64 > record.size {
            return Err(self.mismatch(bytes.len() as u64));
        }
        let offset = self.assembly.offsets[self.position] + self.written;
        self.assembly.file.write_all_at(bytes, offset)?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        if self.written - self.written_back >= WRITEBACK_STEP {
            self.start_writeback();
        }
        Ok(())
    }

    fn start_writeback(&mut self) {
        let start = self.assembly.offsets[self.position] + self.written_back;
        self.assembly
            .file
            .start_writeback(start, self.written - self.written_back);
        self.written_back = self.written;
    }

    /// Accepts the entry when its size and digest are the index's.
    pub fn finish(mut self) -> Result<(), WriteError> {
        self.start_writeback();
        let record = &self.assembly.entries[self.position];
        let actual = self.hasher.finish();
        if actual != record.sha256 || self.written != record.size {
            return Err(WriteError::SourceMismatch {
                path: record.path.to_string(),
                expected: record.sha256,
                expected_size: record.size,
                actual,
                actual_size: self.written,
            });
        }
        self.assembly.accepted[self.position].store(true, Ordering::Release);
        Ok(())
    }

    fn mismatch(&self, extra: u64) -> WriteError {
        let record = &self.assembly.entries[self.position];
        WriteError::Oversized {
            path: record.path.to_string(),
            expected_size: record.size,
            at_least: self.written + extra,
        }
    }
}

impl std::io::Write for EntrySlot {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        EntrySlot::write(self, buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::index::FORMAT_VERSION;
    use crate::EntryPath;

    fn index_of(blobs: &[Vec<u8>]) -> BundleIndex {
        BundleIndex {
            format_version: FORMAT_VERSION,
            name: "t".into(),
            version: semver::Version::new(1, 0, 0),
            created: "2026-01-01T00:00:00Z".into(),
            expires: None,
            platforms: vec!["all".into()],
            packs: vec![],
            images: vec![],
            // The first two are the layout files every bundle has; the rest blobs.
            entries: blobs
                .iter()
                .enumerate()
                .map(|(i, b)| EntryRecord {
                    path: EntryPath::new(match i {
                        0 => "oci-layout".to_string(),
                        1 => "index.json".to_string(),
                        _ => Digest::of(b).blob_path(),
                    })
                    .unwrap(),
                    size: b.len() as u64,
                    sha256: Digest::of(b),
                })
                .collect(),
            base: None,
            expected_blobs: vec![],
            signature_keys: vec![],
        }
    }

    fn sequential(index: &BundleIndex, blobs: &[Vec<u8>], key: &SigningKey) -> Vec<u8> {
        let mut w = crate::BundleWriter::start(Vec::new(), &index.to_bytes(), key, 7).unwrap();
        for (record, blob) in index.entries.iter().zip(blobs) {
            w.write_entry(record, &mut &blob[..]).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn out_of_order_fill_is_byte_identical_to_a_sequential_write_in_any_split() {
        let key = SigningKey::generate().unwrap();
        let blobs: Vec<Vec<u8>> = [0usize, 1, 511, 512, 513, 70_000]
            .iter()
            .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
            .collect();
        let index = index_of(&blobs);
        let expected = sequential(&index, &blobs, &key);
        for split in [None, Some(1000), Some(4096)] {
            let dir = tempfile::tempdir().unwrap();
            let assembly = BundleAssembly::create(dir.path(), &index, &key, 7, split).unwrap();
            for i in (0..blobs.len()).rev() {
                let mut slot = assembly.slot(i);
                for chunk in blobs[i].chunks(300) {
                    slot.write(chunk).unwrap();
                }
                slot.finish().unwrap();
            }
            let parts = assembly.finish().unwrap();
            let mut got = Vec::new();
            for p in &parts {
                got.extend(std::fs::read(p).unwrap());
            }
            assert_eq!(got, expected, "split {split:?}");
        }
    }

    #[test]
    fn an_index_a_verifier_would_refuse_is_never_written() {
        let key = SigningKey::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Over the verifier's cap: ~200,000 tiny blobs.
        let mut index = index_of(&[b"L".to_vec(), b"I".to_vec()]);
        for i in 0u32..200_000 {
            let d = Digest::of(&i.to_le_bytes());
            index.entries.push(EntryRecord {
                path: EntryPath::new(d.blob_path()).unwrap(),
                size: 4,
                sha256: d,
            });
        }
        let err = BundleAssembly::create(dir.path(), &index, &key, 0, None)
            .err()
            .expect("an oversized index was written");
        assert!(matches!(err, WriteError::IndexTooLarge { .. }), "{err}");
        // And one that breaks an invariant verify checks.
        let mut index = index_of(&[b"L".to_vec(), b"I".to_vec()]);
        index.version = "1.0.0+b".parse().unwrap();
        let err = BundleAssembly::create(dir.path(), &index, &key, 0, None)
            .err()
            .expect("an invalid index was written");
        assert!(matches!(err, WriteError::Index(_)), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn refuses_wrong_content_oversize_and_unfilled_entries() {
        let key = SigningKey::generate().unwrap();
        let blobs = vec![b"hello".to_vec(), b"world!".to_vec()];
        let index = index_of(&blobs);
        let dir = tempfile::tempdir().unwrap();
        let assembly = BundleAssembly::create(dir.path(), &index, &key, 0, None).unwrap();
        let mut slot = assembly.slot(0);
        slot.write(b"jello").unwrap();
        assert!(matches!(
            slot.finish(),
            Err(WriteError::SourceMismatch { .. })
        ));
        let mut slot = assembly.slot(0);
        assert!(matches!(
            slot.write(b"hello!"),
            Err(WriteError::Oversized { .. })
        ));
        let mut slot = assembly.slot(0);
        slot.write(b"hel").unwrap();
        assert!(matches!(
            slot.finish(),
            Err(WriteError::SourceMismatch { .. })
        ));
        let mut slot = assembly.slot(0);
        slot.write(b"hello").unwrap();
        slot.finish().unwrap();
        assert!(matches!(assembly.finish(), Err(WriteError::Unwritten(p)) if p == "index.json"));
    }
}
