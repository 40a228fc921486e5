//! Phase time: every node's chrony follows the data centre's NTP servers (`spec.timeServers`
//! in install.yaml). etcd leases, certificate validity and join-token expiry all read the
//! clock, and an air-gapped node has no public pool to fall back on.
//!
//! The phase writes one chrony sources file (Debian's chrony reads `sources.d`), asks a
//! running chronyd to reload it, and removes the file again when install.yaml no longer
//! names servers. It is written against [`PhaseEnv`], the narrow phase environment, and is
//! the model for a new phase: this file and one line in [`CATALOGUE`](super::CATALOGUE).

use std::path::PathBuf;

use super::spec::{Check, InUpgrade, OwnedPath, PhaseEnv, PhaseSpec};
use crate::audit::Outcome;
use crate::config::InstallConfig;
use crate::error::PhaseError;
use crate::files::{write_if_changed, PUBLIC};
use crate::layout::NodeLayout;
use crate::phase::{Phase, Scope};

pub const PHASE: Phase = Phase::named("time");

pub(super) const SPEC: PhaseSpec = PhaseSpec {
    phase: PHASE,
    about: "chrony follows the data centre's NTP servers (spec.timeServers)",
    install: Some(Scope::Node),
    upgrade: InUpgrade::Then(Scope::Node),
    preflight: false,
    run: |ctx, _journal, _workflow| Box::pin(std::future::ready(run(ctx))),
    owns,
    check: Some(check),
};

/// The chrony sources file this phase owns.
pub fn sources_file(layout: &NodeLayout) -> PathBuf {
    layout.root().join("etc/chrony/sources.d/airgap.sources")
}

fn owns(layout: &NodeLayout) -> Vec<OwnedPath> {
    vec![OwnedPath::config(sources_file(layout))]
}

/// The file's text for `config`'s servers; `None` when it names none.
fn render(config: &InstallConfig) -> Option<String> {
    let servers = &config.spec.time_servers;
    if servers.is_empty() {
        return None;
    }
    let mut text = String::from(
        "# Written by airgap from install.yaml's spec.timeServers; `airgap install` rewrites it.\n",
    );
    for server in servers {
        text.push_str(&format!("server {server} iburst\n"));
    }
    Some(text)
}

