//! The registry side of airgap: a client for the OCI distribution API, the seeder that pushes
//! a verified bundle into a registry, what runtimes are told about the mirror, the drift
//! scrub, and upstream cosign signatures and attestations ([`cosign`]). The built-in server is the `registry-server` crate, so the connected side's bundler
//! links no server code.
//!
//! It sits on top of the `airgap` core (format, verification) and is used by the CLI's
//! `registry seed|serve` and by the installer's registry phase. Everything here is async on
//! tokio, because registry traffic is many concurrent requests; the core stays blocking.

pub mod auth;
pub mod client;
pub mod content_digest;
pub mod cosign;
pub mod crypto;
pub mod download;
pub mod manifest;

pub use auth::{AuthFile, Credentials};
pub use client::{describe_error, ClientConfig, RegistryClient, RegistryError, RetryPolicy};
pub mod mirror;
pub mod name;
pub mod release_artifact;
pub mod scrub;
pub mod seed;
pub mod tag_check;

pub use mirror::{MirrorTarget, RewriteMap};
pub use seed::{SeedPlan, SeedReport, Seeder};
