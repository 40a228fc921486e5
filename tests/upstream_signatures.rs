//! Upstream signatures carried and verified again offline: an image signed in the format cosign
//! and containers/image (`sigstoreSigned`) share, on the CNCF distribution registry (TLS,
//! htpasswd), builds into a bundle under a `bundle.yaml` policy; seeded into a mirror with the
//! upstream gone, skopeo verifies the carried signature with a `sigstoreSigned` policy, and
//! `airgap registry verify` does too. An unsigned image, or one signed by another key, fails the
//! build naming the image.
//!
//! The signing and verifying client is Debian 13's skopeo (`scripts/sigstore-skopeo.sh`, which
//! `scripts/test.sh` runs): Debian 12's skopeo 1.9.3 is built with sigstore disabled for both
//! ("Debian-local change: sigstore disabled"). A forged signature (an attacker's key, made with
//! openssl in cosign's format) stands in for tampering with the mirror.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use airgap::{BundleIndex, Digest};
use common::registries::{creds, seed, skopeo_raw, Distribution, Pki, PASSWORD, USER};
use common::{airgap, fails, json_checked, ok, Setup};

struct Signing {
    s: Setup,
    pki: Pki,
    upstream: Distribution,
    auth_file: PathBuf,
}

const WORKER: &str = "example.internal/platform/worker:1.0";
const API: &str = "example.internal/platform/api:1.0";

