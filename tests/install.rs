//! `airgap install` end to end: real etcd (`etcd-server`), the built-in registry pulled from by
//! skopeo, each test in its own network namespace (see `common::node`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::node::{
    etcdctl_in, install, install_standalone, install_with, install_yaml, kill_during, output_ok,
    secret, skopeo_certs, status_json, EtcdProbe, NetNs, ADDRESS, FQDN,
};
use common::{airgap, fails, ok, snapshot, Setup};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Pulls every image of `bundle` from the node's registry with skopeo and checks each
/// manifest's digest against the bundle's index.
fn pull_everything(ns: &NetNs, setup: &Setup, bundle: &Path, root: &Path, password: &str) {
    let inspect = ok(airgap().args(["bundle", "inspect", "--json"]).arg(bundle));
    let index: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let certs = skopeo_certs(root, setup.dir.path());
    let images = index["images"].as_array().unwrap();
    assert!(!images.is_empty());
    for image in images {
        let repo = image["mirrorRepository"].as_str().unwrap();
        let digest = image["digest"].as_str().unwrap();
        let reference = format!("{FQDN}:5000/{repo}@{digest}");
        let dest = setup.dir.path().join(format!("pulled-{}", &digest[7..19]));
        let out = ns
            .command("skopeo")
            .args(["copy", "--all", "--src-cert-dir"])
            .arg(&certs)
            .args(["--src-creds", &format!("admin:{password}")])
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{}:x", dest.display()))
            .output()
            .unwrap();
        output_ok(&out, &format!("skopeo copy {reference}"));
        // Without credentials the registry refuses.
        let out = ns
            .command("skopeo")
            .args(["inspect", "--raw", "--no-creds", "--cert-dir"])
            .arg(&certs)
            .arg(format!("docker://{reference}"))
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "anonymous pull of {reference} succeeded"
        );
    }
}

