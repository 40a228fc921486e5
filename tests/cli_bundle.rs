//! The `airgap keygen` / `bundle build|verify|inspect` commands end to end, including skopeo
//! reading images straight out of a bundle.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{airgap, fails, ok, Setup};

/// What `tar tf` lists, as one string.
fn tar_listing(bundle: &std::path::Path) -> String {
    let out = Command::new("tar").arg("tf").arg(bundle).output().unwrap();
    assert!(out.status.success(), "tar tf {}", bundle.display());
    String::from_utf8(out.stdout).unwrap()
}

/// The raw manifest skopeo reads from `oci:DIR:x`.
fn skopeo_raw(dir: &std::path::Path) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:x", dir.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn index_of(bundle: &std::path::Path) -> serde_json::Value {
    let out = ok(airgap().args(["bundle", "inspect", "--json"]).arg(bundle));
    common::json_checked("bundle-inspect", out.as_bytes())
}

#[test]
fn build_verify_inspect_round_trip() {
    let s = Setup::new(4096);
    let bundle = s.build("out.tar");
    let stdout = ok(&mut s.verify(&bundle));
    assert!(
        stdout.contains("OK, mgmt-plane 4.5.0 signed by sha256:"),
        "{stdout}"
    );

    let v = index_of(&bundle);
    assert_eq!(v["name"], "mgmt-plane");
    assert_eq!(v["version"], "4.5.0");
    let key_id = airgap::PublicKey::load(&s.public())
        .unwrap()
        .key_id()
        .to_string();
    assert_eq!(v["signers"], serde_json::json!([key_id]));
    assert_eq!(v["packs"][0]["reference"], "packs/platform-core:1.2.0");
    assert_eq!(
        v["packs"][0]["images"],
        serde_json::json!([
            "example.internal/platform/api:1.0",
            "example.internal/platform/worker:1.0"
        ])
    );
    assert_eq!(v["packs"][1]["reference"], "packs/kubernetes:1.34.2");
    let images = v["images"].as_array().unwrap();
    assert_eq!(
        images.len(),
        testkit::FIXTURE_IMAGES.len() + testkit::FIXTURE_K8S_IMAGES.len()
    );
    for image in images {
        assert!(image["digest"].as_str().unwrap().starts_with("sha256:"));
        // The k8s pack's images are tiny stand-ins; the others have real layers.
        let k8s = image["reference"]
            .as_str()
            .unwrap()
            .starts_with("registry.k8s.io/");
        assert!(k8s || image["size"].as_u64().unwrap() > 4096 / 4);
    }
    assert_eq!(
        v["archiveSize"].as_u64().unwrap(),
        fs::metadata(&bundle).unwrap().len()
    );

    let text = ok(airgap().args(["bundle", "inspect"]).arg(&bundle));
    assert!(
        text.contains("example.internal/base/multi:2.1") && text.contains("platform-core"),
        "{text}"
    );

    // `tar tf` lists bundle.json first, then the signature, then the layout.
    let listing = tar_listing(&bundle);
    let names: Vec<&str> = listing.lines().collect();
    assert_eq!(
        &names[..4],
        ["bundle.json", "bundle.json.sig", "oci-layout", "index.json"]
    );
    assert!(names[4..].iter().all(|n| n.starts_with("blobs/sha256/")));
}

#[test]
fn shared_blobs_are_stored_once() {
    let s = Setup::new(4096);
    let bundle = s.build("out.tar");
    let listing = tar_listing(&bundle);
    let mut names: Vec<&str> = listing.lines().collect();
    let total = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), total, "an entry is stored twice");
}

#[test]
fn builds_are_deterministic_with_source_date_epoch() {
    let s = Setup::new(2048);
    let mut outputs = Vec::new();
    for name in ["a.tar", "b.tar"] {
        let out = s.path(name);
        ok(s.build_command(&s.fixture.spec, &out)
            .env("SOURCE_DATE_EPOCH", "1700000000"));
        outputs.push(fs::read(out).unwrap());
    }
    assert_eq!(
        outputs[0], outputs[1],
        "two builds of the same inputs differ"
    );
    assert_eq!(
        index_of(&s.path("a.tar"))["created"],
        "2023-11-14T22:13:20Z"
    );
}

