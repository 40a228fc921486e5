//! `airgap registry seed` against the CNCF distribution registry (TLS + htpasswd), checked
//! with skopeo: digests preserved, re-runs send nothing, bad input pushes nothing.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use airgap::{BundleArchive, Digest, PublicKey};
use common::registries::{
    creds, curl, seed, skopeo_raw, Distribution, FaultProxy, Pki, PASSWORD, USER,
};
use common::{airgap, Setup};

fn archive(bundle: &Path, public: &Path) -> BundleArchive {
    BundleArchive::open(bundle, &PublicKey::load(public).unwrap()).unwrap()
}

/// Every image and pack of the bundle is at its mirror path with the bundle's digest.
fn assert_mirrored(pki: &Pki, bundle: &BundleArchive, host_prefix: &str, authenticated: bool) {
    let index = bundle.verified().index();
    for image in &index.images {
        let tag = image.reference.rsplit_once(':').map(|(_, t)| t).unwrap();
        let raw = skopeo_raw(
            pki,
            &format!("{host_prefix}/{}:{tag}", image.mirror_repository),
            authenticated,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", image.reference));
        assert_eq!(Digest::of(&raw), image.digest, "{}", image.reference);
        if !airgap::oci::is_index(&image.media_type) {
            assert_eq!(
                Digest::of(&raw),
                image.upstream_digest,
                "{}",
                image.reference
            );
        }
    }
    for pack in &index.packs {
        let raw = skopeo_raw(
            pki,
            &format!("{host_prefix}/packs/{}:{}", pack.name, pack.version),
            authenticated,
        )
        .unwrap();
        assert_eq!(Digest::of(&raw), pack.digest);
    }
}

fn one_error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_string()
}