impl Signing {
    fn start() -> Signing {
        let s = Setup::new(16 * 1024);
        let pki = Pki::new(&s.path("pki"));
        let upstream = Distribution::start(&s.path("upstream"), &pki);
        let (done, _, err) = seed(
            &s.build("fixture.tar"),
            &s.public(),
            &format!("https://{}/up", upstream.host()),
            &["--ca", pki.ca.to_str().unwrap()],
            PASSWORD,
        );
        assert!(done, "{err}");
        let auth_file = s.path("auth.json");
        common::registries::write_auth(&auth_file, &upstream.host(), PASSWORD);
        fs::write(s.path("passphrase"), "correct horse").unwrap();
        for name in ["cosign", "other"] {
            run(sigstore_skopeo()
                .args(["generate-sigstore-key", "--output-prefix"])
                .arg(s.path(name))
                .arg("--passphrase-file")
                .arg(s.path("passphrase")));
        }
        // Keys openssl makes: an attacker's, and an attester's for SBOM attestations.
        for name in ["attacker", "attester"] {
            let key = s.path(&format!("{name}.key"));
            run(Command::new("openssl")
                .args([
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                ])
                .arg(&key));
            run(Command::new("openssl")
                .args(["ec", "-pubout", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(s.path(&format!("{name}.pub"))));
        }
        Signing {
            s,
            pki,
            upstream,
            auth_file,
        }
    }

    /// `host/up/<name>`: a fixture image on the upstream.
    fn upstream_image(&self, name: &str) -> String {
        format!("{}/up/{name}", self.upstream.host())
    }

    fn digest(&self, image: &str) -> Digest {
        Digest::of(&skopeo_raw(&self.pki, image, true).unwrap())
    }

    /// Signs `image` as `signer` the way a publisher does: `skopeo copy
    /// --sign-by-sigstore-private-key` onto itself, the signature going to sigstore
    /// attachments (`sha256-<digest>.sig`).
    fn sign(&self, image: &str, signer: &str) {
        let dir = self.registries_d();
        run(sigstore_skopeo()
            .arg("--policy")
            .arg(dir.join("accept-anything.json"))
            .arg("--registries.d")
            .arg(&dir)
            .args(["copy", "--quiet", "--preserve-digests"])
            .args(["--src-creds", &creds(), "--dest-creds", &creds()])
            .arg("--src-cert-dir")
            .arg(self.pki.skopeo_cert_dir())
            .arg("--dest-cert-dir")
            .arg(self.pki.skopeo_cert_dir())
            .arg("--sign-by-sigstore-private-key")
            .arg(self.s.path(&format!("{signer}.private")))
            .arg("--sign-passphrase-file")
            .arg(self.s.path("passphrase"))
            .arg(format!("docker://{image}"))
            .arg(format!("docker://{image}")));
    }

    /// registries.d telling containers/image to read and write sigstore attachments, and a
    /// policy that accepts anything (for the publisher's copy).
    fn registries_d(&self) -> PathBuf {
        let dir = self.s.path("registries.d");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("sigstore.yaml"),
            "default-docker:\n  use-sigstore-attachments: true\n",
        )
        .unwrap();
        fs::write(
            dir.join("accept-anything.json"),
            r#"{"default": [{"type": "insecureAcceptAnything"}]}"#,
        )
        .unwrap();
        dir
    }

    /// An attacker's signature of `digest` as `identity`, in cosign's format but by a key no
    /// policy names, pushed (plain skopeo, digests preserved) over the signature tag of `to`
    /// (`host/repo`).
    fn forge(&self, identity: &str, digest: &Digest, to: &str) {
        let dir = self.s.path(&format!("forged-{}", &digest.hex()[..12]));
        let payload = serde_json::to_vec(&serde_json::json!({
            "critical": {
                "identity": {"docker-reference": identity},
                "image": {"docker-manifest-digest": digest.to_string()},
                "type": "cosign container image signature",
            },
            "optional": null,
        }))
        .unwrap();
        fs::create_dir_all(&dir).unwrap();
        let payload_file = dir.join("payload.json");
        fs::write(&payload_file, &payload).unwrap();
        let der = run(Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(self.s.path("attacker.key"))
            .arg(&payload_file));
        use base64::Engine;
        let signature = base64::engine::general_purpose::STANDARD.encode(der);
        let mut layout = testkit::LayoutWriter::create(&dir.join("layout")).unwrap();
        let manifest = layout.cosign_signature(&payload, &signature).unwrap();
        self.push(
            layout,
            &manifest,
            &format!("{to}:sha256-{}.sig", digest.hex()),
        );
    }

    /// A CycloneDX SBOM attestation of `digest` by `signer` (an openssl key), as `cosign
    /// attest` stores it: a DSSE envelope of an in-toto statement, under `to`'s
    /// `sha256-<digest>.att`.
    fn attest(&self, digest: &Digest, signer: &str, to: &str) {
        let dir = self
            .s
            .path(&format!("attested-{signer}-{}", &digest.hex()[..12]));
        fs::create_dir_all(&dir).unwrap();
        let statement = serde_json::to_vec(&serde_json::json!({
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": "https://cyclonedx.org/bom",
            "subject": [{"name": to, "digest": {"sha256": digest.hex()}}],
            "predicate": {"bomFormat": "CycloneDX", "specVersion": "1.5", "components": []},
        }))
        .unwrap();
        let payload_type = "application/vnd.in-toto+json";
        let mut pae = format!(
            "DSSEv1 {} {payload_type} {} ",
            payload_type.len(),
            statement.len()
        )
        .into_bytes();
        pae.extend_from_slice(&statement);
        fs::write(dir.join("pae"), &pae).unwrap();
        let der = run(Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(self.s.path(&format!("{signer}.key")))
            .arg(dir.join("pae")));
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let envelope = serde_json::to_vec(&serde_json::json!({
            "payloadType": payload_type,
            "payload": b64.encode(&statement),
            "signatures": [{"keyid": "", "sig": b64.encode(der)}],
        }))
        .unwrap();
        let mut layout = testkit::LayoutWriter::create(&dir.join("layout")).unwrap();
        let manifest = layout
            .cosign_attestation(&envelope, "https://cyclonedx.org/bom")
            .unwrap();
        self.push(
            layout,
            &manifest,
            &format!("{to}:sha256-{}.att", digest.hex()),
        );
    }

    /// Pushes `manifest` of `layout` to `destination` with plain skopeo, digests preserved.
    fn push(
        &self,
        mut layout: testkit::LayoutWriter,
        manifest: &airgap::oci::Descriptor,
        destination: &str,
    ) {
        layout.tag(manifest, "pushed");
        let layout = layout.finish().unwrap();
        run(Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--preserve-digests",
                "--dest-creds",
                &creds(),
            ])
            .arg("--dest-cert-dir")
            .arg(self.pki.skopeo_cert_dir())
            .arg(format!("oci:{}:pushed", layout.display()))
            .arg(format!("docker://{destination}")));
    }

    /// skopeo's own check: `skopeo copy` of `image` under a policy that requires a
    /// `sigstoreSigned` signature by `signer` (with `remap`, the identity `(prefix,
    /// signedPrefix)`: the mirror's path stands for the original name), signatures read from
    /// sigstore attachments. Returns skopeo's error, if any.
    fn skopeo_verifies(
        &self,
        image: &str,
        signer: &str,
        remap: Option<(&str, &str)>,
    ) -> Result<(), String> {
        let dir = self.s.path("skopeo-policy");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut requirement = serde_json::json!({
            "type": "sigstoreSigned",
            "keyPath": self.s.path(&format!("{signer}.pub")),
        });
        if let Some((prefix, signed_prefix)) = remap {
            requirement["signedIdentity"] = serde_json::json!({
                "type": "remapIdentity", "prefix": prefix, "signedPrefix": signed_prefix,
            });
        }
        let policy = serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {"": [requirement]}},
        });
        fs::write(dir.join("policy.json"), policy.to_string()).unwrap();
        let out = sigstore_skopeo()
            .arg("--policy")
            .arg(dir.join("policy.json"))
            .arg("--registries.d")
            .arg(self.registries_d())
            .args(["copy", "--quiet", "--src-creds", &creds()])
            .arg("--src-cert-dir")
            .arg(self.pki.skopeo_cert_dir())
            .arg(format!("docker://{image}"))
            .arg(format!("dir:{}", dir.join("copy").display()))
            .output()
            .unwrap();
        common::succeeded(&out)
    }

    fn spec(&self, name: &str, body: &str) -> PathBuf {
        let path = self.s.path(name);
        fs::write(
            &path,
            format!(
                "apiVersion: airgap/v1\nkind: Bundle\nmetadata: {{name: signed, version: 1.0.0}}\nspec:\n{body}  registries:\n    - {{host: \"{}\", ca: {}}}\n",
                self.upstream.host(),
                self.pki.ca.display()
            ),
        )
        .unwrap();
        path
    }

    fn build(&self, spec: &Path, out: &Path) -> Command {
        let mut cmd = airgap();
        cmd.args(["bundle", "build", "--no-cache", "-f"])
            .arg(spec)
            .arg("-o")
            .arg(out)
            .arg("--key")
            .arg(self.s.key())
            .env("REGISTRY_AUTH_FILE", &self.auth_file);
        cmd
    }

    fn index(&self, bundle: &Path) -> BundleIndex {
        self.s.index(bundle)
    }
}

