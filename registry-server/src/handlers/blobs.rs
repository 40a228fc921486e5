//! Blobs: `GET`/`HEAD` (ranges, and a replica fetched from a peer when this node lacks
//! the bytes) and `DELETE` of a blob link.

use std::net::SocketAddr;

use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use registry::content_digest::ContentDigest;

use crate::http::*;
use crate::store::{self, Deleted, Store};
use crate::Registry;

impl Registry {
    /// The blob from this node's store, or fetched from a peer when the catalog links it but
    /// the disk lacks it (never for a request from a peer).
    pub(crate) async fn blob_or_replica(
        &self,
        name: &str,
        digest: &ContentDigest,
        peer: SocketAddr,
    ) -> Option<store::BlobData> {
        if let Some(data) = self.store.blob(name, digest).await {
            return Some(data);
        }
        let (Some(r), Store::Layout(layout)) = (&self.replication, &self.store) else {
            return None;
        };
        if r.is_peer(peer.ip()) || !self.store.catalog().await.has_blob(name, digest) {
            return None;
        }
        if r.fetch(layout, name, digest).await {
            self.store.blob(name, digest).await
        } else {
            None
        }
    }

    pub(crate) async fn get_blob(
        &self,
        name: &str,
        digest: &str,
        head: bool,
        range: Option<&HeaderValue>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let Ok(digest) = digest.parse::<ContentDigest>() else {
            return bad_digest();
        };
        let Some(data) = self.blob_or_replica(name, &digest, peer).await else {
            return error(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                "blob unknown to registry",
            );
        };
        let range = range.and_then(|v| v.to_str().ok()).map(str::to_string);
        self.blob_response(data, head, range.as_deref(), &digest)
            .await
    }

    pub(crate) async fn blob_response(
        &self,
        data: store::BlobData,
        head: bool,
        range: Option<&str>,
        digest: &ContentDigest,
    ) -> Response<Body> {
        let len = data.size();
        let (status, start, end) = match range.map(|r| parse_range(r, len)) {
            None => (StatusCode::OK, 0, len),
            Some(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
            Some(None) => {
                let mut r = error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "RANGE_INVALID",
                    "range not satisfiable",
                );
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    r.headers_mut().insert(hyper::header::CONTENT_RANGE, v);
                }
                return r;
            }
        };
        let body = if head || start == end {
            empty()
        } else {
            match stream_blob(data, start, end).await {
                Ok(b) => b,
                Err(e) => {
                    return error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &e.to_string())
                }
            }
        };
        let mut r = Response::new(body);
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(CONTENT_LENGTH, HeaderValue::from(end - start));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(
            hyper::header::ACCEPT_RANGES,
            HeaderValue::from_static("bytes"),
        );
        if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
            h.insert("docker-content-digest", v.clone());
            if let Ok(etag) = HeaderValue::from_str(&format!("\"{digest}\"")) {
                h.insert(hyper::header::ETAG, etag);
            }
        }
        if status == StatusCode::PARTIAL_CONTENT {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
                h.insert(hyper::header::CONTENT_RANGE, v);
            }
        }
        r
    }

    pub(crate) async fn delete_blob(&self, name: &str, digest: &str) -> Response<Body> {
        let layout = match self.deletable() {
            Ok(l) => l,
            Err(r) => return *r,
        };
        let Ok(digest) = digest.parse::<ContentDigest>() else {
            return bad_digest();
        };
        match layout.delete_blob(name, &digest).await {
            Ok(Deleted::Deleted) => accepted_empty(),
            Ok(Deleted::NotFound) => error(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                "blob unknown to registry",
            ),
            Err(e) => internal(&e),
        }
    }
}
