//! The TLS policy every Go component the installer configures is given (etcd, the API server,
//! controller manager, scheduler, kubelet): TLS 1.2 at least, and only ECDHE key exchange with
//! AEAD ciphers, the suites the CIS Kubernetes Benchmark lists as strong. TLS 1.3 suites are not
//! configurable in Go and are all strong.

/// Go's names, comma-joined as the `--tls-cipher-suites` / `--cipher-suites` flags take them.
/// The ChaCha20 suites carry their short names: the only spelling etcd 3.4 knows, and one
/// Kubernetes keeps accepting for compatibility.
pub const CIPHER_SUITES: &str = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305";

/// The `--tls-min-version` / `tlsMinVersion` value.
pub const MIN_VERSION: &str = "VersionTLS12";

/// [`CIPHER_SUITES`] one by one, for configuration files that take a list.
pub fn cipher_suites() -> Vec<&'static str> {
    CIPHER_SUITES.split(',').collect()
}
