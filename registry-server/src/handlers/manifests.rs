//! Manifests: `GET`/`HEAD` by tag or digest, `PUT` (every reference checked first), `DELETE`.

use std::net::SocketAddr;

use airgap::oci::MAX_MANIFEST_SIZE;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use registry::content_digest::ContentDigest;
use registry::name::is_valid_tag;

use crate::http::*;
use crate::store::{Deleted, LayoutStore, PutManifest, Store};
use crate::Registry;

impl Registry {
    pub(crate) async fn get_manifest(
        &self,
        name: &str,
        reference: &str,
        head: bool,
        peer: SocketAddr,
    ) -> Response<Body> {
        let resolved = self.store.catalog().await.resolve(name, reference);
        let Some((digest, record)) = resolved else {
            return error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            );
        };
        let Some(data) = self.blob_or_replica(name, &digest, peer).await else {
            return error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            );
        };
        let mut r = self.blob_response(data, head, None, &digest).await;
        if let Ok(v) = HeaderValue::from_str(&record.media_type) {
            r.headers_mut().insert(CONTENT_TYPE, v);
        }
        r
    }

    pub(crate) async fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let Store::Layout(layout) = &self.store else {
            return read_only();
        };
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_MANIFEST_SIZE) {
            return too_large();
        }
        let media_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let bytes = match read_limited(req.into_body(), MAX_MANIFEST_SIZE).await {
            Ok(Some(b)) => b,
            Ok(None) => return too_large(),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "MANIFEST_INVALID",
                    &format!("body ended early: {}", registry::describe_error(&e)),
                )
            }
        };
        let media_type = match media_type.or_else(|| airgap::oci::detect_media_type(&bytes)) {
            Some(m) => m,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "MANIFEST_INVALID",
                    "manifest media type unknown",
                )
            }
        };
        let (tag, digest) = match reference.parse::<ContentDigest>() {
            Ok(d) if d != d.same_algorithm_of(&bytes) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    "manifest content does not match the digest in the URL",
                );
            }
            Ok(d) => (None, d),
            Err(_) if is_valid_tag(reference) => {
                (Some(reference), airgap::Digest::of(&bytes).into())
            }
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "TAG_INVALID",
                    "manifest tag did not match URI",
                )
            }
        };
        match layout
            .put_manifest(name, tag, digest, &media_type, &bytes)
            .await
        {
            Ok(PutManifest::Stored { digest, subject }) => {
                let mut r = created(&format!("/v2/{name}/manifests/{digest}"), &digest);
                if let Some(v) = subject.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
                    r.headers_mut().insert("oci-subject", v);
                }
                r
            }
            Ok(PutManifest::Missing(missing)) => {
                let list: Vec<String> = missing.iter().map(|d| d.to_string()).collect();
                error(
                    StatusCode::BAD_REQUEST,
                    "MANIFEST_BLOB_UNKNOWN",
                    &format!("blob unknown to registry: {}", list.join(", ")),
                )
            }
            Ok(PutManifest::Invalid(reason)) => error(
                StatusCode::BAD_REQUEST,
                "MANIFEST_INVALID",
                &format!("manifest invalid: {reason}"),
            ),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &e.to_string()),
        }
    }

    pub(crate) fn deletable(&self) -> Result<&LayoutStore, Box<Response<Body>>> {
        match &self.store {
            Store::Layout(layout) if self.options.deletes => Ok(layout),
            Store::Layout(_) => Err(Box::new(error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "deletes are disabled; start the registry with --enable-delete",
            ))),
            Store::Archive(_) => Err(Box::new(read_only())),
        }
    }

    pub(crate) async fn delete_manifest(&self, name: &str, reference: &str) -> Response<Body> {
        let layout = match self.deletable() {
            Ok(l) => l,
            Err(r) => return *r,
        };
        if reference.parse::<ContentDigest>().is_err() && !is_valid_tag(reference) {
            return error(StatusCode::BAD_REQUEST, "TAG_INVALID", "invalid tag");
        }
        match layout.delete_manifest(name, reference).await {
            Ok(Deleted::Deleted) => accepted_empty(),
            Ok(Deleted::NotFound) => error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            ),
            Err(e) => internal(&e),
        }
    }
}