#[test]
fn seeds_distribution_with_original_digests_and_reseeds_nothing() {
    let setup = Setup::new(64 << 10);
    let bundle = setup.build("b.tar");
    let pki = Pki::new(&setup.path("pki"));
    let registry = Distribution::start(&setup.path("registry"), &pki);
    let to = format!("https://{}/airgap/mirror", registry.host());
    let config = setup.path("mirror-config");
    let ca = pki.ca.to_str().unwrap().to_string();
    let config_arg = config.to_str().unwrap().to_string();
    let (ok, out, err) = seed(
        &bundle,
        &setup.public(),
        &to,
        &["--ca", &ca, "--config-dir", &config_arg, "-j", "4"],
        PASSWORD,
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("credentials are not included"),
        "the default output must say the login is left out: {out}"
    );
    let anonymous =
        std::fs::read_to_string(config.join("certs.d/example.internal/hosts.toml")).unwrap();
    assert!(!anonymous.contains("Authorization"), "{anonymous}");
    assert!(
        out.contains("2 mounted"),
        "the shared layer is mounted, not re-sent: {out}"
    );
    let archive = archive(&bundle, &setup.public());
    assert_mirrored(
        &pki,
        &archive,
        &format!("{}/airgap/mirror", registry.host()),
        true,
    );

    // Re-run, this time with credentials from an auth file, written into the mirror
    // configuration: nothing is sent again.
    let auth = setup.path("auth.json");
    let basic = registry::Credentials {
        username: USER.into(),
        password: PASSWORD.into(),
    }
    .basic_header();
    let b64 = basic.strip_prefix("Basic ").unwrap();
    std::fs::write(
        &auth,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{b64}"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let reseed = |flags: &[&str]| {
        common::ok(
            airgap()
                .env("REGISTRY_AUTH_FILE", &auth)
                .args(["registry", "seed"])
                .arg(&bundle)
                .arg("--pub")
                .arg(setup.public())
                .args(["--to", &to, "--ca", &ca, "--config-dir", &config_arg])
                .args(flags),
        )
    };
    let out = reseed(&["--with-credentials"]);
    assert!(out.contains("Authorization header (files 0600)"), "{out}");
    assert!(out.contains("blobs: 0 uploaded"), "{out}");
    assert!(out.contains("manifests: 0 pushed"), "{out}");
    // The same as one JSON document (docs/json/registry-seed.schema.json), prose left out.
    let json = common::json_checked(
        "registry-seed",
        reseed(&["--with-credentials", "--json"]).as_bytes(),
    );
    assert_eq!(json["blobs"]["uploaded"], 0, "{json}");
    assert!(json["blobs"]["present"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(json["manifests"]["pushed"], 0, "{json}");
    assert_eq!(json["releaseIndex"]["published"], false, "{json}");
    assert_eq!(json["mirrorConfig"]["withCredentials"], true, "{json}");

    // The registry says which releases it holds: the signed index is published as an
    // artifact, verified by whoever reads it with the key; another key rejects it.
    let check = |key: &Path, json: bool| {
        airgap()
            .env("REGISTRY_AUTH_FILE", &auth)
            .args([
                "upgrade",
                "--check",
                "--from-registry",
                &to,
                "--ca",
                &ca,
                "--pub",
            ])
            .arg(key)
            .arg("--root")
            .arg(setup.path("no-node"))
            .args(json.then_some("--json"))
            .output()
            .unwrap()
    };
    let listed = check(&setup.public(), false);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(stdout.contains("mgmt-plane 4.5.0"), "{stdout}");
    assert!(stdout.contains("signature OK"), "{stdout}");
    common::ok(
        airgap()
            .arg("keygen")
            .arg("-o")
            .arg(setup.path("other.key")),
    );
    // As JSON (docs/json/upgrade.schema.json): the release, verified, newer than no node.
    let listed = check(&setup.public(), true);
    assert!(listed.status.success());
    let json = common::json_checked("upgrade", &listed.stdout);
    assert_eq!(json["running"], serde_json::Value::Null, "{json}");
    assert_eq!(json["releases"][0]["version"], "4.5.0", "{json}");
    assert_eq!(json["releases"][0]["verified"], true, "{json}");
    let rejected = check(&setup.path("other.pub"), false);
    let stdout = String::from_utf8_lossy(&rejected.stdout);
    let stderr = String::from_utf8_lossy(&rejected.stderr);
    assert!(!rejected.status.success(), "{stdout}");
    assert!(
        stdout.contains("4.5.0  REJECTED: its signature does not verify"),
        "{stdout}"
    );
    assert!(
        stderr.contains("failed verification and are not offered"),
        "{stderr}"
    );
    // As JSON: the listing still printed, the release marked unverified, and exit 1.
    let rejected = check(&setup.path("other.pub"), true);
    assert_eq!(rejected.status.code(), Some(1));
    let json = common::json_checked("upgrade", &rejected.stdout);
    assert_eq!(json["releases"][0]["verified"], false, "{json}");
    assert!(
        json["releases"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("signature does not verify"),
        "{json}"
    );

    // The rewrite map sends every original reference to the mirror.
    let map: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config.join("rewrite-map.json")).unwrap()).unwrap();
    for image in &archive.verified().index().images {
        let mirrored = map["images"][&image.reference].as_str().unwrap();
        assert!(
            mirrored.starts_with(&format!(
                "{}/airgap/mirror/{}",
                registry.host(),
                image.mirror_repository
            )),
            "{mirrored}"
        );
        let by_digest = format!(
            "{}@{}",
            image.reference.rsplit_once(':').unwrap().0,
            image.upstream_digest
        );
        assert!(map["images"][&by_digest]
            .as_str()
            .unwrap()
            .ends_with(&image.digest.to_string()));
    }
    assert_eq!(
        map["packs"]["platform-core:1.2.0"],
        format!(
            "{}/airgap/mirror/packs/platform-core:1.2.0",
            registry.host()
        )
    );

    // containerd hosts.toml: valid TOML, one mirror with override_path, the CA copied beside it
    // and referenced relatively (the directory works wherever it is copied), the login as a
    // header in a private file.
    let host_dir = config.join("certs.d/example.internal");
    let hosts: toml::Table = std::fs::read_to_string(host_dir.join("hosts.toml"))
        .unwrap()
        .parse()
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(host_dir.join("hosts.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let mirror_url = format!(
        "https://{}/v2/airgap/mirror/example.internal",
        registry.host()
    );
    // `server` is the mirror too: containerd falls back to `server` (the upstream registry
    // when it is absent) once the hosts fail, and that would leave the air gap.
    assert_eq!(hosts["server"].as_str(), Some(mirror_url.as_str()));
    let host = hosts["host"][&mirror_url]
        .as_table()
        .unwrap_or_else(|| panic!("{hosts:?}"));
    for entry in [host, &hosts] {
        assert_eq!(entry["override_path"].as_bool(), Some(true));
        assert_eq!(entry["capabilities"].as_array().unwrap().len(), 2);
        assert_eq!(entry["ca"].as_str(), Some("ca.crt"));
        let header = entry["header"]["Authorization"][0].as_str().unwrap();
        assert_eq!(header, basic);
    }
    assert_eq!(
        std::fs::read(host_dir.join("ca.crt")).unwrap(),
        std::fs::read(&pki.ca).unwrap()
    );
    // Every host file, `_default` included, names the mirror and nothing else.
    let mut dirs = 0;
    for dir in std::fs::read_dir(config.join("certs.d")).unwrap() {
        let dir = dir.unwrap().path();
        let text = std::fs::read_to_string(dir.join("hosts.toml")).unwrap();
        let parsed: toml::Table = text.parse().unwrap();
        let mut urls = vec![parsed["server"].as_str().unwrap().to_string()];
        urls.extend(parsed["host"].as_table().unwrap().keys().cloned());
        for url in urls {
            assert!(
                url.starts_with(&format!("https://{}", registry.host())),
                "{}: {url}",
                dir.display()
            );
        }
        dirs += 1;
    }
    assert!(config.join("certs.d/_default/hosts.toml").is_file());
    assert_eq!(
        dirs, 4,
        "registry.k8s.io, example.internal, the mirror, _default"
    );
    // registries.conf (CRI-O, podman): locations in the mirror, no short-name search.
    let conf: toml::Table = std::fs::read_to_string(config.join("registries.conf"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        conf["unqualified-search-registries"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    for entry in conf["registry"].as_array().unwrap() {
        let location = entry["location"].as_str().unwrap();
        assert!(location.starts_with(registry.host().as_str()), "{location}");
        assert!(
            entry.get("mirror").is_none(),
            "a mirror entry falls back upstream"
        );
    }
}

#[test]
fn bad_input_fails_with_one_line_and_pushes_nothing_it_should_not() {
    let setup = Setup::new(64 << 10);
    let bundle = setup.build("b.tar");
    let pki = Pki::new(&setup.path("pki"));
    let registry = Distribution::start(&setup.path("registry"), &pki);
    let host = registry.host();
    let to = format!("https://{host}/m");
    let ca = pki.ca.to_str().unwrap().to_string();
    let catalog = || {
        curl(
            &pki,
            &["-u", &creds(), &format!("https://{host}/v2/_catalog")],
        )
    };

    // Wrong key: refused before anything is sent.
    common::ok(
        airgap()
            .arg("keygen")
            .arg("-o")
            .arg(setup.path("other.key")),
    );
    let (ok, _, err) = seed(
        &bundle,
        &setup.path("other.pub"),
        &to,
        &["--ca", &ca],
        PASSWORD,
    );
    assert!(!ok);
    assert!(one_error_line(&err).contains("not signed by key"), "{err}");
    // Wrong password.
    let (ok, _, err) = seed(&bundle, &setup.public(), &to, &["--ca", &ca], "wrong");
    assert!(!ok);
    assert!(
        one_error_line(&err).contains("refused the credentials"),
        "{err}"
    );
    // No CA: the registry's certificate is not trusted.
    let (ok, _, err) = seed(&bundle, &setup.public(), &to, &[], PASSWORD);
    assert!(!ok);
    assert!(one_error_line(&err).contains("certificate"), "{err}");
    // Plain HTTP needs an explicit flag; nonsense targets are refused.
    let (ok, _, err) = seed(
        &bundle,
        &setup.public(),
        &format!("http://{host}"),
        &[],
        PASSWORD,
    );
    assert!(
        !ok && one_error_line(&err).contains("--plain-http"),
        "{err}"
    );
    let (ok, _, err) = seed(&bundle, &setup.public(), "ftp://x", &[], PASSWORD);
    assert!(
        !ok && one_error_line(&err).contains("not a registry URL"),
        "{err}"
    );
    // Nothing listening.
    let dead = format!("https://127.0.0.1:{}", common::registries::free_port());
    let (ok, _, err) = seed(&bundle, &setup.public(), &dead, &["--ca", &ca], PASSWORD);
    assert!(
        !ok && one_error_line(&err).contains("cannot reach registry"),
        "{err}"
    );
    assert_eq!(catalog(), (200, "{\"repositories\":[]}\n".to_string()));

    // A tampered layer: the seed fails naming it, the altered blob is never committed, and no
    // manifest or tag reaches the target.
    let archive = archive(&bundle, &setup.public());
    let index = archive.verified().index();
    let biggest = index.entries.iter().max_by_key(|e| e.size).unwrap().clone();
    let located = archive.locate(biggest.path.as_str()).unwrap();
    let tampered = setup.path("tampered.tar");
    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes[(located.data_offset + biggest.size / 2) as usize] ^= 0x40;
    std::fs::write(&tampered, bytes).unwrap();
    let (ok, _, err) = seed(&tampered, &setup.public(), &to, &["--ca", &ca], PASSWORD);
    assert!(!ok);
    let line = one_error_line(&err);
    assert!(
        line.contains(biggest.path.as_str()) && line.contains("altered"),
        "{line}"
    );
    for image in &index.images {
        let repo = format!("m/{}", image.mirror_repository);
        let (status, _) = curl(
            &pki,
            &[
                "-I",
                "-u",
                &creds(),
                &format!("https://{host}/v2/{repo}/blobs/{}", biggest.sha256),
            ],
        );
        assert_eq!(status, 404, "tampered blob committed in {repo}");
        let (status, body) = curl(
            &pki,
            &[
                "-u",
                &creds(),
                &format!("https://{host}/v2/{repo}/tags/list"),
            ],
        );
        assert!(
            status == 404 || body.contains("\"tags\":null") || body.contains("\"tags\":[]"),
            "{repo}: {status} {body}"
        );
    }
}

#[test]
fn target_down_midway_then_back_and_mounts_refused() {
    let setup = Setup::new(2 << 20);
    let bundle = setup.build("b.tar");
    let pki = Pki::new(&setup.path("pki"));
    let mut registry = Distribution::start(&setup.path("registry"), &pki);
    let proxy = FaultProxy::start(&registry.host(), &pki);
    let to = format!("http://{}/m", proxy.host());
    let seed_args = ["--plain-http", "-j", "1"];

    // Hold the seed after two committed blobs, take the registry down, let the seed go on.
    proxy.faults.hold_after_commits.store(2, Ordering::SeqCst);
    let public = setup.public();
    let (b, p, t) = (bundle.clone(), public.clone(), to.clone());
    let run = std::thread::spawn(move || seed(&b, &p, &t, &seed_args, PASSWORD));
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.faults.commits.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "seed never committed two blobs");
        std::thread::sleep(Duration::from_millis(10));
    }
    registry.process.kill();
    proxy.faults.released.store(true, Ordering::SeqCst);
    let (ok, out, err) = run.join().unwrap();
    assert!(!ok, "seed succeeded with the registry down: {out}");
    one_error_line(&err);

    // Back up: the re-run completes without re-sending what arrived.
    registry.restart();
    let (ok, out, err) = seed(&bundle, &public, &to, &seed_args, PASSWORD);
    assert!(ok, "{out}{err}");
    let present: usize = out
        .split(" already there")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(present >= 2, "{out}");
    assert_mirrored(
        &pki,
        &archive(&bundle, &public),
        &format!("{}/m", registry.host()),
        true,
    );

    // A registry that declines every mount: shared blobs are uploaded instead.
    let second = Distribution::start(&setup.path("registry2"), &pki);
    let refusing = FaultProxy::start(&second.host(), &pki);
    refusing.faults.refuse_mounts.store(true, Ordering::SeqCst);
    let (ok, out, err) = seed(
        &bundle,
        &public,
        &format!("http://{}/m", refusing.host()),
        &["--plain-http"],
        PASSWORD,
    );
    assert!(ok, "{out}{err}");
    assert!(refusing.faults.mounts_seen.load(Ordering::SeqCst) > 0);
    assert!(out.contains(" 0 mounted"), "{out}");
    assert_mirrored(
        &pki,
        &archive(&bundle, &public),
        &format!("{}/m", second.host()),
        true,
    );
}

/// A delta of `full`: the same index without its largest layer, which it lists as expected
/// from the base instead. Written with the core writer, as `bundle build --since` will.
fn delta_of(full: &Path, key: &Path, public: &Path, out: &Path) -> Digest {
    use airgap::index::BaseRecord;
    let archive = archive(full, public);
    let mut index = archive.verified().index().clone();
    let layer = index
        .entries
        .iter()
        .filter(|e| e.path.as_str().starts_with("blobs/"))
        .max_by_key(|e| e.size)
        .unwrap()
        .clone();
    index.entries.retain(|e| e.path != layer.path);
    index.expected_blobs = vec![layer.sha256];
    index.base = Some(BaseRecord {
        name: index.name.clone(),
        version: index.version.clone(),
        index_digest: archive.verified().index_digest(),
    });
    index.version.patch += 1;
    let key = airgap::SigningKey::load(key).unwrap();
    let file = std::fs::File::create(out).unwrap();
    let mut writer = airgap::BundleWriter::start(file, &index.to_bytes(), &key, 0).unwrap();
    for entry in &index.entries {
        let mut reader = archive.open_entry(entry.path.as_str()).unwrap();
        writer.write_entry(entry, &mut reader).unwrap();
    }
    writer.finish().unwrap();
    layer.sha256
}

#[test]
fn a_delta_bundle_needs_its_base_on_the_target_first() {
    let setup = Setup::new(64 << 10);
    let full = setup.build("full.tar");
    let delta = setup.path("delta.tar");
    let expected = delta_of(&full, &setup.key(), &setup.public(), &delta);
    common::ok(&mut setup.verify(&delta));
    let pki = Pki::new(&setup.path("pki"));
    let registry = Distribution::start(&setup.path("registry"), &pki);
    let to = format!("https://{}/m", registry.host());
    let ca = pki.ca.to_str().unwrap().to_string();

    let (ok, _, err) = seed(&delta, &setup.public(), &to, &["--ca", &ca], PASSWORD);
    assert!(!ok);
    let line = one_error_line(&err);
    assert!(
        line.contains("lacks 1 blob")
            && line.contains(&expected.to_string())
            && line.contains("seed the base bundle first"),
        "{line}"
    );
    let (_, catalog) = curl(
        &pki,
        &[
            "-u",
            &creds(),
            &format!("https://{}/v2/_catalog", registry.host()),
        ],
    );
    assert_eq!(
        catalog, "{\"repositories\":[]}\n",
        "the failed delta pushed something"
    );

    let (ok, out, err) = seed(&full, &setup.public(), &to, &["--ca", &ca], PASSWORD);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = seed(&delta, &setup.public(), &to, &["--ca", &ca], PASSWORD);
    assert!(ok, "{out}{err}");
    assert!(out.contains("blobs: 0 uploaded"), "{out}");
    assert_mirrored(
        &pki,
        &archive(&delta, &setup.public()),
        &format!("{}/m", registry.host()),
        true,
    );
}

#[test]
fn seeds_straight_from_a_split_bundle() {
    let setup = Setup::new(256 << 10);
    let out = setup.path("split.tar");
    common::ok(
        setup
            .build_command(&setup.fixture.spec, &out)
            .args(["--split", "100KiB"]),
    );
    let first = setup.path("split.tar.000");
    assert!(
        setup.path("split.tar.003").exists(),
        "expected several parts"
    );
    let pki = Pki::new(&setup.path("pki"));
    let registry = Distribution::start(&setup.path("registry"), &pki);
    let ca = pki.ca.to_str().unwrap().to_string();
    let (ok, out, err) = seed(
        &first,
        &setup.public(),
        &format!("https://{}/m", registry.host()),
        &["--ca", &ca],
        PASSWORD,
    );
    assert!(ok, "{out}{err}");
    assert_mirrored(
        &pki,
        &archive(&first, &setup.public()),
        &format!("{}/m", registry.host()),
        true,
    );
}

/// A platform-filtered image's upstream index is pushed by its digest as a sparse index; the
/// CNCF registry refuses an index whose children are absent, and the seed says which images
/// that leaves without their upstream digest (and still succeeds: tags and bundle digests
/// work).
#[test]
fn a_registry_that_refuses_sparse_indexes_is_named_in_the_output() {
    let setup = Setup::new(4 << 10);
    let spec = setup.path("amd64.yaml");
    let text = std::fs::read_to_string(&setup.fixture.spec).unwrap();
    std::fs::write(
        &spec,
        text.replace("platforms: [all]", "platforms: [linux/amd64]"),
    )
    .unwrap();
    let bundle = setup.build_spec(&spec, "b.tar");
    let pki = Pki::new(&setup.path("pki"));
    let registry = Distribution::start(&setup.path("registry"), &pki);
    let to = format!("https://{}/m", registry.host());
    let ca = pki.ca.to_str().unwrap().to_string();
    let config_arg = setup.path("cfg").to_str().unwrap().to_string();
    let (ok, out, err) = seed(
        &bundle,
        &setup.public(),
        &to,
        &["--ca", &ca, "--config-dir", &config_arg],
        PASSWORD,
    );
    assert!(ok, "{out}{err}");
    let archive = archive(&bundle, &setup.public());
    let multi = archive
        .verified()
        .index()
        .images
        .iter()
        .find(|i| i.reference == testkit::FIXTURE_IMAGES[2])
        .unwrap()
        .clone();
    assert_ne!(multi.digest, multi.upstream_digest);
    assert!(
        out.contains("refused the upstream index of 1 platform-filtered images")
            && out.contains(&format!(
                "m/example.internal/base/multi@{}",
                multi.upstream_digest
            )),
        "{out}"
    );
    assert_mirrored(&pki, &archive, &format!("{}/m", registry.host()), true);
}

/// The release's SBOM travels with it: `registry seed` attaches a CycloneDX document of the
/// verified bundle to the release artifact as an OCI 1.1 referrer, which the referrers API of
/// the built-in registry lists and the CycloneDX validator accepts.
#[test]
fn the_release_carries_its_sbom_as_a_referrer() {
    let setup = Setup::new(4096);
    let bundle = setup.build("b.tar");
    let pki = Pki::new(&setup.path("pki"));
    let htpasswd = setup.path("htpasswd");
    common::registries::write_htpasswd(&htpasswd);
    let server = common::registries::airgap_serve(
        &setup.path("store"),
        &pki,
        &["--htpasswd", htpasswd.to_str().unwrap()],
    );
    let host = format!("127.0.0.1:{}", server.port);
    let ca = pki.ca.to_str().unwrap().to_string();
    let (done, out, err) = seed(
        &bundle,
        &setup.public(),
        &format!("https://{host}/airgap"),
        &["--ca", &ca, "--json"],
        PASSWORD,
    );
    assert!(done, "{out}{err}");
    let report = common::json_checked("registry-seed", out.as_bytes());
    let sbom_reference = report["sbom"].as_str().unwrap();
    let (repository, sbom_digest) = sbom_reference.split_once('@').unwrap();
    assert_eq!(repository, format!("{host}/airgap/airgap/releases"));

    let index = archive(&bundle, &setup.public()).verified().index().clone();
    let release = skopeo_raw(
        &pki,
        &format!("{host}/airgap/airgap/releases:{}", index.version),
        true,
    )
    .unwrap();
    let api = |path: &str| {
        let (status, body) = curl(
            &pki,
            &[
                "-u",
                &creds(),
                &format!("https://{host}/v2/airgap/airgap/releases/{path}"),
            ],
        );
        assert_eq!(status, 200, "{path}: {body}");
        body
    };
    let listed: serde_json::Value = serde_json::from_str(&api(&format!(
        "referrers/{}?artifactType=application/vnd.cyclonedx%2Bjson",
        Digest::of(&release)
    )))
    .unwrap();
    assert_eq!(listed["manifests"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["manifests"][0]["digest"], sbom_digest, "{listed}");
    let manifest: serde_json::Value =
        serde_json::from_str(&api(&format!("manifests/{sbom_digest}"))).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let document = api(&format!("blobs/{layer}"));
    let file = setup.path("sbom.cdx.json");
    std::fs::write(&file, &document).unwrap();
    common::assert_valid_sbom("cyclonedx", &file);
    for image in &index.images {
        assert!(
            document.contains(&image.digest.hex()),
            "the SBOM does not list {}",
            image.reference
        );
    }
}