#[test]
fn split_bundles_verify_from_the_first_part_and_equal_the_whole() {
    let s = Setup::new(20_000);
    let whole = s.path("whole.tar");
    let split = s.path("split.tar");
    for (out, extra) in [(&whole, None), (&split, Some("16KiB"))] {
        let mut cmd = s.build_command(&s.fixture.spec, out);
        cmd.env("SOURCE_DATE_EPOCH", "1");
        if let Some(size) = extra {
            cmd.args(["--split", size]);
        }
        ok(&mut cmd);
    }
    let mut joined = Vec::new();
    let mut parts = 0;
    while let Ok(bytes) = fs::read(format!("{}.{parts:03}", split.display())) {
        assert!(bytes.len() <= 16 * 1024);
        joined.extend(bytes);
        parts += 1;
    }
    assert!(parts > 2, "expected several parts, got {parts}");
    assert_eq!(joined, fs::read(&whole).unwrap());
    ok(&mut s.verify(&s.path("split.tar.000")));
    ok(&mut s.verify(&split)); // the unsplit name finds the parts too
    fs::remove_file(format!("{}.001", split.display())).unwrap();
    let err = fails(&mut s.verify(&s.path("split.tar.000")));
    assert!(err.contains("failed verification"), "{err}");
}

#[test]
fn skopeo_reads_images_from_the_bundle_with_their_digests() {
    let s = Setup::new(8192);
    let bundle = s.build("out.tar");
    let v = index_of(&bundle);
    for image in v["images"].as_array().unwrap() {
        let reference = image["reference"].as_str().unwrap();
        let dest = s.path(&format!("copy-{}", reference.replace(['/', ':'], "_")));
        let out = Command::new("skopeo")
            .args(["copy", "--all", "--preserve-digests"])
            .arg(format!("oci-archive:{}:{reference}", bundle.display()))
            .arg(format!("oci:{}:x", dest.display()))
            .output()
            .expect("skopeo is installed (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "skopeo copy {reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let raw = skopeo_raw(&dest);
        let digest = format!("sha256:{}", airgap::Digest::of(&raw).hex());
        assert_eq!(digest, image["digest"].as_str().unwrap(), "{reference}");
        // Nothing was filtered, so the stored digest is the source layout's too.
        assert_eq!(image["digest"], image["upstreamDigest"], "{reference}");
    }
}

#[test]
fn platform_filter_keeps_only_the_chosen_platform() {
    let s = Setup::new(4096);
    let spec = fs::read_to_string(&s.fixture.spec)
        .unwrap()
        .replace("platforms: [all]", "platforms: [linux/arm64]");
    let filtered_spec = s.path("arm.yaml");
    fs::write(&filtered_spec, spec).unwrap();
    let bundle = s.build_spec(&filtered_spec, "arm.tar");
    ok(&mut s.verify(&bundle));
    let v = index_of(&bundle);
    let multi = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["reference"] == "example.internal/base/multi:2.1")
        .unwrap();
    assert_ne!(multi["digest"], multi["upstreamDigest"]);
    let dest = s.path("arm-copy");
    let out = Command::new("skopeo")
        .args(["copy", "--all"])
        .arg(format!(
            "oci-archive:{}:example.internal/base/multi:2.1",
            bundle.display()
        ))
        .arg(format!("oci:{}:x", dest.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: serde_json::Value = serde_json::from_slice(&skopeo_raw(&dest)).unwrap();
    let platforms: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["arm64"]);
    // The amd64-only layer of the multi image is still present (api uses it); the amd64 child
    // manifest is not.
    let upstream: serde_json::Value = serde_json::from_slice(
        &fs::read(s.fixture.layout.join(format!(
            "blobs/sha256/{}",
            &multi["upstreamDigest"].as_str().unwrap()[7..]
        )))
        .unwrap(),
    )
    .unwrap();
    let amd_child = upstream["manifests"][0]["digest"].as_str().unwrap();
    let listing = tar_listing(&bundle);
    assert!(
        !listing.contains(&amd_child[7..]),
        "filtered-out manifest {amd_child} is in the bundle"
    );
}

#[test]
fn keygen_writes_private_key_0600_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.key");
    ok(airgap().arg("keygen").arg("-o").arg(&key));
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(fs::read_to_string(&key)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(fs::read_to_string(dir.path().join("signing.pub"))
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));
    let before = fs::read(&key).unwrap();
    let err = fails(airgap().arg("keygen").arg("-o").arg(&key));
    assert!(err.contains("already exists; pass --force"), "{err}");
    assert_eq!(fs::read(&key).unwrap(), before);
    ok(airgap().arg("keygen").arg("-o").arg(&key).arg("--force"));
    assert_ne!(fs::read(&key).unwrap(), before);
}

/// The header of the largest entry, found by reading the archive's own tar headers.
fn largest_blob(bytes: &[u8]) -> airgap::tar::TarHeader {
    let mut tar = airgap::tar::TarReader::new(bytes, airgap::tar::Strictness::Strict);
    let mut best: Option<airgap::tar::TarHeader> = None;
    while let Some(h) = tar.next_header().unwrap() {
        if h.path.starts_with("blobs/") && best.as_ref().is_none_or(|b| h.size > b.size) {
            best = Some(h);
        }
    }
    best.unwrap()
}

#[test]
fn verify_failures_exit_nonzero_with_one_line() {
    let s = Setup::new(2048);
    let bundle = s.build("out.tar");
    let bytes = fs::read(&bundle).unwrap();

    ok(airgap().arg("keygen").arg("-o").arg(s.path("other.key")));
    let err = fails(
        airgap()
            .args(["bundle", "verify"])
            .arg(&bundle)
            .arg("--pub")
            .arg(s.path("other.pub")),
    );
    assert!(err.contains("is not signed by key"), "{err}");

    let cut = s.path("cut.tar");
    fs::write(&cut, &bytes[..bytes.len() - 2000]).unwrap();
    assert!(fails(&mut s.verify(&cut)).contains("truncated"));

    let flipped = s.path("flipped.tar");
    let mut m = bytes.clone();
    let blob = largest_blob(&bytes);
    m[(blob.data_offset + blob.size / 2) as usize] ^= 0x40;
    fs::write(&flipped, m).unwrap();
    let err = fails(&mut s.verify(&flipped));
    assert!(
        err.contains(&format!("entry {} has sha256", blob.path))
            && err.contains("the content was altered"),
        "{err}"
    );

    let err = fails(
        airgap()
            .args(["bundle", "verify"])
            .arg(s.path("nope.tar"))
            .arg("--pub")
            .arg(s.public()),
    );
    assert!(err.contains("nope.tar does not exist"), "{err}");
    let err = fails(
        airgap()
            .args(["bundle", "verify"])
            .arg(&bundle)
            .arg("--pub")
            .arg(s.key()),
    );
    assert!(err.contains("is not an ed25519 public key"), "{err}");

    // `-`: one pass over standard input; the same refusals, one line each.
    let piped = |input: &[u8]| {
        let mut cmd = airgap();
        cmd.args(["bundle", "verify", "-", "--pub"]).arg(s.public());
        common::registries::with_stdin(&mut cmd, input)
    };
    let out = piped(&bytes);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("-: OK, "));
    for (input, needle) in [
        (&bytes[..bytes.len() - 2000], "truncated".to_string()),
        (
            &fs::read(&flipped).unwrap()[..],
            format!("entry {} has sha256", blob.path),
        ),
    ] {
        let out = piped(input);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: the bundle on standard input failed verification")
                && stderr.contains(&needle),
            "{stderr}"
        );
    }
}

