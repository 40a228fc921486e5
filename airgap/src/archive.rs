//! A bundle on disk read at any entry, in any order, by any number of threads: what seeding
//! and serving need, where [`crate::BundleStream`] reads front to back.
//!
//! The archive's layout is fully determined by the signed index: entries in index order, each
//! a canonical header plus padded data. So once the signature verified, every entry's offset is
//! known without scanning, and an entry is trusted exactly when its header block equals the
//! canonical one and its data hashes to the index's digest — the same checks a streaming
//! verification makes, one entry at a time. Nothing outside the entries used is read.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use crate::digest::DigestHasher;
use crate::index::{EntryRecord, SIGNATURE_PATH};
use crate::parts::{BundleFile, BundleRange, PartsReader};
use crate::signing::PublicKey;
use crate::tar::{
    entry_span, padding, ustar_header, HeaderKind, Strictness, TarReader, BLOCK, END_OF_ARCHIVE,
    ENTRY_MODE,
};
use crate::verify::{truncated_or, UnverifiedHeader, VerifiedIndex, VerifyError};

/// A verified bundle index plus where each entry sits in the archive.
#[derive(Debug, Clone)]
pub struct BundleArchive {
    file: Arc<BundleFile>,
    verified: VerifiedIndex,
    mtime: u64,
    /// Entry path -> (index position, header offset).
    offsets: HashMap<String, (usize, u64)>,
    /// The signed `bundle.json` bytes and their signatures, as verified: what a registry
    /// holding this release publishes so that it can be verified there too.
    signed: Arc<(Vec<u8>, crate::signing::SignatureFile)>,
    /// Where the last entry's padding ends: the end-of-archive marker starts here.
    end: u64,
}

impl BundleArchive {
    /// Verifies the signature on `bundle.json` and lays out the entry table. Entry data is
    /// checked later, as each entry is read.
    pub fn open(path: &Path, key: &PublicKey) -> Result<Self, VerifyError> {
        let file = Arc::new(BundleFile::open(path)?);
        let mut tar = TarReader::new(PartsReader::open(path)?, Strictness::Strict);
        let header = UnverifiedHeader::read(&mut tar)?;
        let verified = VerifiedIndex::from_header(&header, key)?;
        // The reader is past the signature's data; its padding ends the block.
        let mut offset = tar.position() + padding(tar.position());
        check_padding(&file, tar.position(), SIGNATURE_PATH)?;
        let mut offsets = HashMap::with_capacity(verified.index().entries.len());
        for (i, entry) in verified.index().entries.iter().enumerate() {
            offsets.insert(entry.path.as_str().to_string(), (i, offset));
            offset += entry_span(entry.size);
        }
        Ok(BundleArchive {
            file,
            verified,
            mtime: header.mtime,
            offsets,
            signed: Arc::new((header.index_bytes, header.signatures)),
            end: offset,
        })
    }

    /// The archive ends as the writer ends it: the end-of-archive marker right after the
    /// last entry, and nothing after it. With every entry read through [`Self::open_entry`],
    /// this completes a random-access verification.
    pub fn check_end(&self) -> Result<(), VerifyError> {
        let marker_len = END_OF_ARCHIVE.len() as u64;
        if self.file.len() != self.end + marker_len {
            return Err(VerifyError::Io(io::Error::other(format!(
                "the archive is {} bytes, not the {} its entries and end marker take",
                self.file.len(),
                self.end + marker_len
            ))));
        }
        let mut marker = [0u8; END_OF_ARCHIVE.len()];
        self.file
            .read_exact_at(&mut marker, self.end)
            .map_err(|e| truncated_or(e, "end-of-archive marker"))?;
        if marker != END_OF_ARCHIVE {
            return Err(VerifyError::Io(io::Error::other(
                "the end-of-archive marker is not zero",
            )));
        }
        Ok(())
    }

    /// The verified `bundle.json` bytes and its signature file.
    pub fn signed_index(&self) -> (&[u8], &crate::signing::SignatureFile) {
        (&self.signed.0, &self.signed.1)
    }

