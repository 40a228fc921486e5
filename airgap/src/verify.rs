//! Verification of a bundle in one streaming pass.
//!
//! [`BundleStream`] is the only way to obtain a [`VerifiedIndex`]: it reads `bundle.json` and
//! its signature (both bounded), checks the signature before parsing a byte of the index, and
//! then hands out entries in archive order, hashing their data as the caller reads it. The
//! caller learns an entry is good from [`BundleStream::finish_entry`] before it commits
//! anything made from it (a registry upload, say); [`verify`] simply drains everything.

use std::collections::HashMap;
use std::io::{self, Read};

use crate::digest::{DigestHasher, COPY_BUFFER};
use crate::entry_path::{EntryPath, EntryPathError};
use crate::index::{
    BundleIndex, EntryRecord, IndexError, INDEX_PATH, MAX_INDEX_SIZE, MAX_SIGNATURE_SIZE,
    SIGNATURE_PATH,
};
use crate::signing::{KeyId, PublicKey, SignatureError, SignatureFile};
use crate::tar::{EntryKind, Strictness, TarError, TarHeader, TarReader, ENTRY_MODE};
use crate::Digest;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Archive(#[from] TarError),
    #[error("archive is truncated inside entry {0}")]
    Truncated(String),
    #[error("the archive is empty")]
    Empty,
    #[error("first entry is `{0}`, expected bundle.json: this is not an airgap bundle")]
    NotABundle(String),
    #[error("second entry is `{0}`, expected bundle.json.sig: the bundle is unsigned")]
    Unsigned(String),
    #[error("{path} is {size} bytes, more than the {limit}-byte limit")]
    TooLarge {
        path: &'static str,
        size: u64,
        limit: u64,
    },
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("entry {path} is a {kind}; bundles hold only regular files")]
    NotRegularFile { path: String, kind: String },
    #[error(transparent)]
    BadPath(#[from] EntryPathError),
    #[error("tar header of entry {0} is not in canonical form")]
    NonCanonicalHeader(String),
    #[error("entry {0} is not listed in bundle.json")]
    NotInIndex(EntryPath),
    #[error("entry {0} appears more than once")]
    Duplicate(String),
    #[error("entry {0} listed in bundle.json is missing from the archive")]
    Missing(EntryPath),
    #[error("entry {path} is {actual} bytes, bundle.json says {expected}")]
    SizeMismatch {
        path: EntryPath,
        expected: u64,
        actual: u64,
    },
    #[error(
        "entry {path} has sha256 {actual}, bundle.json says {expected}: the content was altered"
    )]
    DigestMismatch {
        path: EntryPath,
        expected: Digest,
        actual: Digest,
    },
    #[error("read failed: {0}")]
    Io(io::Error),
    #[error("entry {0} is not where bundle.json puts it: the archive was altered")]
    Misplaced(EntryPath),
    #[error("padding after entry {0} is not zero: the archive was altered")]
    BadPadding(String),
    #[error("no entry {0} in the bundle")]
    NoSuchEntry(String),
}

impl From<io::Error> for VerifyError {
    fn from(e: io::Error) -> Self {
        VerifyError::Io(e)
    }
}

/// A bundle index whose signature verified. Only [`BundleStream`] and
/// [`crate::BundleArchive`] make one.
#[derive(Debug, Clone)]
pub struct VerifiedIndex {
    index: BundleIndex,
    signer: KeyId,
    index_digest: Digest,
}

impl VerifiedIndex {
    pub(crate) fn from_header(
        header: &UnverifiedHeader,
        key: &PublicKey,
    ) -> Result<Self, VerifyError> {
        Self::verify(&header.index_bytes, &header.signatures, key)
    }

    /// Checks `signatures` over the exact `index_bytes` against `key`, and only then parses
    /// them: the one way to a `VerifiedIndex` from bytes (a release manifest fetched from a
    /// registry, say).
    pub fn verify(
        index_bytes: &[u8],
        signatures: &SignatureFile,
        key: &PublicKey,
    ) -> Result<Self, VerifyError> {
        let signer = signatures.verify(key, index_bytes)?;
        let index = BundleIndex::parse(index_bytes)?;
        Ok(VerifiedIndex {
            index,
            signer,
            index_digest: Digest::of(index_bytes),
        })
    }

    pub fn index(&self) -> &BundleIndex {
        &self.index
    }
    pub fn signer(&self) -> KeyId {
        self.signer
    }
    /// sha256 of the exact `bundle.json` bytes: how a delta bundle names its base.
    pub fn index_digest(&self) -> Digest {
        self.index_digest
    }
}

