//! The built-in registry under load on loopback, bounded in time and count: 50 clients pull
//! manifests and blobs over TLS with the right password for LOAD_SECONDS (30 by default) while
//! 8 others send wrong passwords as fast as they are answered. Every good request must
//! succeed; the test prints p50/p99 latency and the counts.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use airgap::{BundleArchive, PublicKey};
use common::registries::{airgap_serve, write_htpasswd, Pki, PASSWORD, USER};
use common::Setup;

const GOOD: usize = 50;
const BAD: usize = 8;
/// Requests per good client at most: the run is bounded in count as well as time.
const MAX_PER_CLIENT: usize = 20_000;

#[test]
fn fifty_clients_pull_without_errors_while_eight_send_wrong_passwords() {
    let seconds: u64 = std::env::var("LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let setup = Setup::new(32 << 10);
    let bundle = setup.build("b.tar");
    let pki = Pki::new(&setup.path("pki"));
    let htpasswd = setup.path("htpasswd");
    write_htpasswd(&htpasswd);
    let server = airgap_serve(
        &bundle,
        &pki,
        &[
            "--pub",
            setup.public().to_str().unwrap(),
            "--htpasswd",
            htpasswd.to_str().unwrap(),
        ],
    );
    let base = format!("https://127.0.0.1:{}", server.port);
    // What the clients pull: every image's root manifest and every blob the bundle holds.
    let archive = BundleArchive::open(&bundle, &PublicKey::load(&setup.public()).unwrap()).unwrap();
    let mut urls = Vec::new();
    for image in &archive.verified().index().images {
        let repo = &image.mirror_repository;
        let mut manifests = vec![(image.digest, image.media_type.clone())];
        while let Some((digest, media_type)) = manifests.pop() {
            urls.push((format!("{base}/v2/{repo}/manifests/{digest}"), true));
            let bytes = archive
                .read_small(&digest.blob_path(), airgap::oci::MAX_MANIFEST_SIZE)
                .unwrap();
            match registry::manifest::References::parse(&media_type, &bytes).unwrap() {
                registry::manifest::References::Manifests(children) => {
                    manifests.extend(children.into_iter().map(|c| (c.digest, c.media_type)))
                }
                registry::manifest::References::Blobs(blobs) => urls.extend(
                    blobs
                        .iter()
                        .map(|b| (format!("{base}/v2/{repo}/blobs/{}", b.digest), false)),
                ),
            }
        }
    }
    assert!(!urls.is_empty());
    let urls = Arc::new(urls);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    registry::crypto::install_default();
    let (good, bad) = runtime.block_on(async move {
        let client = |ca: reqwest::Certificate| {
            reqwest::Client::builder()
                .tls_certs_only([ca])
                .build()
                .unwrap()
        };
        let mut good = Vec::new();
        for i in 0..GOOD {
            let (http, urls) = (client(ca.clone()), urls.clone());
            good.push(tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), Vec::new());
                let mut n = i;
                while Instant::now() < deadline && latencies.len() < MAX_PER_CLIENT {
                    let (url, manifest) = &urls[n % urls.len()];
                    n += 1;
                    let mut req = http.get(url).basic_auth(USER, Some(PASSWORD));
                    if *manifest {
                        req = req.header(
                            "Accept",
                            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
                        );
                    }
                    let started = Instant::now();
                    let result = match req.send().await {
                        Ok(r) if r.status() == 200 => r.bytes().await.map(drop).map_err(|e| e.to_string()),
                        Ok(r) => Err(format!("{url}: {}", r.status())),
                        Err(e) => Err(format!("{url}: {e}")),
                    };
                    match result {
                        Ok(()) => latencies.push(started.elapsed()),
                        Err(e) => errors.push(e),
                    }
                }
                (latencies, errors)
            }));
        }
        // The wrong passwords come from another address: a failure budget and a queue share
        // are kept per address, and an attacker's address is not the clients'.
        let mut bad = Vec::new();
        for i in 0..BAD {
            let http = reqwest::Client::builder()
                .tls_certs_only([ca.clone()])
                .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
                .build()
                .unwrap();
            let base = base.clone();
            bad.push(tokio::spawn(async move {
                let mut refused = 0usize;
                let mut n = 0;
                while Instant::now() < deadline {
                    n += 1;
                    let r = http
                        .get(format!("{base}/v2/"))
                        .basic_auth(USER, Some(format!("wrong-{i}-{n}")))
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status() == 401) {
                        refused += 1;
                    }
                }
                refused
            }));
        }
        let mut all = (Vec::new(), Vec::new());
        for g in good {
            let (l, e) = g.await.unwrap();
            all.0.extend(l);
            all.1.extend(e);
        }
        let mut refused = 0;
        for b in bad {
            refused += b.await.unwrap();
        }
        (all, refused)
    });
    let (mut latencies, errors) = good;
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1000.0
    };
    eprintln!(
        "load: {GOOD} clients, {seconds} s: {} good requests ({:.0}/s), p50 {:.2} ms, p99 {:.2} ms, {} errors; {BAD} wrong-password clients refused {bad} times",
        latencies.len(),
        latencies.len() as f64 / seconds as f64,
        pct(0.50),
        pct(0.99),
        errors.len(),
    );
    assert!(
        errors.is_empty(),
        "{} good requests failed, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(latencies.len() >= GOOD * 10, "too few requests completed");
    assert!(
        bad > 0,
        "no wrong password was refused: the flood did not run"
    );
}

