//! Running kubeadm and kubectl when the node has them. Neither can be installed on the test
//! machines; the tests put stand-ins on PATH that record what they were given.
//!
//! kubeadm's own output is the record of a cluster: `etc/kubernetes/admin.conf` exists only
//! once `kubeadm init` succeeded, so a re-run never inits twice, and `status` reports a
//! cluster only when it is there.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::host::Host;
use crate::layout::NodeLayout;

/// What the kubeadm step found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterInit {
    /// `kubeadm init` ran now and succeeded.
    Initialized { kubeadm: PathBuf },
    /// `admin.conf` was already there: the cluster exists; nothing was run.
    AlreadyInitialized,
    /// No `kubeadm` on PATH: the configuration is rendered and nothing else happened.
    KubeadmMissing,
}

impl ClusterInit {
    /// What the node shows without running anything: a cluster exists once kubeadm wrote
    /// `admin.conf`.
    pub fn observed(layout: &NodeLayout) -> Self {
        if layout.admin_kubeconfig().exists() {
            ClusterInit::AlreadyInitialized
        } else {
            ClusterInit::KubeadmMissing
        }
    }
}

/// A program the installer ran (kubeadm, kubectl) that did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error("running {what} ({})", program.display())]
    Spawn {
        what: &'static str,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {}", log.display())]
    Log {
        log: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} ({}) failed ({status}): {last_line}", program.display())]
    Failed {
        what: &'static str,
        program: PathBuf,
        status: std::process::ExitStatus,
        last_line: String,
        log: PathBuf,
    },
    #[error("{} exited 0 but left no {} (output in {})", program.display(), expected.display(), log.display())]
    NoOutput {
        program: PathBuf,
        expected: PathBuf,
        log: PathBuf,
    },
}

/// Which `kubeadm upgrade` a node runs: the first control-plane node upgrades the cluster
/// (`apply`), the others their own static pods and kubelet configuration (`node`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeRole {
    Apply,
    Node,
}

/// What the kubeadm step of an upgrade did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterUpgrade {
    /// `kubeadm upgrade apply|node` ran and succeeded.
    Upgraded {
        role: UpgradeRole,
        version: String,
    },
    /// No cluster on this node (`admin.conf`), or no kubeadm: nothing to upgrade.
    NoCluster,
    KubeadmMissing,
}

/// `kubeadm upgrade apply vVERSION --yes` or `kubeadm upgrade node` on a node that runs a
/// control plane. kubeadm is the new release's (the runtime phase installed it); its output
/// goes to `kubeadm.log`.
pub fn upgrade(
    layout: &NodeLayout,
    host: &dyn Host,
    kubeadm: Option<PathBuf>,
    role: UpgradeRole,
    version: &str,
) -> Result<ClusterUpgrade, ProgramError> {
    if !layout.admin_kubeconfig().exists() {
        return Ok(ClusterUpgrade::NoCluster);
    }
    let Some(kubeadm) = kubeadm else {
        return Ok(ClusterUpgrade::KubeadmMissing);
    };
    let version = format!("v{}", version.trim_start_matches('v'));
    let mut args = vec!["upgrade".to_string()];
    match role {
        UpgradeRole::Apply => args.extend(["apply".into(), version.clone(), "--yes".into()]),
        UpgradeRole::Node => args.push("node".into()),
    }
    if layout.root() != Path::new("/") {
        args.push("--rootfs".into());
        args.push(layout.root().display().to_string());
    }
    let what = match role {
        UpgradeRole::Apply => "kubeadm upgrade apply",
        UpgradeRole::Node => "kubeadm upgrade node",
    };
    run_logged(layout, host, &kubeadm, &args, what, "kubeadm.log")?;
    Ok(ClusterUpgrade::Upgraded { role, version })
}

/// `kubeadm join` (a control-plane join) with the rendered `JoinConfiguration`, unless this
/// node already runs its control plane (`admin.conf`) or has no kubeadm.
pub fn join(
    layout: &NodeLayout,
    host: &dyn Host,
    kubeadm: Option<PathBuf>,
) -> Result<ClusterInit, ProgramError> {
    let args = kubeadm_args(layout, "join", &layout.kubeadm_join_config());
    run_kubeadm(layout, host, kubeadm, &args, "kubeadm join")
}

/// The arguments `kubeadm init` is run with.
pub fn init_args(layout: &NodeLayout) -> Vec<String> {
    kubeadm_args(layout, "init", &layout.kubeadm_config())
}

/// `kubeadm SUBCOMMAND --config FILE`. Paths are the node's own; when the root is not `/`,
/// `--rootfs` makes kubeadm chroot into it first, so the same paths resolve there.
fn kubeadm_args(layout: &NodeLayout, subcommand: &str, config: &Path) -> Vec<String> {
    let mut args = vec![subcommand.to_string()];
    if layout.root() != Path::new("/") {
        args.push("--rootfs".into());
        args.push(layout.root().display().to_string());
    }
    args.push("--config".into());
    args.push(layout.node_path(config).display().to_string());
    args
}

/// `kubeadm init` with the rendered configuration, unless the cluster already exists or the
/// node has no kubeadm (the bundle's, else PATH's). Output goes to
/// `var/log/airgap/kubeadm.log`.
pub fn init(
    layout: &NodeLayout,
    host: &dyn Host,
    kubeadm: Option<PathBuf>,
) -> Result<ClusterInit, ProgramError> {
    run_kubeadm(layout, host, kubeadm, &init_args(layout), "kubeadm init")
}