/// A bundle index read without checking its signature: what `bundle inspect` shows. Its
/// claims can be read, never passed where verified content is expected.
#[derive(Debug, Clone)]
pub struct UnverifiedIndex(BundleIndex);

impl UnverifiedIndex {
    pub fn claims(&self) -> &BundleIndex {
        &self.0
    }
}

/// The first two entries, read but not verified: what `bundle inspect` shows.
#[derive(Debug, Clone)]
pub struct UnverifiedHeader {
    pub index_bytes: Vec<u8>,
    pub signatures: SignatureFile,
    /// The mtime every canonical header of this archive carries.
    pub mtime: u64,
}

impl UnverifiedHeader {
    pub fn read<R: Read>(tar: &mut TarReader<R>) -> Result<Self, VerifyError> {
        let first = tar.next_header()?.ok_or(VerifyError::Empty)?;
        if first.path != INDEX_PATH {
            return Err(VerifyError::NotABundle(first.path));
        }
        let index_bytes = read_small(tar, &first, INDEX_PATH, MAX_INDEX_SIZE)?;
        let second = match tar.next_header()? {
            Some(h) => h,
            None => return Err(VerifyError::Unsigned("end of archive".into())),
        };
        if second.path != SIGNATURE_PATH {
            return Err(VerifyError::Unsigned(second.path));
        }
        check_same_stamp(&first, first.mtime)?;
        check_same_stamp(&second, first.mtime)?;
        let sig_bytes = read_small(tar, &second, SIGNATURE_PATH, MAX_SIGNATURE_SIZE)?;
        let signatures = SignatureFile::parse(&sig_bytes)?;
        Ok(UnverifiedHeader {
            index_bytes,
            signatures,
            mtime: first.mtime,
        })
    }

    /// Parses the index without trusting it: for display only.
    /// What the index claims, with no signature checked: for display only. The type keeps
    /// it apart from a [`VerifiedIndex`], which is what anything that acts on content takes.
    pub fn index_unverified(&self) -> Result<UnverifiedIndex, IndexError> {
        BundleIndex::parse(&self.index_bytes).map(UnverifiedIndex)
    }
}

fn read_small<R: Read>(
    tar: &mut TarReader<R>,
    header: &TarHeader,
    path: &'static str,
    limit: u64,
) -> Result<Vec<u8>, VerifyError> {
    check_entry_header(header)?;
    if header.size > limit {
        return Err(VerifyError::TooLarge {
            path,
            size: header.size,
            limit,
        });
    }
    let mut buf = Vec::with_capacity(header.size as usize);
    tar.take(header.size)
        .read_to_end(&mut buf)
        .map_err(|e| truncated_or(e, path))?;
    if (buf.len() as u64) < header.size {
        return Err(VerifyError::Truncated(path.into()));
    }
    Ok(buf)
}

pub(crate) fn truncated_or(e: io::Error, path: &str) -> VerifyError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        VerifyError::Truncated(path.into())
    } else {
        VerifyError::Io(e)
    }
}

/// Every header after the first carries the first one's mtime and the writer's one mode, so
/// the whole archive is the single byte sequence the writer would produce: the streaming and
/// the random-access readers (which compute each header) accept exactly the same archives.
fn check_same_stamp(header: &TarHeader, mtime: u64) -> Result<(), VerifyError> {
    if header.mtime != mtime || header.mode != ENTRY_MODE {
        return Err(VerifyError::NonCanonicalHeader(header.path.clone()));
    }
    Ok(())
}

fn check_entry_header(header: &TarHeader) -> Result<(), VerifyError> {
    if header.kind != EntryKind::Regular {
        return Err(VerifyError::NotRegularFile {
            path: header.path.clone(),
            kind: header.kind.describe(),
        });
    }
    EntryPath::new(header.path.clone())?;
    if !header.is_canonical() {
        return Err(VerifyError::NonCanonicalHeader(header.path.clone()));
    }
    Ok(())
}

/// A bundle being read in one pass, every byte checked against the signed index.
pub struct BundleStream<R> {
    tar: TarReader<R>,
    verified: VerifiedIndex,
    positions: HashMap<EntryPath, usize>,
    next: usize,
    current: Option<(usize, DigestHasher)>,
    /// The mtime on `bundle.json`'s header, which every entry's header repeats.
    mtime: u64,
}

/// An entry whose header matched the index; its data is read through the stream.
#[derive(Debug, Clone)]
pub struct StreamEntry {
    pub record: EntryRecord,
    /// Offset of its first data byte in the (concatenated) archive.
    pub data_offset: u64,
}

