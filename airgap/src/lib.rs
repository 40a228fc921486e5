//! The core of airgap: the signed offline bundle format and everything that must agree on it.
//!
//! A bundle is a plain POSIX tar: `bundle.json` (the [`BundleIndex`]), `bundle.json.sig`
//! (ed25519 [`SignatureFile`]), then an OCI image layout whose every entry the index lists with
//! size and sha256. [`BundleWriter`] writes one; [`BundleStream`] reads one in a single pass and
//! trusts no byte before the signature and the entry's digest say so.
//!
//! This crate knows nothing of where content comes from (the `bundler` crate) or what is done
//! with it on the air-gapped side (the `installer` crate); both depend on it, never the reverse.

pub mod archive;
pub mod assembly;
pub mod digest;
pub mod entry_path;
pub mod error_chain;
pub mod index;
pub mod name;
pub mod oci;
pub mod parts;
pub mod reference;
pub mod signing;
pub mod tar;
pub mod verify;
pub mod verify_file;
pub mod writer;

pub use archive::BundleArchive;
pub use assembly::BundleAssembly;
pub use digest::Digest;
pub use entry_path::EntryPath;
pub use index::{BundleIndex, EntryRecord, ImageRecord, PackRecord};
pub use reference::ImageReference;
pub use signing::{KeyId, PublicKey, SignatureFile, SigningKey};
pub use verify::{verify, BundleStream, UnverifiedIndex, VerifiedIndex, VerifyError};
pub use verify_file::verify_file;
pub use writer::BundleWriter;
