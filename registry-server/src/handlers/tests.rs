//! The handlers on the in-memory store: raw HTTP/1.1 over an in-process pipe into
//! [`Registry::serve_connection`], no socket, no disk. What each test asserts is the API's
//! answer *and* what the store holds afterwards.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Htpasswd, LayoutStore, Registry, RegistryOptions, Store, UploadLimits};

struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

struct Harness {
    registry: Arc<Registry>,
    auth: String,
    _dir: tempfile::TempDir,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

impl Harness {
    fn new(deletes: bool) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, crate::htpasswd::entry("u", "p").unwrap()).unwrap();
        let registry = Registry::with_options(
            Store::Layout(LayoutStore::in_memory(UploadLimits::default())),
            Some(Htpasswd::load(&path).unwrap()),
            RegistryOptions {
                deletes,
                ..RegistryOptions::default()
            },
        );
        Harness {
            registry: Arc::new(registry),
            auth: base64::engine::general_purpose::STANDARD.encode("u:p"),
            _dir: dir,
        }
    }

    /// Digests the in-memory store holds.
    fn held(&self) -> Vec<String> {
        let Store::Layout(layout) = self.registry.store() else {
            unreachable!("the harness serves a layout store")
        };
        let mut held: Vec<String> = layout
            .blob_store()
            .list()
            .unwrap()
            .iter()
            .map(|b| b.digest.to_string())
            .collect();
        held.sort();
        held
    }

    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let (client, server) = tokio::io::duplex(1 << 20);
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let serving = tokio::spawn(self.registry.clone().serve_connection(server, peer));
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: registry.test\r\nConnection: close\r\nAuthorization: Basic {}\r\nContent-Length: {}\r\n",
            self.auth,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let (mut read, mut write) = tokio::io::split(client);
        write.write_all(request.as_bytes()).await.unwrap();
        write.write_all(body).await.unwrap();
        let mut raw = Vec::new();
        read.read_to_end(&mut raw).await.unwrap();
        serving.await.unwrap();
        parse(&raw)
    }

    /// A blob pushed in one request; its digest.
    async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let reply = self
            .call(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                &[("Content-Type", "application/octet-stream")],
                bytes,
            )
            .await;
        assert_eq!(
            reply.status,
            201,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        digest
    }
}

fn parse(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t == "chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("a chunk size");
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap(), 16).unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[end + 2..end + 2 + size]);
            rest = &rest[end + 2 + size + 2..];
        }
        body = out;
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn manifest(config: &str, config_len: usize, layer: &str, layer_len: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_len}],
    }))
    .unwrap()
}

const MANIFEST: (&str, &str) = ("Content-Type", "application/vnd.oci.image.manifest.v1+json");

#[tokio::test]
async fn a_chunked_upload_becomes_a_blob_only_when_its_digest_checks() {
    let h = Harness::new(false);
    let started = h
        .call("POST", "/v2/team/app/blobs/uploads/", &[], b"")
        .await;
    assert_eq!(started.status, 202);
    let location = started.header("location").to_string();
    let chunk = h
        .call("PATCH", &location, &[("Content-Range", "0-2")], b"hel")
        .await;
    assert_eq!((chunk.status, chunk.header("range")), (202, "0-2"));
    // A chunk that does not start where the upload ends is refused, and changes nothing.
    let gap = h
        .call("PATCH", &location, &[("Content-Range", "5-5")], b"x")
        .await;
    assert_eq!(gap.status, 416);
    // The closing PUT names a digest the bytes do not have: refused, nothing stored.
    let wrong = sha256(b"something else");
    let refused = h
        .call("PUT", &format!("{location}&digest={wrong}"), &[], b"lo")
        .await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["errors"][0]["code"], "DIGEST_INVALID");
    assert!(h.held().is_empty(), "{:?}", h.held());

    let digest = h.push_blob("team/app", b"hello").await;
    assert_eq!(h.held(), std::slice::from_ref(&digest));
    let head = h
        .call("HEAD", &format!("/v2/team/app/blobs/{digest}"), &[], b"")
        .await;
    assert_eq!((head.status, head.header("content-length")), (200, "5"));
    let ranged = h
        .call(
            "GET",
            &format!("/v2/team/app/blobs/{digest}"),
            &[("Range", "bytes=1-3")],
            b"",
        )
        .await;
    assert_eq!((ranged.status, ranged.body.as_slice()), (206, &b"ell"[..]));
    // Linked to the repository it was pushed to only.
    let elsewhere = h
        .call("GET", &format!("/v2/other/blobs/{digest}"), &[], b"")
        .await;
    assert_eq!(elsewhere.status, 404);
}

