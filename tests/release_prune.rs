//! `airgap release prune` against the built-in registry (htpasswd, deletes on): three seeded
//! releases, the oldest pruned — its own image deleted, what the kept releases share still
//! served, its unreferenced blobs collected — and the refusals, each one line with nothing
//! deleted.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::registries::{airgap_serve_with, creds, with_stdin, write_htpasswd, PASSWORD, USER};
use common::{airgap, ok, Setup};

/// The fixture's bundle as release `version`, without the multi-platform image when `slim`.
fn release(setup: &Setup, version: &str, slim: bool) -> PathBuf {
    let mut spec = std::fs::read_to_string(&setup.fixture.spec)
        .unwrap()
        .replace(
            "metadata: {name: mgmt-plane, version: 4.5.0}",
            &format!("metadata: {{name: mgmt-plane, version: {version}}}"),
        );
    if slim {
        spec = spec.replace(
            "    - ref: example.internal/base/multi:2.1\n      from: oci:layout:example.internal/base/multi:2.1\n",
            "",
        );
    }
    let path = setup.fixture.spec.with_file_name(format!("{version}.yaml"));
    std::fs::write(&path, spec).unwrap();
    let out = setup.path(&format!("{version}.tar"));
    ok(&mut setup.build_command(&path, &out));
    out
}

fn with_login(mut cmd: std::process::Command) -> Output {
    cmd.args(["--plain-http", "--username", USER, "--password-stdin"]);
    with_stdin(&mut cmd, PASSWORD)
}

/// `registry seed` of `bundle` to `url`, which must succeed; its standard output.
fn seed(setup: &Setup, bundle: &Path, url: &str) -> String {
    let mut cmd = airgap();
    cmd.args(["registry", "seed"])
        .arg(bundle)
        .arg("--pub")
        .arg(setup.public())
        .args(["--to", url])
        .arg("--config-dir")
        .arg(setup.path("mirror-config"));
    succeeded(with_login(cmd))
}

fn prune(setup: &Setup, url: &str, key: &Path, extra: &[&str]) -> Output {
    let mut cmd = airgap();
    cmd.args(["release", "prune", "--registry", url, "--pub"])
        .arg(key)
        .arg("--root")
        .arg(setup.path("no-node"))
        .args(["--grace", "0s"])
        .args(extra);
    with_login(cmd)
}

/// The standard output of a command that must have succeeded.
fn succeeded(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// HTTP status of a manifest HEAD.
fn manifest_status(host: &str, repo: &str, reference: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-I", "-u", &creds()])
        .args([
            "-H",
            "Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
        ])
        .arg(format!("http://{host}/v2/{repo}/manifests/{reference}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn blob_files(store: &Path) -> usize {
    std::fs::read_dir(store.join("blobs/sha256")).map_or(0, |d| d.count())
}

#[test]
fn prune_keeps_the_newest_releases_and_what_they_share() {
    let setup = Setup::new(32 << 10);
    let v100 = release(&setup, "1.0.0", false);
    let v110 = release(&setup, "1.1.0", true);
    let v120 = release(&setup, "1.2.0", true);
    let store = setup.path("store");
    let htpasswd = setup.path("htpasswd");
    write_htpasswd(&htpasswd);
    let server = airgap_serve_with(
        &store,
        &["--htpasswd", htpasswd.to_str().unwrap(), "--enable-delete"],
    );
    let host = format!("127.0.0.1:{}", server.port);
    let url = format!("http://{host}/site");
    for bundle in [&v100, &v110, &v120] {
        seed(&setup, bundle, &url);
    }
    let multi = ("site/example.internal/base/multi", "2.1");
    let api = ("site/example.internal/platform/api", "1.0");
    assert_eq!(manifest_status(&host, multi.0, multi.1), "200");
    let blobs_before = blob_files(&store);

    // Refusals: one line, nothing deleted.
    let refused = |out: Output, needle: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        let errors: Vec<_> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(needle), "{stderr}");
    };
    refused(
        prune(&setup, &url, &setup.public(), &["--keep", "0"]),
        "--keep must be at least 1",
    );
    ok(airgap()
        .arg("keygen")
        .arg("-o")
        .arg(setup.path("other.key")));
    refused(
        prune(&setup, &url, &setup.path("other.pub"), &["--keep", "1"]),
        "no release in the registry verifies with this key",
    );
    // A dry run says what would go and changes nothing.
    let stdout = succeeded(prune(
        &setup,
        &url,
        &setup.public(),
        &["--keep", "2", "--dry-run"],
    ));
    assert!(
        stdout.contains("prune  mgmt-plane 1.0.0") && stdout.contains("(dry run)"),
        "{stdout}"
    );
    assert_eq!(manifest_status(&host, multi.0, multi.1), "200");
    assert_eq!(blob_files(&store), blobs_before);

    // The real thing: 1.0.0 goes, with the image only it held; shared images stay.
    // (As JSON: docs/json/release-prune.schema.json.)
    let stdout = succeeded(prune(
        &setup,
        &url,
        &setup.public(),
        &["--keep", "2", "--json"],
    ));
    let pruned = common::json_checked("release-prune", stdout.as_bytes());
    assert_eq!(
        pruned["kept"],
        serde_json::json!(["mgmt-plane 1.2.0", "mgmt-plane 1.1.0"]),
        "{pruned}"
    );
    assert_eq!(
        pruned["pruned"],
        serde_json::json!(["mgmt-plane 1.0.0"]),
        "{pruned}"
    );
    assert!(pruned["deleted"].as_u64().unwrap() > 0, "{pruned}");
    assert!(
        pruned["collected"]["blobs"].as_u64().unwrap() > 0,
        "{pruned}"
    );
    assert_eq!(manifest_status(&host, multi.0, multi.1), "404");
    assert_eq!(manifest_status(&host, api.0, api.1), "200");
    assert_eq!(
        manifest_status(&host, "site/airgap/releases", "1.0.0"),
        "404"
    );
    assert_eq!(
        manifest_status(&host, "site/airgap/releases", "1.1.0"),
        "200"
    );
    assert!(blob_files(&store) < blobs_before, "no blob was collected");
    // Every kept release still seeds as complete: nothing it needs was removed.
    for bundle in [&v110, &v120] {
        let stdout = seed(&setup, bundle, &url);
        assert!(stdout.contains("blobs: 0 uploaded"), "{stdout}");
    }
    // Pruning again finds nothing to do.
    let out = prune(&setup, &url, &setup.public(), &["--keep", "2"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to prune"));
    drop(server);
}
