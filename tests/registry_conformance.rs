//! The built-in registry against the OCI distribution spec v1.1, request by request over raw
//! HTTP/1.1 (so connection reuse is what a Go client would see): early refusals, chunked
//! uploads with Content-Range, referrers, deletes, sha512 digests, metrics; and its metadata
//! in etcd shared by two registry processes.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine;
use common::registries::{
    airgap_serve_with, etcd, etcd_flags, write_htpasswd, Pki, Process, PASSWORD, USER,
};
use sha2::Digest as _;

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Conn {
            reader: BufReader::new(stream),
        }
    }

    /// Sends a request; `None` when the server had closed the connection.
    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        auth: bool,
    ) -> Option<Response> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        if auth {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
            req.push_str(&format!("Authorization: Basic {token}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let stream = self.reader.get_mut();
        if stream.write_all(req.as_bytes()).is_err() || stream.write_all(body).is_err() {
            return None;
        }
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let status = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).ok()?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':')?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; if method == "HEAD" { 0 } else { len }];
        self.reader.read_exact(&mut body).ok()?;
        Some(Response {
            status,
            headers,
            body,
        })
    }

    /// A request without a body, logged in; the server must answer.
    fn call(&mut self, method: &str, path: &str) -> Response {
        self.send(method, path, &[], b"", true)
            .unwrap_or_else(|| panic!("{method} {path}: connection closed"))
    }

    /// Whether the server has closed its end (reads end of stream).
    fn closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn sha512(bytes: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes)))
}

struct Server {
    process: Process,
    _dir: tempfile::TempDir,
}

fn serve(extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    serve_in(dir, extra)
}

fn serve_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
    let htpasswd = dir.path().join("htpasswd");
    write_htpasswd(&htpasswd);
    let mut args = vec!["--htpasswd", htpasswd.to_str().unwrap()];
    args.extend_from_slice(extra);
    let process = airgap_serve_with(&dir.path().join("store"), &args);
    Server { process, _dir: dir }
}

/// Monolithic upload of one blob; returns its digest.
fn push_blob(c: &mut Conn, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let r = c
        .send(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            bytes,
            true,
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    digest
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()})
}

/// Pushes an image (a config and one layer) or, with `subject`, an artifact of
/// `artifact_type` referring to it. Returns the manifest's bytes and the response.
fn push_manifest(
    c: &mut Conn,
    repo: &str,
    reference: &str,
    seed: &str,
    artifact_type: Option<&str>,
    subject: Option<&[u8]>,
) -> (Vec<u8>, Response) {
    let config = format!("{{\"seed\":\"{seed}\"}}").into_bytes();
    let layer = format!("layer of {seed}").into_bytes();
    push_blob(c, repo, &config);
    push_blob(c, repo, &layer);
    let config_type = artifact_type.unwrap_or("application/vnd.oci.image.config.v1+json");
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor(config_type, &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
    });
    if let Some(subject) = subject {
        manifest["subject"] = descriptor("application/vnd.oci.image.manifest.v1+json", subject);
        manifest["annotations"] = serde_json::json!({"org.example.seed": seed});
    }
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let r = c
        .send(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            &bytes,
            true,
        )
        .unwrap();
    (bytes, r)
}

