//! The dependency check CI runs (`airgap-testkit advisories`), on the project's real lockfiles:
//! it passes with the recorded ignores against the advisory snapshot in `../shared`, and fails,
//! naming the crate, on an advisory planted for a crate that `Cargo.lock` really holds.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check(db: &Path, ignores: &Path) -> (bool, String) {
    let root = repo();
    let out = Command::new(env!("CARGO_BIN_EXE_airgap-testkit"))
        .arg("advisories")
        .arg(db)
        .arg(ignores)
        .arg(root.join("Cargo.lock"))
        .arg(root.join("fuzz/libfuzzer/Cargo.lock"))
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_real_tree_passes_with_its_recorded_ignores_and_a_planted_advisory_fails() {
    let shared = repo().join("../shared/advisory-db");
    let ignores = repo().join(".ci/advisories.ignore");
    assert!(
        shared.is_dir(),
        "the advisory snapshot is missing: {}",
        shared.display()
    );
    let (ok, text) = check(&shared, &ignores);
    assert!(ok, "{text}");
    assert!(text.contains("0 not recorded"), "{text}");

    // One advisory, for serde (which Cargo.lock holds), patched only in a release that does
    // not exist: it applies.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    std::fs::create_dir_all(db.join("crates/serde")).unwrap();
    std::fs::write(
        db.join("crates/serde/RUSTSEC-2099-0001.md"),
        "```toml\n[advisory]\nid = \"RUSTSEC-2099-0001\"\npackage = \"serde\"\ndate = \"2099-01-01\"\n\n[versions]\npatched = [\">= 99.0.0\"]\n```\n\n# A planted advisory\n",
    )
    .unwrap();
    let (ok, text) = check(&db, &ignores);
    assert!(!ok, "{text}");
    assert!(
        text.contains("RUSTSEC-2099-0001 serde") && text.contains("NOT RECORDED"),
        "{text}"
    );
    // The rsa record no longer applies against this database: said, not silently kept.
    assert!(text.contains("RUSTSEC-2023-0071: recorded"), "{text}");
}
