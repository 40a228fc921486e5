//! Downloading one blob whose digest is known in advance, checked as it streams: the one
//! download loop behind mirroring a registry into a bundle (bundler) and copying a release
//! from registry to registry (the seeder's registry source).
//!
//! A broken connection or a 5xx is retried with backoff, resuming where it stopped when the
//! registry honours ranges; content that does not hash to the digest fails at once and is
//! never retried into success. Bytes go to a sink as they arrive, so nothing is held whole.

use std::future::Future;

use airgap::digest::DigestHasher;
use airgap::Digest;
pub use bytes::Bytes;

pub use crate::client::DigestMismatch;
use crate::client::{RegistryClient, RegistryError};

/// Where the bytes go.
pub trait Sink: Send {
    type Error: Send;
    /// The registry ignored the range of a resumed request and sends the blob from its first
    /// byte: forget what came before.
    fn restart(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;
    fn write(&mut self, chunk: &Bytes) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError<E> {
    #[error(transparent)]
    Registry(RegistryError),
    /// The sink refused a piece.
    #[error("{0}")]
    Sink(E),
    #[error(transparent)]
    Mismatch(Box<DigestMismatch>),
}

/// Downloads `digest` (`size` bytes) from `repository`, handing each piece to `sink`.
/// Returns only once the bytes handed over hash to `digest` and are `size` long.
pub async fn download<S: Sink>(
    client: &RegistryClient,
    repository: &str,
    digest: &Digest,
    size: u64,
    sink: &mut S,
) -> Result<(), DownloadError<S::Error>> {
    let policy = client.retry_policy();
    let mut hasher = DigestHasher::new();
    let mut attempt = 0;
    loop {
        let have = hasher.len();
        let result = async {
            let mut body = client
                .get_blob(repository, digest, have)
                .await
                .map_err(DownloadError::Registry)?;
            if body.offset() != have {
                sink.restart().await.map_err(DownloadError::Sink)?;
                hasher = DigestHasher::new();
            }
            while let Some(chunk) = body.chunk().await.map_err(DownloadError::Registry)? {
                if hasher.len() + chunk.len() as u64 > size {
                    // Longer than the descriptor says: hash what is there and fail below.
                    hasher.update(&chunk);
                    break;
                }
                hasher.update(&chunk);
                sink.write(&chunk).await.map_err(DownloadError::Sink)?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => break,
            Err(DownloadError::Registry(e))
                if e.is_transient() && attempt + 1 < policy.attempts =>
            {
                tracing::info!(%digest, error = %e, "blob download interrupted; retrying");
                tokio::time::sleep(policy.delay(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
    let len = hasher.len();
    let actual = hasher.finish();
    if actual != *digest || len != size {
        return Err(DownloadError::Mismatch(Box::new(DigestMismatch {
            host: client.host().to_string(),
            repository: repository.to_string(),
            digest: *digest,
            actual,
            len,
        })));
    }
    Ok(())
}