#[test]
fn a_request_refused_before_its_body_is_read_closes_the_connection_and_says_so() {
    let server = serve(&[]);
    let port = server.process.port;
    let refusals: [(&str, &str, bool); 4] = [
        // 401: no credentials.
        ("PUT", "/v2/app/manifests/v1", false),
        // NAME_INVALID.
        ("POST", "/v2/UPPER/blobs/uploads/", true),
        // 405: not an API operation.
        ("PATCH", "/v2/app/tags/list", true),
        // DIGEST_INVALID on a monolithic upload.
        ("POST", "/v2/app/blobs/uploads/?digest=md5:00", true),
    ];
    for (method, path, auth) in refusals {
        let mut c = Conn::open(port);
        let r = c
            .send(method, path, &[], &vec![b'x'; 64 << 10], auth)
            .unwrap();
        assert!(r.status >= 400, "{method} {path}: {}", r.status);
        assert_eq!(
            r.header("connection"),
            Some("close"),
            "{method} {path} answered {} without Connection: close",
            r.status
        );
        assert!(
            c.closed_by_server(),
            "{method} {path}: connection left open"
        );
    }
    // The client's retry, on a new connection as it was told, succeeds.
    let mut c = Conn::open(port);
    let (_, r) = push_manifest(&mut c, "app", "v1", "a", None, None);
    assert_eq!(r.status, 201);
    // A request without a body that is refused keeps the connection usable.
    let r = c.call("GET", "/v2/app/manifests/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("connection"), None);
    let r = c.call("GET", "/v2/app/tags/list");
    assert_eq!(r.status, 200);
}

#[test]
fn chunks_out_of_order_or_repeated_get_416_with_the_current_range() {
    let server = serve(&[]);
    let mut c = Conn::open(server.process.port);
    let blob: Vec<u8> = (0..30u8).collect();
    let r = c.call("POST", "/v2/app/blobs/uploads/");
    assert_eq!(r.status, 202);
    let location = r.header("location").unwrap().to_string();
    let patch = |c: &mut Conn, range: &str, bytes: &[u8]| {
        c.send(
            "PATCH",
            &location,
            &[
                ("Content-Range", range),
                ("Content-Type", "application/octet-stream"),
            ],
            bytes,
            true,
        )
        .unwrap()
    };
    let r = patch(&mut c, "0-9", &blob[..10]);
    assert_eq!((r.status, r.header("range")), (202, Some("0-9")));
    // Repeated.
    let r = patch(&mut c, "0-9", &blob[..10]);
    assert_eq!((r.status, r.header("range")), (416, Some("0-9")));
    assert_eq!(r.header("location"), Some(location.as_str()));
    // Out of order (a gap).
    let mut c = Conn::open(server.process.port);
    let r = patch(&mut c, "20-29", &blob[20..]);
    assert_eq!((r.status, r.header("range")), (416, Some("0-9")));
    // The right next chunk; then a closing PUT whose last chunk skips ahead is 416 with the
    // current range too, and the upload goes on.
    let mut c = Conn::open(server.process.port);
    assert_eq!(patch(&mut c, "10-19", &blob[10..20]).status, 202);
    let digest = sha256(&blob);
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = c
        .send(
            "PUT",
            &format!("{location}{sep}digest={digest}"),
            &[
                ("Content-Range", "25-29"),
                ("Content-Type", "application/octet-stream"),
            ],
            &blob[25..],
            true,
        )
        .unwrap();
    assert_eq!((r.status, r.header("range")), (416, Some("0-19")));
    let mut c = Conn::open(server.process.port);
    assert_eq!(patch(&mut c, "20-29", &blob[20..]).status, 202);
    let r = c
        .send(
            "PUT",
            &format!("{location}{sep}digest={digest}"),
            &[],
            b"",
            true,
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = c.call("GET", &format!("/v2/app/blobs/{digest}"));
    assert_eq!(r.body, blob);
    // A chunk whose length is not what its range says is refused, not appended.
    let r = c.call("POST", "/v2/app/blobs/uploads/");
    let location = r.header("location").unwrap().to_string();
    let mut c = Conn::open(server.process.port);
    let r = c
        .send(
            "PATCH",
            &location,
            &[("Content-Range", "0-99")],
            &blob,
            true,
        )
        .unwrap();
    assert_eq!(r.status, 400);
}

#[test]
fn referrers_list_artifacts_by_subject_filtered_by_artifact_type() {
    let server = serve(&[]);
    let mut c = Conn::open(server.process.port);
    let (image, r) = push_manifest(&mut c, "app", "v1", "image", None, None);
    assert_eq!(r.status, 201);
    assert_eq!(r.header("oci-subject"), None);
    let subject = sha256(&image);
    let (sbom, r) = push_manifest(
        &mut c,
        "app",
        "sbom",
        "sbom",
        Some("application/vnd.example.sbom+json"),
        Some(&image),
    );
    assert_eq!(r.status, 201);
    assert_eq!(r.header("oci-subject"), Some(subject.as_str()));
    let (sig, r) = push_manifest(
        &mut c,
        "app",
        &sha256(&[]),
        "signature",
        Some("application/vnd.example.signature"),
        Some(&image),
    );
    // Pushed by a digest that is not its own: refused (and the connection closed).
    assert_eq!(r.status, 400);
    let mut c = Conn::open(server.process.port);
    let r = c
        .send(
            "PUT",
            &format!("/v2/app/manifests/{}", sha256(&sig)),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            &sig,
            true,
        )
        .unwrap();
    assert_eq!(r.status, 201);

    let r = c.call("GET", &format!("/v2/app/referrers/{subject}"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.oci.image.index.v1+json")
    );
    let index = r.json();
    let mut found: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["digest"].as_str().unwrap().to_string(),
                d["artifactType"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    let mut want = vec![
        (
            sha256(&sbom),
            "application/vnd.example.sbom+json".to_string(),
        ),
        (
            sha256(&sig),
            "application/vnd.example.signature".to_string(),
        ),
    ];
    want.sort();
    assert_eq!(found, want);
    assert!(index["manifests"][0]["annotations"]["org.example.seed"].is_string());

    let r = c.call(
        "GET",
        &format!("/v2/app/referrers/{subject}?artifactType=application/vnd.example.sbom%2Bjson"),
    );
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    let listed = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["digest"], sha256(&sbom));
    assert_eq!(listed[0]["size"], sbom.len());

    // No referrers: an empty index, not a 404.
    let r = c
        .send(
            "GET",
            &format!("/v2/app/referrers/{}", sha256(b"x")),
            &[],
            b"",
            true,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
    // Another repository does not see them.
    let r = c.call("GET", &format!("/v2/other/referrers/{subject}"));
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
}

#[test]
fn deletes_by_digest_and_by_tag_and_only_when_enabled() {
    let disabled = serve(&[]);
    let mut c = Conn::open(disabled.process.port);
    let (image, _) = push_manifest(&mut c, "app", "v1", "a", None, None);
    let r = c
        .send(
            "DELETE",
            &format!("/v2/app/manifests/{}", sha256(&image)),
            &[],
            b"",
            true,
        )
        .unwrap();
    assert_eq!(r.status, 405);
    assert!(String::from_utf8_lossy(&r.body).contains("--enable-delete"));
    let r = c.call("GET", "/v2/app/manifests/v1");
    assert_eq!(r.status, 200);

    let server = serve(&["--enable-delete"]);
    let mut c = Conn::open(server.process.port);
    let (image, _) = push_manifest(&mut c, "app", "v1", "a", None, None);
    let (other, _) = push_manifest(&mut c, "app", "v2", "b", None, None);
    let r = c
        .send(
            "PUT",
            "/v2/app/manifests/also-v1",
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            &image,
            true,
        )
        .unwrap();
    assert_eq!(r.status, 201);
    let tags = |c: &mut Conn| {
        let r = c.call("GET", "/v2/app/tags/list");
        r.json()["tags"].clone()
    };
    assert_eq!(tags(&mut c), serde_json::json!(["also-v1", "v1", "v2"]));

    // By digest: the manifest and both its tags go.
    let digest = sha256(&image);
    let r = c.call("DELETE", &format!("/v2/app/manifests/{digest}"));
    assert_eq!(r.status, 202);
    for reference in [digest.as_str(), "v1", "also-v1"] {
        let r = c.call("GET", &format!("/v2/app/manifests/{reference}"));
        assert_eq!(r.status, 404, "{reference}");
    }
    assert_eq!(tags(&mut c), serde_json::json!(["v2"]));
    let r = c.call("DELETE", &format!("/v2/app/manifests/{digest}"));
    assert_eq!(r.status, 404);
    // The other image is whole.
    let r = c.call("GET", "/v2/app/manifests/v2");
    assert_eq!(r.body, other);

    // By tag: only the tag goes.
    let r = c.call("DELETE", "/v2/app/manifests/v2");
    assert_eq!(r.status, 202);
    assert_eq!(tags(&mut c), serde_json::json!([]));
    let r = c
        .send(
            "GET",
            &format!("/v2/app/manifests/{}", sha256(&other)),
            &[],
            b"",
            true,
        )
        .unwrap();
    assert_eq!(r.status, 200);

    // A blob: unlinked from the repository.
    let blob = push_blob(&mut c, "app", b"lonely blob");
    let r = c.call("DELETE", &format!("/v2/app/blobs/{blob}"));
    assert_eq!(r.status, 202);
    let r = c.call("HEAD", &format!("/v2/app/blobs/{blob}"));
    assert_eq!(r.status, 404);
}

#[test]
fn a_sha512_blob_round_trips_and_a_wrong_one_is_refused() {
    let server = serve(&[]);
    let mut c = Conn::open(server.process.port);
    let blob = b"content addressed by sha512".to_vec();
    let digest = sha512(&blob);
    let r = c
        .send(
            "POST",
            &format!("/v2/app/blobs/uploads/?digest={digest}"),
            &[],
            &blob,
            true,
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    let r = c.call("GET", &format!("/v2/app/blobs/{digest}"));
    assert_eq!((r.status, &r.body), (200, &blob));
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));

    let wrong = sha512(b"something else");
    let mut c = Conn::open(server.process.port);
    let r = c
        .send(
            "POST",
            &format!("/v2/app/blobs/uploads/?digest={wrong}"),
            &[],
            &blob,
            true,
        )
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("DIGEST_INVALID"));
    let mut c = Conn::open(server.process.port);
    let r = c.call("HEAD", &format!("/v2/app/blobs/{wrong}"));
    assert_eq!(r.status, 404);

    // A manifest addressed by its sha512 digest, referencing the sha512 blob as config.
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.example", "digest": digest, "size": blob.len()},
        "layers": [],
    }))
    .unwrap();
    let by = sha512(&manifest);
    let r = c
        .send(
            "PUT",
            &format!("/v2/app/manifests/{by}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            &manifest,
            true,
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = c.call("GET", &format!("/v2/app/manifests/{by}"));
    assert_eq!(r.body, manifest);
}

#[test]
fn tag_listing_paginates_with_n_and_last() {
    let server = serve(&[]);
    let mut c = Conn::open(server.process.port);
    let (image, _) = push_manifest(&mut c, "app", "t0", "a", None, None);
    for t in ["t1", "t2", "t3", "t4"] {
        let r = c
            .send(
                "PUT",
                &format!("/v2/app/manifests/{t}"),
                &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
                &image,
                true,
            )
            .unwrap();
        assert_eq!(r.status, 201);
    }
    let r = c.call("GET", "/v2/app/tags/list?n=2");
    assert_eq!(r.json()["tags"], serde_json::json!(["t0", "t1"]));
    assert_eq!(
        r.header("link"),
        Some("</v2/app/tags/list?n=2&last=t1>; rel=\"next\"")
    );
    let r = c.call("GET", "/v2/app/tags/list?n=2&last=t3");
    assert_eq!(r.json()["tags"], serde_json::json!(["t4"]));
    assert_eq!(r.header("link"), None);
}

#[test]
fn an_idle_upload_expires() {
    let server = serve(&["--upload-idle-timeout", "1s"]);
    let mut c = Conn::open(server.process.port);
    let r = c.call("POST", "/v2/app/blobs/uploads/");
    let idle = r.header("location").unwrap().to_string();
    let r = c.call("POST", "/v2/app/blobs/uploads/");
    let active = r.header("location").unwrap().to_string();
    // `active` is used every 200 ms (well inside its 1 s), `idle` never, until `idle` has sat
    // for 1.5 s: how long the machine takes between two calls cannot expire `active`.
    let since = std::time::Instant::now();
    while since.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            c.call("GET", &active).status,
            204,
            "an upload in use expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Expired uploads are swept when the next one starts.
    let r = c.call("POST", "/v2/app/blobs/uploads/");
    assert_eq!(r.status, 202);
    assert_eq!(c.call("GET", &idle).status, 404);
    assert_eq!(c.call("GET", &active).status, 204);
}

#[test]
fn limits_and_metrics() {
    let server = serve(&["--max-uploads-per-client", "2", "--rate-limit", "50"]);
    let mut c = Conn::open(server.process.port);
    for _ in 0..2 {
        let r = c.call("POST", "/v2/app/blobs/uploads/");
        assert_eq!(r.status, 202);
    }
    let r = c.call("POST", "/v2/app/blobs/uploads/");
    assert_eq!(r.status, 429);
    // A burst past the rate (100 = twice 50/s) is refused with Retry-After, then allowed again.
    let mut c = Conn::open(server.process.port);
    let statuses: Vec<u16> = (0..150).map(|_| c.call("GET", "/v2/").status).collect();
    assert!(statuses.contains(&429), "no request was rate limited");
    // Allowed again once the bucket refilled.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = c.call("GET", "/metrics");
        if r.status != 429 || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).into_owned();
    for want in [
        "airgap_registry_requests_total{method=\"GET\",code=\"200\"}",
        "airgap_registry_requests_total{method=\"POST\",code=\"429\"} 1",
        "airgap_registry_rate_limited_total",
        "airgap_registry_uploads 2",
        "airgap_registry_store_bytes",
        "airgap_registry_manifests 0",
    ] {
        assert!(text.contains(want), "/metrics lacks {want}:\n{text}");
    }
    // Metrics need the same login as everything else.
    let r = Conn::open(server.process.port)
        .send("GET", "/metrics", &[], b"", false)
        .unwrap();
    assert_eq!(r.status, 401);
}