/// Debian 13's skopeo, which has sigstore (see the module comment).
fn sigstore_skopeo() -> Command {
    let path = std::env::var_os("AIRGAP_SIGSTORE_SKOPEO")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/airgap-skopeo-sigstore/bin/skopeo".into());
    assert!(
        path.exists(),
        "{} is missing: run scripts/sigstore-skopeo.sh (scripts/test.sh does)",
        path.display()
    );
    Command::new(path)
}

/// Runs `cmd`, failing the test with its stderr; returns its stdout.
fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn a_signed_image_carries_its_signature_to_a_mirror_where_skopeo_verifies_it_offline() {
    let mut t = Signing::start();
    let worker = t.upstream_image(WORKER);
    let api = t.upstream_image(API);
    let worker_repo = worker.rsplit_once(':').unwrap().0.to_string();
    let worker_digest = t.digest(&worker);
    t.sign(&worker, "cosign");
    // Its SBOM attestation, by another key the policy also names.
    t.attest(&worker_digest, "attester", &worker_repo);

    // skopeo, the real verifier, agrees with what was made: signed by cosign, not by other;
    // the unsigned image is refused.
    t.skopeo_verifies(&worker, "cosign", None).unwrap();
    let e = t.skopeo_verifies(&worker, "other", None).unwrap_err();
    assert!(e.contains("signature"), "{e}");
    let e = t.skopeo_verifies(&api, "cosign", None).unwrap_err();
    assert!(e.contains("signature"), "{e}");

    // The build under a policy naming the cosign key: the signature travels as an image.
    let spec = t.spec(
        "signed.yaml",
        &format!(
            "  images:\n    - ref: {worker}\n      verify: {{keys: [cosign.pub, attester.pub]}}\n    - {api}\n"
        ),
    );
    let bundle = t.s.path("signed.tar");
    ok(&mut t.build(&spec, &bundle));
    let index = t.index(&bundle);
    let record = index.images.iter().find(|i| i.reference == worker).unwrap();
    let signature = record
        .signature
        .as_ref()
        .expect("the worker's signature is recorded");
    let sig_reference = format!("{worker_repo}:sha256-{}.sig", worker_digest.hex());
    assert_eq!(signature.reference, sig_reference);
    let carried = index
        .images
        .iter()
        .find(|i| i.reference == sig_reference)
        .unwrap();
    assert_eq!(carried.digest, signature.digest);
    assert_eq!(
        carried.digest,
        t.digest(&sig_reference),
        "stored byte for byte as upstream served it"
    );
    let key_id = |name: &str| {
        registry::cosign::VerificationKey::from_pem(
            &fs::read_to_string(t.s.path(&format!("{name}.pub"))).unwrap(),
        )
        .unwrap()
        .id()
    };
    let (cosign_key, attester_key) = (key_id("cosign"), key_id("attester"));
    assert_eq!(signature.keys, vec![cosign_key, attester_key]);
    let mut carried_keys: Vec<Digest> = index.signature_keys.iter().map(|k| k.id).collect();
    carried_keys.sort();
    let mut wanted = vec![cosign_key, attester_key];
    wanted.sort();
    assert_eq!(carried_keys, wanted);
    let api_record = index.images.iter().find(|i| i.reference == api).unwrap();
    assert!(
        api_record.signature.is_none() && api_record.attestations.is_none(),
        "no policy covered the api image"
    );
    // The SBOM attestation travels as the image its tag names, and is listed.
    let attestations = record
        .attestations
        .as_ref()
        .expect("the attestation is carried");
    let att_reference = format!("{worker_repo}:sha256-{}.att", worker_digest.hex());
    assert_eq!(attestations.reference, att_reference);
    assert_eq!(
        attestations.predicate_types,
        vec!["https://cyclonedx.org/bom"]
    );
    assert!(index
        .images
        .iter()
        .any(|i| i.reference == att_reference && i.digest == attestations.digest));
    let shown = ok(airgap().args(["bundle", "inspect"]).arg(&bundle));
    let line = shown.lines().find(|l| l.contains(&worker)).unwrap();
    assert!(
        line.ends_with("signed upstream, attested (https://cyclonedx.org/bom)"),
        "{shown}"
    );
    let inspect = ok(airgap().args(["bundle", "inspect", "--json"]).arg(&bundle));
    let inspect = json_checked("bundle-inspect", inspect.as_bytes());
    assert_eq!(inspect["signatureKeys"].as_array().unwrap().len(), 2);
    for format in ["cyclonedx", "spdx"] {
        let out = t.s.path(&format!("sbom.{format}.json"));
        ok(airgap()
            .args(["bundle", "sbom"])
            .arg(&bundle)
            .arg("--pub")
            .arg(t.s.public())
            .args(["--format", format, "-o"])
            .arg(&out));
        common::assert_valid_sbom(format, &out);
        let text = fs::read_to_string(&out).unwrap();
        for listed in [
            att_reference.as_str(),
            sig_reference.as_str(),
            "https://cyclonedx.org/bom",
        ] {
            assert!(text.contains(listed), "{format} does not list {listed}");
        }
    }

    // The same signature rides as an OCI 1.1 referrer of the image, for clients that look
    // signatures up through the referrers API: `registry serve` of the bundle lists it.
    let referrer = index
        .images
        .iter()
        .find(|i| i.reference.starts_with(&format!("{worker_repo}@sha256:")))
        .expect("the referrer is carried by digest");
    let served = common::registries::airgap_serve(
        &bundle,
        &t.pki,
        &["--pub", t.s.public().to_str().unwrap()],
    );
    let (status, body) = common::registries::curl(
        &t.pki,
        &[&format!(
            "https://127.0.0.1:{}/v2/{}/referrers/{worker_digest}",
            served.port, record.mirror_repository
        )],
    );
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        listed["manifests"][0]["digest"],
        referrer.digest.to_string(),
        "{body}"
    );
    assert_eq!(
        listed["manifests"][0]["artifactType"],
        registry::cosign::SIGNATURE_ARTIFACT_TYPE,
        "{body}"
    );
    drop(served);

    // Seeded into a mirror, the upstream gone: skopeo verifies the carried signature against
    // the original name (its identity remapped from the mirror's path), and refuses the
    // other key.
    let mirror = Distribution::start(&t.s.path("mirror"), &t.pki);
    let target = format!("https://{}/airgap", mirror.host());
    let (done, _, err) = seed(
        &bundle,
        &t.s.public(),
        &target,
        &["--ca", t.pki.ca.to_str().unwrap()],
        PASSWORD,
    );
    assert!(done, "{err}");
    let upstream_host = t.upstream.host();
    t.upstream.process.kill();
    let mirrored_root = format!(
        "{}/airgap/{}",
        mirror.host(),
        upstream_host.replace(':', "_")
    );
    let mirrored = format!("{mirrored_root}/up/{WORKER}");
    let remap = Some((mirrored_root.as_str(), upstream_host.as_str()));
    t.skopeo_verifies(&mirrored, "cosign", remap)
        .unwrap_or_else(|e| panic!("skopeo refused the carried signature offline: {e}"));
    let e = t.skopeo_verifies(&mirrored, "other", remap).unwrap_err();
    assert!(e.contains("signature"), "{e}");
    let e = t
        .skopeo_verifies(&format!("{mirrored_root}/up/{API}"), "cosign", remap)
        .unwrap_err();
    assert!(e.contains("signature"), "{e}");

    // registry verify checks the signature again, with the keys the signed index carries.
    let verify = |json: bool| {
        let mut cmd = airgap();
        cmd.args(["registry", "verify", "--pub"])
            .arg(t.s.public())
            .args(["--to", &target, "--ca", t.pki.ca.to_str().unwrap()])
            .args(["--username", USER, "--password-stdin"]);
        if json {
            cmd.arg("--json");
        }
        common::registries::with_stdin(&mut cmd, PASSWORD)
    };
    let out = verify(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_checked("registry-verify", &out.stdout);
    assert_eq!(report["releases"][0]["signaturesChecked"], 1);

    // An attacker's signature put over the carried one is a finding; skopeo refuses too.
    let other_mirror_repo = format!("{mirrored_root}/up/example.internal/platform/worker");
    t.forge(&worker, &worker_digest, &other_mirror_repo);
    let out = verify(false);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "image {worker}: its upstream signature does not verify"
        )) && stdout.contains("signed by a key the policy does not name"),
        "{stdout}"
    );
    let e = t.skopeo_verifies(&mirrored, "cosign", remap).unwrap_err();
    assert!(e.contains("signature"), "{e}");

    // So is an attacker's attestation put over the carried one.
    t.attest(&worker_digest, "attacker", &other_mirror_repo);
    let out = verify(true);
    assert!(!out.status.success());
    let report = json_checked("registry-verify", &out.stdout);
    let problems = report["releases"][0]["unverifiedSignatures"]
        .as_array()
        .unwrap();
    let attestation = problems
        .iter()
        .find(|p| p["what"] == "attestations")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert!(
        attestation["detail"]
            .as_str()
            .unwrap()
            .contains("signed by no key the policy names"),
        "{attestation}"
    );
}