#[test]
fn standalone_install_comes_up_and_a_rerun_changes_nothing() {
    let setup = Setup::new(64 << 10);
    let bundle = setup.build("bundle.tar");
    let ns = NetNs::create("up");
    let root = setup.path("root");
    // The time phase renders chrony's sources from install.yaml; no chronyd here.
    let config = install_yaml(
        setup.dir.path(),
        "  timeServers: [10.0.0.1, ntp.example.internal]\n",
    );

    // -vv: the debug output is grepped for every secret below.
    let out = install(&ns, &config, &bundle, &setup.public(), &root)
        .arg("-vv")
        .output()
        .unwrap();
    let stdout = output_ok(&out, "install");
    let verbose_output = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        verbose_output.contains("DEBUG"),
        "-vv printed no debug lines"
    );
    for phase in [
        "[verify]",
        "[pki]",
        "[time]",
        "[etcd]",
        "[keys]",
        "[registry]",
        "[agent]",
        "[kubernetes]",
        "[platform]",
    ] {
        assert!(stdout.contains(phase), "{stdout}");
    }
    assert!(stdout.contains(&format!("https://{FQDN}:5000")), "{stdout}");

    // etcd: TLS with a client certificate answers; without one the handshake is refused.
    let probe = EtcdProbe {
        ns: &ns,
        root: root.clone(),
    };
    let (healthy, body) = probe.curl("/health", None, true);
    assert!(healthy && body.contains("\"health\":\"true\""), "{body}");
    let (anonymous, err) = probe.curl("/health", None, false);
    assert!(
        !anonymous,
        "etcd answered a client without a certificate: {err}"
    );

    // Secrets: encrypted at rest, decryptable with the EncryptionConfiguration's key.
    let (keys, raw_keys, keys_rev) = secret(&probe, "installation-keys");
    assert_eq!(keys["rootKey"].len(), 32);
    assert_eq!(keys["hashSalt"].len(), 32);
    let id = String::from_utf8(keys["installationId"].clone()).unwrap();
    assert!(
        id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(String::from_utf8_lossy(&keys["jwtSigningKey"]).contains("BEGIN PRIVATE KEY"));
    let (creds, raw_creds, creds_rev) = secret(&probe, "registry-credentials");
    let password = String::from_utf8(creds["password"].clone()).unwrap();
    assert_eq!(creds["username"], b"admin");
    assert_eq!(creds["endpoint"], format!("https://{FQDN}:5000").as_bytes());
    assert!(String::from_utf8_lossy(&creds["caCert"]).contains("BEGIN CERTIFICATE"));
    for (raw, data) in [(&raw_keys, &keys), (&raw_creds, &creds)] {
        assert!(raw.starts_with(b"k8s:enc:secretbox:v1:"));
        for (name, value) in data.iter() {
            if value.len() >= 8 {
                assert!(
                    !raw.windows(value.len()).any(|w| w == value.as_slice()),
                    "{name} is stored in clear"
                );
                let b64 = base64_std(value);
                assert!(!raw.windows(b64.len()).any(|w| w == b64.as_bytes()));
            }
        }
    }
    // The namespace object is there too, unencrypted as the API server keeps namespaces.
    let (ns_obj, _, _) = probe.raw("/registry/namespaces/airgap-system").unwrap();
    let ns_json: serde_json::Value = serde_json::from_slice(&ns_obj).unwrap();
    assert_eq!(ns_json["kind"], "Namespace");

    // The registry: every image pullable by skopeo over TLS with the generated credentials.
    pull_everything(&ns, &setup, &bundle, &root, &password);
    // TLS 1.1 is refused, TLS 1.2 accepted (so the refusal is about the version).
    let s_client = |version: &str| {
        ns.command("openssl")
            .args(["s_client", version, "-connect", &format!("{ADDRESS}:5000")])
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(!s_client("-tls1_1"), "TLS 1.1 handshake succeeded");
    assert!(s_client("-tls1_2"), "TLS 1.2 handshake failed");

    // Keys and secrets on disk: private and never in the audit log.
    for key in [
        "etc/kubernetes/pki/ca.key",
        "etc/kubernetes/pki/etcd/ca.key",
        "etc/kubernetes/pki/etcd/server.key",
        "etc/kubernetes/pki/etcd/peer.key",
        "etc/kubernetes/pki/apiserver-etcd-client.key",
        "etc/airgap/pki/fqdn.key",
        "etc/airgap/pki/agent.key",
        "etc/kubernetes/encryption-config.yaml",
        "etc/airgap/registry/htpasswd",
    ] {
        assert_eq!(mode(&root.join(key)), 0o600, "{key}");
    }
    // No secret in the -vv output or in any log, in any encoding it is kept in.
    let encryption_config =
        std::fs::read_to_string(root.join("etc/kubernetes/encryption-config.yaml")).unwrap();
    let secretbox_key = encryption_config
        .lines()
        .find_map(|l| l.trim().strip_prefix("secret:"))
        .map(|k| k.trim().trim_matches('"').to_string())
        .expect("a secretbox key in encryption-config.yaml");
    let jwt = String::from_utf8(keys["jwtSigningKey"].clone()).unwrap();
    let jwt_body = jwt
        .lines()
        .find(|l| l.len() > 20 && !l.starts_with("-----"))
        .unwrap()
        .to_string();
    let mut secrets = vec![
        ("registry password", password.clone()),
        ("secretbox key", secretbox_key),
        ("jwt signing key", jwt_body),
    ];
    for name in ["rootKey", "hashSalt"] {
        secrets.push((name, base64_std(&keys[name])));
        secrets.push((name, hex(&keys[name])));
    }
    let mut logs = vec![("install -vv".to_string(), verbose_output.clone())];
    for (path, bytes) in snapshot(&root.join("var/log")) {
        logs.push((
            path.display().to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    assert!(logs.len() > 2, "no logs under var/log: {logs:?}");
    for (log, text) in &logs {
        for (name, secret) in &secrets {
            assert!(!text.contains(secret.as_str()), "{name} appears in {log}");
        }
    }
    let audit = std::fs::read_to_string(root.join("var/log/airgap/audit.log")).unwrap();
    for line in audit.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for field in ["time", "action", "object", "outcome"] {
            assert!(v.get(field).is_some(), "{line}");
        }
    }
    assert!(audit.contains("\"action\":\"etcd.create\""));
    assert!(!audit.contains(&password));
    assert!(!audit.contains(&base64_std(&keys["rootKey"])));

    // status reports every phase done and both services healthy.
    let status = status_json(&ns, &root);
    assert_eq!(status["complete"], true);
    assert_eq!(status["services"]["etcd"]["healthy"], true);
    assert_eq!(status["services"]["registry"]["healthy"], true);
    // The time phase's check, from its spec alone.
    assert_eq!(status["checks"]["time"]["healthy"], true, "{status}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/chrony/sources.d/airgap.sources"))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("server "))
            .collect::<Vec<_>>(),
        [
            "server 10.0.0.1 iburst",
            "server ntp.example.internal iburst"
        ]
    );
    // The node's registry keeps its catalog in etcd (one catalog for every node), not in a
    // log in its directory: the release artifact's tag is a key there.
    let (tagged, _, _) = probe
        .raw("/airgap/registry/repos/airgap/releases/_tags/4.5.0")
        .expect("the release artifact's tag in etcd");
    assert!(String::from_utf8(tagged).unwrap().starts_with("sha256:"));
    assert!(!root
        .join("var/lib/airgap/registry/.airgap/metadata.jsonl")
        .exists());

    // A re-run changes nothing: same files (certificates, keys), same etcd revisions.
    let before = snapshot(&root.join("etc"));
    let (_, _, revision_before) = probe
        .raw("/registry/secrets/airgap-system/installation-keys")
        .unwrap();
    let out = install(&ns, &config, &bundle, &setup.public(), &root)
        .output()
        .unwrap();
    let stdout = output_ok(&out, "re-run");
    assert!(stdout.contains("0 blobs uploaded"), "{stdout}");
    assert!(stdout.contains("already in etcd"), "{stdout}");
    assert_eq!(
        snapshot(&root.join("etc")),
        before,
        "a re-run changed files under etc/"
    );
    let (_, mod_keys, revision_after) = probe
        .raw("/registry/secrets/airgap-system/installation-keys")
        .unwrap();
    let (_, mod_creds, _) = probe
        .raw("/registry/secrets/airgap-system/registry-credentials")
        .unwrap();
    assert_eq!((mod_keys, mod_creds), (keys_rev, creds_rev));
    assert_eq!(revision_after, revision_before, "the re-run wrote to etcd");
    // The same re-run as one JSON document (docs/json/install.schema.json); the phase lines
    // go to standard error.
    let out = install(&ns, &config, &bundle, &setup.public(), &root)
        .arg("--json")
        .output()
        .unwrap();
    let summary = common::json_checked("install", output_ok(&out, "re-run --json").as_bytes());
    assert_eq!(summary["release"], "mgmt-plane 4.5.0", "{summary}");
    assert_eq!(summary["seed"]["blobsUploaded"], 0, "{summary}");
    assert_eq!(summary["joinCommand"], serde_json::Value::Null, "{summary}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("[verify]"));

    // Another release over this root is an upgrade's job: refused with the hint, nothing
    // changed. An older one is refused naming both versions (never a downgrade).
    let journal = root.join("var/lib/airgap/journal.json");
    let journal_before = std::fs::read(&journal).unwrap();
    let spec = std::fs::read_to_string(&setup.fixture.spec).unwrap();
    assert!(spec.contains("version: 4.5.0"), "{spec}");
    for (version, expect) in [
        ("4.6.0", vec!["4.5.0", "4.6.0", "airgap upgrade"]),
        ("4.4.9", vec!["4.5.0", "4.4.9", "older", "hint:"]),
    ] {
        let other_spec = setup
            .fixture
            .spec
            .with_file_name(format!("bundle-{version}.yaml"));
        std::fs::write(
            &other_spec,
            spec.replace("version: 4.5.0", &format!("version: {version}")),
        )
        .unwrap();
        let other_bundle = setup.build_spec(&other_spec, &format!("bundle-{version}.tar"));
        let err = fails(&mut install(
            &ns,
            &config,
            &other_bundle,
            &setup.public(),
            &root,
        ));
        for needle in expect {
            assert!(err.contains(needle), "{version}: {err}");
        }
        assert_eq!(
            snapshot(&root.join("etc")),
            before,
            "{version} changed etc/"
        );
        assert_eq!(
            std::fs::read(&journal).unwrap(),
            journal_before,
            "{version} changed the journal"
        );
        let (_, _, revision) = probe
            .raw("/registry/secrets/airgap-system/installation-keys")
            .unwrap();
        assert_eq!(revision, revision_before, "{version} wrote to etcd");
    }

    // Another installation refuses this root.
    let other = setup.path("other.yaml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("name: mgmt}", "name: other}"),
    )
    .unwrap();
    let err = fails(&mut install(&ns, &other, &bundle, &setup.public(), &root));
    assert!(
        err.contains("holds installation `mgmt`") && err.contains("airgap reset"),
        "{err}"
    );

    // stop: services go away and status says so (exit 3).
    output_ok(
        &ns.airgap()
            .arg("stop")
            .arg("--root")
            .arg(&root)
            .output()
            .unwrap(),
        "stop",
    );
    assert!(!probe.curl("/health", None, true).0);
    let out = ns
        .airgap()
        .arg("status")
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim_start().starts_with("agent ") && l.ends_with("not running")));

    // reset: refuses without --yes when it cannot ask; with --yes removes the install.
    let err = fails(
        ns.airgap()
            .arg("reset")
            .arg("--root")
            .arg(&root)
            .stdin(Stdio::null()),
    );
    assert!(err.contains("--yes"), "{err}");
    assert!(root.join("etc/kubernetes/pki/ca.key").exists());
    // containerd host directories the node had before are not airgap's to remove.
    let foreign = root.join("etc/containerd/certs.d/docker.io/hosts.toml");
    std::fs::create_dir_all(foreign.parent().unwrap()).unwrap();
    std::fs::write(&foreign, "server = \"https://registry-1.docker.io\"\n").unwrap();
    output_ok(
        &ns.airgap()
            .args(["reset", "--yes", "--root"])
            .arg(&root)
            .output()
            .unwrap(),
        "reset",
    );
    for gone in [
        "etc/kubernetes/pki",
        "etc/airgap",
        "var/lib/airgap",
        "etc/kubernetes/encryption-config.yaml",
        "etc/kubernetes/audit-policy.yaml",
        "etc/kubernetes/admission-config.yaml",
        "etc/sysctl.d/90-airgap-kubelet.conf",
        "etc/containerd/certs.d/example.internal",
        "etc/containerd/certs.d/registry.k8s.io",
        "etc/containerd/certs.d/mgmt.example.internal:5000",
        "etc/containerd/certs.d/_default",
        "etc/containers/registries.conf.d/50-airgap.conf",
        "etc/chrony/sources.d/airgap.sources",
    ] {
        assert!(!root.join(gone).exists(), "{gone} survived reset");
    }
    assert!(
        foreign.exists(),
        "reset removed a containerd host it did not write"
    );
    assert!(root.join("var/log/airgap/audit.log").exists());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn sigkill_during_each_phase_then_a_rerun_completes() {
    let setup = Setup::new(256 << 10);
    // The bundle's pack carries bin/etcd: a wrapper that records it ran, then runs etcd.
    let pack_bin = setup.path("packs/platform-core/bin");
    std::fs::create_dir_all(&pack_bin).unwrap();
    let root = setup.path("root");
    std::fs::write(
        pack_bin.join("etcd"),
        format!(
            "#!/bin/sh\necho \"$0\" >> {}/var/log/airgap/etcd-from-pack\nexec etcd \"$@\"\n",
            root.display()
        ),
    )
    .unwrap();
    let bundle = setup.build("bundle.tar");
    let ns = NetNs::create("kill");
    let config = install_yaml(setup.dir.path(), "  timeServers: [10.0.0.1]\n");
    // Each run resumes from the previous kill and is killed in turn in the next phase.
    for phase in [
        "verify",
        "pki",
        "time",
        "etcd",
        "keys",
        "registry",
        "runtime",
        "agent",
        "kubernetes",
        "platform",
    ] {
        kill_during(
            install(&ns, &config, &bundle, &setup.public(), &root),
            phase,
        );
    }
    let out = install(&ns, &config, &bundle, &setup.public(), &root)
        .output()
        .unwrap();
    let stdout = output_ok(&out, "install after the kills");
    assert!(
        stdout.contains("etcd from pack platform-core:1.2.0"),
        "{stdout}"
    );
    assert!(
        root.join("var/log/airgap/etcd-from-pack").exists(),
        "etcd did not run from the pack"
    );

    let probe = EtcdProbe {
        ns: &ns,
        root: root.clone(),
    };
    assert!(probe.curl("/health", None, true).0);
    let (keys, _, _) = secret(&probe, "installation-keys");
    assert_eq!(keys["rootKey"].len(), 32);
    let (creds, _, _) = secret(&probe, "registry-credentials");
    let password = String::from_utf8(creds["password"].clone()).unwrap();
    pull_everything(&ns, &setup, &bundle, &root, &password);
    let out = ns
        .airgap()
        .args(["status", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    output_ok(&out, "status");
}

/// An ECDSA P-256 CA and leaves signed by it, made with rcgen for the import tests.
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// (cert PEM, key PEM) for `sans`, valid from `from_days` to `to_days` around now.
    fn leaf(&self, sans: &[&str], from_days: i64, to_days: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from_days);
        params.not_after = now + time::Duration::days(to_days);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write_import(dir: &Path, cert: &str, key: &str, ca: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    std::fs::write(dir.join("ca.crt"), ca).unwrap();
    install_yaml(
        dir,
        "  certificates:\n    import: {cert: tls.crt, key: tls.key, ca: ca.crt}\n",
    )
}

#[test]
fn imported_certificates_are_checked_before_anything_is_written() {
    let setup = Setup::new(16 << 10);
    let bundle = setup.build("bundle.tar");
    let ca = TestCa::new("operator CA");
    let ca_pem = ca.cert.pem();
    let other_ca = TestCa::new("someone else's CA");
    let (good_cert, good_key) = ca.leaf(&["*.example.internal"], -1, 30);
    let (_, other_key) = ca.leaf(&[FQDN], -1, 30);
    let (narrow, narrow_key) = ca.leaf(&["other.example.internal", "*.internal"], -1, 30);
    let (expired, expired_key) = ca.leaf(&[FQDN], -30, -1);
    let (future, future_key) = ca.leaf(&[FQDN], 2, 30);
    let (foreign, foreign_key) = other_ca.leaf(&[FQDN], -1, 30);

    // RSA-1024, signed by the CA: openssl, since ring refuses to handle such keys at all.
    let weak = setup.path("weak");
    std::fs::create_dir_all(&weak).unwrap();
    std::fs::write(weak.join("ca.crt"), &ca_pem).unwrap();
    std::fs::write(weak.join("ca.key"), ca.key.serialize_pem()).unwrap();
    std::fs::write(weak.join("ext"), format!("subjectAltName=DNS:{FQDN}\n")).unwrap();
    let sh = format!(
        "openssl req -new -newkey rsa:1024 -nodes -keyout tls.key -subj /CN={FQDN} -out tls.csr 2>/dev/null && \
         openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile ext -out tls.crt 2>/dev/null"
    );
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(&sh)
        .current_dir(&weak)
        .status()
        .unwrap();
    assert!(status.success());
    let weak_cert = std::fs::read_to_string(weak.join("tls.crt")).unwrap();
    let weak_key = std::fs::read_to_string(weak.join("tls.key")).unwrap();

    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "key does not match",
            good_cert.clone(),
            other_key,
            "does not belong to the certificate",
        ),
        (
            "SAN does not cover the FQDN",
            narrow,
            narrow_key,
            "do not cover mgmt.example.internal",
        ),
        ("expired", expired, expired_key, "expired"),
        ("not yet valid", future, future_key, "not valid before"),
        ("RSA-1024", weak_cert, weak_key, "RSA-1024"),
        (
            "chain not to the CA",
            foreign,
            foreign_key,
            "does not chain to the given CA",
        ),
        (
            "garbage PEM",
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n".into(),
            good_key.clone(),
            "not a valid X.509 certificate",
        ),
        (
            "no PEM at all",
            "hello".into(),
            good_key.clone(),
            "holds no PEM certificate",
        ),
    ];
    for (i, (what, cert, key, expect)) in cases.into_iter().enumerate() {
        let dir = setup.path(&format!("case{i}"));
        let config = write_import(&dir, &cert, &key, &ca_pem);
        let root = dir.join("root");
        let mut cmd = install_with(airgap(), &config, &bundle, &setup.public(), &root);
        let err = fails(&mut cmd);
        assert!(err.contains(expect), "{what}: {err}");
        assert!(
            err.contains("tls.crt"),
            "{what}: the error names the file: {err}"
        );
        assert!(
            !root.exists(),
            "{what}: something was written under the root"
        );
    }

    // A wildcard certificate that does cover the FQDN installs, and the registry serves it.
    let dir = setup.path("good");
    let config = write_import(&dir, &good_cert, &good_key, &ca_pem);
    let ns = NetNs::create("import");
    let root = setup.path("good-root");
    let out = install(&ns, &config, &bundle, &setup.public(), &root)
        .output()
        .unwrap();
    let stdout = output_ok(&out, "install with an imported certificate");
    assert!(stdout.contains("FQDN certificate imported"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/airgap/pki/fqdn.crt")).unwrap(),
        good_cert
    );
    assert_eq!(mode(&root.join("etc/airgap/pki/fqdn.key")), 0o600);
    let probe = EtcdProbe {
        ns: &ns,
        root: root.clone(),
    };
    let (creds, _, _) = secret(&probe, "registry-credentials");
    assert_eq!(creds["caCert"], ca_pem.as_bytes());
    let password = String::from_utf8(creds["password"].clone()).unwrap();
    pull_everything(&ns, &setup, &bundle, &root, &password);
}

#[test]
fn install_yaml_errors_name_the_field_and_position_and_write_nothing() {
    let setup = Setup::new(16 << 10);
    let bundle = setup.build("bundle.tar");
    let good = std::fs::read_to_string(install_yaml(setup.dir.path(), "")).unwrap();
    let cases = [
        (
            good.replace("fqdn:", "fdqn:"),
            "unknown field `fdqn`",
            "line 6 column 3",
        ),
        (
            good.replace(FQDN, "mgmt_example"),
            "spec.fqdn",
            "line 6 column 9",
        ),
        (
            good.replace(ADDRESS, "10.77.0.300"),
            "spec.nodes[0].address",
            "line 7",
        ),
        (
            good.replace("standalone", "solo"),
            "spec.mode",
            "line 5 column 9",
        ),
        (
            good.replace("kind: Installation", "kind: Bundle"),
            "kind",
            "line 2",
        ),
        (
            good.replace("  nodes: [{name: node1, address: 10.77.0.11}]\n", ""),
            "missing field `nodes`",
            "line 5",
        ),
    ];
    for (i, (text, field, position)) in cases.into_iter().enumerate() {
        let config = setup.path(&format!("bad{i}.yaml"));
        std::fs::write(&config, &text).unwrap();
        let root = setup.path(&format!("root{i}"));
        let mut cmd = install_with(airgap(), &config, &bundle, &setup.public(), &root);
        let err = fails(&mut cmd);
        assert!(err.contains(&format!("bad{i}.yaml")), "{err}");
        assert!(err.contains(field), "{field}: {err}");
        assert!(err.contains(position), "{position}: {err}");
        assert!(!root.exists());
    }
    // A bundle that fails verification is refused before anything is written too.
    let other = setup.path("other.key");
    ok(airgap().arg("keygen").arg("-o").arg(&other));
    let config = install_yaml(setup.dir.path(), "");
    let root = setup.path("root-unsigned");
    let mut cmd = install_with(airgap(), &config, &bundle, &setup.path("other.pub"), &root);
    let err = fails(&mut cmd);
    assert!(err.contains("failed verification"), "{err}");
    assert!(!root.exists());

    // No etcd in the bundle and none on PATH: a clear error at the etcd phase.
    let mut no_etcd = airgap();
    no_etcd.env("PATH", "/nonexistent");
    let mut cmd = install_with(
        no_etcd,
        &config,
        &bundle,
        &setup.public(),
        &setup.path("root-noetcd"),
    );
    let err = fails(&mut cmd);
    assert!(err.contains("phase etcd: no etcd binary"), "{err}");
    assert!(
        err.contains("; hint: add a pack with bin/etcd") && err.contains("etcd-server"),
        "{err}"
    );
}

#[test]
fn an_external_registry_is_seeded_instead_of_the_built_in_one() {
    use common::registries::{write_htpasswd, Pki, Process, PASSWORD, USER};
    let setup = Setup::new(16 << 10);
    let bundle = setup.build("bundle.tar");
    let ns = NetNs::create("ext");
    // distribution with TLS and htpasswd, inside the namespace on its loopback.
    let pki = Pki::new(&setup.path("pki"));
    let dir = setup.path("distribution");
    std::fs::create_dir_all(&dir).unwrap();
    write_htpasswd(&dir.join("htpasswd"));
    std::fs::write(
        dir.join("config.yml"),
        format!(
            "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: 127.0.0.1:5443\n  tls: {{certificate: {}, key: {}}}\nauth:\n  htpasswd: {{realm: test, path: {}}}\n",
            dir.join("storage").display(),
            pki.cert.display(),
            pki.key.display(),
            dir.join("htpasswd").display()
        ),
    )
    .unwrap();
    // Killed and reaped on drop (and, like everything in the namespace, when `ns` drops).
    let _registry = Process {
        child: ns
            .command("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        port: 5443,
    };
    let ready = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        ns.command("curl")
            .args(["-s", "-o", "/dev/null", "--cacert"])
            .arg(&pki.ca)
            .arg("https://127.0.0.1:5443/v2/")
            .status()
            .unwrap()
            .success()
    });
    assert!(ready, "distribution did not come up in the namespace");

    std::fs::write(setup.path("pw.txt"), format!("{PASSWORD}\n")).unwrap();
    let config = install_yaml(
        setup.dir.path(),
        &format!(
            "  registry:\n    external: {{url: https://127.0.0.1:5443/airgap, ca: {}, username: {USER}, passwordFile: pw.txt}}\n",
            pki.ca.display()
        ),
    );
    let root = setup.path("root");
    let out = install(&ns, &config, &bundle, &setup.public(), &root)
        .output()
        .unwrap();
    let stdout = output_ok(&out, "install with an external registry");
    assert!(
        stdout.contains("in https://127.0.0.1:5443/airgap"),
        "{stdout}"
    );
    assert!(
        !root.join("etc/airgap/services/registry.json").exists(),
        "a built-in registry was defined"
    );

    let probe = EtcdProbe {
        ns: &ns,
        root: root.clone(),
    };
    let (creds, _, _) = secret(&probe, "registry-credentials");
    assert_eq!(creds["endpoint"], b"https://127.0.0.1:5443/airgap");
    assert_eq!(creds["password"], PASSWORD.as_bytes());
    assert_eq!(creds["caCert"], std::fs::read(&pki.ca).unwrap());

    let inspect = ok(airgap().args(["bundle", "inspect", "--json"]).arg(&bundle));
    let index: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    for image in index["images"].as_array().unwrap() {
        let reference = format!(
            "127.0.0.1:5443/airgap/{}@{}",
            image["mirrorRepository"].as_str().unwrap(),
            image["digest"].as_str().unwrap()
        );
        let out = ns
            .command("skopeo")
            .args(["inspect", "--raw", "--cert-dir"])
            .arg(pki.skopeo_cert_dir())
            .args(["--creds", &format!("{USER}:{PASSWORD}")])
            .arg(format!("docker://{reference}"))
            .output()
            .unwrap();
        output_ok(&out, &format!("skopeo inspect {reference}"));
    }
}