pub(super) fn run(env: &dyn PhaseEnv) -> Result<String, PhaseError> {
    let path = sources_file(env.layout());
    let shown = path.display().to_string();
    let Some(text) = render(env.config()) else {
        return match std::fs::remove_file(&path) {
            Ok(()) => {
                env.audit("time.sources", &shown, Outcome::Done);
                Ok(format!(
                    "no time servers in install.yaml; removed {shown}{}",
                    reload(env)
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok("no time servers in install.yaml; the node keeps its own time source".into())
            }
            Err(source) => Err(PhaseError::Io {
                what: "removing",
                path,
                source,
            }),
        };
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(PhaseError::io("creating", dir))?;
    }
    let changed = write_if_changed(&path, text.as_bytes(), PUBLIC)
        .map_err(PhaseError::io("writing", &path))?;
    env.reached(PHASE);
    let servers = env.config().spec.time_servers.len();
    if !changed {
        return Ok(format!("{servers} time servers; unchanged"));
    }
    env.audit("time.sources", &shown, Outcome::Done);
    Ok(format!("{servers} time servers{}", reload(env)))
}

/// Asks a running chronyd to re-read its sources. The file is what lasts: a chronyd that is
/// not running reads it when it starts, so a failed reload is reported, not fatal.
fn reload(env: &dyn PhaseEnv) -> String {
    let Some(chronyc) = env.host().find_program("chronyc") else {
        return "; chronyc not found: chronyd reads them when it starts".into();
    };
    match env
        .host()
        .run(&chronyc, &["reload".into(), "sources".into()])
    {
        Ok(out) if out.status.success() => "; chronyd reloaded".into(),
        Ok(out) => format!(
            "; chronyd did not reload ({}): it reads them when it starts",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("; chronyc could not run ({e}): chronyd reads them when it starts"),
    }
}

/// `airgap status`: the sources file says what install.yaml says.
fn check(layout: &NodeLayout, config: &InstallConfig) -> Check {
    let path = sources_file(layout);
    let found = std::fs::read_to_string(&path).ok();
    match (render(config), found) {
        (None, None) => Check {
            healthy: true,
            detail: "no time servers configured".into(),
        },
        (Some(want), Some(have)) if want == have => Check {
            healthy: true,
            detail: format!(
                "chrony follows {}",
                config
                    .spec
                    .time_servers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        _ => Check {
            healthy: false,
            detail: format!(
                "{} does not match install.yaml's spec.timeServers; re-run `airgap install`",
                path.display()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::spec::tests::FakeEnv;

    fn install_yaml(servers: &[&str]) -> String {
        let mut yaml = String::from(
            "apiVersion: airgap/v1\nkind: Installation\nmetadata:\n  name: mgmt\nspec:\n  mode: standalone\n  fqdn: mgmt.example.internal\n  nodes:\n    - name: node1\n      address: 10.0.0.10\n",
        );
        if !servers.is_empty() {
            yaml.push_str("  timeServers:\n");
            for s in servers {
                yaml.push_str(&format!("    - {s}\n"));
            }
        }
        yaml
    }

    fn reloads(env: &FakeEnv) -> usize {
        env.host
            .calls()
            .iter()
            .filter(|c| c.program.ends_with("chronyc") && c.args == ["reload", "sources"])
            .count()
    }

    #[test]
    fn writes_the_servers_reloads_chrony_once_and_converges() {
        let env = FakeEnv::new(
            &install_yaml(&["10.0.0.1", "ntp.dc1.internal"]),
            &["chronyc"],
        );
        let summary = run(&env).unwrap();
        assert_eq!(summary, "2 time servers; chronyd reloaded");
        let text = std::fs::read_to_string(sources_file(&env.layout)).unwrap();
        assert!(text.ends_with("server 10.0.0.1 iburst\nserver ntp.dc1.internal iburst\n"));
        assert_eq!(reloads(&env), 1);
        assert_eq!(env.audited.lock().unwrap().len(), 1);
        assert!(check(&env.layout, &env.config).healthy);

        // A re-run changes nothing and bothers nobody.
        assert_eq!(run(&env).unwrap(), "2 time servers; unchanged");
        assert_eq!(reloads(&env), 1);
        assert_eq!(env.audited.lock().unwrap().len(), 1);
    }

    #[test]
    fn servers_dropped_from_install_yaml_remove_the_file() {
        let mut env = FakeEnv::new(&install_yaml(&["10.0.0.1"]), &["chronyc"]);
        run(&env).unwrap();
        env.config = InstallConfig::parse(&install_yaml(&[])).unwrap();
        let summary = run(&env).unwrap();
        assert!(
            summary.starts_with("no time servers in install.yaml; removed"),
            "{summary}"
        );
        assert!(!sources_file(&env.layout).exists());
        assert_eq!(reloads(&env), 2);
        assert!(check(&env.layout, &env.config).healthy);
        assert_eq!(
            run(&env).unwrap(),
            "no time servers in install.yaml; the node keeps its own time source"
        );
    }

    #[test]
    fn a_chronyd_that_cannot_reload_is_reported_not_fatal() {
        let env = FakeEnv::new(&install_yaml(&["10.0.0.1"]), &["chronyc"]);
        env.host.fail("chronyc");
        let summary = run(&env).unwrap();
        assert!(
            summary.contains("chronyd did not reload (chronyc: failing as the test asked)"),
            "{summary}"
        );
        assert!(sources_file(&env.layout).exists());

        let without = FakeEnv::new(&install_yaml(&["10.0.0.1"]), &[]);
        let summary = run(&without).unwrap();
        assert!(summary.contains("chronyc not found"), "{summary}");
        assert!(without.host.calls().is_empty());
    }

    #[test]
    fn status_flags_a_file_that_differs_from_install_yaml() {
        let env = FakeEnv::new(&install_yaml(&["10.0.0.1"]), &[]);
        let missing = check(&env.layout, &env.config);
        assert!(!missing.healthy && missing.detail.contains("re-run `airgap install`"));
        run(&env).unwrap();
        std::fs::write(sources_file(&env.layout), "server 192.0.2.66 iburst\n").unwrap();
        assert!(!check(&env.layout, &env.config).healthy);
    }

    #[test]
    fn a_server_cannot_smuggle_a_chrony_directive() {
        for bad in [
            "\"10.0.0.1 iburst\\nallow all\"",
            "\"ntp.example.internal maxdelay 9\"",
            "\"\"",
        ] {
            let err = airgap::error_chain::chain(
                &InstallConfig::parse(&install_yaml(&[bad])).unwrap_err(),
            );
            assert!(err.contains("spec.timeServers"), "{err}");
        }
    }

    /// The acceptance of the phase catalogue: declared once here, the phase is in the
    /// workflows, the rollback snapshot, reset and status without edits elsewhere.
    #[test]
    fn the_catalogue_carries_the_phase_everywhere() {
        use crate::workflow::Workflow;
        let env = FakeEnv::new(&install_yaml(&["10.0.0.1"]), &[]);
        let file = sources_file(&env.layout);
        for workflow in [Workflow::init(), Workflow::join(), Workflow::upgrade()] {
            let phases = workflow.phases();
            let at = phases.iter().position(|p| *p == PHASE).unwrap();
            // Before etcd: its clock matters from etcd's first lease.
            assert!(at < phases.iter().position(|p| *p == Phase::Etcd).unwrap());
        }
        assert!(crate::phases::rendered_paths(&env.layout).contains(&file));
        assert!(crate::phases::installed_paths(&env.layout).contains(&file));
        let checks = crate::phases::checks(&env.layout, &env.config);
        assert!(checks.iter().any(|(p, c)| *p == PHASE && !c.healthy));
        assert_eq!(crate::phases::spec(PHASE).map(|s| s.phase), Some(PHASE));
    }
}
