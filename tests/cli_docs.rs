//! Shell completions and man pages come from the CLI's own definition: every command is in
//! them, and a real completion shell and `man` read what is generated.

mod common;

use std::process::Command;

use common::{airgap, ok};

#[test]
fn completions_load_in_bash_and_complete_every_command() {
    let script = ok(airgap().args(["completion", "bash"]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airgap.bash");
    std::fs::write(&path, &script).unwrap();
    // bash sources it and the completion offers the commands after `airgap `.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && COMP_WORDS=(airgap '') COMP_CWORD=1 && _airgap airgap '' airgap && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offered = String::from_utf8_lossy(&out.stdout);
    for command in [
        "bundle", "registry", "install", "upgrade", "join", "status", "trust",
    ] {
        assert!(
            offered.lines().any(|l| l == command),
            "{command} not offered: {offered}"
        );
    }
    let out = airgap().args(["completion", "tcsh"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'tcsh'"));
}

#[test]
fn man_pages_cover_every_command_and_render() {
    let dir = tempfile::tempdir().unwrap();
    ok(airgap().arg("man").arg("--dir").arg(dir.path()));
    for page in [
        "airgap.1",
        "airgap-install.1",
        "airgap-registry-verify.1",
        "airgap-trust-rotate.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
    assert!(
        !dir.path().join("airgap-cluster-service.1").exists(),
        "a hidden command got a page"
    );
    let install = std::fs::read_to_string(dir.path().join("airgap-install.1")).unwrap();
    assert!(install.contains("skip\\-phases"), "{install}");

    // A real `man` finds and renders a page by name, with the command's whole reference.
    let manpath = tempfile::tempdir().unwrap();
    let man1 = manpath.path().join("man1");
    ok(airgap().arg("man").arg("--dir").arg(&man1));
    let out = Command::new("man")
        .args(["-P", "cat", "airgap-bundle-build"])
        .env("MANPATH", manpath.path())
        .env("MANWIDTH", "100")
        .output()
        .expect("man (apt-get install man-db)");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        page.contains("DESCRIPTION") && page.contains("delta"),
        "{page}"
    );
}

#[test]
fn the_binary_carries_the_licences_of_what_it_links() {
    let text = ok(airgap().arg("licenses"));
    for krate in ["ring ", "rustls ", "tokio ", "hyper ", "clap "] {
        assert!(
            text.lines().any(|l| l.starts_with(krate)),
            "{krate}is not listed"
        );
    }
    // ring's ISC terms and the MIT terms most crates are used under travel as text.
    assert!(text.contains("Permission is hereby granted, free of charge"));
    assert!(text.contains("ISC") || text.contains("Permission to use, copy, modify"));
}
