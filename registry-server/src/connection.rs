//! One connection policy for every listener airgap runs (the registry, the join API): a TLS
//! handshake must finish, and each request's headers arrive, within a deadline (the header
//! deadline also ends a keep-alive connection left idle), and connections are capped per
//! client address and in all. A connection over a cap is answered — 429 past the client's
//! share, 503 past the total — and closed, so a flood of idle or half-open connections costs
//! its sender, not the file descriptors everyone else needs.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// The deadlines and caps of a listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionPolicy {
    /// From accept to a finished TLS handshake.
    pub handshake: Duration,
    /// For each request's headers, and for the next request on an idle keep-alive connection.
    pub header: Duration,
    /// Open connections one client address may hold.
    pub per_client: usize,
    /// Open connections in all.
    pub total: usize,
}

impl Default for ConnectionPolicy {
    fn default() -> Self {
        ConnectionPolicy {
            handshake: Duration::from_secs(10),
            // Longer than the idle timeouts of the clients that keep connections (containerd
            // 30 s, airgap's own 25 s), so they close an idle connection first and no request
            // crosses the server's close.
            header: Duration::from_secs(60),
            per_client: 128,
            total: 2048,
        }
    }
}

/// How long a connection over a cap may take to finish its TLS handshake and be told so:
/// a flood of silent connections must not hold descriptors for the full deadline.
pub const REFUSED_HANDSHAKE: Duration = Duration::from_secs(1);
/// Refused connections being answered at once; past this a refused connection is closed
/// without an answer (it costs no descriptor beyond the accept).
pub const MAX_REFUSING: usize = 256;
/// Descriptors kept for everything else the process opens (blobs, etcd, logs).
pub const DESCRIPTOR_RESERVE: usize = 128;

/// Counts open connections against a policy's caps.
#[derive(Debug)]
pub struct ConnectionGate {
    policy: ConnectionPolicy,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    refusing: std::sync::atomic::AtomicUsize,
}

/// The process's soft limit on open files, from `/proc/self/limits` (None where it cannot be
/// read, or is unlimited).
pub fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The client holds its share: 429.
    Client,
    /// The listener holds its total: 503.
    Total,
}

/// An admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Admitted {
    gate: Arc<ConnectionGate>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut open) = self.gate.open.lock() {
            open.0 = open.0.saturating_sub(1);
            if let Some(n) = open.1.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    open.1.remove(&self.ip);
                }
            }
        }
    }
}

impl ConnectionGate {
    /// A gate for `policy`, its total lowered to what the process's descriptor limit holds
    /// (with the refused connections and a reserve), so connections are refused with an
    /// answer before accept() itself starts failing.
    pub fn new(mut policy: ConnectionPolicy) -> Arc<Self> {
        if let Some(limit) = open_files_limit() {
            let fits = limit
                .saturating_sub(DESCRIPTOR_RESERVE + MAX_REFUSING)
                .max(1);
            if policy.total > fits {
                tracing::info!(
                    limit,
                    total = fits,
                    "connection cap lowered to fit the open-files limit"
                );
                policy.total = fits;
            }
        }
        policy.per_client = policy.per_client.min(policy.total);
        Arc::new(ConnectionGate {
            policy,
            open: Mutex::new((0, HashMap::new())),
            refusing: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    pub fn policy(&self) -> &ConnectionPolicy {
        &self.policy
    }

    /// A place for one more connection from `ip`, or why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refused> {
        let mut open = self.open.lock().map_err(|_| Refused::Total)?;
        if open.0 >= self.policy.total {
            return Err(Refused::Total);
        }
        let mine = open.1.entry(ip).or_insert(0);
        if *mine >= self.policy.per_client {
            return Err(Refused::Client);
        }
        *mine += 1;
        open.0 += 1;
        Ok(Admitted {
            gate: self.clone(),
            ip,
        })
    }

    /// An HTTP/1.1 connection builder with the policy's header (and idle) deadline.
    pub fn http1(&self) -> hyper::server::conn::http1::Builder {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.policy.header);
        builder
    }

    /// Serves one accepted TCP connection under the policy: admitted or refused, the TLS
    /// handshake (when `tls`) within its deadline, then `handle` for each request.
    pub async fn serve<F, Fut, B>(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
        handle: F,
    ) where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use std::sync::atomic::Ordering;
        let _ = stream.set_nodelay(true);
        let admitted = self.admit(peer.ip());
        // A refused connection is answered quickly or not at all: it holds a descriptor only
        // for REFUSED_HANDSHAKE, and at most MAX_REFUSING of them at once.
        let _refusing = match &admitted {
            Ok(_) => None,
            Err(_) => {
                if self.refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
                    self.refusing.fetch_sub(1, Ordering::AcqRel);
                    tracing::debug!(%peer, "connection over the cap closed unanswered");
                    return;
                }
                Some(Refusing(self.clone()))
            }
        };
        let handshake = match admitted {
            Ok(_) => self.policy.handshake,
            Err(_) => self.policy.handshake.min(REFUSED_HANDSHAKE),
        };
        match tls {
            Some(acceptor) => {
                match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                    Ok(Ok(io)) => self.serve_io(io, peer, admitted, handle).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
            None => self.serve_io(stream, peer, admitted, handle).await,
        }
    }

