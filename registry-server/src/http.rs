//! HTTP plumbing the handlers share: the response body type, error and status responses in the
//! distribution API's shape, request bodies read with a limit, blobs streamed from blocking
//! reads, ranges, query strings and pagination.

use std::sync::Arc;

use airgap::oci::MAX_MANIFEST_SIZE;
use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use registry::content_digest::ContentDigest;

use crate::store;

pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Bytes per read when serving a blob.
pub(crate) const SERVE_CHUNK: usize = 512 << 10;

/// A request body of at most `limit` bytes; `None` when it is longer.
pub(crate) async fn read_limited(
    mut body: Incoming,
    limit: u64,
) -> Result<Option<Vec<u8>>, hyper::Error> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            if out.len() as u64 + data.len() as u64 > limit {
                return Ok(None);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Some(out))
}

/// A body that reads `[start, end)` of a blob on blocking threads, a chunk at a time.
pub(crate) async fn stream_blob(
    data: store::BlobData,
    start: u64,
    end: u64,
) -> std::io::Result<Body> {
    use sha2::Digest as _;
    // A served bundle was verified when the server started; what is read now must still be
    // that. A whole read is hashed as it goes and its last chunk sent only once the hash
    // matched (a client never receives all of a changed blob); a ranged read, which cannot be
    // hashed, is served only while the bundle's files are as they were verified.
    let check = match &data {
        store::BlobData::Archive {
            digest, stamp, len, ..
        } => {
            if !stamp.unchanged() {
                return Err(std::io::Error::other(
                    "the bundle changed on disk since it was verified; restart `airgap registry serve` to verify it again",
                ));
            }
            (start == 0 && end == *len).then_some(*digest)
        }
        store::BlobData::File { .. } | store::BlobData::Memory(_) => None,
    };
    let opened = Arc::new(
        tokio::task::spawn_blocking(move || data.open())
            .await
            .map_err(std::io::Error::other)??,
    );
    let hasher = check.map(|d| (d, sha2::Sha256::new()));
    let stream = futures_util::stream::unfold((start, hasher), move |(pos, mut hasher)| {
        let opened = opened.clone();
        async move {
            if pos >= end {
                return None;
            }
            let want = SERVE_CHUNK.min((end - pos) as usize);
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; want];
                let mut filled = 0;
                while filled < want {
                    let n = opened.read_at(&mut buf[filled..], pos + filled as u64)?;
                    if n == 0 {
                        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
                    }
                    filled += n;
                }
                Ok(Bytes::from(buf))
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
            match read {
                Ok(bytes) => {
                    let next = pos + bytes.len() as u64;
                    if let Some((expected, h)) = hasher.as_mut() {
                        h.update(&bytes);
                        if next >= end {
                            let found = airgap::Digest::from_bytes(h.clone().finalize().into());
                            if found != *expected {
                                tracing::error!(%expected, %found, "a served blob no longer matches its signed digest; the bundle changed on disk");
                                return Some((
                                    Err(std::io::Error::other("blob changed on disk")),
                                    (end, None),
                                ));
                            }
                        }
                    }
                    Some((Ok(Frame::data(bytes)), (next, hasher)))
                }
                Err(e) => Some((Err(e), (end, None))),
            }
        }
    });
    Ok(BodyExt::boxed_unsync(StreamBody::new(stream)))
}

/// 429 `TOOMANYREQUESTS` with `Retry-After: retry_secs`.
pub(crate) fn too_many(message: &str, retry_secs: &'static str) -> Response<Body> {
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message);
    r.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        HeaderValue::from_static(retry_secs),
    );
    r
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n`, as a half-open range; `None` when unsatisfiable.
pub(crate) fn parse_range(header: &str, len: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (len.saturating_sub(n), len)
        }
        (a, "") => (a.parse().ok()?, len),
        (a, b) => (
            a.parse().ok()?,
            b.parse::<u64>().ok()?.saturating_add(1).min(len),
        ),
    };
    (start < end && start < len).then_some((start, end))
}

pub(crate) fn query_params(query: &str) -> std::collections::HashMap<String, String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // Hex digits read as bytes: slicing the string could split a multi-byte character.
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn paginate(
    key: &str,
    items: Vec<&String>,
    query: &str,
    path: &str,
    name: Option<&str>,
) -> Response<Body> {
    let params = query_params(query);
    let last = params.get("last");
    let mut items: Vec<&String> = items
        .into_iter()
        .filter(|i| last.is_none_or(|l| i.as_str() > l.as_str()))
        .collect();
    let n = params.get("n").and_then(|n| n.parse::<usize>().ok());
    let more = n.is_some_and(|n| items.len() > n);
    if let Some(n) = n {
        items.truncate(n);
    }
    let body = match name {
        Some(name) => serde_json::json!({ "name": name, key: items }),
        None => serde_json::json!({ key: items }),
    };
    let mut r = ok_json(serde_json::to_vec(&body).unwrap_or_default());
    if let (true, Some(n), Some(last)) = (more, n, items.last()) {
        if let Ok(v) = HeaderValue::from_str(&format!("<{path}?n={n}&last={last}>; rel=\"next\"")) {
            r.headers_mut().insert(hyper::header::LINK, v);
        }
    }
    r
}

pub(crate) fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn empty() -> Body {
    full(Vec::new())
}

pub(crate) fn ok_json(bytes: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(full(bytes));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    r
}

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
    let mut r = ok_json(serde_json::to_vec(&body).unwrap_or_default());
    *r.status_mut() = status;
    r
}

pub(crate) fn read_only() -> Response<Body> {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        "a served bundle is read-only; serve an OCI layout directory to accept pushes",
    )
}

pub(crate) fn too_large() -> Response<Body> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "MANIFEST_INVALID",
        &format!("manifest is larger than {MAX_MANIFEST_SIZE} bytes"),
    )
}

pub(crate) fn created(location: &str, digest: &ContentDigest) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::CREATED;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(hyper::header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        h.insert("docker-content-digest", v);
    }
    h.insert(CONTENT_LENGTH, HeaderValue::from(0));
    r
}

pub(crate) fn accepted(location: &str, size: u64, id: &str) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::ACCEPTED;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(hyper::header::LOCATION, v);
    }
    let range = format!("0-{}", size.saturating_sub(1));
    if let Ok(v) = HeaderValue::from_str(&range) {
        h.insert(hyper::header::RANGE, v);
    }
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert("docker-upload-uuid", v);
    }
    h.insert(CONTENT_LENGTH, HeaderValue::from(0));
    r
}

pub(crate) fn bad_digest() -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        "DIGEST_INVALID",
        "provided digest is not a sha256 or sha512 digest",
    )
}

pub(crate) fn upload_unknown() -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
        "blob upload unknown to registry",
    )
}

pub(crate) fn internal(e: &dyn std::fmt::Display) -> Response<Body> {
    error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &e.to_string())
}

pub(crate) fn accepted_empty() -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::ACCEPTED;
    r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(0));
    r
}

pub(crate) fn no_content() -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_never_splits_a_character() {
        for q in ["%a\u{e9}", "%\u{e9}a", "%", "%%", "%e9%", "\u{e9}%4"] {
            let _ = percent_decode(q);
        }
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 100)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn query_decoding() {
        let q = query_params("mount=sha256%3Aab&from=a%2Fb&n=3");
        assert_eq!(q["mount"], "sha256:ab");
        assert_eq!(q["from"], "a/b");
    }
}
