//! `airgap registry serve`: the built-in registry, over a bundle and over an OCI layout
//! directory, with skopeo pulling from it and pushing to it, and the API refusing what
//! distribution refuses.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use airgap::{BundleArchive, Digest, PublicKey};
use common::registries::{
    airgap_serve, creds, curl, seed, skopeo_raw, write_htpasswd, Pki, PASSWORD, USER,
};
use common::{airgap, Setup};

fn skopeo(pki: &Pki, args: &[&str]) -> Result<(), String> {
    let out = Command::new("skopeo")
        .args(args)
        .arg("--dest-cert-dir")
        .arg(pki.skopeo_cert_dir())
        .output()
        .unwrap();
    common::succeeded(&out)
}

fn archive(bundle: &Path, public: &Path) -> BundleArchive {
    BundleArchive::open(bundle, &PublicKey::load(public).unwrap()).unwrap()
}

#[test]
fn serves_a_bundle_read_only_to_anonymous_pulls() {
    let setup = Setup::new(64 << 10);
    let bundle = setup.build("b.tar");
    let pki = Pki::new(&setup.path("pki"));
    let server = airgap_serve(&bundle, &pki, &["--pub", setup.public().to_str().unwrap()]);
    let host = format!("127.0.0.1:{}", server.port);
    let archive = archive(&bundle, &setup.public());
    for image in &archive.verified().index().images {
        let tag = image.reference.rsplit_once(':').unwrap().1;
        let raw = skopeo_raw(
            &pki,
            &format!("{host}/{}:{tag}", image.mirror_repository),
            false,
        )
        .unwrap();
        assert_eq!(Digest::of(&raw), image.digest);
    }
    // A whole multi-platform image, every blob, through skopeo.
    let multi = archive
        .verified()
        .index()
        .images
        .iter()
        .find(|i| airgap::oci::is_index(&i.media_type))
        .unwrap();
    let dest = setup.path("pulled");
    let out = Command::new("skopeo")
        .args(["copy", "--all", "--src-cert-dir"])
        .arg(pki.skopeo_cert_dir())
        .arg(format!("docker://{host}/{}:2.1", multi.mirror_repository))
        .arg(format!("oci:{}:x", dest.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Range requests.
    let blob = archive
        .verified()
        .index()
        .entries
        .iter()
        .max_by_key(|e| e.size)
        .unwrap();
    let repo = &archive.verified().index().images[0].mirror_repository;
    let (status, _) = curl(
        &pki,
        &[
            "-r",
            "0-9",
            "-D",
            "-",
            &format!("https://{host}/v2/{repo}/blobs/{}", blob.sha256),
        ],
    );
    assert_eq!(status, 206);
    // A bundle is read-only, and pushes without --htpasswd are refused anyway.
    let (status, body) = curl(
        &pki,
        &[
            "-X",
            "POST",
            &format!("https://{host}/v2/{repo}/blobs/uploads/"),
        ],
    );
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("UNSUPPORTED"), "{body}");
    // Unknown things are 404s with the spec's codes.
    let (status, body) = curl(&pki, &[&format!("https://{host}/v2/{repo}/manifests/nope")]);
    assert_eq!(
        (status, body.contains("MANIFEST_UNKNOWN")),
        (404, true),
        "{body}"
    );
    let (status, body) = curl(&pki, &[&format!("https://{host}/v2/nope/tags/list")]);
    assert_eq!(
        (status, body.contains("NAME_UNKNOWN")),
        (404, true),
        "{body}"
    );
    // TLS below 1.2 is refused.
    let out = Command::new("openssl")
        .args(["s_client", "-tls1_1", "-connect", &host])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "TLS 1.1 handshake succeeded");
}

