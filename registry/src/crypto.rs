//! The TLS crypto provider every airgap listener and pinned client uses: rustls on ring.
//!
//! rustls 0.23.48 deprecates ring's default provider because ring has no post-quantum key
//! exchange (aws-lc-rs has). airgap keeps ring on purpose: it builds with a C compiler alone
//! (aws-lc needs cmake and a much larger toolchain on the connected side), and what crosses
//! these connections is protected today by X25519/P-256 ECDHE with TLS 1.2+ AEAD suites,
//! rustls's defaults. Moving to a post-quantum group is one change here.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// rustls's default cipher suites and key-exchange groups, on ring.
pub fn provider() -> Arc<CryptoProvider> {
    #[allow(deprecated)] // see the module comment
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process's default rustls provider, once. reqwest 0.13 takes its provider from
/// the process default when it is built without aws-lc (`rustls-no-provider`), and panics in
/// `Client::build` when there is none; every airgap client is built after this ran.
pub fn install_default() {
    #[allow(deprecated)] // see the module comment
    let provider = rustls::crypto::ring::default_provider();
    // Err: a provider is installed already (this one, by an earlier call).
    let _ = provider.install_default();
}