/// Runs kubeadm with `args` unless `admin.conf` shows a control plane already runs here or
/// there is no kubeadm; success means kubeadm wrote `admin.conf`.
fn run_kubeadm(
    layout: &NodeLayout,
    host: &dyn Host,
    kubeadm: Option<PathBuf>,
    args: &[String],
    what: &'static str,
) -> Result<ClusterInit, ProgramError> {
    if layout.admin_kubeconfig().exists() {
        return Ok(ClusterInit::AlreadyInitialized);
    }
    let Some(kubeadm) = kubeadm else {
        return Ok(ClusterInit::KubeadmMissing);
    };
    let log = run_logged(layout, host, &kubeadm, args, what, "kubeadm.log")?;
    if !layout.admin_kubeconfig().exists() {
        return Err(ProgramError::NoOutput {
            program: kubeadm,
            expected: layout.admin_kubeconfig(),
            log,
        });
    }
    Ok(ClusterInit::Initialized { kubeadm })
}

/// `kubectl apply` of every platform manifest, namespaces first (files apply in path order).
/// `None` when the node has no kubectl.
pub fn apply_manifests(
    layout: &NodeLayout,
    host: &dyn Host,
    kubectl: Option<PathBuf>,
) -> Result<Option<PathBuf>, ProgramError> {
    let Some(kubectl) = kubectl else {
        return Ok(None);
    };
    let args = vec![
        "--kubeconfig".to_string(),
        layout.admin_kubeconfig().display().to_string(),
        "apply".into(),
        "--server-side".into(),
        "--field-manager=airgap".into(),
        "--recursive".into(),
        "--filename".into(),
        layout.manifests_dir().display().to_string(),
    ];
    run_logged(
        layout,
        host,
        &kubectl,
        &args,
        "kubectl apply",
        "kubectl.log",
    )?;
    Ok(Some(kubectl))
}

/// Runs `program`, appending the command line and its output to `log` under the log
/// directory; returns the log's path.
fn run_logged(
    layout: &NodeLayout,
    host: &dyn Host,
    program: &Path,
    args: &[String],
    what: &'static str,
    log: &str,
) -> Result<PathBuf, ProgramError> {
    let log_path = layout.log_dir().join(log);
    let log_error = |source| ProgramError::Log {
        log: log_path.clone(),
        source,
    };
    std::fs::create_dir_all(layout.log_dir()).map_err(log_error)?;
    let output = host
        .run(program, args)
        .map_err(|source| ProgramError::Spawn {
            what,
            program: program.to_path_buf(),
            source,
        })?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(log_error)?;
    let header = format!("$ {} {}\n", program.display(), args.join(" "));
    for chunk in [header.as_bytes(), &output.stdout, &output.stderr] {
        file.write_all(chunk).map_err(log_error)?;
    }
    if output.status.success() {
        return Ok(log_path);
    }
    let last_line = String::from_utf8_lossy(&output.stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string();
    Err(ProgramError::Failed {
        what,
        program: program.to_path_buf(),
        status: output.status,
        last_line,
        log: log_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::RecordingHost;

    #[test]
    fn upgrade_runs_apply_on_the_first_node_node_on_the_others_and_nothing_without_a_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let layout = NodeLayout::new(dir.path());
        let host = RecordingHost::new(&[]);
        let kubeadm = PathBuf::from("/fake/bin/kubeadm");
        let run = |role| upgrade(&layout, &host, Some(kubeadm.clone()), role, "1.35.0");

        // No admin.conf: no control plane runs here, nothing is run.
        assert_eq!(run(UpgradeRole::Apply).unwrap(), ClusterUpgrade::NoCluster);
        assert!(host.calls().is_empty());

        std::fs::create_dir_all(layout.admin_kubeconfig().parent().unwrap()).unwrap();
        std::fs::write(layout.admin_kubeconfig(), "apiVersion: v1\n").unwrap();
        assert_eq!(
            upgrade(&layout, &host, None, UpgradeRole::Node, "1.35.0").unwrap(),
            ClusterUpgrade::KubeadmMissing
        );
        let rootfs = ["--rootfs".to_string(), dir.path().display().to_string()];
        assert!(matches!(
            run(UpgradeRole::Apply).unwrap(),
            ClusterUpgrade::Upgraded { role: UpgradeRole::Apply, ref version } if version == "v1.35.0"
        ));
        run(UpgradeRole::Node).unwrap();
        let calls = host.calls();
        let args: Vec<Vec<String>> = calls.iter().map(|c| c.args.clone()).collect();
        let expect = |head: &[&str]| {
            let mut v: Vec<String> = head.iter().map(|s| s.to_string()).collect();
            v.extend(rootfs.iter().cloned());
            v
        };
        assert_eq!(
            args,
            [
                expect(&["upgrade", "apply", "v1.35.0", "--yes"]),
                expect(&["upgrade", "node"])
            ]
        );
        assert!(calls.iter().all(|c| c.program == kubeadm));

        // kubeadm failing fails the step with its last line and the log.
        host.fail("kubeadm");
        let err = run(UpgradeRole::Node).unwrap_err().to_string();
        assert!(
            err.contains("kubeadm upgrade node") && err.contains("failing as the test asked"),
            "{err}"
        );
    }
}