#[test]
fn bad_specs_and_packs_fail_naming_file_and_field_and_leave_nothing() {
    let s = Setup::new(1024);
    let out = s.path("bad.tar");
    let build = |spec: &std::path::Path| {
        let mut cmd = airgap();
        cmd.args(["bundle", "build", "-f"])
            .arg(spec)
            .arg("-o")
            .arg(&out)
            .arg("--key")
            .arg(s.key());
        cmd
    };
    let spec_text = fs::read_to_string(&s.fixture.spec).unwrap();
    let bad = s.path("bad.yaml");

    fs::write(&bad, spec_text.replace("  packs:", "  packz:")).unwrap();
    let err = fails(&mut build(&bad));
    assert!(
        err.contains("bad.yaml: spec: unknown field `packz`") && err.contains("line 6"),
        "{err}"
    );

    fs::write(
        &bad,
        spec_text.replace(
            "from: oci:layout:example.internal/platform/api:1.0",
            "from: docker://x",
        ),
    )
    .unwrap();
    let err = fails(&mut build(&bad));
    assert!(
        err.contains("bad.yaml: spec.images[0]") && err.contains("must start with `oci:`"),
        "{err}"
    );

    // A pack needs an image the spec does not provide: it is pulled from its registry, which
    // does not exist here.
    fs::write(&bad, spec_text.replace("    - ref: example.internal/platform/worker:1.0\n      from: oci:layout:example.internal/platform/worker:1.0\n", "")).unwrap();
    let err = fails(&mut build(&bad));
    assert!(
        err.contains(
            "pack packs/platform-core:1.2.0 needs example.internal/platform/worker:1.0: cannot reach registry example.internal"
        ),
        "{err}"
    );

    // An image the layout does not hold.
    fs::write(
        &bad,
        spec_text.replace(
            "from: oci:layout:example.internal/base/multi:2.1",
            "from: oci:layout:nothing:here",
        ),
    )
    .unwrap();
    let err = fails(&mut build(&bad));
    assert!(err.contains("no image named `nothing:here`"), "{err}");

    // pack.json with a missing field.
    let pack_json = s.path("packs/platform-core/pack.json");
    let good = fs::read_to_string(&pack_json).unwrap();
    fs::write(&pack_json, good.replace("\"displayName\"", "\"display\"")).unwrap();
    let err = fails(&mut build(&s.fixture.spec));
    assert!(
        err.contains("platform-core/pack.json: missing field `displayName`")
            && err.contains("line"),
        "{err}"
    );
    fs::write(&pack_json, &good).unwrap();

    // Pack names and versions become `packs/<name>:<version>` in every registry and a
    // directory on nodes: a name that is not one repository component is refused, so a pack
    // cannot write over another repository's tag (the pause image's, say).
    let long = "a".repeat(300);
    for (field, value) in [
        ("name", "x/../../registry.k8s.io/pause"),
        ("name", ".."),
        ("name", "%2e%2e"),
        ("name", "Platform-Core"),
        ("name", "/etc/passwd"),
        ("name", "packs/x"),
        ("name", long.as_str()),
        ("version", "1.2.0+build.7"),
    ] {
        let original = if field == "name" {
            "\"name\": \"platform-core\""
        } else {
            "\"version\": \"1.2.0\""
        };
        assert!(good.contains(original), "{good}");
        fs::write(
            &pack_json,
            good.replace(original, &format!("\"{field}\": \"{value}\"")),
        )
        .unwrap();
        let err = fails(&mut build(&s.fixture.spec));
        assert!(
            err.contains("platform-core/pack.json") && err.contains("is not"),
            "{value}: {err}"
        );
        assert!(
            !out.exists(),
            "{value}: a refused pack left {}",
            out.display()
        );
    }
    fs::write(&pack_json, &good).unwrap();

    // A corrupt blob in the source layout: refused while writing, and no partial output.
    s.build("good.tar"); // the untouched layout builds
    let mut largest = None;
    for entry in fs::read_dir(s.fixture.layout.join("blobs/sha256")).unwrap() {
        let p = entry.unwrap().path();
        let len = fs::metadata(&p).unwrap().len();
        if largest.as_ref().is_none_or(|(_, l)| len > *l) {
            largest = Some((p, len));
        }
    }
    let (blob, _) = largest.unwrap();
    let mut data = fs::read(&blob).unwrap();
    data[100] ^= 1;
    fs::write(&blob, data).unwrap();
    let err = fails(&mut build(&s.fixture.spec));
    assert!(err.contains("it changed or is corrupt"), "{err}");
    assert!(!out.exists(), "a failed build left {}", out.display());
    let leftovers: Vec<_> = fs::read_dir(s.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".airgap-build-")
        })
        .collect();
    assert!(leftovers.is_empty(), "work directories left behind");
}

