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
