//! Verifying a bundle on disk on every core. sha256 is sequential within an entry, so a
//! one-pass stream can hash only one entry at a time; a file can be read at several places at
//! once. [`BundleArchive::open`] checks the signature and lays out where every entry must be;
//! hashing threads then take entries one by one and read each in place, checking its header
//! (byte for byte what the writer writes), its data's digest and its padding; last, the end
//! marker and the file's length. That is everything the in-order verifier checks, with each
//! byte read once.
//!
//! When anything fails, the in-order verifier runs to name the failure exactly as it would
//! (the first in archive order): a bad bundle costs a second read, a good one never does.
//! Memory is one buffer per thread. A pipe has no places to read from: use [`crate::verify`].

use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::archive::BundleArchive;
use crate::digest::COPY_BUFFER;
use crate::parts::PartsReader;
use crate::signing::PublicKey;
use crate::verify::{VerifiedIndex, VerifyError};

/// Hashing threads for this machine: one per core.
pub fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Verifies the bundle at `path` (or its split parts) with `workers` hashing threads;
/// `progress` gets the bytes hashed so far.
pub fn verify_file(
    path: &Path,
    key: &PublicKey,
    workers: usize,
    progress: impl Fn(u64) + Sync,
) -> Result<VerifiedIndex, VerifyError> {
    match verify_in_parallel(path, key, workers, &progress) {
        Ok(verified) => Ok(verified),
        // Something is wrong. The in-order verifier names it exactly as `bundle verify` of a
        // stream would: the first failure in archive order, with the same words. A bad
        // bundle costs a second read; a good one never does.
        Err(()) => match crate::verify(in_order_reader(path)?, key) {
            Err(e) => Err(e),
            Ok(_) => Err(VerifyError::Io(std::io::Error::other(format!(
                "{} changed while it was being verified",
                path.display()
            )))),
        },
    }
}

fn in_order_reader(path: &Path) -> Result<BufReader<PartsReader>, VerifyError> {
    Ok(BufReader::with_capacity(
        COPY_BUFFER,
        PartsReader::open(path)?,
    ))
}

fn verify_in_parallel(
    path: &Path,
    key: &PublicKey,
    workers: usize,
    progress: &(impl Fn(u64) + Sync),
) -> Result<VerifiedIndex, ()> {
    let archive = BundleArchive::open(path, key).map_err(drop)?;
    let entries = &archive.verified().index().entries;
    let next = AtomicUsize::new(0);
    let hashed = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| {
                let mut buf = vec![0u8; COPY_BUFFER];
                while !failed.load(Ordering::Relaxed) {
                    let Some(entry) = entries.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        return;
                    };
                    let checked = (|| {
                        let mut reader = archive.open_entry(entry.path.as_str())?;
                        loop {
                            let n = reader.read(&mut buf)?;
                            if n == 0 {
                                break;
                            }
                            progress(hashed.fetch_add(n as u64, Ordering::Relaxed) + n as u64);
                        }
                        reader.finish()
                    })();
                    if checked.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    if failed.load(Ordering::Relaxed) || archive.check_end().is_err() {
        return Err(());
    }
    Ok(archive.verified().clone())
}