#[test]
fn a_restarted_store_keeps_everything_and_a_torn_log_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (image, digest);
    {
        let htpasswd = dir.path().join("htpasswd");
        write_htpasswd(&htpasswd);
        let server = airgap_serve_with(&store, &["--htpasswd", htpasswd.to_str().unwrap()]);
        let mut c = Conn::open(server.port);
        (image, _) = push_manifest(&mut c, "app", "v1", "a", None, None);
        digest = sha256(&image);
    }
    // Power lost in the middle of an append: half a record at the end of the log.
    let log = store.join(".airgap/metadata.jsonl");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(br#"[{"op":"tag","repo":"app","tag":"half"#)
        .unwrap();
    drop(f);
    let htpasswd = dir.path().join("htpasswd");
    let server = airgap_serve_with(&store, &["--htpasswd", htpasswd.to_str().unwrap()]);
    let mut c = Conn::open(server.port);
    let r = c.call("GET", "/v2/app/manifests/v1");
    assert_eq!((r.status, r.body.clone()), (200, image.clone()));
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.ends_with('\n') && !text.contains("half"),
        "torn record left: {text}"
    );
    // index.json follows (skopeo reads the directory as an OCI layout).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let index = std::fs::read_to_string(store.join("index.json")).unwrap_or_default();
        if index.contains(&digest) && index.contains("app:v1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "index.json never listed the image: {index}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_registries_on_one_etcd_show_one_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let etcd = etcd(dir.path(), &pki);
    let flags = etcd_flags(&etcd, &pki);
    let htpasswd = dir.path().join("htpasswd");
    write_htpasswd(&htpasswd);
    let start = |name: &str| {
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.extend(["--htpasswd", htpasswd.to_str().unwrap(), "--enable-delete"]);
        airgap_serve_with(&dir.path().join(name), &args)
    };
    let a = start("a");
    let b = start("b");
    let mut ca = Conn::open(a.port);
    let (image, r) = push_manifest(&mut ca, "app", "v1", "a", None, None);
    assert_eq!(r.status, 201);
    let tags_on = |port: u16| {
        let r = Conn::open(port)
            .send("GET", "/v2/app/tags/list", &[], b"", true)
            .unwrap();
        r.json()["tags"].clone()
    };
    // b follows a's write through its watch.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tags_on(b.port) != serde_json::json!(["v1"]) {
        assert!(Instant::now() < deadline, "b never saw a's tag");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A delete on b reaches a.
    let mut cb = Conn::open(b.port);
    let r = cb.call("DELETE", "/v2/app/manifests/v1");
    assert_eq!(r.status, 202);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tags_on(a.port) != serde_json::json!([]) {
        assert!(Instant::now() < deadline, "a never saw b's delete");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A restarted registry reads the catalog back from etcd, not from its directory.
    drop(a);
    let a = start("a2");
    let r = Conn::open(a.port)
        .send(
            "GET",
            &format!("/v2/app/manifests/{}", sha256(&image)),
            &[],
            b"",
            true,
        )
        .unwrap();
    // The manifest is in the catalog, its bytes on the first node's disk only (replication
    // between nodes is the HA work): known, not served.
    assert_eq!(r.status, 404);
    let r = Conn::open(a.port)
        .send("GET", "/v2/_catalog", &[], b"", true)
        .unwrap();
    assert_eq!(r.json()["repositories"], serde_json::json!(["app"]));
    // The metadata is in etcd as keys, the log is not used.
    assert!(!dir.path().join("a2/.airgap/metadata.jsonl").exists());
}

/// A manifest may name a non-distributable layer (with `urls`) the registry was never given:
/// it is accepted, tagged, listed and pulled; an ordinary layer that was never pushed is still
/// refused.
#[test]
fn a_non_distributable_layer_with_urls_need_not_be_pushed() {
    let server = serve(&[]);
    let mut c = Conn::open(server.process.port);
    let config = b"{\"os\":\"windows\"}".to_vec();
    push_blob(&mut c, "win", &config);
    let foreign = b"a foreign base layer".to_vec();
    let mut layer = descriptor(
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        &foreign,
    );
    layer["urls"] = serde_json::json!(["https://example.invalid/base.tar.gz"]);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [layer],
    });
    let put = |c: &mut Conn, m: &serde_json::Value, tag: &str| {
        c.send(
            "PUT",
            &format!("/v2/win/manifests/{tag}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            &serde_json::to_vec(m).unwrap(),
            true,
        )
        .unwrap()
    };
    let r = put(&mut c, &manifest, "ltsc");
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let mut c = Conn::open(server.process.port);
    assert_eq!(c.call("HEAD", "/v2/win/manifests/ltsc").status, 200);
    assert_eq!(c.call("GET", "/v2/win/manifests/ltsc").status, 200);
    let tags = c.call("GET", "/v2/win/tags/list").json();
    assert_eq!(tags["tags"], serde_json::json!(["ltsc"]));
    // Without urls the same layer must be there.
    let mut plain = manifest.clone();
    plain["layers"][0] = descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &foreign);
    let mut c = Conn::open(server.process.port);
    let r = put(&mut c, &plain, "plain");
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
}

