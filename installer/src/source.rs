//! Where phases read a release's content from. Today a bundle on disk ([`BundleArchive`]);
//! the same trait can be a registry holding the release (`upgrade --from-registry`) or a peer
//! node (join), so the phases do not change with the source. Every read is checked against
//! the signed index: a blob's bytes count only once [`BlobRead::finish`] said they hash to
//! the digest the verified index names.

use std::io::Read;

use airgap::{BundleArchive, Digest, VerifiedIndex, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Archive(#[from] VerifyError),
}

/// A blob being read; its bytes are trustworthy only once `finish` succeeded.
pub trait BlobRead: Read {
    fn finish(self: Box<Self>) -> Result<(), SourceError>;
}

pub trait ContentSource: Send + Sync {
    /// The signed index the content is checked against.
    fn verified(&self) -> &VerifiedIndex;

    /// A small blob (a manifest) read whole and checked; larger than `limit` is refused.
    fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, SourceError>;

    /// A blob to stream.
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn BlobRead + '_>, SourceError>;
}

impl BlobRead for airgap::archive::EntryReader {
    fn finish(self: Box<Self>) -> Result<(), SourceError> {
        Ok(airgap::archive::EntryReader::finish(*self)?)
    }
}

impl ContentSource for BundleArchive {
    fn verified(&self) -> &VerifiedIndex {
        BundleArchive::verified(self)
    }

    fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, SourceError> {
        Ok(self.read_small(&digest.blob_path(), limit)?)
    }

    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn BlobRead + '_>, SourceError> {
        Ok(Box::new(self.open_entry(&digest.blob_path())?))
    }
}