#[test]
fn an_unsigned_image_or_one_signed_by_another_key_fails_the_build_naming_it() {
    let t = Signing::start();
    let worker = t.upstream_image(WORKER);
    let api = t.upstream_image(API);
    t.sign(&worker, "other");

    // Unsigned, under the default policy.
    let spec = t.spec(
        "unsigned.yaml",
        &format!("  verify: {{keys: [cosign.pub]}}\n  images:\n    - {api}\n"),
    );
    let out = t.s.path("unsigned.tar");
    let line = fails(&mut t.build(&spec, &out));
    assert!(
        line.contains(&format!(
            "image {api} (signature policy: keys cosign.pub): no signature"
        )),
        "{line}"
    );
    assert!(!out.exists());

    // Signed, but by a key the policy does not name.
    let spec = t.spec(
        "other.yaml",
        &format!("  verify: {{keys: [cosign.pub]}}\n  images:\n    - {worker}\n"),
    );
    let out = t.s.path("other.tar");
    let line = fails(&mut t.build(&spec, &out));
    assert!(
        line.contains(&format!(
            "image {worker} (signature policy: keys cosign.pub)"
        )) && line.contains("signed by a key the policy does not name"),
        "{line}"
    );
    assert!(!out.exists());

    // Signed by a key the policy names, with an SBOM attestation by a key it does not: the
    // image comes in, the attestation stays behind (it would travel unverified), and the
    // build says so.
    let worker_repo = worker.rsplit_once(':').unwrap().0.to_string();
    t.attest(&t.digest(&worker), "attacker", &worker_repo);
    let spec = t.spec(
        "attested.yaml",
        &format!("  verify: {{keys: [other.pub]}}\n  images:\n    - {worker}\n"),
    );
    let out = t.s.path("attested.tar");
    let built = t.build(&spec, &out).output().unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let stderr = String::from_utf8_lossy(&built.stderr);
    assert!(
        stderr.contains("attestations left out")
            && stderr.contains("signed by no key the policy names"),
        "{stderr}"
    );
    let index = t.index(&out);
    let record = index.images.iter().find(|i| i.reference == worker).unwrap();
    assert!(record.signature.is_some() && record.attestations.is_none());
    assert!(!index.images.iter().any(|i| i.reference.ends_with(".att")));

    // `verify: none` takes it as it is; a key file that is not a key fails before any fetch.
    let spec = t.spec(
        "none.yaml",
        &format!(
            "  verify: {{keys: [cosign.pub]}}\n  images:\n    - ref: {api}\n      verify: none\n"
        ),
    );
    ok(&mut t.build(&spec, &t.s.path("none.tar")));
    fs::write(t.s.path("broken.pub"), "not a key").unwrap();
    let spec = t.spec(
        "broken.yaml",
        &format!("  verify: {{keys: [broken.pub]}}\n  images:\n    - {worker}\n"),
    );
    let e = fails(&mut t.build(&spec, &t.s.path("broken.tar")));
    assert!(
        e.contains("signature key broken.pub: not a PEM public key"),
        "{e}"
    );
}

