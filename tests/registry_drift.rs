//! Drift between a node's registry and the signed release installed into it, seen from
//! outside: a tag overwritten (or added) with the admin login after install is reported by
//! `airgap registry verify` and by `airgap status` (both exit non-zero), a re-run of `install`
//! puts the signed manifest back, and a blob removed or altered on disk is reported by the
//! scrub. Real etcd, the built-in registry, skopeo as the writer, in a network namespace.

mod common;

use common::node::{
    install, install_standalone, output_ok, secret, skopeo_certs, status_json, EtcdProbe, FQDN,
};
use common::registries::with_stdin;
use common::Setup;

const PAUSE: &str = "registry.k8s.io/pause:3.10.1";

#[test]
fn an_overwritten_tag_is_reported_by_verify_and_status_and_restored_by_a_rerun() {
    let setup = Setup::new(16 << 10);
    let (ns, root, _) = install_standalone(&setup, "drift");
    let probe = EtcdProbe {
        ns: &ns,
        root: root.clone(),
    };
    let password =
        String::from_utf8(secret(&probe, "registry-credentials").0["password"].clone()).unwrap();
    let admin = format!("admin:{password}");
    let certs = skopeo_certs(&root, setup.dir.path());
    let registry = format!("{FQDN}:5000");
    let ca = root.join("etc/airgap/pki/fqdn-ca.crt");
    let verify = |json: bool| {
        let mut cmd = ns.airgap();
        cmd.args(["registry", "verify", "--to"])
            .arg(format!("https://{registry}"))
            .arg("--pub")
            .arg(setup.public())
            .arg("--ca")
            .arg(&ca)
            .args(["--username", "admin", "--password-stdin"]);
        if json {
            cmd.arg("--json");
        }
        with_stdin(&mut cmd, &password)
    };
    let skopeo = |args: &[&str]| {
        ns.command("skopeo")
            .args(args)
            .arg("--dest-cert-dir")
            .arg(&certs)
            .arg("--src-cert-dir")
            .arg(&certs)
            .args(["--src-creds", &admin, "--dest-creds", &admin])
            .output()
            .unwrap()
    };
    let digest_of = |reference: &str| {
        let out = ns
            .command("skopeo")
            .args(["inspect", "--format", "{{.Digest}}", "--cert-dir"])
            .arg(&certs)
            .args(["--creds", &admin])
            .arg(format!("docker://{registry}/{reference}"))
            .output()
            .unwrap();
        output_ok(&out, reference).trim().to_string()
    };

    // Freshly installed: no drift, and status says the tags are as signed.
    let out = verify(false);
    let text = output_ok(&out, "registry verify");
    assert!(text.contains("no drift"), "{text}");
    let status = status_json(&ns, &root);
    assert_eq!(status["releaseTags"]["healthy"], true, "{status}");
    let signed = digest_of(PAUSE);

    // The admin login overwrites the pause tag with another image and adds a tag beside it.
    let other = "example.internal/platform/api:1.0";
    for to in [PAUSE, "registry.k8s.io/pause:evil"] {
        output_ok(
            &skopeo(&[
                "copy",
                &format!("docker://{registry}/{other}"),
                &format!("docker://{registry}/{to}"),
            ]),
            &format!("overwrite {to}"),
        );
    }
    let overwritten = digest_of(PAUSE);
    assert_ne!(overwritten, signed);

    let out = verify(false);
    assert_eq!(out.status.code(), Some(1), "verify must fail on drift");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(&format!(
            "tag registry.k8s.io/pause:3.10.1 points at {overwritten}, not the signed {signed}"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("tag registry.k8s.io/pause:evil is not in any signed release"),
        "{stdout}"
    );
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(error_lines.len(), 1, "{stderr}");
    assert!(error_lines[0].contains("drifted"), "{stderr}");
    let json = common::json_checked("registry-verify", &verify(true).stdout);
    assert_eq!(json["clean"], false);
    let drifted = &json["releases"][0]["driftedTags"][0];
    assert_eq!(drifted["repository"], "registry.k8s.io/pause");
    assert_eq!(drifted["found"], overwritten.as_str());
    assert_eq!(drifted["expected"], signed.as_str());

    // status: the drift, and a non-zero exit.
    let out = ns
        .airgap()
        .args(["status", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "status must fail on drift");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("DRIFT"), "{text}");
    assert!(text.contains(&format!("points at {overwritten}")), "{text}");

    // A re-run of install puts the signed manifest back; the extra tag is the operator's to
    // remove, and once it is gone the registry is clean.
    let (bundle, config) = (
        setup.path("bundle.tar"),
        setup.dir.path().join("install.yaml"),
    );
    output_ok(
        &install(&ns, &config, &bundle, &setup.public(), &root)
            .output()
            .unwrap(),
        "re-run",
    );
    assert_eq!(digest_of(PAUSE), signed);
    let text = String::from_utf8_lossy(&verify(false).stdout).into_owned();
    assert!(!text.contains("pause:3.10.1 points"), "{text}");
    assert!(text.contains("pause:evil"), "{text}");
    output_ok(
        &ns.command("skopeo")
            .args(["delete", "--cert-dir"])
            .arg(&certs)
            .args(["--creds", &admin])
            .arg(format!("docker://{registry}/registry.k8s.io/pause:evil"))
            .output()
            .unwrap(),
        "delete the extra tag",
    );
    output_ok(&verify(false), "verify after the repair");
    assert_eq!(status_json(&ns, &root)["releaseTags"]["healthy"], true);

    // A blob removed from the store and another altered in place: the scrub re-reads every
    // blob and names both.
    let blobs = root.join("var/lib/airgap/registry/blobs/sha256");
    // Two image layers (gzip), not the release index: altering that one is a release that
    // no longer verifies, reported as such.
    let mut files: Vec<_> = walk(&blobs)
        .into_iter()
        .filter(|p| std::fs::read(p).unwrap().starts_with(&[0x1f, 0x8b]))
        .collect();
    files.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    let (removed, altered) = (&files[0], &files[1]);
    std::fs::remove_file(removed).unwrap();
    let mut bytes = std::fs::read(altered).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(altered, bytes).unwrap();
    let out = verify(true);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = common::json_checked("registry-verify", &out.stdout);
    let problems = json["releases"][0]["blobProblems"]
        .as_array()
        .unwrap_or_else(|| panic!("{json}"));
    let hex = |p: &std::path::Path| format!("sha256:{}", p.file_name().unwrap().to_string_lossy());
    for (file, kinds) in [
        (removed, ["missing", "unreadable"]),
        (altered, ["corrupt", "unreadable"]),
    ] {
        assert!(
            problems.iter().any(|p| p["digest"] == hex(file).as_str()
                && kinds.contains(&p["problem"].as_str().unwrap())),
            "{}: {problems:?}",
            hex(file)
        );
    }
}

/// Every regular file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