/// Every file and directory under `dir` whose mode lets group or others write it.
fn writable_by_others(dir: &Path, out: &mut Vec<String>) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() || meta.file_type().is_socket() {
            continue;
        }
        if meta.permissions().mode() & 0o022 != 0 {
            out.push(format!(
                "{} {:o}",
                path.display(),
                meta.permissions().mode() & 0o777
            ));
        }
        if meta.is_dir() {
            writable_by_others(&path, out);
        }
    }
}

/// Under `umask 000` the installer still writes nothing group- or world-writable and keeps key
/// directories 0700; a service definition another user could have written (world-writable, or
/// owned by someone else) is refused by the agent, which says so and never runs it.
#[test]
fn a_permissive_umask_leaves_nothing_writable_and_a_planted_service_never_runs() {
    let setup = Setup::new(4 << 10);
    let bundle = setup.build("bundle.tar");
    let ns = NetNs::create("umask");
    let root = setup.path("root");
    let config = install_yaml(setup.dir.path(), "");
    let mut cmd = ns.command("sh");
    cmd.args(["-c", "umask 000; exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_airgap"));
    let out = install_with(cmd, &config, &bundle, &setup.public(), &root)
        .env_remove("AIRGAP_FAILPOINT")
        .output()
        .unwrap();
    output_ok(&out, "install under umask 000");
    let mut loose = Vec::new();
    writable_by_others(&root, &mut loose);
    assert!(loose.is_empty(), "group/world-writable: {loose:#?}");
    for dir in [
        "etc/kubernetes/pki",
        "etc/kubernetes/pki/etcd",
        "etc/airgap/pki",
    ] {
        assert_eq!(mode(&root.join(dir)), 0o700, "{dir}");
    }

    // A definition someone else could have written: world-writable, and one owned by nobody.
    let services = root.join("etc/airgap/services");
    let marks: Vec<PathBuf> = (0..2).map(|i| setup.path(&format!("pwned-{i}"))).collect();
    for (i, mark) in marks.iter().enumerate() {
        let spec = serde_json::json!({
            "name": format!("pwn{i}"),
            "program": "/bin/touch",
            "args": [mark.display().to_string()],
            "env": {},
        });
        let path = services.join(format!("pwn{i}.json"));
        std::fs::write(&path, spec.to_string()).unwrap();
        if i == 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        } else {
            std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        }
    }
    // The agent reads its definitions every tick; give it many, then look.
    let log = root.join("var/log/airgap/agent.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if (0..2).all(|i| text.contains(&format!("pwn{i}.json"))) {
            assert!(text.contains("refusing"), "{text}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never said it refused the planted definitions: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    for mark in &marks {
        assert!(!mark.exists(), "the agent ran a planted definition");
    }
    // The real services still run and status says the node is healthy.
    assert_eq!(
        status_json(&ns, &root)["services"]["registry"]["healthy"],
        true
    );
}

