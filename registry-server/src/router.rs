//! From a request to a handler: the path parsed into a [`Route`] (repository names checked
//! before anything else), the method matched, and who may do what ([`Registry::authorize`]).

use std::net::SocketAddr;

use base64::Engine;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use registry::name::is_valid_repository;

use crate::htpasswd::Verdict;
use crate::http::*;
use crate::Registry;

pub(crate) enum Route<'a> {
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Upload(&'a str, &'a str),
    Tags(&'a str),
    Referrers(&'a str, &'a str),
}

impl<'a> Route<'a> {
    pub(crate) fn name(&self) -> &'a str {
        match self {
            Route::Manifest(n, _)
            | Route::Blob(n, _)
            | Route::Upload(n, _)
            | Route::Tags(n)
            | Route::Referrers(n, _) => n,
        }
    }
}

impl Registry {
    pub(crate) async fn route(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let Some(rest) = path.strip_prefix("/v2/") else {
            if path == "/v2" {
                return ok_json(b"{}".to_vec());
            }
            if path == "/metrics" && req.method() == Method::GET {
                return self.metrics_response().await;
            }
            if path == "/airgap/v1/gc" && req.method() == Method::POST {
                return self.gc(&query).await;
            }
            return error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "not a registry API path",
            );
        };
        if rest.is_empty() {
            return ok_json(b"{}".to_vec());
        }
        if rest == "_catalog" {
            return self.catalog(&query).await;
        }
        let route = if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
            Route::Manifest(name, reference)
        } else if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
            Route::Upload(name, id)
        } else if let Some(name) = rest.strip_suffix("/blobs/uploads") {
            Route::Upload(name, "")
        } else if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
            Route::Blob(name, digest)
        } else if let Some(name) = rest.strip_suffix("/tags/list") {
            Route::Tags(name)
        } else if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
            Route::Referrers(name, digest)
        } else {
            return error(StatusCode::NOT_FOUND, "NOT_FOUND", "unknown API path");
        };
        let name = route.name();
        if !is_valid_repository(name) {
            return error(
                StatusCode::BAD_REQUEST,
                "NAME_INVALID",
                "invalid repository name",
            );
        }
        let method = req.method().clone();
        match (route, method) {
            (Route::Tags(name), Method::GET) => self.tags(name, &query).await,
            (Route::Manifest(name, reference), Method::GET | Method::HEAD) => {
                self.get_manifest(name, reference, req.method() == Method::HEAD, peer)
                    .await
            }
            (Route::Manifest(name, reference), Method::PUT) => {
                let (name, reference) = (name.to_string(), reference.to_string());
                self.put_manifest(&name, &reference, req).await
            }
            (Route::Manifest(name, reference), Method::DELETE) => {
                self.delete_manifest(name, reference).await
            }
            (Route::Blob(name, digest), Method::GET | Method::HEAD) => {
                let head = req.method() == Method::HEAD;
                let range = req.headers().get(hyper::header::RANGE);
                self.get_blob(name, digest, head, range, peer).await
            }
            (Route::Blob(name, digest), Method::DELETE) => self.delete_blob(name, digest).await,
            (Route::Referrers(name, digest), Method::GET) => {
                self.referrers(name, digest, &query).await
            }
            (Route::Upload(name, id), method) => {
                let (name, id) = (name.to_string(), id.to_string());
                self.upload(&name, &id, &query, method, req, peer).await
            }
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "the operation is unsupported",
            ),
        }
    }

    /// Who may do this: `Ok(Some(user))` for a login, `Ok(None)` for an anonymous pull.
    pub(crate) async fn authorize(
        &self,
        req: &Request<Incoming>,
        write: bool,
        peer: SocketAddr,
    ) -> Result<Option<String>, Response<Body>> {
        let Some(htpasswd) = &self.htpasswd else {
            if write {
                return Err(error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "UNSUPPORTED",
                    "this registry is read-only: pushes need the server started with --htpasswd",
                ));
            }
            return Ok(None);
        };
        let creds = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|raw| String::from_utf8(raw).ok());
        if let Some((user, password)) = creds.as_deref().and_then(|c| c.split_once(':')) {
            // The file that names the user checks it; neither does the same work (a decoy),
            // so an answer's timing does not say which users exist.
            let pull_only = self
                .pull_htpasswd
                .as_ref()
                .filter(|p| !htpasswd.has_user(user) && p.has_user(user));
            let file = pull_only.unwrap_or(htpasswd);
            match file.check(user, password, Some(peer.ip())).await {
                Verdict::Accepted if pull_only.is_some() && write => {
                    return Err(error(
                        StatusCode::FORBIDDEN,
                        "DENIED",
                        "this login may only pull",
                    ));
                }
                Verdict::Accepted => return Ok(Some(user.to_string())),
                Verdict::Busy => {
                    return Err(too_many(
                        "too many failed or waiting logins from this address; retry later",
                        "5",
                    ))
                }
                Verdict::Refused => {}
            }
        }
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        );
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"airgap\""),
        );
        Err(r)
    }
}
