//! `airgap upgrade --bundle` on a standalone node end to end (real etcd, the built-in registry,
//! skopeo as the client), in its own network namespace.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::node::{
    install, install_yaml, kill_during, output_ok, secret, skopeo_certs, status_json, EtcdProbe,
    NetNs, FQDN,
};
use common::registries::{Distribution, Pki, PASSWORD, USER};
use common::{airgap, fails, snapshot, Setup};

/// Every file under `paths`, with its content.
fn snapshot_all(paths: &[PathBuf]) -> BTreeMap<PathBuf, Vec<u8>> {
    paths.iter().flat_map(|p| snapshot(p)).collect()
}

/// The fixture's spec with another name/version, plus `extra` image lines.
fn bundle_of(
    setup: &Setup,
    name: &str,
    version: &str,
    extra: &str,
    since: Option<&Path>,
) -> PathBuf {
    bundle_with(setup, name, version, extra, since, |_| {})
}

/// A release built 100 days ago whose signer gave it 30 days: expired for 70.
fn expired_bundle(setup: &Setup, version: &str) -> PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    bundle_with(setup, "mgmt-plane", version, "", None, |cmd| {
        cmd.env("SOURCE_DATE_EPOCH", (now - 100 * 86400).to_string())
            .args(["--expires-in", "30d"]);
    })
}

/// [`bundle_of`], its build command adjusted by `tweak`.
fn bundle_with(
    setup: &Setup,
    name: &str,
    version: &str,
    extra: &str,
    since: Option<&Path>,
    tweak: impl FnOnce(&mut Command),
) -> PathBuf {
    let spec = std::fs::read_to_string(&setup.fixture.spec)
        .unwrap()
        .replace(
            "metadata: {name: mgmt-plane, version: 4.5.0}",
            &format!("metadata: {{name: {name}, version: {version}}}"),
        );
    let path = setup
        .fixture
        .spec
        .with_file_name(format!("{name}-{version}.yaml"));
    std::fs::write(&path, format!("{spec}{extra}")).unwrap();
    let out = setup.path(&format!("{name}-{version}.tar"));
    let mut cmd = setup.build_command(&path, &out);
    if let Some(base) = since {
        cmd.arg("--since").arg(base);
    }
    tweak(&mut cmd);
    common::ok(&mut cmd);
    out
}

/// A standalone node in its own namespace, installed with the fixture's 4.5.0 bundle.
fn installed_450(tag: &str) -> (Setup, PathBuf, NetNs, PathBuf) {
    let setup = Setup::new(16 << 10);
    let v450 = setup.build("bundle.tar");
    let ns = NetNs::create(tag);
    let root = setup.path("root");
    let config = install_yaml(setup.dir.path(), "  timeServers: [10.0.0.1]\n");
    output_ok(
        &install(&ns, &config, &v450, &setup.public(), &root)
            .output()
            .unwrap(),
        "install 4.5.0",
    );
    (setup, v450, ns, root)
}

fn upgrade(ns: &NetNs, bundle: &Path, public: &Path, root: &Path) -> Command {
    let mut cmd = ns.airgap();
    cmd.arg("upgrade")
        .arg("--bundle")
        .arg(bundle)
        .arg("--pub")
        .arg(public)
        .arg("--root")
        .arg(root);
    cmd
}