/// 200 wrong passwords at once from one address do not hold up another client's first
/// login (bcrypt work is bounded: a queue past which the answer is 429, and a per-address
/// failure budget), and an unknown user is refused no faster than a known one.
#[test]
fn a_wrong_password_flood_does_not_delay_a_first_login_from_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let htpasswd = dir.path().join("htpasswd");
    write_htpasswd(&htpasswd);
    let server = airgap_serve(
        &dir.path().join("store"),
        &pki,
        &["--htpasswd", htpasswd.to_str().unwrap()],
    );
    let base = format!("https://localhost:{}", server.port);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    registry::crypto::install_default();
    let client = |from: &str| {
        reqwest::Client::builder()
            .tls_certs_only([ca.clone()])
            .local_address(from.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let flood_client = client("127.0.0.1");
        let flood: Vec<_> = (0..200)
            .map(|i| {
                let (http, base) = (flood_client.clone(), base.clone());
                tokio::spawn(async move {
                    http.get(format!("{base}/v2/"))
                        .basic_auth(USER, Some(format!("wrong-{i}")))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A legitimate GET from another address: its status and how long it took.
        let timed = |path: &'static str| {
            let (http, base) = (client("127.0.0.2"), base.clone());
            async move {
                let started = Instant::now();
                let status = http
                    .get(format!("{base}{path}"))
                    .basic_auth(USER, Some(PASSWORD))
                    .send()
                    .await
                    .unwrap()
                    .status();
                (status, started.elapsed())
            }
        };
        let (status, took) = timed("/v2/").await;
        assert_eq!(status, 200);
        assert!(
            took < Duration::from_secs(3),
            "the first login took {took:?}"
        );
        // Logged in, a pull's requests go on within a second while the flood lasts.
        let (status, took) = timed("/v2/_catalog").await;
        assert_eq!(status, 200);
        assert!(
            took < Duration::from_secs(1),
            "a request with a verified login took {took:?} during the flood"
        );
        let mut statuses = Vec::new();
        for f in flood {
            statuses.push(f.await.unwrap());
        }
        assert!(
            statuses.iter().all(|s| *s == 401 || *s == 429),
            "{statuses:?}"
        );
        assert!(
            statuses.contains(&429),
            "the flood was never told to back off"
        );
    });
}
