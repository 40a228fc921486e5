//! `airgap bundle build` pulling from the CNCF distribution registry (TLS from a CA the test
//! makes, htpasswd auth), checked with skopeo: upstream digests kept, multi-arch filtered,
//! Docker schema 2 and pack artifacts stored byte for byte, the cache reused and repaired,
//! deltas, and every failure leaving nothing at `-o`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;

use airgap::{BundleArchive, BundleIndex, Digest, PublicKey};
use common::registries::{
    creds, free_port, seed, skopeo_raw, Distribution, FaultProxy, Pki, Socks5Proxy, PASSWORD, USER,
};
use common::{airgap, fails, ok, Setup};

/// An upstream registry filled with generated content, and a spec that pulls from it.
struct Upstream {
    s: Setup,
    pki: Pki,
    registry: Distribution,
    auth_file: PathBuf,
}

const PACK: &str = "edge-agent";

impl Upstream {
    /// Seeds the fixture (two images sharing a layer, a linux/amd64+arm64 index, a pack) under
    /// `up/`, copies one image as Docker schema 2 with skopeo, and publishes a pack whose images
    /// live on this registry under `pub/packs/edge-agent:0.3.0`, built by `airgap bundle build`
    /// from that registry.
    fn start() -> Upstream {
        let s = Setup::new(64 * 1024);
        let pki = Pki::new(&s.path("pki"));
        let registry = Distribution::start(&s.path("upstream"), &pki);
        let host = registry.host();
        let fixture = s.build("fixture.tar");
        let (done, _, err) = seed(
            &fixture,
            &s.public(),
            &format!("https://{host}/up"),
            &["--ca", pki.ca.to_str().unwrap()],
            PASSWORD,
        );
        assert!(done, "{err}");
        let out = Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--format",
                "v2s2",
                "--dest-creds",
                &creds(),
            ])
            .arg("--dest-cert-dir")
            .arg(pki.skopeo_cert_dir())
            .arg(format!(
                "oci:{}:example.internal/platform/api:1.0",
                s.fixture.layout.display()
            ))
            .arg(format!("docker://{host}/up/schema2/app:1.0"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let auth_file = s.path("auth.json");
        common::registries::write_auth(&auth_file, &host, PASSWORD);
        let up = Upstream {
            s,
            pki,
            registry,
            auth_file,
        };
        let pack_dir = up.s.path("publish/packs").join(PACK);
        testkit::write_pack(
            &pack_dir,
            PACK,
            "0.3.0",
            "addon",
            &[
                &up.image("example.internal/platform/api:1.0"),
                &format!("{host}/up/schema2/app:1.0"),
            ],
        )
        .unwrap();
        let publish = up.spec(
            "publish/bundle.yaml",
            "  packs:\n    - path: packs/edge-agent\n",
        );
        let published = up.s.path("publish.tar");
        ok(&mut up.build(&publish, &published));
        let (done, _, err) = seed(
            &published,
            &up.s.public(),
            &format!("https://{host}/pub"),
            &["--ca", up.pki.ca.to_str().unwrap()],
            PASSWORD,
        );
        assert!(done, "{err}");
        up
    }

    fn host(&self) -> String {
        self.registry.host()
    }

    /// Where the fixture's `name` lives on the upstream.
    fn image(&self, name: &str) -> String {
        format!("{}/up/{name}", self.host())
    }

    /// Writes a spec at `rel` (under the test directory) with `body` under `spec:` plus the
    /// upstream's CA setting.
    fn spec(&self, rel: &str, body: &str) -> PathBuf {
        self.spec_for(rel, body, &self.host(), false)
    }

    fn spec_for(&self, rel: &str, body: &str, host: &str, plain_http: bool) -> PathBuf {
        let path = self.s.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let settings = if plain_http {
            format!("{{host: \"{host}\", plainHttp: true}}")
        } else {
            format!("{{host: \"{host}\", ca: {}}}", self.pki.ca.display())
        };
        fs::write(
            &path,
            format!(
                "apiVersion: airgap/v1\nkind: Bundle\nmetadata: {{name: pulled, version: 1.0.0}}\nspec:\n{body}  registries:\n    - {settings}\n"
            ),
        )
        .unwrap();
        path
    }

    /// The main spec: amd64 only, the published pack, two more images.
    fn main_spec(&self) -> PathBuf {
        self.spec(
            "main.yaml",
            &format!(
                "  platforms: [linux/amd64]\n  packs:\n    - oci: {}/pub/packs/{PACK}:0.3.0\n  images:\n    - {}\n    - {}\n",
                self.host(),
                self.image("example.internal/platform/worker:1.0"),
                self.image("example.internal/base/multi:2.1"),
            ),
        )
    }

    /// `bundle build` with the upstream's credentials in `$REGISTRY_AUTH_FILE`, the test's
    /// own cache, and a fixed creation time (so rebuilds compare byte for byte).
    fn build(&self, spec: &Path, out: &Path) -> Command {
        self.build_with(spec, out, &self.cache(), &self.s.key())
    }

    fn build_with(&self, spec: &Path, out: &Path, cache: &Path, key: &Path) -> Command {
        let mut cmd = airgap();
        cmd.args(["bundle", "build", "-f"])
            .arg(spec)
            .arg("-o")
            .arg(out)
            .arg("--key")
            .arg(key)
            .arg("--cache")
            .arg(cache)
            .env("REGISTRY_AUTH_FILE", &self.auth_file)
            .env("SOURCE_DATE_EPOCH", "1700000000");
        cmd
    }

    fn cache(&self) -> PathBuf {
        self.s.path("cache")
    }

    fn index(&self, bundle: &Path) -> BundleIndex {
        self.s.index(bundle)
    }

    fn skopeo_raw(&self, image: &str) -> Vec<u8> {
        skopeo_raw(&self.pki, image, true).unwrap_or_else(|e| panic!("{image}: {e}"))
    }
}