#[test]
fn a_standalone_node_upgrades_to_a_newer_bundle_keeping_keys_and_refuses_the_rest() {
    let (setup, v450, ns, root) = installed_450("upg");
    // As if installed by an airgap from before the `time` phase: its journal names no such
    // phase. The node is still installed (status complete), and upgrades.
    let journal_path = root.join("var/lib/airgap/journal.json");
    let mut journal: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&journal_path).unwrap()).unwrap();
    let removed = journal["workflows"]["init"]["phases"]
        .as_object_mut()
        .unwrap()
        .remove("time");
    assert!(removed.is_some(), "{journal}");
    std::fs::write(&journal_path, serde_json::to_vec_pretty(&journal).unwrap()).unwrap();
    let (_, status) = common::node::status_any(&ns, &root);
    assert_eq!(status["complete"], true, "{status}");
    let probe = EtcdProbe {
        ns: &ns,
        root: root.clone(),
    };
    let kept = [
        root.join("etc/kubernetes/pki"),
        root.join("etc/airgap/pki"),
        root.join("etc/kubernetes/encryption-config.yaml"),
    ];
    let keys_before = snapshot_all(&kept);
    let (_, _, keys_rev) = secret(&probe, "installation-keys");
    let (creds, _, creds_rev) = secret(&probe, "registry-credentials");
    let password = String::from_utf8(creds["password"].clone()).unwrap();

    // 4.6.0 adds an image. Killed in the middle of the runtime phase, the upgrade resumes.
    let extra = "    - ref: example.internal/platform/api:1.1\n      from: oci:layout:example.internal/platform/api:1.0\n";
    let v460 = bundle_of(&setup, "mgmt-plane", "4.6.0", extra, None);
    kill_during(upgrade(&ns, &v460, &setup.public(), &root), "runtime");
    let out = output_ok(
        &upgrade(&ns, &v460, &setup.public(), &root)
            .output()
            .unwrap(),
        "upgrade to 4.6.0",
    );
    assert!(
        out.contains("upgraded node node1 from mgmt-plane 4.5.0 to mgmt-plane 4.6.0 (resumed)"),
        "{out}"
    );
    for phase in [
        "[verify]",
        "[registry]",
        "[etcd]",
        "[runtime]",
        "[kubernetes]",
        "[platform]",
    ] {
        assert!(out.contains(phase), "{out}");
    }
    assert!(!out.contains("[pki]") && !out.contains("[keys]"), "{out}");

    // Keys, certificates and Secrets untouched; the cluster trusts 4.6.0.
    assert_eq!(
        snapshot_all(&kept),
        keys_before,
        "the upgrade changed keys or certificates"
    );
    assert_eq!(secret(&probe, "installation-keys").2, keys_rev);
    assert_eq!(secret(&probe, "registry-credentials").2, creds_rev);
    let (trusted, _, _) = probe.raw("/airgap/cluster/trusted-release").unwrap();
    let trusted: serde_json::Value = serde_json::from_slice(&trusted).unwrap();
    assert_eq!(trusted["version"], "4.6.0", "{trusted}");

    // The new image pulls by its mirrored name with the bundle's digest.
    let inspect = common::ok(airgap().args(["bundle", "inspect", "--json"]).arg(&v460));
    let index: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let new_image = index["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["reference"] == "example.internal/platform/api:1.1")
        .expect("api:1.1 in the bundle");
    let reference = format!(
        "docker://{FQDN}:5000/{}:1.1",
        new_image["mirrorRepository"].as_str().unwrap()
    );
    let certs = skopeo_certs(&root, setup.dir.path());
    let out = ns
        .command("skopeo")
        .args(["inspect", "--raw", "--cert-dir"])
        .arg(&certs)
        .args(["--creds", &format!("admin:{password}")])
        .arg(&reference)
        .output()
        .unwrap();
    let manifest = output_ok(&out, "skopeo inspect --raw");
    assert_eq!(
        airgap::Digest::of(manifest.as_bytes()).to_string(),
        new_image["digest"].as_str().unwrap()
    );

    // status reports the new release.
    let status = status_json(&ns, &root);
    assert_eq!(status["bundle"], "mgmt-plane 4.6.0");
    assert_eq!(status["complete"], true);

    // Refused, one line each, nothing changed: the same release again, the old one, another
    // product, a delta built on a release the node does not run.
    let journal = root.join("var/lib/airgap/journal.json");
    let journal_before = std::fs::read(&journal).unwrap();
    let etc_before = snapshot(&root.join("etc"));
    let other = bundle_of(&setup, "other-product", "9.0.0", "", None);
    let wrong_base = bundle_of(&setup, "mgmt-plane", "4.7.0", "", Some(&v450));
    let expired = expired_bundle(&setup, "4.9.0");
    for (bundle, says) in [
        (
            &expired,
            vec![
                "release mgmt-plane 4.9.0 expired at",
                "hint: get a freshly signed release",
            ],
        ),
        (&v460, vec!["already runs release mgmt-plane 4.6.0"]),
        (
            &v450,
            vec!["4.5.0", "older than the trusted release mgmt-plane 4.6.0"],
        ),
        (&other, vec!["another product"]),
        (
            &wrong_base,
            vec![
                "built on mgmt-plane 4.5.0",
                "runs mgmt-plane 4.6.0",
                "hint:",
            ],
        ),
    ] {
        let err = fails(&mut upgrade(&ns, bundle, &setup.public(), &root));
        for s in says {
            assert!(err.contains(s), "{}: {err}", bundle.display());
        }
        assert_eq!(std::fs::read(&journal).unwrap(), journal_before);
        assert_eq!(snapshot(&root.join("etc")), etc_before);
    }
    let (trusted, _, _) = probe.raw("/airgap/cluster/trusted-release").unwrap();
    assert!(String::from_utf8_lossy(&trusted).contains("\"4.6.0\""));

    // A delta built on the running release upgrades: only new layers travel, the rest is in
    // the node's registry and store already.
    let extra2 = format!(
        "{extra}    - ref: example.internal/platform/worker:1.2\n      from: oci:layout:example.internal/platform/worker:1.0\n"
    );
    let delta = bundle_of(&setup, "mgmt-plane", "4.8.0", &extra2, Some(&v460));
    // As JSON (docs/json/upgrade.schema.json), the phase lines on standard error.
    let out = upgrade(&ns, &delta, &setup.public(), &root)
        .arg("--json")
        .output()
        .unwrap();
    let summary = common::json_checked(
        "upgrade",
        output_ok(&out, "upgrade to the 4.8.0 delta").as_bytes(),
    );
    assert_eq!(summary["to"]["version"], "4.8.0", "{summary}");
    assert_eq!(summary["from"]["version"], "4.6.0", "{summary}");
    assert_eq!(summary["clusterTrusts"], true, "{summary}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("[registry]"));

    // A root with no installation is told to install first.
    let err = fails(&mut upgrade(
        &ns,
        &v460,
        &setup.public(),
        &setup.path("empty"),
    ));
    assert!(
        err.contains("holds no completed installation") && err.contains("airgap install"),
        "{err}"
    );
}

#[test]
fn an_upgrade_killed_at_every_boundary_completes_and_a_stuck_plan_is_finished() {
    let (setup, _, ns, root) = installed_450("upg-kill");
    let probe = EtcdProbe {
        ns: &ns,
        root: root.clone(),
    };
    let trusted = || {
        let (raw, _, _) = probe.raw("/airgap/cluster/trusted-release").unwrap();
        let id: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        id["version"].as_str().unwrap().to_string()
    };
    let snapshot = root.join("var/lib/airgap/upgrade-rollback");
    // 4.6.0 brings an image with blobs the node does not have, so seeding has work to be
    // killed in.
    let fresh = testkit::fixture(&setup.path("fresh"), 99, 16 << 10).unwrap();
    let extra = format!(
        "    - ref: example.internal/platform/api:2.0\n      from: oci:{}:example.internal/platform/api:1.0\n",
        fresh.layout.display()
    );
    let v460 = bundle_of(&setup, "mgmt-plane", "4.6.0", &extra, None);
    let steps = [
        "verify",
        "registry",
        "time",
        "etcd",
        "runtime",
        "agent",
        "kubernetes",
        "platform",
    ];
    let end = ["finish", "trust", "cleanup"];
    // SIGKILL inside every step and at every boundary between two (the runner journaled one
    // done, the next not started), each kill in the run that resumes the one killed before.
    // Where the run stopped decides what the cluster may already show: the node is done in
    // the plan only from inside `finish` on, the cluster trusts 4.6.0 only from inside
    // `trust` on, and the rollback snapshot stays until `cleanup`.
    let mut boundaries: Vec<String> = Vec::new();
    for step in steps.iter().chain(&end) {
        boundaries.push(step.to_string());
        if *step != "cleanup" {
            boundaries.push(format!("after-{step}"));
        }
    }
    let reached = |at: &str, step: &str| {
        let order: Vec<&str> = boundaries.iter().map(String::as_str).collect();
        let pos = |b: &str| order.iter().position(|o| *o == b).unwrap();
        pos(at) >= pos(step)
    };
    for at in &boundaries {
        kill_during(upgrade(&ns, &v460, &setup.public(), &root), at);
        let plan = upgrade_status(&ns, &root);
        let state = if reached(at, "finish") {
            "done"
        } else {
            "upgrading"
        };
        assert_eq!(plan["nodes"][0]["state"], state, "killed at {at}: {plan}");
        let version = if reached(at, "trust") {
            "4.6.0"
        } else {
            "4.5.0"
        };
        assert_eq!(trusted(), version, "killed at {at}");
        assert!(
            snapshot.join("journal.json").exists(),
            "killed at {at}: the rollback snapshot is gone before the upgrade ended"
        );
    }
    let out = output_ok(
        &upgrade(&ns, &v460, &setup.public(), &root)
            .output()
            .unwrap(),
        "upgrade after a SIGKILL at every boundary",
    );
    assert!(
        out.contains("to mgmt-plane 4.6.0 (resumed)")
            && out.contains("every node runs mgmt-plane 4.6.0: the cluster trusts it now"),
        "{out}"
    );
    let plan = upgrade_status(&ns, &root);
    assert_eq!(plan["from"]["version"], "4.5.0", "{plan}");
    assert_eq!(plan["to"]["version"], "4.6.0", "{plan}");
    assert_eq!(plan["nodes"][0]["name"], "node1");
    assert_eq!(plan["nodes"][0]["state"], "done", "{plan}");
    let recorded: Vec<&str> = plan["nodes"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(recorded, steps, "each step once, in order");
    assert_eq!(trusted(), "4.6.0");
    assert!(
        !snapshot.exists(),
        "the rollback snapshot outlived the upgrade"
    );
    // The human view says the same.
    let text = output_ok(
        &ns.airgap()
            .args(["upgrade", "status", "--root"])
            .arg(&root)
            .output()
            .unwrap(),
        "upgrade status",
    );
    assert!(
        text.contains("mgmt-plane 4.5.0 -> mgmt-plane 4.6.0: complete")
            && text.contains("node1      done"),
        "{text}"
    );
    // Nothing left to do: the same command again changes nothing.
    let line = fails(&mut upgrade(&ns, &v460, &setup.public(), &root));
    assert!(
        line.contains("already runs release mgmt-plane 4.6.0"),
        "{line}"
    );

    // A stuck plan, as an earlier airgap left every upgrade killed after its last phase:
    // each phase journaled done, the plan still "upgrading", the old release trusted, the
    // snapshot kept. The next upgrade (to another, newer release) finishes it first, then
    // moves on; before this, every later upgrade was refused for good.
    let v470 = bundle_of(&setup, "mgmt-plane", "4.7.0", &extra, None);
    let v480 = bundle_of(&setup, "mgmt-plane", "4.8.0", &extra, None);
    kill_during(
        upgrade(&ns, &v470, &setup.public(), &root),
        "after-platform",
    );
    assert_eq!(upgrade_status(&ns, &root)["nodes"][0]["state"], "upgrading");
    assert_eq!(trusted(), "4.6.0");
    let out = output_ok(
        &upgrade(&ns, &v480, &setup.public(), &root)
            .output()
            .unwrap(),
        "the next upgrade after a stuck plan",
    );
    assert!(
        out.contains("from mgmt-plane 4.7.0 to mgmt-plane 4.8.0"),
        "{out}"
    );
    let plan = upgrade_status(&ns, &root);
    assert_eq!(plan["to"]["version"], "4.8.0", "{plan}");
    assert_eq!(plan["nodes"][0]["state"], "done", "{plan}");
    assert_eq!(trusted(), "4.8.0");
    assert!(!snapshot.exists());
    let audit = std::fs::read_to_string(root.join("var/log/airgap/audit.log")).unwrap();
    let trusts = audit
        .lines()
        .filter(|l| {
            l.contains("\"action\":\"release.trust\"") && l.contains("\"outcome\":\"done\"")
        })
        .count();
    assert_eq!(
        trusts, 3,
        "4.6.0, 4.7.0 and 4.8.0 each trusted once: {audit}"
    );
    assert_eq!(status_json(&ns, &root)["bundle"], "mgmt-plane 4.8.0");
}

fn upgrade_status(ns: &NetNs, root: &Path) -> serde_json::Value {
    let out = ns
        .airgap()
        .args(["upgrade", "status", "--json", "--root"])
        .arg(root)
        .output()
        .unwrap();
    common::json_checked(
        "upgrade-status",
        output_ok(&out, "upgrade status --json").as_bytes(),
    )
}

/// Both sides of a DMZ in the node's namespace: the public repository the releases are seeded
/// into, and the private one `registry sync` copies them to, each a distribution registry with
/// TLS and htpasswd. Returns them with an auth file that logs in to both.
fn two_registries(setup: &Setup, ns: &NetNs) -> (Distribution, Distribution, PathBuf, Pki) {
    let pki = Pki::new(&setup.path("dmz-pki"));
    let start = |name: &str| {
        let port = common::registries::free_port();
        let launcher = ns.command("env");
        let probe_ns = ns.name.clone();
        let ca = pki.ca.clone();
        Distribution::start_via(&setup.path(name), &pki, port, launcher, move || {
            Command::new("ip")
                .args(["netns", "exec", &probe_ns, "curl", "-s", "-o", "/dev/null"])
                .arg("--cacert")
                .arg(&ca)
                .arg(format!("https://127.0.0.1:{port}/v2/"))
                .status()
                .is_ok_and(|s| s.success())
        })
    };
    let public = start("public");
    let private = start("private");
    let basic = registry::auth::Credentials {
        username: USER.into(),
        password: PASSWORD.into(),
    }
    .basic_header();
    let b64 = basic.strip_prefix("Basic ").unwrap();
    let auth = setup.path("auth.json");
    std::fs::write(
        &auth,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{b64}"}},"{}":{{"auth":"{b64}"}}}}}}"#,
            public.host(),
            private.host()
        ),
    )
    .unwrap();
    (public, private, auth, pki)
}

/// The blob file a distribution registry keeps `digest` in.
fn stored_blob(registry: &Distribution, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    registry.storage.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ))
}