#[test]
fn loose_private_key_permissions_are_refused() {
    let s = Setup::new(1024);
    fs::set_permissions(s.key(), fs::Permissions::from_mode(0o644)).unwrap();
    let err = fails(
        airgap()
            .args(["bundle", "build", "-f"])
            .arg(&s.fixture.spec)
            .arg("-o")
            .arg(s.path("o.tar"))
            .arg("--key")
            .arg(s.key()),
    );
    assert!(
        err.contains("readable by group or others") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!s.path("o.tar").exists());
}

#[test]
fn oci_archive_sources_are_read_in_place() {
    let s = Setup::new(4096);
    // Make an oci-archive of the fixture layout with GNU tar (directories, its own headers).
    let archive = s.path("layout.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&s.fixture.layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let spec = fs::read_to_string(&s.fixture.spec)
        .unwrap()
        .replace("from: oci:layout:", "from: oci-archive:layout.tar:");
    let spec_path = s.path("from-archive.yaml");
    fs::write(&spec_path, spec).unwrap();
    let a = s.build_spec(&spec_path, "from-archive.tar");
    let b = s.build("from-dir.tar");
    let (va, vb) = (index_of(&a), index_of(&b));
    assert_eq!(va["images"], vb["images"]);
    ok(&mut s.verify(&a));
}

/// `airgap … | head -1`: when the reader is gone, a command that prints ends the way `cat`
/// does (SIGPIPE), never with a panic. The reader is closed before the command starts, so the
/// first write meets a broken pipe every time.
#[test]
fn a_closed_pipe_on_stdout_ends_the_command_without_a_panic() {
    use std::os::fd::FromRawFd;
    use std::os::unix::process::ExitStatusExt;
    let s = Setup::new(1024);
    let bundle = s.build("b.tar");
    let mut fds = [0i32; 2];
    // SAFETY: pipe fills two fds we then own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fds[0] is the read end we own; closing it breaks the pipe.
    unsafe { libc::close(fds[0]) };
    // SAFETY: fds[1] is ours; the Stdio takes it over.
    let write_end = unsafe { std::process::Stdio::from_raw_fd(fds[1]) };
    let out = airgap()
        .args(["bundle", "inspect", "--json"])
        .arg(&bundle)
        .stdout(write_end)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {stderr}",
        out.status
    );
}