impl<R: Read> BundleStream<R> {
    /// Reads and verifies `bundle.json` against `key`. Nothing of the index is parsed before
    /// its signature verified.
    pub fn open(reader: R, key: &PublicKey) -> Result<Self, VerifyError> {
        let mut tar = TarReader::new(reader, Strictness::Strict);
        let header = UnverifiedHeader::read(&mut tar)?;
        let verified = VerifiedIndex::from_header(&header, key)?;
        let positions = verified
            .index
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.clone(), i))
            .collect();
        Ok(BundleStream {
            tar,
            verified,
            positions,
            next: 0,
            current: None,
            mtime: header.mtime,
        })
    }

    pub fn verified(&self) -> &VerifiedIndex {
        &self.verified
    }

    /// Bytes of the archive consumed so far: drives progress bars.
    pub fn position(&self) -> u64 {
        self.tar.position()
    }

    /// Finishes the current entry (draining what was not read) and moves to the next one.
    /// `None` once the archive ended and every listed entry was seen.
    pub fn next_entry(&mut self) -> Result<Option<StreamEntry>, VerifyError> {
        self.finish_entry()?;
        let Some(header) = self.tar.next_header()? else {
            if let Some(missing) = self.verified.index.entries.get(self.next) {
                return Err(VerifyError::Missing(missing.path.clone()));
            }
            return Ok(None);
        };
        check_entry_header(&header)?;
        check_same_stamp(&header, self.mtime)?;
        let path = EntryPath::new(header.path.clone())?;
        let Some(&position) = self.positions.get(&path) else {
            if path.as_str() == INDEX_PATH || path.as_str() == SIGNATURE_PATH {
                return Err(VerifyError::Duplicate(header.path));
            }
            return Err(VerifyError::NotInIndex(path));
        };
        if position < self.next {
            return Err(VerifyError::Duplicate(header.path));
        }
        if position > self.next {
            return Err(VerifyError::Missing(
                self.verified.index.entries[self.next].path.clone(),
            ));
        }
        let record = self.verified.index.entries[position].clone();
        if record.size != header.size {
            return Err(VerifyError::SizeMismatch {
                path,
                expected: record.size,
                actual: header.size,
            });
        }
        self.next += 1;
        self.current = Some((position, DigestHasher::new()));
        Ok(Some(StreamEntry {
            record,
            data_offset: header.data_offset,
        }))
    }

    /// Reads the rest of the current entry and checks its digest. Call it before committing
    /// anything built from the entry's bytes.
    pub fn finish_entry(&mut self) -> Result<(), VerifyError> {
        if self.current.is_none() {
            return Ok(());
        }
        let mut buf = vec![0u8; COPY_BUFFER.min(self.tar.remaining() as usize).max(1)];
        while self.tar.remaining() > 0 {
            self.read_entry(&mut buf)?;
        }
        let Some((position, hasher)) = self.current.take() else {
            return Ok(());
        };
        let record = &self.verified.index.entries[position];
        let actual = hasher.finish();
        if actual != record.sha256 {
            return Err(VerifyError::DigestMismatch {
                path: record.path.clone(),
                expected: record.sha256,
                actual,
            });
        }
        Ok(())
    }

    /// Reads data of the current entry, hashing it. 0 at the entry's end.
    pub fn read_entry(&mut self, buf: &mut [u8]) -> Result<usize, VerifyError> {
        let Some((position, hasher)) = self.current.as_mut() else {
            return Ok(0);
        };
        let n = self
            .tar
            .read(buf)
            .map_err(|e| truncated_or(e, self.verified.index.entries[*position].path.as_str()))?;
        hasher.update(&buf[..n]);
        Ok(n)
    }

    /// Verifies everything that is left and returns the index.
    pub fn finish(mut self) -> Result<VerifiedIndex, VerifyError> {
        while self.next_entry()?.is_some() {}
        Ok(self.verified)
    }
}

/// `Read` over the current entry of a stream, for `io::copy` into an upload or a file. Its
/// bytes are only trustworthy once `finish_entry` succeeded.
impl<R: Read> Read for BundleStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_entry(buf).map_err(|e| match e {
            VerifyError::Io(e) => e,
            other => io::Error::other(other.to_string()),
        })
    }
}

/// Verifies a whole bundle: signature, then every entry's size and digest, in one pass.
pub fn verify<R: Read>(reader: R, key: &PublicKey) -> Result<VerifiedIndex, VerifyError> {
    BundleStream::open(reader, key)?.finish()
}