#[test]
fn a_synced_registry_upgrades_a_node_with_no_bundle_and_tampering_is_refused_first() {
    let (setup, v450, ns, root) = installed_450("upg-reg");
    let probe = EtcdProbe {
        ns: &ns,
        root: root.clone(),
    };
    let (public, private, auth, pki) = two_registries(&setup, &ns);
    let ca = pki.ca.to_str().unwrap().to_string();
    let public_url = format!("https://{}/public", public.host());
    let private_url = format!("https://{}/private", private.host());
    // 4.6.0 brings an image whose blobs the node does not have.
    let fresh = testkit::fixture(&setup.path("fresh"), 99, 16 << 10).unwrap();
    let extra = format!(
        "    - ref: example.internal/platform/api:2.0\n      from: oci:{}:example.internal/platform/api:1.0\n",
        fresh.layout.display()
    );
    let v460 = bundle_of(&setup, "mgmt-plane", "4.6.0", &extra, None);
    let in_ns = |args: &[&str]| {
        let mut cmd = ns.airgap();
        cmd.env("REGISTRY_AUTH_FILE", &auth).args(args);
        cmd
    };
    // Both releases seeded into the public repository, without touching the node.
    for bundle in [&v450, &v460] {
        let mut seed = in_ns(&["registry", "seed"]);
        seed.arg(bundle)
            .arg("--pub")
            .arg(setup.public())
            .args(["--to", &public_url, "--ca", &ca, "--config-dir"])
            .arg(setup.path("mirror-config"));
        output_ok(&seed.output().unwrap(), "registry seed");
    }

    // Replicated into the private one: everything once, then nothing.
    let sync_with = |extra: &[&str]| {
        let mut cmd = in_ns(&[
            "registry",
            "sync",
            "--from",
            &public_url,
            "--to",
            &private_url,
        ]);
        cmd.args(["--all", "--from-ca", &ca, "--to-ca", &ca, "--pub"])
            .arg(setup.public())
            .args(extra);
        output_ok(&cmd.output().unwrap(), "registry sync")
    };
    let sync = || sync_with(&[]);
    let first = sync();
    let copied = |out: &str, version: &str| -> u64 {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("synced mgmt-plane {version} ")))
            .unwrap_or_else(|| panic!("no line for {version}: {out}"));
        line.split("blobs: ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(copied(&first, "4.5.0") > 0, "{first}");
    // 4.6.0 shares most of 4.5.0: only its own blobs travel.
    assert!(copied(&first, "4.6.0") > 0, "{first}");
    assert!(first.contains("release index published"), "{first}");
    eprintln!("{first}");
    let second = sync();
    eprintln!("{second}");
    assert_eq!(copied(&second, "4.5.0"), 0, "{second}");
    assert_eq!(copied(&second, "4.6.0"), 0, "{second}");
    assert!(second.contains("manifests: 0 pushed"), "{second}");
    assert!(!second.contains("release index published"), "{second}");
    // As JSON (docs/json/registry-sync.schema.json): both releases, nothing copied.
    let third = common::json_checked("registry-sync", sync_with(&["--json"]).as_bytes());
    let releases = third["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 2, "{third}");
    for release in releases {
        assert_eq!(release["blobs"]["copied"], 0, "{third}");
        assert_eq!(release["releaseIndexPublished"], false, "{third}");
    }

    // The private repository lists 4.6.0 as newer than what the node runs.
    let mut check = in_ns(&["upgrade", "--check", "--from-registry", &private_url]);
    check
        .args(["--ca", &ca, "--pub"])
        .arg(setup.public())
        .arg("--root")
        .arg(&root);
    let listed = output_ok(&check.output().unwrap(), "upgrade --check");
    assert!(
        listed.contains("this node runs mgmt-plane 4.5.0"),
        "{listed}"
    );
    assert!(listed.contains("mgmt-plane 4.6.0  newer"), "{listed}");
    assert!(listed.contains("mgmt-plane 4.5.0  running"), "{listed}");

    let upgrade_from = |url: &str, key: &Path| {
        let mut cmd = in_ns(&["upgrade", "--from-registry", url, "--ca", &ca, "--pub"]);
        cmd.arg(key).arg("--root").arg(&root);
        cmd
    };
    let journal = root.join("var/lib/airgap/journal.json");
    let journal_before = std::fs::read(&journal).unwrap();
    let etc_before = snapshot(&root.join("etc"));
    let services_before = snapshot(&root.join("var/lib/airgap/services"));
    let certs = skopeo_certs(&root, setup.dir.path());
    let (creds, _, _) = secret(&probe, "registry-credentials");
    let password = String::from_utf8(creds["password"].clone()).unwrap();
    let index: serde_json::Value = serde_json::from_str(&common::ok(
        airgap().args(["bundle", "inspect", "--json"]).arg(&v460),
    ))
    .unwrap();
    let new_image = index["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["reference"] == "example.internal/platform/api:2.0")
        .expect("api:2.0 in the bundle")
        .clone();
    let on_node = format!(
        "docker://{FQDN}:5000/{}:2.0",
        new_image["mirrorRepository"].as_str().unwrap()
    );
    let node_has_new_image = || {
        ns.command("skopeo")
            .args(["inspect", "--raw", "--cert-dir"])
            .arg(&certs)
            .args(["--creds", &format!("admin:{password}")])
            .arg(&on_node)
            .output()
            .unwrap()
            .status
            .success()
    };
    let nothing_changed = |what: &str| {
        assert_eq!(std::fs::read(&journal).unwrap(), journal_before, "{what}");
        assert_eq!(snapshot(&root.join("etc")), etc_before, "{what}");
        assert_eq!(
            snapshot(&root.join("var/lib/airgap/services")),
            services_before,
            "{what}"
        );
        assert_eq!(
            upgrade_status(&ns, &root),
            serde_json::Value::Null,
            "{what}"
        );
        let (trusted, _, _) = probe.raw("/airgap/cluster/trusted-release").unwrap();
        assert!(
            String::from_utf8_lossy(&trusted).contains("\"4.5.0\""),
            "{what}"
        );
        assert!(
            !node_has_new_image(),
            "{what}: the new image reached the node"
        );
    };

    // A release artifact signed with another key: refused before anything changes.
    common::ok(
        airgap()
            .arg("keygen")
            .arg("-o")
            .arg(setup.path("other.key")),
    );
    let mut forged_build = airgap();
    let forged_spec = setup.fixture.spec.with_file_name("mgmt-plane-4.6.0.yaml");
    forged_build
        .args(["bundle", "build", "-f"])
        .arg(&forged_spec)
        .arg("-o")
        .arg(setup.path("forged.tar"))
        .arg("--key")
        .arg(setup.path("other.key"));
    common::ok(&mut forged_build);
    let forged_url = format!("https://{}/forged", public.host());
    let mut seed = in_ns(&["registry", "seed"]);
    seed.arg(setup.path("forged.tar"))
        .arg("--pub")
        .arg(setup.path("other.pub"))
        .args(["--to", &forged_url, "--ca", &ca, "--config-dir"])
        .arg(setup.path("mirror-config"));
    output_ok(&seed.output().unwrap(), "registry seed (forged)");
    let err = fails(
        upgrade_from(&forged_url, &setup.public())
            .arg("--version")
            .arg("4.6.0"),
    );
    assert!(
        err.contains("4.6.0") && err.contains("signature does not verify"),
        "{err}"
    );
    eprintln!("forged signature: {err}");
    nothing_changed("forged signature");
    // `registry sync` refuses it too, copying nothing; and bad input, one line each.
    let copy_url = format!("https://{}/forged-copy", private.host());
    let sync_from = |from: &str, to: &str, extra: &[&str]| {
        let mut cmd = in_ns(&["registry", "sync", "--from", from, "--to", to]);
        cmd.args(["--from-ca", &ca, "--to-ca", &ca])
            .args(extra)
            .arg("--pub")
            .arg(setup.public());
        cmd
    };
    let err = fails(&mut sync_from(&forged_url, &copy_url, &["--all"]));
    assert!(
        err.contains("1 release(s)") && err.contains("failed verification and were not copied"),
        "{err}"
    );
    let err = fails(&mut sync_from(
        &forged_url,
        &copy_url,
        &["--version", "4.6.0"],
    ));
    assert!(err.contains("signature does not verify"), "{err}");
    let mut check_copy = in_ns(&["upgrade", "--check", "--from-registry", &copy_url]);
    check_copy.args(["--ca", &ca, "--pub"]).arg(setup.public());
    let listed = output_ok(&check_copy.output().unwrap(), "check the forged copy");
    assert!(listed.contains("holds no airgap releases"), "{listed}");
    let err = fails(&mut sync_from(&public_url, &public_url, &[]));
    assert!(err.contains("are the same repository"), "{err}");
    let err = fails(&mut sync_from(
        &public_url,
        &copy_url,
        &["--version", "9.9.9"],
    ));
    assert!(err.contains("holds no release 9.9.9"), "{err}");
    let err = fails(&mut sync_from(
        &public_url,
        "https://127.0.0.1:1/nowhere",
        &["--all"],
    ));
    assert!(err.contains("cannot reach registry 127.0.0.1:1"), "{err}");
    // Without --version, the forged release is not even offered.
    let err = fails(&mut upgrade_from(&forged_url, &setup.public()));
    assert!(
        err.contains("holds no release newer than mgmt-plane 4.5.0"),
        "{err}"
    );
    nothing_changed("no release offered");

    // A layer of the new image replaced in the public registry's storage (same length, other
    // bytes): the copy refuses it before any manifest, the plan or the node moves.
    let raw = ns
        .command("skopeo")
        .args(["inspect", "--raw", "--cert-dir"])
        .arg(pki.skopeo_cert_dir())
        .args(["--creds", &common::registries::creds()])
        .arg(format!(
            "docker://{}/public/{}:2.0",
            public.host(),
            new_image["mirrorRepository"].as_str().unwrap()
        ))
        .output()
        .unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&output_ok(&raw, "skopeo inspect the new image")).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let data = stored_blob(&public, &layer);
    let genuine = std::fs::read(&data).unwrap();
    std::fs::write(&data, vec![b'x'; genuine.len()]).unwrap();
    let err = fails(&mut upgrade_from(&public_url, &setup.public()));
    assert!(
        err.contains(&layer) && err.contains("does not match its digest"),
        "{err}"
    );
    assert!(err.contains("nothing else was changed"), "{err}");
    eprintln!("replaced blob: {err}");
    nothing_changed("replaced blob");
    std::fs::write(&data, &genuine).unwrap();

    // The synced private repository upgrades the node; no bundle is anywhere near it.
    std::fs::remove_file(&v460).unwrap();
    let out = output_ok(
        &upgrade_from(&private_url, &setup.public())
            .output()
            .unwrap(),
        "upgrade --from-registry",
    );
    assert!(
        out.contains(&format!("copied mgmt-plane 4.6.0 from {private_url}")),
        "{out}"
    );
    assert!(
        out.contains("upgraded node node1 from mgmt-plane 4.5.0 to mgmt-plane 4.6.0"),
        "{out}"
    );
    assert!(out.contains("every node runs mgmt-plane 4.6.0"), "{out}");
    eprintln!("{out}");
    assert!(node_has_new_image(), "the new image pulls from the node");
    let status = status_json(&ns, &root);
    assert_eq!(status["bundle"], "mgmt-plane 4.6.0");
    assert_eq!(status["complete"], true);
    let (trusted, _, _) = probe.raw("/airgap/cluster/trusted-release").unwrap();
    assert!(String::from_utf8_lossy(&trusted).contains("\"4.6.0\""));
    // Nothing newer is left to offer.
    let err = fails(&mut upgrade_from(&private_url, &setup.public()));
    assert!(
        err.contains("holds no release newer than mgmt-plane 4.6.0"),
        "{err}"
    );
}

/// The cluster records the key its release was signed with: a newer release signed by another
/// key (`upgrade --pub other.pub`) is refused with nothing changed; a rotation statement
/// signed by anyone but the trusted key is refused; one signed by the trusted key moves the
/// trust (audited), after which the other key's release upgrades.
#[test]
fn another_signing_key_is_refused_until_a_rotation_the_trusted_key_signed() {
    let (setup, _v450, ns, root) = installed_450("trust");
    let other_key = setup.path("other.key");
    common::ok(airgap().arg("keygen").arg("-o").arg(&other_key));
    let other_pub = setup.path("other.pub");
    // A newer release signed by the other key.
    let v460 = bundle_with(&setup, "mgmt-plane", "4.6.0", "", None, |cmd| {
        let args: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_owned()).collect();
        let mut rebuilt = airgap();
        let mut skip = false;
        for a in &args {
            if skip {
                rebuilt.arg(&other_key);
                skip = false;
            } else {
                skip = a == "--key";
                rebuilt.arg(a);
            }
        }
        *cmd = rebuilt;
    });
    let journal = root.join("var/lib/airgap/journal.json");
    let before = std::fs::read(&journal).unwrap();
    let line = fails(&mut upgrade(&ns, &v460, &other_pub, &root));
    assert!(
        line.contains("signed by key") && line.contains("airgap trust rotate"),
        "{line}"
    );
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        before,
        "the refusal changed the journal"
    );
    let show = |root: &Path| {
        let out = ns
            .airgap()
            .args(["trust", "show", "--json", "--root"])
            .arg(root)
            .output()
            .unwrap();
        let v = common::json_checked("trust-show", output_ok(&out, "trust show").as_bytes());
        v["keyId"].as_str().unwrap().to_string()
    };
    let original = show(&root);

    // A statement signed by the new key itself (not the trusted one): refused.
    let forged = setup.path("forged.json");
    common::ok(
        airgap()
            .args(["trust", "sign-rotation", "--key"])
            .arg(&other_key)
            .arg("--new-pub")
            .arg(&other_pub)
            .arg("-o")
            .arg(&forged),
    );
    let line = fails(
        ns.airgap()
            .args(["trust", "rotate"])
            .arg(&forged)
            .arg("--root")
            .arg(&root),
    );
    assert!(
        line.contains("not signed by the key the cluster trusts"),
        "{line}"
    );
    assert_eq!(show(&root), original);

    // Signed by the trusted key: trust moves, the audit log says so, the upgrade goes.
    let rotation = setup.path("rotation.json");
    common::ok(
        airgap()
            .args(["trust", "sign-rotation", "--key"])
            .arg(setup.key())
            .arg("--new-pub")
            .arg(&other_pub)
            .arg("-o")
            .arg(&rotation),
    );
    let out = ns
        .airgap()
        .args(["trust", "rotate"])
        .arg(&rotation)
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap();
    assert!(output_ok(&out, "trust rotate").contains("now trusts releases from key"));
    assert_ne!(show(&root), original);
    let audit = std::fs::read_to_string(root.join("var/log/airgap/audit.log")).unwrap();
    assert!(audit.contains("\"trust.rotate\""), "{audit}");
    output_ok(
        &upgrade(&ns, &v460, &other_pub, &root).output().unwrap(),
        "upgrade under the rotated key",
    );
    // The old key's releases are now the ones refused.
    let v470 = bundle_of(&setup, "mgmt-plane", "4.7.0", "", None);
    let line = fails(&mut upgrade(&ns, &v470, &setup.public(), &root));
    assert!(line.contains("signed by key"), "{line}");
}
