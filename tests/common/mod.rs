//! Shared by the end-to-end tests: running the built `airgap` binary and making fixtures.
#![allow(dead_code)]

pub mod node;
pub mod registries;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn airgap() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_airgap"));
    cmd.env_remove("SOURCE_DATE_EPOCH");
    // Builds without --cache must not write into the user's cache.
    cmd.env(
        "AIRGAP_CACHE_DIR",
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("airgap-cache"),
    );
    cmd
}

/// Whether a command succeeded, with its stderr when it did not.
pub fn succeeded(out: &Output) -> Result<(), String> {
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Runs and expects success, returning stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run airgap");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs and expects the failure contract: non-zero exit, exactly one line on stderr starting
/// with `error:`. Returns that line.
pub fn fails(cmd: &mut Command) -> String {
    let out: Output = cmd.output().expect("run airgap");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded but should have failed"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_string()
}

/// Where a node installed program `name` from the bundle's pack of `version`:
/// `var/lib/airgap/bin/<name>/<version>-<manifest digest prefix>/<name>`, the one such
/// directory there.
pub fn installed_binary(root: &Path, name: &str, version: &str) -> PathBuf {
    let dir = root.join("var/lib/airgap/bin").join(name);
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{version}-")))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{name} {version} under {}: {found:?}",
        dir.display()
    );
    found.remove(0).join(name)
}

/// Every file under `path` (or `path` itself, when it is a file) with its content: what
/// "nothing changed" and "nothing left behind" compare. Nothing there is an empty map.
pub fn snapshot(path: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else if p.exists() {
            let bytes = std::fs::read(&p).unwrap();
            out.insert(p, bytes);
        }
    }
    out
}

/// A fixture with a key pair: `root/bundle.yaml`, `root/k.key`, `root/k.pub`.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub fixture: testkit::Fixture,
}

impl Setup {
    pub fn new(layer_size: u64) -> Self {
        Self::with_options(layer_size, &testkit::FixtureOptions::default())
    }
    pub fn with_options(layer_size: u64, options: &testkit::FixtureOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixture = testkit::fixture_with(dir.path(), 7, layer_size, options).expect("fixture");
        ok(airgap()
            .arg("keygen")
            .arg("-o")
            .arg(dir.path().join("k.key")));
        Setup { dir, fixture }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn key(&self) -> PathBuf {
        self.path("k.key")
    }
    pub fn public(&self) -> PathBuf {
        self.path("k.pub")
    }

    /// The signed index of `bundle`, verified with this setup's key.
    pub fn index(&self, bundle: &Path) -> airgap::BundleIndex {
        airgap::BundleArchive::open(bundle, &airgap::PublicKey::load(&self.public()).unwrap())
            .unwrap()
            .verified()
            .index()
            .clone()
    }
    /// Builds `name` from the fixture spec (or `spec`), returning its path.
    pub fn build(&self, name: &str) -> PathBuf {
        self.build_spec(&self.fixture.spec, name)
    }
    pub fn build_spec(&self, spec: &Path, name: &str) -> PathBuf {
        let out = self.path(name);
        ok(&mut self.build_command(spec, &out));
        out
    }
    /// `airgap bundle build -f SPEC -o OUT --key k.key`, for tests that add to it.
    pub fn build_command(&self, spec: &Path, out: &Path) -> Command {
        let mut cmd = airgap();
        cmd.args(["bundle", "build", "-f"])
            .arg(spec)
            .arg("-o")
            .arg(out)
            .arg("--key")
            .arg(self.key());
        cmd
    }
    pub fn verify(&self, bundle: &Path) -> Command {
        let mut cmd = airgap();
        cmd.args(["bundle", "verify"])
            .arg(bundle)
            .arg("--pub")
            .arg(self.public());
        cmd
    }
}

/// The `--json` output of an airgap command, parsed, once it validated against its schema
/// `docs/json/<schema>.schema.json` with Debian's python3-jsonschema (a validator that owes
/// nothing to airgap's code).
pub fn json_checked(schema: &str, stdout: &[u8]) -> serde_json::Value {
    use std::io::Write;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema_file = repo.join("docs/json").join(format!("{schema}.schema.json"));
    assert!(schema_file.exists(), "no schema {}", schema_file.display());
    let mut child = Command::new("/usr/bin/python3")
        .arg(repo.join("scripts/validate-json.py"))
        .arg(&schema_file)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 (apt-get install python3-jsonschema)");
    child.stdin.take().unwrap().write_all(stdout).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{schema}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(stdout)
    );
    serde_json::from_slice(stdout).unwrap()
}

/// Asserts the SBOM at `file` is valid `format` (`cyclonedx` or `spdx`) by the format's own
/// validator (cyclonedx-python-lib, spdx-tools) in the venv `scripts/test.sh` makes, or
/// `AIRGAP_SBOM_PYTHON`.
pub fn assert_valid_sbom(format: &str, file: &Path) {
    let python = std::env::var("AIRGAP_SBOM_PYTHON")
        .unwrap_or_else(|_| "/var/tmp/airgap-sbom-venv/bin/python".into());
    let checked = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/validate-sbom.py"))
        .arg(format)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{python} (scripts/test.sh makes it): {e}"));
    assert!(
        checked.status.success(),
        "{format}: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
}