/// A containerd of the test's own (root, state and socket in a temporary directory), killed
/// when dropped.
struct Containerd {
    child: std::process::Child,
    socket: std::path::PathBuf,
}

impl Containerd {
    fn start(dir: &std::path::Path) -> Containerd {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\n[grpc]\n  address = \"{}\"\n",
                dir.join("root").display(),
                dir.join("state").display(),
                socket.display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("containerd")
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("containerd");
        let c = Containerd { child, socket };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !c.ctr(&["version"]).status.success() {
            assert!(
                std::time::Instant::now() < deadline,
                "containerd did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        c
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", "airgap-test"])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ctr_image_import_takes_every_image_of_a_bundle_and_no_pack() {
    let setup = Setup::new(4 << 10);
    let bundle = setup.build("bundle.tar");
    let containerd = Containerd::start(&setup.path("containerd"));
    let bundle_arg = bundle.display().to_string();
    let out = containerd.ctr(&["images", "import", &bundle_arg]);
    assert!(
        out.status.success(),
        "ctr image import failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&containerd.ctr(&["images", "ls", "-q"]).stdout)
        .lines()
        .map(str::to_string)
        .collect::<std::collections::BTreeSet<_>>();
    let index: serde_json::Value = serde_json::from_slice(
        &ok(airgap().args(["bundle", "inspect", "--json"]).arg(&bundle)).into_bytes(),
    )
    .unwrap();
    let images: std::collections::BTreeSet<String> = index["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, images, "ctr holds exactly the bundle's images");
    // Unpacked, so a container could start from them.
    for image in &images {
        let out = containerd.ctr(&["images", "check", &format!("name=={image}")]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("complete"), "{image}: {text}");
    }
}

/// `--json` on build and verify: one document on standard output that validates against its
/// schema in docs/json (a delta build's base included), and nothing there when the command fails.
#[test]
fn build_and_verify_json_follow_their_schemas_and_a_failure_prints_none() {
    let s = Setup::new(4096);
    let out = s.path("json.tar");
    let built = common::json_checked(
        "bundle-build",
        ok(s.build_command(&s.fixture.spec, &out).arg("--json")).as_bytes(),
    );
    assert_eq!(
        built["files"],
        serde_json::json!([out.display().to_string()])
    );
    let claims = index_of(&out);
    assert_eq!(built["entries"], claims["entries"]);
    assert_eq!(built["base"], serde_json::Value::Null);

    let verified =
        common::json_checked("bundle-verify", ok(s.verify(&out).arg("--json")).as_bytes());
    assert_eq!(verified["signer"], claims["signers"][0]);
    assert_eq!(verified["entries"], claims["entries"]);
    let piped = s
        .verify(std::path::Path::new("-"))
        .arg("--json")
        .stdin(std::fs::File::open(&out).unwrap())
        .output()
        .unwrap();
    assert!(piped.status.success());
    let piped = common::json_checked("bundle-verify", &piped.stdout);
    assert_eq!(piped["bundle"], "-");
    assert_eq!(piped["bytes"], verified["bytes"]);

    // A delta against the bundle just built names its base.
    let delta = s.path("delta.tar");
    let built = common::json_checked(
        "bundle-build",
        ok(s.build_command(&s.fixture.spec, &delta)
            .arg("--since")
            .arg(&out)
            .arg("--json"))
        .as_bytes(),
    );
    assert_eq!(built["base"]["version"], "4.5.0", "{built}");
    assert!(
        built["base"]["expectedBlobs"].as_u64().unwrap() > 0,
        "{built}"
    );

    // Tampered: verification fails, non-zero, and standard output stays empty.
    let mut bytes = std::fs::read(&out).unwrap();
    let last = bytes.len() - 2048;
    bytes[last] ^= 0x01;
    let tampered = s.path("tampered.tar");
    std::fs::write(&tampered, bytes).unwrap();
    let failed = s.verify(&tampered).arg("--json").output().unwrap();
    assert!(!failed.status.success());
    assert!(
        failed.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&failed.stdout)
    );
    assert!(String::from_utf8_lossy(&failed.stderr).starts_with("error: "));
}

/// `bundle sbom`: CycloneDX 1.5 and SPDX 2.3 documents of a verified bundle, valid for the
/// formats' own validators, listing every digest bundle.json names and every node binary a
/// pack carries; a bundle that does not verify gets none.
#[test]
fn the_sbom_lists_every_digest_and_binary_and_validates_in_both_formats() {
    let s = Setup::new(4096);
    // A node binary in the k8s pack: the SBOM names it with its sha256.
    let bin = s.path("packs/kubernetes/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let kubelet = b"#!/bin/sh\n# a stand-in kubelet for the SBOM test\nexit 0\n";
    std::fs::write(bin.join("kubelet"), kubelet).unwrap();
    let bundle = s.build("sbom.tar");
    let index = index_of(&bundle);
    let mut digests: Vec<String> = Vec::new();
    for image in index["images"].as_array().unwrap() {
        digests.push(image["digest"].as_str().unwrap().into());
    }
    for pack in index["packs"].as_array().unwrap() {
        digests.push(pack["digest"].as_str().unwrap().into());
    }
    let archive =
        airgap::BundleArchive::open(&bundle, &airgap::PublicKey::load(&s.public()).unwrap())
            .unwrap();
    for entry in &archive.verified().index().entries {
        digests.push(entry.sha256.to_string());
    }
    let kubelet_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(kubelet));
    for format in ["cyclonedx", "spdx"] {
        let out = s.path(&format!("sbom.{format}.json"));
        ok(airgap()
            .args(["bundle", "sbom"])
            .arg(&bundle)
            .arg("--pub")
            .arg(s.public())
            .args(["--format", format, "-o"])
            .arg(&out));
        common::assert_valid_sbom(format, &out);
        let text = std::fs::read_to_string(&out).unwrap();
        for digest in &digests {
            let hex = digest.split_once(':').unwrap().1;
            assert!(text.contains(hex), "{format} does not list {digest}");
        }
        assert!(
            text.contains(&kubelet_sha),
            "{format} does not list bin/kubelet"
        );
        let signer = index["signers"][0].as_str().unwrap();
        assert!(text.contains(signer), "{format} does not name the signer");
    }

    // bundle.json altered (its signature no longer matches): no SBOM, one line, nothing
    // written.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = 512 + 64;
    bytes[at] ^= 0x01;
    let tampered = s.path("tampered.tar");
    std::fs::write(&tampered, bytes).unwrap();
    let out = s.path("tampered.json");
    // `airgap bundle sbom` of the tampered copy, which must fail with one line.
    let refused = || {
        fails(
            airgap()
                .args(["bundle", "sbom"])
                .arg(&tampered)
                .arg("--pub")
                .arg(s.public())
                .arg("-o")
                .arg(&out),
        )
    };
    let err = refused();
    assert!(err.starts_with("error: "), "{err}");
    assert!(!out.exists());

    // An image config altered in place (bundle.json still verifies): the SBOM reads it for the
    // platform, so it refuses instead of listing what it could not check.
    let first = &archive.verified().index().images[0];
    let manifest = archive.locate(&first.digest.blob_path()).unwrap();
    let mut bytes = std::fs::read(&bundle).unwrap();
    let start = manifest.data_offset as usize;
    let manifest: serde_json::Value =
        serde_json::from_slice(&bytes[start..start + manifest.record.size as usize]).unwrap();
    let config: airgap::Digest = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let config = archive.locate(&config.blob_path()).unwrap();
    bytes[config.data_offset as usize] ^= 0x01;
    std::fs::write(&tampered, bytes).unwrap();
    let err = refused();
    assert!(err.contains("sha256") || err.contains("digest"), "{err}");
    assert!(!out.exists());
}