#[test]
fn a_signature_published_only_as_a_referrer_is_found_and_carried_both_ways() {
    let t = Signing::start();
    // An upstream with the referrers API: the built-in registry, writable, TLS and htpasswd.
    let htpasswd = t.s.path("referrers-htpasswd");
    common::registries::write_htpasswd(&htpasswd);
    let store = t.s.path("referrers-store");
    let upstream = common::registries::airgap_serve(
        &store,
        &t.pki,
        &["--htpasswd", htpasswd.to_str().unwrap(), "--enable-delete"],
    );
    let host = format!("127.0.0.1:{}", upstream.port);
    let repo = format!("{host}/vendor/worker");
    let image = format!("{repo}:1.0");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--preserve-digests"])
        .args(["--src-creds", &creds(), "--dest-creds", &creds()])
        .arg("--src-cert-dir")
        .arg(t.pki.skopeo_cert_dir())
        .arg("--dest-cert-dir")
        .arg(t.pki.skopeo_cert_dir())
        .arg(format!("docker://{}", t.upstream_image(WORKER)))
        .arg(format!("docker://{image}")));
    let image_bytes = skopeo_raw(&t.pki, &image, true).unwrap();
    let image_digest = Digest::of(&image_bytes);

    // The publisher signs (tag scheme), then moves the signature to a referrer, as cosign's
    // OCI 1.1 mode stores it: the tag is deleted, the referrer pushed by digest.
    t.sign(&image, "cosign");
    let tag = format!("{repo}:sha256-{}.sig", image_digest.hex());
    let tagged = skopeo_raw(&t.pki, &tag, true).unwrap();
    let media_type = serde_json::from_slice::<serde_json::Value>(&image_bytes).unwrap()
        ["mediaType"]
        .as_str()
        .unwrap()
        .to_string();
    let subject = airgap::oci::Descriptor {
        media_type,
        digest: image_digest,
        size: image_bytes.len() as u64,
        platform: None,
        artifact_type: None,
        annotations: Default::default(),
    };
    let referrer = registry::cosign::as_referrer(&tagged, &subject).unwrap();
    let referrer_file = t.s.path("referrer.json");
    fs::write(&referrer_file, &referrer).unwrap();
    let registry_url = |what: &str| format!("https://{host}/v2/vendor/worker/manifests/{what}");
    let (status, body) = common::registries::curl(
        &t.pki,
        &[
            "-u",
            &creds(),
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &format!("@{}", referrer_file.display()),
            &registry_url(&Digest::of(&referrer).to_string()),
        ],
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = common::registries::curl(
        &t.pki,
        &[
            "-u",
            &creds(),
            "-X",
            "DELETE",
            &registry_url(&Digest::of(&tagged).to_string()),
        ],
    );
    assert_eq!(status, 202, "{body}");
    assert!(skopeo_raw(&t.pki, &tag, true).is_err(), "the tag is gone");

    // The build finds it through the referrers API and carries it both ways: the referrer
    // byte for byte, and the tag-scheme manifest it stands for.
    let spec = t.s.path("referrer.yaml");
    fs::write(
        &spec,
        format!(
            "apiVersion: airgap/v1\nkind: Bundle\nmetadata: {{name: signed, version: 1.0.0}}\nspec:\n  verify: {{keys: [cosign.pub]}}\n  images:\n    - {image}\n  registries:\n    - {{host: \"{host}\", ca: {}}}\n",
            t.pki.ca.display()
        ),
    )
    .unwrap();
    let auth = t.s.path("referrer-auth.json");
    common::registries::write_auth(&auth, &host, PASSWORD);
    let bundle = t.s.path("referrer.tar");
    ok(t.build(&spec, &bundle).env("REGISTRY_AUTH_FILE", &auth));
    let index = t.index(&bundle);
    let record = index.images.iter().find(|i| i.reference == image).unwrap();
    let signature = record.signature.as_ref().unwrap();
    // The tag-scheme manifest it stands for: the publisher's, re-serialized (same content).
    let derived = registry::cosign::as_tagged(&referrer).unwrap();
    assert_eq!(signature.digest, Digest::of(&derived));
    let value = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).unwrap();
    assert_eq!(value(&derived), value(&tagged));
    assert!(index
        .images
        .iter()
        .any(|i| i.digest == Digest::of(&referrer)
            && i.reference == format!("{repo}@{}", Digest::of(&referrer))));

    // Seeded into a mirror without the upstream, skopeo (tag scheme) verifies it.
    drop(upstream);
    let mirror = Distribution::start(&t.s.path("referrer-mirror"), &t.pki);
    let (done, _, err) = seed(
        &bundle,
        &t.s.public(),
        &format!("https://{}/airgap", mirror.host()),
        &["--ca", t.pki.ca.to_str().unwrap()],
        PASSWORD,
    );
    assert!(done, "{err}");
    let mirrored_root = format!("{}/airgap/{}", mirror.host(), host.replace(':', "_"));
    t.skopeo_verifies(
        &format!("{mirrored_root}/vendor/worker:1.0"),
        "cosign",
        Some((mirrored_root.as_str(), host.as_str())),
    )
    .unwrap_or_else(|e| panic!("skopeo refused the carried signature: {e}"));
}