#[test]
fn a_tampered_bundle_is_not_served() {
    let setup = Setup::new(16 << 10);
    let bundle = setup.build("b.tar");
    let mut bytes = std::fs::read(&bundle).unwrap();
    let n = bytes.len();
    bytes[n - 3000] ^= 1;
    std::fs::write(&bundle, bytes).unwrap();
    let pki = Pki::new(&setup.path("pki"));
    let line = common::fails(
        airgap()
            .args(["registry", "serve"])
            .arg(&bundle)
            .args([
                "--pub",
                setup.public().to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--tls-cert")
            .arg(&pki.cert)
            .arg("--tls-key")
            .arg(&pki.key),
    );
    assert!(line.contains("verifying"), "{line}");
    let line = common::fails(
        airgap()
            .args(["registry", "serve"])
            .arg(&bundle)
            .args(["--listen", "127.0.0.1:0"]),
    );
    assert!(line.contains("--pub"), "{line}");
}

#[test]
fn seeding_into_the_builtin_registry_then_skopeo_pushes_and_pulls() {
    let setup = Setup::new(64 << 10);
    let bundle = setup.build("b.tar");
    let pki = Pki::new(&setup.path("pki"));
    let htpasswd = setup.path("htpasswd");
    write_htpasswd(&htpasswd);
    let store = setup.path("store");
    let server = airgap_serve(&store, &pki, &["--htpasswd", htpasswd.to_str().unwrap()]);
    let host = format!("127.0.0.1:{}", server.port);

    let cfg = setup.path("cfg");
    let (ok, out, err) = seed(
        &bundle,
        &setup.public(),
        &format!("https://{host}/mirror"),
        &[
            "--ca",
            pki.ca.to_str().unwrap(),
            "--config-dir",
            cfg.to_str().unwrap(),
        ],
        PASSWORD,
    );
    assert!(ok, "{out}{err}");
    let archive = archive(&bundle, &setup.public());
    for image in &archive.verified().index().images {
        let tag = image.reference.rsplit_once(':').unwrap().1;
        let name = format!("{host}/mirror/{}:{tag}", image.mirror_repository);
        let anonymous = skopeo_raw(&pki, &name, false).unwrap_err();
        assert!(anonymous.contains("unauthorized"), "{anonymous}");
        let raw = skopeo_raw(&pki, &name, true).unwrap();
        assert_eq!(Digest::of(&raw), image.digest);
    }
    // The store is a valid OCI layout other tools read.
    let out = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!(
            "oci:{}:mirror/packs/platform-core:1.2.0",
            store.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        Digest::of(&out.stdout),
        archive.verified().index().packs[0].digest
    );

    // skopeo pushes to it and pulls back the same digest.
    let source = format!(
        "oci:{}:{}",
        setup.fixture.layout.display(),
        testkit::FIXTURE_IMAGES[0]
    );
    skopeo(
        &pki,
        &[
            "copy",
            "--dest-creds",
            &creds(),
            &source,
            &format!("docker://{host}/pushed/app:1"),
        ],
    )
    .unwrap();
    let pushed = skopeo_raw(&pki, &format!("{host}/pushed/app:1"), true).unwrap();
    let original = Command::new("skopeo")
        .args(["inspect", "--raw", &source])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(Digest::of(&pushed), Digest::of(&original));
    // Pushes with a wrong password are refused.
    assert!(skopeo(
        &pki,
        &[
            "copy",
            "--dest-creds",
            &format!("{USER}:wrong"),
            &source,
            &format!("docker://{host}/pushed/other:1")
        ]
    )
    .is_err());
}

#[test]
fn the_builtin_registry_refuses_what_distribution_refuses() {
    let setup = Setup::new(16 << 10);
    let pki = Pki::new(&setup.path("pki"));
    let htpasswd = setup.path("htpasswd");
    write_htpasswd(&htpasswd);
    let store = setup.path("store");
    let server = airgap_serve(&store, &pki, &["--htpasswd", htpasswd.to_str().unwrap()]);
    let base = format!("https://127.0.0.1:{}/v2", server.port);
    let c = creds();
    let missing = Digest::of(b"not uploaded");
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{missing}","size":12}},"layers":[]}}"#
    );
    let oci = "Content-Type: application/vnd.oci.image.manifest.v1+json";
    // A manifest whose blobs are missing.
    let (status, body) = curl(
        &pki,
        &[
            "-u",
            &c,
            "-X",
            "PUT",
            "-H",
            oci,
            "--data-binary",
            &manifest,
            &format!("{base}/app/manifests/1"),
        ],
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("MANIFEST_BLOB_UNKNOWN") && body.contains(&missing.to_string()),
        "{body}"
    );
    let (status, _) = curl(&pki, &["-u", &c, &format!("{base}/app/manifests/1")]);
    assert_eq!(status, 404);
    // Path traversal and invalid names.
    for path in [
        "/../../etc/manifests/x",
        "/a/%2e%2e/b/tags/list",
        "/a/../b/blobs/uploads/",
        "/A/tags/list",
        "/a//b/manifests/x",
    ] {
        for method in ["GET", "POST", "PUT"] {
            let (status, body) = curl(&pki, &["-u", &c, "-X", method, &format!("{base}{path}")]);
            assert_eq!(status, 400, "{method} {path}: {body}");
            assert!(body.contains("NAME_INVALID"), "{method} {path}: {body}");
        }
    }
    // An oversized manifest is refused and nothing is stored.
    let big = setup.path("big.json");
    std::fs::write(&big, format!("{{\"pad\":\"{}\"}}", "x".repeat(5 << 20))).unwrap();
    let (status, body) = curl(
        &pki,
        &[
            "-u",
            &c,
            "-X",
            "PUT",
            "-H",
            oci,
            "--data-binary",
            &format!("@{}", big.display()),
            &format!("{base}/app/manifests/big"),
        ],
    );
    assert_eq!(status, 413, "{body}");
    // A blob whose bytes do not match the digest it is committed under.
    let (status, headers) = curl(
        &pki,
        &[
            "-u",
            &c,
            "-X",
            "POST",
            "-D",
            "-",
            "-o",
            "/dev/null",
            &format!("{base}/app/blobs/uploads/"),
        ],
    );
    assert_eq!(status, 202);
    let location = headers
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap()
        .trim()
        .to_string();
    let url = format!(
        "https://127.0.0.1:{}{location}?digest={missing}",
        server.port
    );
    let (status, body) = curl(
        &pki,
        &[
            "-u",
            &c,
            "-X",
            "PUT",
            "--data-binary",
            "something else",
            &url,
        ],
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("DIGEST_INVALID"), "{body}");
    let (status, _) = curl(
        &pki,
        &["-u", &c, "-I", &format!("{base}/app/blobs/{missing}")],
    );
    assert_eq!(status, 404);
    // Nothing escaped the store, and the only blobs are none.
    let blobs: Vec<_> = std::fs::read_dir(store.join("blobs/sha256"))
        .unwrap()
        .collect();
    assert!(blobs.is_empty(), "{blobs:?}");
    assert!(!setup.path("etc").exists() && !store.join("..").join("b").exists());
}

/// The connection policy from outside: a client that never starts its TLS handshake, one
/// that never finishes its headers, and an idle keep-alive connection are each closed by
/// their deadline; a client over its share of connections is answered 429 and closed while
/// another address is still served.
#[test]
fn stalled_idle_and_excess_connections_are_closed_and_others_still_served() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let pki = common::registries::Pki::new(&dir.path().join("pki"));
    let registry = common::registries::airgap_serve(
        &dir.path().join("store"),
        &pki,
        &[
            "--handshake-timeout",
            "1s",
            "--header-timeout",
            "1s",
            "--max-connections-per-client",
            "4",
        ],
    );
    let port = registry.port;
    // Closed by the server: a read returns 0 (or an error) before `within`.
    let closed_within = |mut s: TcpStream, within: Duration| {
        s.set_read_timeout(Some(within + Duration::from_secs(3)))
            .unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        let took = started.elapsed();
        assert!(
            took < within + Duration::from_secs(2),
            "still open after {took:?}"
        );
    };
    // No handshake at all.
    closed_within(
        TcpStream::connect(("127.0.0.1", port)).unwrap(),
        Duration::from_secs(1),
    );
    // Over TLS (openssl s_client, its stdin held open): headers that never end, and a
    // keep-alive connection left idle after one request; the server ends both.
    for (what, sent) in [
        (
            "unfinished headers",
            "GET /v2/ HTTP/1.1\r\nHost: localhost\r\n",
        ),
        (
            "idle keep-alive",
            "GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ),
    ] {
        // `timeout`: a server that never closes fails the test instead of hanging it.
        let mut client = std::process::Command::new("timeout")
            .args(["6", "openssl", "s_client", "-quiet", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-CAfile")
            .arg(&pki.ca)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = client.stdin.take().unwrap();
        stdin.write_all(sent.as_bytes()).unwrap();
        let started = Instant::now();
        let mut answered = String::new();
        client
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut answered)
            .unwrap();
        let took = started.elapsed();
        let _ = client.wait();
        drop(stdin);
        assert!(took < Duration::from_secs(4), "{what}: open for {took:?}");
        if what == "idle keep-alive" {
            assert!(answered.starts_with("HTTP/1.1 200"), "{what}: {answered}");
        }
    }

    // Over the per-client cap: the fifth connection from 127.0.0.1 is answered 429, while
    // 127.0.0.2 is served.
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let status = |source: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--interface",
                source,
            ])
            .arg("--cacert")
            .arg(&pki.ca)
            .arg(format!("https://localhost:{port}/v2/"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(status("127.0.0.1"), "429");
    let started = Instant::now();
    assert_eq!(status("127.0.0.2"), "200");
    // Served at once, not after the stalled connections' deadlines.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "another address waited {:?}",
        started.elapsed()
    );
    // The held connections never handshake: the deadline frees their places.
    for s in held {
        closed_within(s, Duration::from_secs(1));
    }
    assert_eq!(status("127.0.0.1"), "200");

    // A TLS record that never completes is a handshake that never finishes.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"\x16\x03\x01").unwrap();
    closed_within(s, Duration::from_secs(1));
}

/// A served bundle changed on disk after the server verified it is not served as what was
/// verified: with its modification time restored (a careful tamperer), a whole read of the
/// changed blob is cut before its last bytes (the hash is checked before they are sent); with
/// the time changed too, every read of it, ranged ones included, is refused.
#[test]
fn a_bundle_changed_on_disk_after_verification_is_not_served_as_verified() {
    let setup = Setup::new(256 << 10);
    let bundle = setup.build("b.tar");
    let pki = Pki::new(&setup.path("pki"));
    let server = airgap_serve(&bundle, &pki, &["--pub", setup.public().to_str().unwrap()]);
    let archive = archive(&bundle, &setup.public());
    let image = &archive.verified().index().images[0];
    let largest = archive
        .verified()
        .index()
        .entries
        .iter()
        .filter(|e| e.path.as_str().starts_with("blobs/"))
        .max_by_key(|e| e.size)
        .unwrap()
        .clone();
    // Find a repository that links it: every image's blobs are reachable from its own repo.
    let url = |repo: &str| {
        format!(
            "https://127.0.0.1:{}/v2/{repo}/blobs/{}",
            server.port, largest.sha256
        )
    };
    let repo = archive
        .verified()
        .index()
        .images
        .iter()
        .map(|i| i.mirror_repository.clone())
        .find(|r| curl(&pki, &["-o", "/dev/null", "-I", &url(r)]).0 == 200)
        .unwrap_or_else(|| image.mirror_repository.clone());
    let fetch = |range: Option<&str>| {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "-", "--cacert"]).arg(&pki.ca);
        if let Some(r) = range {
            cmd.args(["-r", r]);
        }
        let out = cmd.arg(url(&repo)).output().unwrap();
        (out.status.code(), out.stdout)
    };
    let (code, body) = fetch(None);
    assert_eq!(code, Some(0));
    assert_eq!(Digest::of(&body), largest.sha256);

    // One byte in the middle of the blob, the file's modification time put back.
    let located = archive.locate(largest.path.as_str()).unwrap();
    let before = std::fs::metadata(&bundle).unwrap().modified().unwrap();
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&bundle)
            .unwrap();
        let at = located.data_offset + largest.size / 2;
        let mut byte = [0u8];
        file.read_at(&mut byte, at).unwrap();
        file.write_at(&[byte[0] ^ 0xff], at).unwrap();
        file.set_modified(before).unwrap();
    }
    let (code, body) = fetch(None);
    assert_ne!(code, Some(0), "a changed blob was served whole");
    assert!(
        (body.len() as u64) < largest.size,
        "all {} bytes arrived",
        body.len()
    );

    // The time changed as well: refused outright, ranged reads too.
    std::fs::File::options()
        .write(true)
        .open(&bundle)
        .unwrap()
        .set_modified(before + std::time::Duration::from_secs(60))
        .unwrap();
    for range in [None, Some("0-99")] {
        let (status, _) = curl(
            &pki,
            &["-o", "/dev/null", "-r", range.unwrap_or("0-"), &url(&repo)],
        );
        assert_eq!(status, 500, "{range:?}");
    }
}

/// `--json`: the startup line is one JSON document (docs/json/registry-serve.schema.json),
/// printed once the server listens, naming the port `:0` chose.
#[test]
fn the_json_startup_line_says_where_the_server_listens() {
    use std::io::BufRead;
    let setup = Setup::new(4096);
    let bundle = setup.build("b.tar");
    let pki = Pki::new(&setup.path("pki"));
    let child = airgap()
        .args(["registry", "serve"])
        .arg(&bundle)
        .arg("--pub")
        .arg(setup.public())
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed and reaped on every way out of the test.
    let mut server = common::registries::Process { child, port: 0 };
    let mut line = String::new();
    std::io::BufReader::new(server.child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let started = common::json_checked("registry-serve", line.as_bytes());
    assert_eq!(started["tls"], true, "{started}");
    assert_eq!(started["writable"], false, "{started}");
    let url = started["url"].as_str().unwrap();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0, "{started}");
    let (status, _) = curl(&pki, &[&format!("https://127.0.0.1:{port}/v2/")]);
    assert_eq!(status, 200);
    server.kill();
}