fn blob_digests(index: &BundleIndex) -> Vec<Digest> {
    index
        .entries
        .iter()
        .filter(|e| e.path.as_str().starts_with("blobs/sha256/"))
        .map(|e| e.sha256)
        .collect()
}

/// Nothing at `out` and no work directory left beside it.
fn assert_nothing_written(out: &Path) {
    assert!(!out.exists(), "{} was left behind", out.display());
    let leftovers: Vec<_> = fs::read_dir(out.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".airgap-build-")
        })
        .collect();
    assert!(leftovers.is_empty(), "work directories left: {leftovers:?}");
}

fn one_error_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0]
}

#[test]
fn builds_from_a_registry_keeping_upstream_digests_and_rebuilds_from_the_cache() {
    let up = Upstream::start();
    let host = up.host();
    let spec = up.main_spec();
    let out = up.s.path("pulled.tar");
    let summary = ok(up.build(&spec, &out).args(["-j", "3"]));
    assert!(summary.contains("downloaded "), "{summary}");
    ok(&mut up.s.verify(&out));
    let index = up.index(&out);

    // Every image the spec and the pack name, under its normalized reference.
    let mut refs: Vec<&str> = index.images.iter().map(|i| i.reference.as_str()).collect();
    refs.sort();
    let mut wanted = vec![
        up.image("example.internal/platform/api:1.0"),
        up.image("example.internal/platform/worker:1.0"),
        up.image("example.internal/base/multi:2.1"),
        format!("{host}/up/schema2/app:1.0"),
    ];
    wanted.sort();
    assert_eq!(refs, wanted);

    let blobs = blob_digests(&index);
    for image in &index.images {
        let upstream = up.skopeo_raw(&image.reference);
        assert_eq!(
            Digest::of(&upstream),
            image.upstream_digest,
            "{}",
            image.reference
        );
        if image.reference.contains("multi") {
            continue;
        }
        // Single-platform images are stored byte for byte: the stored digest is upstream's.
        assert_eq!(image.digest, image.upstream_digest, "{}", image.reference);
        assert!(blobs.contains(&image.digest));
    }
    let schema2 = index
        .images
        .iter()
        .find(|i| i.reference.contains("schema2"))
        .unwrap();
    assert_eq!(schema2.media_type, airgap::oci::DOCKER_MANIFEST);

    // The multi-arch index keeps only linux/amd64: its arm64 manifest and layer are absent.
    let multi = index
        .images
        .iter()
        .find(|i| i.reference.contains("multi"))
        .unwrap();
    assert_ne!(multi.digest, multi.upstream_digest);
    let upstream_index: airgap::oci::ImageIndex =
        serde_json::from_slice(&up.skopeo_raw(&multi.reference)).unwrap();
    assert_eq!(upstream_index.manifests.len(), 2);
    for child in &upstream_index.manifests {
        let platform = child.platform.as_ref().unwrap().to_string();
        let manifest: airgap::oci::ImageManifest =
            serde_json::from_slice(&up.skopeo_raw(&format!(
                "{}@{}",
                multi.reference.rsplit_once(':').unwrap().0,
                child.digest
            )))
            .unwrap();
        let held = blobs.contains(&child.digest);
        assert_eq!(held, platform == "linux/amd64", "{platform}");
        for layer in &manifest.layers {
            // The amd64 layer is also an api/worker layer; the arm64 one is only arm64's.
            if platform == "linux/arm64" {
                assert!(!blobs.contains(&layer.digest), "arm64 layer in the bundle");
            } else {
                assert!(blobs.contains(&layer.digest));
            }
        }
    }

    // The pack artifact is stored as published, and its images come with it.
    let pack = &index.packs[0];
    assert_eq!(pack.reference, format!("packs/{PACK}:0.3.0"));
    let published = up.skopeo_raw(&format!("{host}/pub/packs/{PACK}:0.3.0"));
    assert_eq!(Digest::of(&published), pack.digest);
    assert_eq!(pack.images.len(), 2);

    // Warm rebuild: nothing downloaded, the same bytes.
    let again = up.s.path("again.tar");
    let summary = ok(&mut up.build(&spec, &again));
    assert!(summary.contains("downloaded 0 blobs"), "{summary}");
    assert_eq!(fs::read(&out).unwrap(), fs::read(&again).unwrap());

    // --no-cache: everything downloaded again, straight into the bundle; the same bytes.
    let uncached = up.s.path("uncached.tar");
    let mut cmd = airgap();
    cmd.args(["bundle", "build", "--no-cache", "-f"])
        .arg(&spec)
        .arg("-o")
        .arg(&uncached)
        .arg("--key")
        .arg(up.s.key())
        .env("REGISTRY_AUTH_FILE", &up.auth_file)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    let summary = ok(&mut cmd);
    assert!(summary.contains("0 from cache"), "{summary}");
    assert_eq!(fs::read(&out).unwrap(), fs::read(&uncached).unwrap());

    // No second copy: the downloaded image blobs went into the bundle only; the cache keeps
    // the pack layer it read while planning and a record of each bundle it built.
    let cached: Vec<_> = fs::read_dir(up.cache().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    let pack_manifest: airgap::oci::ImageManifest = serde_json::from_slice(&published).unwrap();
    assert_eq!(
        cached,
        vec![pack_manifest.layers[0].digest.hex().to_string()]
    );
    let records = || fs::read_dir(up.cache().join("bundles")).unwrap().count();
    // The pack's publishing bundle (Upstream::start), `out` and `again`.
    assert_eq!(records(), 3);

    // A recorded bundle changed since it was built (a blob's bytes flipped in every one that
    // holds it): noticed, never used again, the blob fetched again; the new bundle is unchanged.
    let victim = blobs[0];
    let mut changed = 0;
    for record in fs::read_dir(up.cache().join("bundles")).unwrap() {
        let record: serde_json::Value =
            serde_json::from_slice(&fs::read(record.unwrap().path()).unwrap()).unwrap();
        let bundle = PathBuf::from(record["path"].as_str().unwrap());
        let archive =
            BundleArchive::open(&bundle, &PublicKey::load(&up.s.public()).unwrap()).unwrap();
        let Ok(entry) = archive.locate(&format!("blobs/sha256/{}", victim.hex())) else {
            continue;
        };
        let mut bytes = fs::read(&bundle).unwrap();
        bytes[entry.data_offset as usize] ^= 0xff;
        fs::write(&bundle, &bytes).unwrap();
        changed += 1;
    }
    assert!(changed >= 2, "out and again hold every blob");
    let repaired = up.s.path("repaired.tar");
    let summary = ok(&mut up.build(&spec, &repaired));
    assert!(summary.contains("downloaded 1 blobs"), "{summary}");
    assert_eq!(fs::read(&uncached).unwrap(), fs::read(&repaired).unwrap());
    // The changed bundles are forgotten; `repaired` is recorded.
    assert_eq!(records(), 3 - changed + 1);
    // A bundle deleted since is forgotten: its blobs come from the one left.
    fs::remove_file(&out).unwrap();
    let summary = ok(&mut up.build(&spec, &out));
    assert!(summary.contains("downloaded 0 blobs"), "{summary}");
    assert_eq!(fs::read(&uncached).unwrap(), fs::read(&out).unwrap());

    // The same content through an HTTPS proxy that is not there: the build honours
    // HTTPS_PROXY (and fails), and NO_PROXY lifts it again.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let err = fails(
        up.build(&spec, &up.s.path("proxied.tar"))
            .env("HTTPS_PROXY", &dead)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy"),
    );
    assert!(err.contains("cannot reach registry"), "{err}");
    assert_nothing_written(&up.s.path("proxied.tar"));
    ok(up
        .build(&spec, &up.s.path("proxied.tar"))
        .env("HTTPS_PROXY", &dead)
        .env("NO_PROXY", "127.0.0.1"));

    // Through a SOCKS5 proxy: every connection to the registry goes through it.
    let socks = Socks5Proxy::start();
    let socksed = up.s.path("socks.tar");
    ok(up
        .build(&spec, &socksed)
        .env("HTTPS_PROXY", format!("socks5://127.0.0.1:{}", socks.port))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy"));
    assert!(socks.connections.load(Ordering::SeqCst) > 0);
    assert_eq!(fs::read(&out).unwrap(), fs::read(&socksed).unwrap());
}

#[test]
fn a_delta_leaves_out_what_its_base_holds_and_seeds_on_top_of_it() {
    let up = Upstream::start();
    let base_spec = up.main_spec();
    let base = up.s.path("base.tar");
    ok(&mut up.build(&base_spec, &base));
    // The next release keeps every platform of the multi-arch image: only arm64 is new.
    let text = fs::read_to_string(&base_spec)
        .unwrap()
        .replace("[linux/amd64]", "[all]");
    let next_spec = up.s.path("next.yaml");
    fs::write(&next_spec, text).unwrap();
    let full = up.s.path("full.tar");
    ok(&mut up.build(&next_spec, &full));
    let delta = up.s.path("delta.tar");
    let summary = ok(up.build(&next_spec, &delta).arg("--since").arg(&base));
    assert!(summary.contains("delta against pulled 1.0.0"), "{summary}");
    ok(&mut up.s.verify(&delta));

    let (base_index, full_index, delta_index) =
        (up.index(&base), up.index(&full), up.index(&delta));
    let base_blobs = blob_digests(&base_index);
    let delta_blobs = blob_digests(&delta_index);
    let manifests: Vec<Digest> = full_index.images.iter().map(|i| i.digest).collect();
    for blob in blob_digests(&full_index) {
        let in_base = base_blobs.contains(&blob);
        let is_top_manifest = manifests.contains(&blob);
        if in_base && !is_top_manifest && !delta_blobs.contains(&blob) {
            assert!(delta_index.expected_blobs.contains(&blob));
        } else {
            assert!(delta_blobs.contains(&blob) || delta_index.expected_blobs.contains(&blob));
        }
        if !in_base {
            assert!(
                delta_blobs.contains(&blob),
                "new blob {blob} missing from the delta"
            );
        }
    }
    // Layer-level: the delta carries far less than the full bundle.
    assert!(delta_index.content_size() * 3 < full_index.content_size());
    let base_record = delta_index.base.as_ref().unwrap();
    assert_eq!(base_record.name, "pulled");
    assert_eq!(delta_index.images, full_index.images);

    // Seeding the base, then the delta, gives the full content.
    let target = Distribution::start(&up.s.path("target"), &up.pki);
    let to = format!("https://{}/m", target.host());
    let ca = ["--ca", up.pki.ca.to_str().unwrap()];
    for bundle in [&base, &delta] {
        let (done, out, err) = seed(bundle, &up.s.public(), &to, &ca, PASSWORD);
        assert!(done, "{err}");
        // The base's SBOM is attached to its release; a delta lacks the blobs it would read.
        let attached = out.contains("SBOM (CycloneDX 1.5) attached to the release");
        assert_eq!(attached, bundle == &base, "{out}");
    }
    let multi = full_index
        .images
        .iter()
        .find(|i| i.reference.contains("multi"))
        .unwrap();
    let raw = skopeo_raw(
        &up.pki,
        &format!("{}/m/{}:2.1", target.host(), multi.mirror_repository),
        true,
    )
    .unwrap();
    assert_eq!(Digest::of(&raw), multi.upstream_digest);

    // A base signed with another key is refused before anything is fetched.
    let other = up.s.path("other.key");
    ok(airgap().arg("keygen").arg("-o").arg(&other));
    let mut cmd = up.build_with(&next_spec, &up.s.path("bad-delta.tar"), &up.cache(), &other);
    cmd.arg("--since").arg(&base);
    let err = fails(&mut cmd);
    assert!(err.contains("--since") && err.contains("base.tar"), "{err}");
    assert_nothing_written(&up.s.path("bad-delta.tar"));
}

#[test]
fn registry_failures_fail_clearly_and_leave_no_partial_bundle() {
    let up = Upstream::start();
    let host = up.host();
    let out = up.s.path("out.tar");
    let image_spec =
        |name: &str, image: &str| up.spec(name, &format!("  images:\n    - {image}\n"));
    let worker = up.image("example.internal/platform/worker:1.0");
    let spec = image_spec("one.yaml", &worker);
    let run = |cmd: &mut Command| {
        let output = cmd.output().unwrap();
        assert!(!output.status.success());
        one_error_line(&String::from_utf8_lossy(&output.stderr)).to_string()
    };

    // Wrong password in the auth file.
    let wrong = up.s.path("wrong-auth.json");
    common::registries::write_auth(&wrong, &host, "not the password");
    let err = run(up.build(&spec, &out).env("REGISTRY_AUTH_FILE", &wrong));
    assert!(
        err.contains(&format!("{host} refused the credentials for user {USER}")),
        "{err}"
    );
    assert_nothing_written(&out);

    // No credentials at all.
    let empty = up.s.path("empty-auth.json");
    fs::write(&empty, "{\"auths\":{}}").unwrap();
    let err = run(up.build(&spec, &out).env("REGISTRY_AUTH_FILE", &empty));
    assert!(err.contains("requires authentication"), "{err}");
    assert_nothing_written(&out);

    // An image the registry does not have.
    let missing = image_spec(
        "missing.yaml",
        &up.image("example.internal/platform/nope:9.9"),
    );
    let err = run(&mut up.build(&missing, &out));
    assert!(err.contains("not found") && err.contains("nope"), "{err}");
    assert_nothing_written(&out);

    // A registry nobody listens on.
    let gone = format!("127.0.0.1:{}", free_port());
    let unreachable = up.spec_for(
        "gone.yaml",
        &format!("  images:\n    - {gone}/x/y:1\n"),
        &gone,
        false,
    );
    let err = run(&mut up.build(&unreachable, &out));
    assert!(
        err.contains(&format!("cannot reach registry {gone}")),
        "{err}"
    );
    assert_nothing_written(&out);

    // A CA file that is not there names the spec field.
    let bad_ca = up.s.path("bad-ca.yaml");
    fs::write(
        &bad_ca,
        fs::read_to_string(&spec)
            .unwrap()
            .replace(up.pki.ca.to_str().unwrap(), "/nonexistent/ca.pem"),
    )
    .unwrap();
    let err = run(&mut up.build(&bad_ca, &out));
    assert!(
        err.contains("spec.registries") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );
    assert_nothing_written(&out);

    // A registry that answers 500 three times, then recovers: retried to success.
    let proxy = FaultProxy::start(&host, &up.pki);
    proxy.faults.fail_first.store(3, Ordering::SeqCst);
    let proxy_auth = up.s.path("proxy-auth.json");
    common::registries::write_auth(&proxy_auth, &proxy.host(), PASSWORD);
    let through = up.spec_for(
        "through.yaml",
        &format!(
            "  images:\n    - {}/up/example.internal/platform/worker:1.0\n",
            proxy.host()
        ),
        &proxy.host(),
        true,
    );
    ok(up
        .build(&through, &out)
        .env("REGISTRY_AUTH_FILE", &proxy_auth));
    assert_eq!(proxy.faults.failed.load(Ordering::SeqCst), 3);
    ok(&mut up.s.verify(&out));
    fs::remove_file(&out).unwrap();

    // A blob whose stored content no longer matches its digest: refused, never retried into
    // success, and kept out of the cache.
    let index = {
        let good = up.s.path("good.tar");
        ok(&mut up.build_with(&spec, &good, &up.s.path("cache-2"), &up.s.key()));
        up.index(&good)
    };
    let image = &index.images[0];
    let manifest: airgap::oci::ImageManifest =
        serde_json::from_slice(&up.skopeo_raw(&image.reference)).unwrap();
    let layer = manifest.layers.last().unwrap().digest;
    let data = up
        .registry
        .storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&layer.hex()[..2])
        .join(layer.hex())
        .join("data");
    let mut bytes = fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    fs::write(&data, &bytes).unwrap();
    let fresh_cache = up.s.path("cache-3");
    // -j 1: blobs go in plan order (config, first layer, then the corrupt last layer), so the
    // failure comes after two blobs completed.
    let err = run(up
        .build_with(&spec, &out, &fresh_cache, &up.s.key())
        .args(["-j", "1"]));
    assert!(
        err.contains(&format!("blob {layer}")) && err.contains("does not match its digest"),
        "{err}"
    );
    assert_nothing_written(&out);
    assert!(!fresh_cache.join("blobs/sha256").join(layer.hex()).exists());
    assert_eq!(
        fs::read_dir(fresh_cache.join("tmp")).unwrap().count(),
        0,
        "a partial download was left in the cache"
    );

    // Interrupted builds resume: once the registry serves the blob intact again, the re-run
    // downloads only what the failed one did not finish.
    bytes[last] ^= 0x55;
    fs::write(&data, &bytes).unwrap();
    let summary = ok(&mut up.build_with(&spec, &out, &fresh_cache, &up.s.key()));
    assert!(
        summary.contains("downloaded 1 blobs") && summary.contains("2 from cache"),
        "{summary}"
    );
    ok(&mut up.s.verify(&out));

    // -v logs each registry request.
    let again = up.s.path("again.tar");
    let output = up
        .build_with(&spec, &again, &fresh_cache, &up.s.key())
        .arg("-v")
        .output()
        .unwrap();
    assert!(output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.lines()
            .any(|l| l.contains("request") && l.contains("GET") && l.contains(&host)),
        "{log}"
    );
}