    pub fn verified(&self) -> &VerifiedIndex {
        &self.verified
    }

    pub fn file(&self) -> &Arc<BundleFile> {
        &self.file
    }

    /// Opens an entry after checking its header block. Its bytes are trustworthy once
    /// [`EntryReader::finish`] succeeded.
    pub fn open_entry(&self, path: &str) -> Result<EntryReader, VerifyError> {
        let located = self.locate(path)?;
        let mut header = [0u8; BLOCK as usize];
        self.file
            .read_exact_at(&mut header, located.header_offset)
            .map_err(|e| truncated_or(e, path))?;
        let record = &located.record;
        let expected = ustar_header(
            record.path.as_str(),
            HeaderKind::Regular,
            ENTRY_MODE,
            record.size,
            self.mtime,
        )?;
        if header != expected {
            return Err(VerifyError::Misplaced(record.path.clone()));
        }
        Ok(EntryReader {
            data: self.file.range(located.data_offset, record.size),
            hasher: DigestHasher::new(),
            record: located.record,
        })
    }

    /// Where an entry's data starts, for readers that already verified the whole archive
    /// (a server answering Range requests).
    pub fn locate(&self, path: &str) -> Result<LocatedEntry, VerifyError> {
        let &(position, header_offset) = self
            .offsets
            .get(path)
            .ok_or_else(|| VerifyError::NoSuchEntry(path.to_string()))?;
        Ok(LocatedEntry {
            record: self.verified.index().entries[position].clone(),
            header_offset,
            data_offset: header_offset + BLOCK,
        })
    }

    /// Reads a small entry whole (a manifest, `index.json`) and checks it.
    pub fn read_small(&self, path: &str, limit: u64) -> Result<Vec<u8>, VerifyError> {
        let mut reader = self.open_entry(path)?;
        if reader.record.size > limit {
            return Err(VerifyError::TooLarge {
                path: "manifest",
                size: reader.record.size,
                limit,
            });
        }
        let mut buf = Vec::with_capacity(reader.record.size as usize);
        reader.read_to_end(&mut buf)?;
        reader.finish()?;
        Ok(buf)
    }
}

#[derive(Debug, Clone)]
pub struct LocatedEntry {
    pub record: EntryRecord,
    pub header_offset: u64,
    pub data_offset: u64,
}

/// Checks the zero padding from `end` (the end of an entry's data) to the next block.
fn check_padding(file: &BundleFile, end: u64, path: &str) -> Result<(), VerifyError> {
    let mut pad = [0u8; BLOCK as usize];
    let pad = &mut pad[..padding(end) as usize];
    file.read_exact_at(pad, end)
        .map_err(|e| truncated_or(e, path))?;
    if pad.iter().any(|&b| b != 0) {
        return Err(VerifyError::BadPadding(path.to_string()));
    }
    Ok(())
}

/// One entry's data, hashed as it is read.
pub struct EntryReader {
    data: BundleRange,
    hasher: DigestHasher,
    record: EntryRecord,
}

impl EntryReader {
    pub fn record(&self) -> &EntryRecord {
        &self.record
    }

    /// Succeeds only when every byte was read, they hash to the index's digest, and the
    /// padding after them is zero (so no byte of the archive up to here is unchecked).
    pub fn finish(self) -> Result<(), VerifyError> {
        if self.data.remaining() > 0 {
            return Err(VerifyError::Truncated(self.record.path.to_string()));
        }
        check_padding(
            self.data.file(),
            self.data.position(),
            self.record.path.as_str(),
        )?;
        let actual = self.hasher.finish();
        if actual != self.record.sha256 {
            return Err(VerifyError::DigestMismatch {
                path: self.record.path,
                expected: self.record.sha256,
                actual,
            });
        }
        Ok(())
    }
}

impl Read for EntryReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.data.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("archive is truncated inside entry {}", self.record.path),
            ),
            _ => e,
        })?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
