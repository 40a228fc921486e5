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

/// Counts open connections against a policy's caps.
#[derive(Debug)]
pub struct ConnectionGate {
    policy: ConnectionPolicy,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
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
    pub fn new(policy: ConnectionPolicy) -> Arc<Self> {
        Arc::new(ConnectionGate {
            policy,
            open: Mutex::new((0, HashMap::new())),
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
        let _ = stream.set_nodelay(true);
        let admitted = self.admit(peer.ip());
        match tls {
            Some(acceptor) => {
                match tokio::time::timeout(self.policy.handshake, acceptor.accept(stream)).await {
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
