//! Uploads: monolithic, chunked and streamed `POST`/`PATCH`/`PUT`, cross-repository mounts,
//! status and cancel. Bytes go to a blob writer and become a blob only when the digest checks.

use std::net::SocketAddr;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use registry::content_digest::ContentDigest;
use registry::name::is_valid_repository;

use crate::http::*;
use crate::metrics::Metrics;
use crate::store::{self, Append, CommitOutcome, LayoutStore, StartUpload, Store};
use crate::Registry;

pub(crate) enum Streamed {
    /// The body is in; the upload's size.
    Done(u64),
    /// The body does not start where the upload ends (its size); nothing was written.
    OutOfOrder(u64),
    Unknown,
}

/// Why a request body did not make it into its upload.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    #[error("upload body ended early")]
    Body(#[source] hyper::Error),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Streams a request body into an upload; with `at`, the body must start there.
pub(crate) async fn stream_into(
    layout: &LayoutStore,
    name: &str,
    id: &str,
    mut at: Option<u64>,
    mut body: Incoming,
    metrics: &Metrics,
) -> Result<Streamed, StreamError> {
    let Some(mut size) = layout.upload_size(name, id).await else {
        return Ok(Streamed::Unknown);
    };
    if at.is_some_and(|at| at != size) {
        return Ok(Streamed::OutOfOrder(size));
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(StreamError::Body)?;
        if let Ok(data) = frame.into_data() {
            metrics.received(data.len() as u64);
            match layout.append(name, id, at.take(), &data).await {
                Ok(Append::Appended(n)) => size = n,
                Ok(Append::OutOfOrder(n)) => return Ok(Streamed::OutOfOrder(n)),
                Ok(Append::UnknownUpload) => return Ok(Streamed::Unknown),
                Err(e) => {
                    // Read the rest of the body (writing none of it) before answering: over
                    // HTTP/1.1 a client still sending sees only a broken pipe when the server
                    // answers early and closes, not why (a full disk, say).
                    while let Some(Ok(_)) = body.frame().await {}
                    return Err(StreamError::Store(e));
                }
            }
        }
    }
    Ok(Streamed::Done(size))
}

/// A chunk's `Content-Range: <start>-<end>` (inclusive), when the client sent one.
pub(crate) fn content_range(req: &Request<Incoming>) -> Result<Option<(u64, u64)>, &'static str> {
    let Some(v) = req.headers().get(hyper::header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = "Content-Range must be <start>-<end>";
    let v = v.to_str().map_err(|_| bad)?.trim();
    // Some clients write the HTTP form, `bytes 0-99/*`.
    let v = v.strip_prefix("bytes ").unwrap_or(v);
    let v = v.split('/').next().unwrap_or(v);
    let (a, b) = v.split_once('-').ok_or(bad)?;
    let (start, end) = (
        a.trim().parse::<u64>().map_err(|_| bad)?,
        b.trim().parse::<u64>().map_err(|_| bad)?,
    );
    if end < start {
        return Err(bad);
    }
    Ok(Some((start, end)))
}

impl Registry {
    pub(crate) async fn upload(
        &self,
        name: &str,
        id: &str,
        query: &str,
        method: Method,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let Store::Layout(layout) = &self.store else {
            return read_only();
        };
        let params = query_params(query);
        let location = |id: &str| format!("/v2/{name}/blobs/uploads/{id}");
        match (method, id) {
            (Method::POST, "") => {
                if let (Some(mount), Some(from)) = (params.get("mount"), params.get("from")) {
                    if let (Ok(digest), true) =
                        (mount.parse::<ContentDigest>(), is_valid_repository(from))
                    {
                        match layout.mount(name, &digest, from).await {
                            Ok(true) => {
                                return created(&format!("/v2/{name}/blobs/{digest}"), &digest)
                            }
                            Ok(false) => {}
                            Err(e) => return internal(&e),
                        }
                    }
                }
                let id = match layout.start_upload(name, peer.ip()).await {
                    Ok(StartUpload::Started(id)) => id,
                    Ok(StartUpload::TooMany) => {
                        return error(
                            StatusCode::TOO_MANY_REQUESTS,
                            "TOOMANYREQUESTS",
                            "this client has too many uploads open; finish or cancel some",
                        )
                    }
                    Err(e) => return internal(&e),
                };
                if let Some(digest) = params.get("digest") {
                    // Monolithic upload: POST with the whole blob.
                    return self.finish_upload(layout, name, &id, digest, req).await;
                }
                accepted(&location(&id), 0, &id)
            }
            (Method::PATCH, id) if !id.is_empty() => {
                match self.append_chunk(layout, name, id, req).await {
                    Ok(size) => accepted(&location(id), size, id),
                    Err(refused) => refused,
                }
            }
            (Method::PUT, id) if !id.is_empty() => {
                let Some(digest) = params.get("digest") else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "DIGEST_INVALID",
                        "a digest query parameter is required",
                    );
                };
                self.finish_upload(layout, name, id, digest, req).await
            }
            (Method::GET, id) if !id.is_empty() => match layout.upload_size(name, id).await {
                Some(size) => {
                    let mut r = accepted(&location(id), size, id);
                    *r.status_mut() = StatusCode::NO_CONTENT;
                    r
                }
                None => error(
                    StatusCode::NOT_FOUND,
                    "BLOB_UPLOAD_UNKNOWN",
                    "blob upload unknown to registry",
                ),
            },
            (Method::DELETE, id) if !id.is_empty() => {
                if layout.cancel(name, id).await {
                    no_content()
                } else {
                    error(
                        StatusCode::NOT_FOUND,
                        "BLOB_UPLOAD_UNKNOWN",
                        "blob upload unknown to registry",
                    )
                }
            }
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "the operation is unsupported",
            ),
        }
    }

    /// Appends a request's body to upload `id`, checked against its `Content-Range` when it
    /// has one; returns the upload's size. A chunk that does not continue the upload is 416
    /// with the current range; one whose length is not what its range says cancels the upload
    /// (it can no longer be trusted to hold what the client thinks).
    pub(crate) async fn append_chunk(
        &self,
        layout: &LayoutStore,
        name: &str,
        id: &str,
        req: Request<Incoming>,
    ) -> Result<u64, Response<Body>> {
        let range = content_range(&req)
            .map_err(|e| error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", e))?;
        match stream_into(
            layout,
            name,
            id,
            range.map(|r| r.0),
            req.into_body(),
            &self.metrics,
        )
        .await
        {
            Ok(Streamed::Done(size)) if range.is_some_and(|(_, end)| end + 1 != size) => {
                layout.cancel(name, id).await;
                Err(error(
                    StatusCode::BAD_REQUEST,
                    "BLOB_UPLOAD_INVALID",
                    "the chunk's length does not match its Content-Range",
                ))
            }
            Ok(Streamed::Done(size)) => Ok(size),
            Ok(Streamed::OutOfOrder(size)) => {
                let mut r = accepted(&format!("/v2/{name}/blobs/uploads/{id}"), size, id);
                *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                Err(r)
            }
            Ok(Streamed::Unknown) => Err(upload_unknown()),
            Err(e) => {
                layout.cancel(name, id).await;
                Err(error(
                    StatusCode::BAD_REQUEST,
                    "BLOB_UPLOAD_INVALID",
                    &registry::describe_error(&e),
                ))
            }
        }
    }

    pub(crate) async fn finish_upload(
        &self,
        layout: &LayoutStore,
        name: &str,
        id: &str,
        digest: &str,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let Ok(digest) = digest.parse::<ContentDigest>() else {
            layout.cancel(name, id).await;
            return bad_digest();
        };
        // The closing PUT (or a monolithic POST) may carry the last chunk: checked as a PATCH is.
        if let Err(refused) = self.append_chunk(layout, name, id, req).await {
            return refused;
        }
        match layout.commit(name, id, &digest).await {
            Ok(CommitOutcome::Committed) => created(&format!("/v2/{name}/blobs/{digest}"), &digest),
            Ok(CommitOutcome::DigestMismatch(actual)) => error(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                &format!("provided digest did not match uploaded content (content is {actual})"),
            ),
            Ok(CommitOutcome::UnknownUpload) => error(
                StatusCode::NOT_FOUND,
                "BLOB_UPLOAD_UNKNOWN",
                "blob upload unknown to registry",
            ),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &e.to_string()),
        }
    }
}