/// Referrers with megabytes of annotations each: a listing keeps a bounded part of each
/// referrer's annotations (the manifests keep them all) and pages through `Link`, so neither
/// the server's memory nor one response grows with them.
#[test]
fn referrers_keep_bounded_annotations_and_page_through_link() {
    let server = serve(&[]);
    let mut c = Conn::open(server.process.port);
    let (subject, r) = push_manifest(&mut c, "app", "v1", "subject", None, None);
    assert_eq!(r.status, 201);
    let subject_digest = sha256(&subject);
    let config = b"{}".to_vec();
    push_blob(&mut c, "app", &config);
    let big = "x".repeat(1 << 20);
    const REFERRERS: usize = 12;
    for i in 0..REFERRERS {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.sbom",
            "config": descriptor("application/vnd.oci.empty.v1+json", &config),
            "layers": [],
            "subject": descriptor("application/vnd.oci.image.manifest.v1+json", &subject),
            "annotations": {"a.small": format!("n{i}"), "b.big": big},
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let r = c
            .send(
                "PUT",
                &format!("/v2/app/manifests/{}", sha256(&bytes)),
                &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
                &bytes,
                true,
            )
            .unwrap();
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    let r = c.call("GET", &format!("/v2/app/referrers/{subject_digest}"));
    assert_eq!(r.status, 200);
    assert!(
        r.body.len() < 64 << 10,
        "a listing of {} bytes",
        r.body.len()
    );
    let all = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(all.len(), REFERRERS);
    for d in &all {
        assert!(d["annotations"]["a.small"].is_string(), "{d}");
        assert!(
            d["annotations"].get("b.big").is_none(),
            "the big annotation was kept"
        );
    }
    // Five at a time: three pages, linked, every referrer once.
    let mut seen = Vec::new();
    let mut next = Some(format!("/v2/app/referrers/{subject_digest}?n=5"));
    let mut pages = 0;
    while let Some(path) = next.take() {
        let r = c.call("GET", &path);
        assert_eq!(r.status, 200, "{path}");
        let page = r.json()["manifests"].as_array().unwrap().clone();
        assert!(page.len() <= 5);
        seen.extend(
            page.iter()
                .map(|d| d["digest"].as_str().unwrap().to_string()),
        );
        next = r.header("link").map(|l| {
            l.trim_start_matches('<')
                .split_once('>')
                .unwrap()
                .0
                .to_string()
        });
        pages += 1;
    }
    assert_eq!(pages, 3);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (REFERRERS, REFERRERS));
}