/// Root's services run a root-owned copy of airgap, not the binary that ran the install: an
/// install run from a user's directory, whose binary is then replaced, keeps running what was
/// installed (the registry, killed, comes back from the copy; the replacement never runs).
#[test]
fn services_run_an_installed_copy_of_airgap_not_the_binary_that_installed_them() {
    let setup = Setup::new(4 << 10);
    let bundle = setup.build("bundle.tar");
    let ns = NetNs::create("self");
    let root = setup.path("root");
    let config = install_yaml(setup.dir.path(), "");
    let user_bin = setup.path("user-bin");
    std::fs::create_dir_all(&user_bin).unwrap();
    let user_airgap = user_bin.join("airgap");
    std::fs::copy(env!("CARGO_BIN_EXE_airgap"), &user_airgap).unwrap();
    let mut cmd = ns.command(&user_airgap);
    cmd.env_remove("AIRGAP_FAILPOINT");
    output_ok(
        &install_with(cmd, &config, &bundle, &setup.public(), &root)
            .output()
            .unwrap(),
        "install from a user's copy",
    );
    let installed_dir = root.join("var/lib/airgap/bin/airgap");
    let mut airgap_services = 0;
    for entry in std::fs::read_dir(root.join("etc/airgap/services")).unwrap() {
        let spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
        let program = PathBuf::from(spec["program"].as_str().unwrap());
        if program.file_name().is_some_and(|n| n == "airgap") {
            airgap_services += 1;
            assert!(program.starts_with(&installed_dir), "{program:?}");
            assert_eq!(mode(&program), 0o755);
            assert_eq!(
                std::fs::read(&program).unwrap(),
                std::fs::read(&user_airgap).unwrap()
            );
        }
    }
    assert!(airgap_services > 0, "no service runs airgap");

    // The user's copy is replaced; the registry is killed and the agent restarts it.
    let mark = setup.path("user-binary-ran");
    std::fs::remove_file(&user_airgap).unwrap();
    std::fs::write(
        &user_airgap,
        format!("#!/bin/sh\ntouch {}\n", mark.display()),
    )
    .unwrap();
    std::fs::set_permissions(&user_airgap, std::fs::Permissions::from_mode(0o755)).unwrap();
    for pid in common::node::pids_running(&ns, &["registry", "serve"]) {
        // SAFETY: a process in a namespace this test created.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, status) = common::node::status_any(&ns, &root);
        if status["services"]["registry"]["healthy"] == true
            && status["services"]["registry"]["restarts"].as_u64() >= Some(1)
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(!mark.exists(), "the replaced user binary ran");
}

/// Unwraps a tenant key the way any AES-GCM library would, from the documented format alone:
/// Python's `cryptography`, not our code. Returns the key in hex and checks the root key id.
fn unwrap_with_python(
    root_key: &[u8],
    tenant_secret: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Result<String, String> {
    use std::io::Write;
    let input = serde_json::json!({
        "root": base64_std(root_key),
        "wrapped": base64_std(&tenant_secret["wrappedKey"]),
        "tenant": String::from_utf8_lossy(&tenant_secret["tenant"]),
        "rootKeyId": String::from_utf8_lossy(&tenant_secret["rootKeyId"]),
    });
    let script = r#"
import sys, json, base64, hashlib
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
d = json.load(sys.stdin)
root = base64.b64decode(d["root"])
assert hashlib.sha256(b"airgap root key id v1\0" + root).hexdigest()[:16] == d["rootKeyId"], "root key id"
w = base64.b64decode(d["wrapped"])
aad = b"airgap tenant key v1\0" + d["tenant"].encode() + b"\0" + d["rootKeyId"].encode()
print(AESGCM(root).decrypt(w[:12], w[12:], aad).hex())
"#;
    // Debian's python3 and python3-cryptography (.ci/run installs them), not whatever
    // python3 comes first on PATH.
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Every regular file under `dir` with its content (sockets and FIFOs of the running node left
/// out: they cannot be read as files).
fn regular_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else if meta.file_type().is_file() {
            out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
        }
    }
    out
}

#[test]
fn tenant_keys_are_stored_only_wrapped_and_a_root_rotation_rewraps_them_all_or_none() {
    let setup = Setup::new(4 << 10);
    let (ns, root, _) = install_standalone(&setup, "tenant");
    let tenant_key = |args: &[&str]| {
        let mut cmd = ns.airgap();
        cmd.arg("tenant-key").args(args).arg("--root").arg(&root);
        cmd
    };
    let probe = EtcdProbe {
        ns: &ns,
        root: root.clone(),
    };
    for t in ["acme", "globex"] {
        let out = output_ok(&tenant_key(&["create", t]).output().unwrap(), t);
        assert!(
            out.contains(&format!("created the key of tenant {t}")),
            "{out}"
        );
    }
    // Refused with one line, nothing written: an existing tenant, a name that is not a
    // label (a path, upper case).
    let (before, _, _) = probe
        .raw("/registry/secrets/airgap-system/tenant-key-acme")
        .unwrap();
    let line = fails(&mut tenant_key(&["create", "acme"]));
    assert!(line.contains("tenant key acme exists"), "{line}");
    for bad in ["../acme", "Acme", "a/b"] {
        let line = fails(&mut tenant_key(&["create", bad]));
        assert!(line.contains("tenant name"), "{line}");
    }
    assert_eq!(
        probe
            .raw("/registry/secrets/airgap-system/tenant-key-acme")
            .unwrap()
            .0,
        before
    );
    assert!(probe
        .raw("/registry/secrets/airgap-system/tenant-key-Acme")
        .is_none());

    // Unwrapped independently: the root key from installation-keys, the wrapped key from
    // the tenant's Secret (both decrypted at rest by the test's own secretbox code).
    let (installation, _, _) = secret(&probe, "installation-keys");
    let old_root = installation["rootKey"].clone();
    let mut keys = std::collections::BTreeMap::new();
    for t in ["acme", "globex"] {
        let (data, raw, _) = secret(&probe, &format!("tenant-key-{t}"));
        assert_eq!(data["algorithm"], b"AES-256-GCM");
        let key = unwrap_with_python(&old_root, &data).unwrap();
        assert_eq!(key.len(), 64, "{key}");
        let bytes = (0..32)
            .map(|i| u8::from_str_radix(&key[2 * i..2 * i + 2], 16).unwrap())
            .collect::<Vec<u8>>();
        // Never in clear: not in the stored value, the Secret's data, or anywhere on disk.
        assert!(!raw.windows(32).any(|w| w == bytes.as_slice()));
        assert!(!data
            .values()
            .any(|v| v.windows(32).any(|w| w == bytes.as_slice())));
        for (path, content) in regular_files(&root) {
            assert!(
                !content.windows(32).any(|w| w == bytes.as_slice())
                    && !String::from_utf8_lossy(&content).contains(&key),
                "{t}'s key in {}",
                path.display()
            );
        }
        keys.insert(t, key);
    }
    // A wrapped key moved to another tenant does not open.
    let (mut acme, _, _) = secret(&probe, "tenant-key-acme");
    acme.insert("tenant".into(), b"globex".to_vec());
    assert!(unwrap_with_python(&old_root, &acme).is_err());

    let listed = output_ok(&tenant_key(&["list", "--json"]).output().unwrap(), "list");
    let rows = common::json_checked("tenant-key-list", listed.as_bytes());
    assert_eq!(rows.as_array().unwrap().len(), 2, "{listed}");
    for key in keys.values() {
        assert!(!listed.contains(key.as_str()));
    }

    // A rotation killed after it prepared everything and before its transaction: nothing
    // changed, the old root key still opens every tenant key.
    kill_during(tenant_key(&["rotate-root"]), "rotate-root-prepared");
    let (after_kill, _, _) = secret(&probe, "installation-keys");
    assert_eq!(after_kill["rootKey"], old_root);
    for t in ["acme", "globex"] {
        let (data, _, _) = secret(&probe, &format!("tenant-key-{t}"));
        assert_eq!(unwrap_with_python(&old_root, &data).unwrap(), keys[t]);
    }
    // Run again: a new root key, every tenant key re-wrapped under it (the same keys), and
    // the old root key opens none of them. The other installation keys are untouched.
    let out = output_ok(&tenant_key(&["rotate-root"]).output().unwrap(), "rotate");
    assert!(out.contains("2 tenant key(s) re-wrapped"), "{out}");
    let (rotated, _, _) = secret(&probe, "installation-keys");
    let new_root = rotated["rootKey"].clone();
    assert_ne!(new_root, old_root);
    assert_eq!(new_root.len(), 32);
    for field in ["jwtSigningKey", "hashSalt", "installationId"] {
        assert_eq!(rotated[field], installation[field], "{field}");
    }
    for t in ["acme", "globex"] {
        let (data, _, _) = secret(&probe, &format!("tenant-key-{t}"));
        assert_eq!(unwrap_with_python(&new_root, &data).unwrap(), keys[t]);
        assert!(unwrap_with_python(&old_root, &data).is_err());
    }
    let audit = std::fs::read_to_string(root.join("var/log/airgap/audit.log")).unwrap();
    assert!(
        audit.contains("tenant-key.rotate-root") && audit.contains("2 tenant key(s) re-wrapped"),
        "{audit}"
    );
    assert!(!audit.contains(&base64_std(&new_root)) && !audit.contains(&hex(&new_root)));
}

#[test]
fn etcd_has_authentication_on_and_the_registry_reaches_only_its_own_prefixes() {
    let setup = Setup::new(4 << 10);
    let (ns, root, text) = install_standalone(&setup, "rbac");
    assert!(text.contains("authentication on"), "{text}");
    let users = root.join("etc/kubernetes/pki/etcd/users");
    assert_eq!(mode(&users), 0o700);
    for user in ["root", "airgap-registry"] {
        assert_eq!(
            mode(&users.join(format!("{user}.password"))),
            0o600,
            "{user}"
        );
    }
    let probe = EtcdProbe {
        ns: &ns,
        root: root.clone(),
    };
    let b64 = |s: &str| base64_std(s.as_bytes());
    let range = |key: &str| serde_json::json!({ "key": b64(key) }).to_string();
    let prefix = |key: &str| {
        let mut end = key.as_bytes().to_vec();
        *end.last_mut().unwrap() += 1;
        serde_json::json!({ "key": b64(key), "range_end": base64_std(&end) }).to_string()
    };
    // What the registry presents: the gateway certificate and its own password.
    let registry_password =
        std::fs::read_to_string(users.join("airgap-registry.password")).unwrap();
    let token = probe
        .token("airgap-registry", registry_password.trim())
        .expect("the registry's login works");
    let as_registry = |path: &str, body: &str| probe.post_with_token(path, body, &token);
    // Its own prefixes: the catalog the install seeded.
    let catalog = as_registry("/v3/kv/range", &prefix("/airgap/registry/repos/"));
    assert!(catalog.contains("\"kvs\""), "{catalog}");
    // Nothing else: a Secret, the tokens, the trust root, the trusted release; no writes.
    for key in [
        "/registry/secrets/airgap-system/installation-keys",
        "/registry/secrets/airgap-system/registry-credentials",
        "/airgap/cluster/trust-root",
        "/airgap/cluster/trusted-release",
    ] {
        let answer = as_registry("/v3/kv/range", &range(key));
        assert!(answer.contains("permission denied"), "{key}: {answer}");
    }
    let answer = as_registry("/v3/kv/range", &prefix("/registry/"));
    assert!(answer.contains("permission denied"), "{answer}");
    let put =
        serde_json::json!({ "key": b64("/airgap/cluster/tokens/abcdef"), "value": b64("{}") })
            .to_string();
    let answer = as_registry("/v3/kv/put", &put);
    assert!(answer.contains("permission denied"), "{answer}");
    let answer = as_registry("/v3/auth/enable", "{}");
    assert!(answer.contains("permission denied"), "{answer}");
    // Without a login the gateway answers nothing; the API server's certificate (a common
    // name) is not taken as a user there.
    let (_, answer) = probe.curl_as(
        "/v3/kv/range",
        &range("/airgap/cluster/trust-root"),
        "apiserver-etcd-client",
    );
    assert!(!answer.contains("\"kvs\""), "{answer}");
    // kube-apiserver's way in (gRPC, named by its certificate) still reads everything.
    let out = etcdctl_in(
        &ns.name,
        &format!("https://{}:2379", ns.address),
        &root.join("etc/kubernetes/pki"),
    )
    .args([
        "get",
        "--keys-only",
        "/registry/secrets/airgap-system/installation-keys",
    ])
    .output()
    .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("installation-keys"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The registry service runs as that user, and the node is healthy.
    let spec = std::fs::read_to_string(root.join("etc/airgap/services/registry.json")).unwrap();
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let args: Vec<&str> = spec["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--etcd-user", "airgap-registry"]),
        "{args:?}"
    );
    assert!(
        !args.iter().any(|a| a.contains("apiserver-etcd-client")),
        "{args:?}"
    );
    // (status_json asserts exit 0: every service healthy.)
    let status = status_json(&ns, &root);
    assert_eq!(status["services"]["registry"]["healthy"], true, "{status}");
    assert_eq!(status["services"]["etcd"]["healthy"], true, "{status}");
    assert_eq!(
        status["services"]["etcd"]["detail"], "healthy; authentication on",
        "{status}"
    );
}