#[tokio::test]
async fn a_manifest_needs_its_blobs_and_is_then_tagged_listed_and_catalogued() {
    let h = Harness::new(false);
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = b"layer bytes";
    let body = manifest(&sha256(config), config.len(), &sha256(layer), layer.len());
    let early = h
        .call("PUT", "/v2/app/manifests/v1", &[MANIFEST], &body)
        .await;
    assert_eq!(early.status, 400);
    assert_eq!(early.json()["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
    assert!(h.held().is_empty());

    h.push_blob("app", config).await;
    h.push_blob("app", layer).await;
    let put = h
        .call("PUT", "/v2/app/manifests/v1", &[MANIFEST], &body)
        .await;
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    assert_eq!(put.header("docker-content-digest"), sha256(&body));
    let got = h.call("GET", "/v2/app/manifests/v1", &[], b"").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, body);
    assert_eq!(got.header("docker-content-digest"), sha256(&body));

    let tags = h.call("GET", "/v2/app/tags/list", &[], b"").await;
    assert_eq!(tags.json()["tags"], serde_json::json!(["v1"]));
    let catalog = h.call("GET", "/v2/_catalog", &[], b"").await;
    assert_eq!(catalog.json()["repositories"], serde_json::json!(["app"]));
    // Deletes are off unless the registry was started with them.
    let delete = h.call("DELETE", "/v2/app/manifests/v1", &[], b"").await;
    assert_eq!(delete.status, 405);
    assert_eq!(h.held().len(), 3);
}

#[tokio::test]
async fn referrers_list_the_manifests_whose_subject_is_the_digest() {
    let h = Harness::new(false);
    let config = b"{}";
    let layer = b"signature bytes";
    h.push_blob("app", config).await;
    h.push_blob("app", layer).await;
    let image = manifest(&sha256(config), config.len(), &sha256(layer), layer.len());
    let image_digest = sha256(&image);
    assert_eq!(
        h.call(
            "PUT",
            &format!("/v2/app/manifests/{image_digest}"),
            &[MANIFEST],
            &image
        )
        .await
        .status,
        201
    );
    let mut artifact: serde_json::Value = serde_json::from_slice(&image).unwrap();
    artifact["artifactType"] = "application/vnd.example.sig".into();
    artifact["subject"] = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": image_digest,
        "size": image.len(),
    });
    let artifact = serde_json::to_vec(&artifact).unwrap();
    let put = h
        .call(
            "PUT",
            &format!("/v2/app/manifests/{}", sha256(&artifact)),
            &[MANIFEST],
            &artifact,
        )
        .await;
    assert_eq!(put.status, 201);
    assert_eq!(put.header("oci-subject"), image_digest);

    let listed = h
        .call(
            "GET",
            &format!("/v2/app/referrers/{image_digest}"),
            &[],
            b"",
        )
        .await;
    assert_eq!(listed.status, 200);
    let manifests = listed.json()["manifests"].clone();
    assert_eq!(manifests.as_array().map(Vec::len), Some(1), "{manifests}");
    assert_eq!(manifests[0]["digest"], sha256(&artifact));
    assert_eq!(manifests[0]["artifactType"], "application/vnd.example.sig");
    let filtered = h
        .call(
            "GET",
            &format!("/v2/app/referrers/{image_digest}?artifactType=application/other"),
            &[],
            b"",
        )
        .await;
    assert_eq!(filtered.json()["manifests"], serde_json::json!([]));
}

#[tokio::test]
async fn a_deleted_manifest_s_blobs_go_at_the_next_collection() {
    let h = Harness::new(true);
    let config = b"{\"a\":1}";
    let layer = b"only this image";
    h.push_blob("app", config).await;
    h.push_blob("app", layer).await;
    let body = manifest(&sha256(config), config.len(), &sha256(layer), layer.len());
    assert_eq!(
        h.call("PUT", "/v2/app/manifests/v1", &[MANIFEST], &body)
            .await
            .status,
        201
    );
    assert_eq!(h.held().len(), 3);
    let deleted = h
        .call(
            "DELETE",
            &format!("/v2/app/manifests/{}", sha256(&body)),
            &[],
            b"",
        )
        .await;
    assert_eq!(deleted.status, 202);
    assert_eq!(
        h.call("GET", "/v2/app/manifests/v1", &[], b"").await.status,
        404
    );
    let gc = h
        .call("POST", "/airgap/v1/gc?graceSeconds=0", &[], b"")
        .await;
    assert_eq!(gc.status, 200, "{}", String::from_utf8_lossy(&gc.body));
    assert_eq!(gc.json()["removed"].as_array().map(Vec::len), Some(3));
    assert!(h.held().is_empty(), "{:?}", h.held());
}