    async fn serve_io<I, F, Fut, B>(
        &self,
        io: I,
        peer: SocketAddr,
        admitted: Result<Admitted, Refused>,
        handle: F,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let io = TokioIo::new(io);
        let result = match admitted {
            Ok(_place) => {
                let handle = Arc::new(handle);
                let service = hyper::service::service_fn(move |req| {
                    let handle = handle.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(req).await) }
                });
                self.http1().serve_connection(io, service).await
            }
            Err(refused) => {
                tracing::debug!(%peer, ?refused, "connection over the cap");
                let service = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(over_cap(refused))
                });
                let mut builder = self.http1();
                builder.keep_alive(false);
                builder.serve_connection(io, service).await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended");
        }
    }
}

/// A refused connection being answered; dropping it frees its place among them.
struct Refusing(Arc<ConnectionGate>);

impl Drop for Refusing {
    fn drop(&mut self) {
        self.0
            .refusing
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The answer on a connection over a cap: the distribution spec's error body, and the
/// connection closes after it.
fn over_cap(refused: Refused) -> Response<Full<Bytes>> {
    let (status, code, message) = match refused {
        Refused::Client => (
            StatusCode::TOO_MANY_REQUESTS,
            "TOOMANYREQUESTS",
            "too many connections from this address; close some and retry",
        ),
        Refused::Total => (
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "the server is at its connection limit; retry later",
        ),
    };
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"{message}"}}]}}"#);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_total_fits_the_open_files_limit_with_room_for_refusals() {
        let limit = open_files_limit().expect("/proc/self/limits names the open-files limit");
        let gate = ConnectionGate::new(ConnectionPolicy {
            total: usize::MAX / 2,
            per_client: usize::MAX / 2,
            ..ConnectionPolicy::default()
        });
        assert!(
            gate.policy().total + MAX_REFUSING + DESCRIPTOR_RESERVE
                <= limit.max(1 + MAX_REFUSING + DESCRIPTOR_RESERVE)
        );
        assert!(gate.policy().per_client <= gate.policy().total);
    }

    use super::*;

    #[test]
    fn caps_count_per_address_and_in_all_and_free_on_drop() {
        let gate = ConnectionGate::new(ConnectionPolicy {
            per_client: 2,
            total: 3,
            ..ConnectionPolicy::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).unwrap_err(), Refused::Client);
        let _b1 = gate.admit(b).unwrap();
        assert_eq!(gate.admit(b).unwrap_err(), Refused::Total);
        drop(a1);
        let _b2 = gate.admit(b).unwrap();
    }
}
