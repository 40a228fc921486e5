//! Deleting from the built-in registry and collecting garbage, with skopeo as the client: an
//! OCI 1.1 artifact found again through the referrers API; after an image is deleted, gc
//! removes exactly its unshared blobs while a push runs, and every remaining image still
//! copies out whole.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use airgap::oci::Descriptor;
use common::registries::{airgap_serve_with, creds, with_stdin, write_htpasswd, PASSWORD, USER};
use common::{airgap, fails, ok};
use testkit::{LayoutWriter, Rng};

fn skopeo_copy(from: &str, to: &str) -> Result<(), String> {
    let out = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .args(["--src-creds", &creds(), "--dest-creds", &creds()])
        .args([from, to])
        .output()
        .unwrap();
    common::succeeded(&out)
}

fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-u", &creds()])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// What a manifest in the layout references: itself, its config and layers.
fn image_blobs(layout: &Path, manifest: &Descriptor) -> BTreeSet<String> {
    let bytes = std::fs::read(layout.join(manifest.digest.blob_path())).unwrap();
    let m: airgap::oci::ImageManifest = serde_json::from_slice(&bytes).unwrap();
    let mut out: BTreeSet<String> = m.layers.iter().map(|l| l.digest.to_string()).collect();
    out.insert(m.config.digest.to_string());
    out.insert(manifest.digest.to_string());
    out
}

fn gc(port: u16, extra: &[&str]) -> String {
    let mut cmd = airgap();
    cmd.args([
        "registry",
        "gc",
        "--url",
        &format!("http://127.0.0.1:{port}"),
    ])
    .args([
        "--plain-http",
        "--username",
        USER,
        "--password-stdin",
        "--grace",
        "0s",
    ])
    .args(extra);
    let out = with_stdin(&mut cmd, PASSWORD);
    assert!(
        out.status.success(),
        "registry gc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn gc_removes_exactly_a_deleted_images_unshared_blobs_while_a_push_runs() {
    let dir = tempfile::tempdir().unwrap();
    let layout_dir = dir.path().join("layout");
    let mut w = LayoutWriter::create(&layout_dir).unwrap();
    let mut rng = Rng::new(15);
    let shared = w.random_layer(&mut rng, 64 << 10).unwrap();
    let only_a = w.random_layer(&mut rng, 64 << 10).unwrap();
    let only_b = w.random_layer(&mut rng, 64 << 10).unwrap();
    let big = w.random_layer(&mut rng, 48 << 20).unwrap();
    let a = w.image(&[shared.clone(), only_a], "linux/amd64").unwrap();
    let b = w.image(&[shared, only_b], "linux/amd64").unwrap();
    let c = w.image(&[big], "linux/arm64").unwrap();
    let sbom = w
        .artifact(
            &b,
            "application/vnd.example.sbom+json",
            br#"{"packages":[]}"#,
        )
        .unwrap();
    for (desc, tag) in [(&a, "a"), (&b, "b"), (&c, "c"), (&sbom, "sbom")] {
        w.tag(desc, tag);
    }
    w.finish().unwrap();

    let store = dir.path().join("store");
    let htpasswd = dir.path().join("htpasswd");
    write_htpasswd(&htpasswd);
    let server = airgap_serve_with(
        &store,
        &["--htpasswd", htpasswd.to_str().unwrap(), "--enable-delete"],
    );
    let host = format!("127.0.0.1:{}", server.port);
    let oci = |tag: &str| format!("oci:{}:{tag}", layout_dir.display());
    skopeo_copy(&oci("a"), &format!("docker://{host}/team/a:1")).unwrap();
    skopeo_copy(&oci("b"), &format!("docker://{host}/team/b:1")).unwrap();

    // An OCI 1.1 artifact pushed by skopeo with its subject, found again by referrers.
    skopeo_copy(&oci("sbom"), &format!("docker://{host}/team/b:sbom")).unwrap();
    let (status, body) = curl(&[&format!("http://{host}/v2/team/b/referrers/{}", b.digest)]);
    assert_eq!(status, 200, "{body}");
    let index: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(index["manifests"][0]["digest"], sbom.digest.to_string());
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.example.sbom+json"
    );
    let pulled = dir.path().join("sbom-pulled");
    skopeo_copy(
        &format!("docker://{host}/team/b@{}", sbom.digest),
        &format!("oci:{}:sbom", pulled.display()),
    )
    .unwrap();

    // The store directory cannot be collected offline while a registry serves it.
    let err = fails(
        airgap()
            .args(["registry", "gc"])
            .arg(&store)
            .arg("--dry-run"),
    );
    assert!(err.contains("in use by another registry process"), "{err}");

    // Delete a; a dry run names exactly what only a used.
    let (status, _) = curl(&[
        "-X",
        "DELETE",
        &format!("http://{host}/v2/team/a/manifests/{}", a.digest),
    ]);
    assert_eq!(status, 202);
    let only_a_blobs: BTreeSet<String> = image_blobs(&layout_dir, &a)
        .difference(&image_blobs(&layout_dir, &b))
        .cloned()
        .collect();
    assert_eq!(only_a_blobs.len(), 3, "a's manifest, config and own layer");
    let dry = gc(server.port, &["--dry-run"]);
    let listed: BTreeSet<String> = dry
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .map(str::to_string)
        .collect();
    assert_eq!(listed, only_a_blobs, "{dry}");
    for d in &only_a_blobs {
        let (alg, hex) = d.split_once(':').unwrap();
        assert!(
            store.join("blobs").join(alg).join(hex).exists(),
            "a dry run removed {d}"
        );
    }

    // Collect repeatedly while a 48 MiB image is being pushed: the push completes.
    let push = {
        let (from, to) = (oci("c"), format!("docker://{host}/team/c:1"));
        std::thread::spawn(move || skopeo_copy(&from, &to))
    };
    let mut runs = 0;
    while !push.is_finished() || runs == 0 {
        gc(server.port, &[]);
        runs += 1;
    }
    push.join().unwrap().expect("a push during gc completes");
    eprintln!("gc ran {runs} times during the push");
    for d in &only_a_blobs {
        let (alg, hex) = d.split_once(':').unwrap();
        assert!(
            !store.join("blobs").join(alg).join(hex).exists(),
            "{d} survived gc"
        );
    }
    // Everything else still copies out whole (skopeo checks every digest).
    for (repo, reference) in [("team/b", "1"), ("team/c", "1")] {
        let out = dir.path().join(format!("out-{}", repo.replace('/', "-")));
        skopeo_copy(
            &format!("docker://{host}/{repo}:{reference}"),
            &format!("oci:{}:x", out.display()),
        )
        .unwrap_or_else(|e| panic!("{repo}:{reference} after gc: {e}"));
    }
    skopeo_copy(
        &format!("docker://{host}/team/b@{}", sbom.digest),
        &format!("oci:{}:again", pulled.display()),
    )
    .expect("the artifact survives gc");
    let (status, _) = curl(&[&format!("http://{host}/v2/team/a/manifests/1")]);
    assert_eq!(status, 404);

    // Offline, with the server stopped: nothing left to collect.
    drop(server);
    let out = ok(airgap()
        .args(["registry", "gc"])
        .arg(&store)
        .args(["--grace", "0s"]));
    assert!(out.contains("removed 0 blobs"), "{out}");
    let err = fails(
        airgap()
            .args(["registry", "gc"])
            .arg(dir.path().join("nowhere")),
    );
    assert!(err.contains("is not a registry store directory"), "{err}");
}
