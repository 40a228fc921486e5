//! Serving: TLS setup, the accept loop under the connection policy, and the per-request
//! wrapper (rate limit, authorization, metrics, the access log) around the router.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::access;
use crate::http::*;
use crate::Registry;
use crate::ServeError;

/// Loads a PEM certificate chain and private key into a rustls server configuration with the
/// library's safe defaults (TLS 1.2 and 1.3, no legacy suites).
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServeError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| ServeError::TlsRead {
            path: p.to_path_buf(),
            source,
        })
    };
    let key_pem = zeroize::Zeroizing::new(read(key)?);
    tls_acceptor_from_pem(&read(cert)?, &key_pem, &cert.display().to_string())
}

/// The same from PEM bytes: a chain (leaf first) and its key; `what` names them in errors.
pub fn tls_acceptor_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &str,
) -> Result<TlsAcceptor, ServeError> {
    use rustls_pki_types::pem::PemObject;
    let pem = |source| ServeError::TlsPem {
        what: what.to_string(),
        source,
    };
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(ServeError::NoCertificate {
            what: what.to_string(),
        });
    }
    let key_der = match rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(key) => key,
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            return Err(ServeError::NoKey {
                what: what.to_string(),
            })
        }
        Err(e) => return Err(pem(e)),
    };
    let config_error = |source| ServeError::TlsConfig {
        what: what.to_string(),
        source,
    };
    let provider = registry::crypto::provider();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds `addr` (port 0 picks one): the caller learns the address before serving starts.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|cause| ServeError::Bind { addr, cause })
}

impl Registry {
    /// Serves connections until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: Option<TlsAcceptor>) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let registry = self.clone();
            let gate = self.gate.clone();
            let tls = tls.clone();
            tokio::spawn(gate.serve(stream, peer, tls, move |req| {
                let registry = registry.clone();
                async move { registry.handle(req, peer).await }
            }));
        }
    }

    /// Serves HTTP/1.1 requests on one connection from `peer` until it closes, with no
    /// connection policy: the request fuzzer drives it with raw bytes (`serve` runs every
    /// accepted connection under the policy instead).
    pub async fn serve_connection<S>(self: Arc<Self>, io: S, peer: SocketAddr)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = hyper::service::service_fn(move |req| {
            let registry = self.clone();
            async move { Ok::<_, Infallible>(registry.handle(req, peer).await) }
        });
        if let Err(e) = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), service)
            .await
        {
            tracing::debug!(%peer, error = %e, "connection ended");
        }
    }

    pub(crate) async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = std::time::Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let write = !matches!(method, Method::GET | Method::HEAD);
        let has_body = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
            || req.headers().contains_key(hyper::header::TRANSFER_ENCODING);
        let (user, mut response) = if self
            .rate_limit
            .as_ref()
            .is_some_and(|l| !l.allow(peer.ip()))
        {
            self.metrics.rate_limited();
            (
                None,
                too_many("too many requests from this client; retry later", "1"),
            )
        } else {
            match self.authorize(&req, write, peer).await {
                Ok(user) => (user, self.route(req, peer).await),
                Err(refusal) => (None, refusal),
            }
        };
        // A refused request's body may be unread: say the connection ends here, so a client
        // does not send its retry down a connection the server is about to close.
        if has_body && !response.status().is_success() {
            response
                .headers_mut()
                .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        let sent = response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        self.metrics.request(
            method.as_str(),
            response.status().as_u16(),
            if method == Method::HEAD {
                0
            } else {
                sent.unwrap_or(0)
            },
        );
        access::AccessRecord {
            client: peer,
            user: user.as_deref(),
            method: method.as_str(),
            path: &path,
            status: response.status().as_u16(),
            bytes: response
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            millis: started.elapsed().as_secs_f64() * 1000.0,
        }
        .emit();
        response
    }
}
