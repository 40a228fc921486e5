//! Running kubeadm and kubectl when the node has them. Neither can be installed on the test
//! machines; the tests put stand-ins on PATH that record what they were given.
//!
//! kubeadm's own output is the record of a cluster: `etc/kubernetes/admin.conf` exists only
//! once `kubeadm init` succeeded, so a re-run never inits twice, and `status` reports a
//! cluster only when it is there.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::etcd::binary::find_on_path;
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

/// The arguments `kubeadm` is run with. Paths are the node's own; when the root is not `/`,
/// `--rootfs` makes kubeadm chroot into it first, so the same paths resolve there.
pub fn init_args(layout: &NodeLayout) -> Vec<String> {
    let mut args = vec!["init".to_string()];
    if layout.root() != Path::new("/") {
        args.push("--rootfs".into());
        args.push(layout.root().display().to_string());
    }
    args.push("--config".into());
    args.push(
        layout
            .node_path(&layout.kubeadm_config())
            .display()
            .to_string(),
    );
    args
}

/// `kubeadm init` with the rendered configuration, unless the cluster already exists or the
/// node has no kubeadm. Output goes to `var/log/airgap/kubeadm.log`.
pub async fn init(layout: &NodeLayout) -> Result<ClusterInit, String> {
    if layout.admin_kubeconfig().exists() {
        return Ok(ClusterInit::AlreadyInitialized);
    }
    let Some(kubeadm) = find_on_path("kubeadm") else {
        return Ok(ClusterInit::KubeadmMissing);
    };
    run_logged(
        layout,
        &kubeadm,
        &init_args(layout),
        "kubeadm init",
        "kubeadm.log",
    )
    .await?;
    if !layout.admin_kubeconfig().exists() {
        return Err(format!(
            "{} exited 0 but left no {}; see {}",
            kubeadm.display(),
            layout.admin_kubeconfig().display(),
            layout.log_dir().join("kubeadm.log").display()
        ));
    }
    Ok(ClusterInit::Initialized { kubeadm })
}

/// `kubectl apply` of every platform manifest, namespaces first (files apply in path order).
pub async fn apply_manifests(layout: &NodeLayout) -> Result<PathBuf, String> {
    let kubectl = find_on_path("kubectl").ok_or(
        "the cluster exists but kubectl is not on PATH to apply the platform manifests; install kubectl (it ships with kubeadm) and re-run",
    )?;
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
    run_logged(layout, &kubectl, &args, "kubectl apply", "kubectl.log").await?;
    Ok(kubectl)
}

async fn run_logged(
    layout: &NodeLayout,
    program: &Path,
    args: &[String],
    what: &str,
    log: &str,
) -> Result<(), String> {
    let log_path = layout.log_dir().join(log);
    std::fs::create_dir_all(layout.log_dir()).map_err(|e| e.to_string())?;
    let output = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("running {}: {e}", program.display()))?;
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .await
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let header = format!("$ {} {}\n", program.display(), args.join(" "));
    for chunk in [header.as_bytes(), &output.stdout, &output.stderr] {
        file.write_all(chunk)
            .await
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
    }
    if output.status.success() {
        return Ok(());
    }
    let last = String::from_utf8_lossy(&output.stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string();
    Err(format!(
        "{what} ({}) failed ({}): {last}; full output in {}",
        program.display(),
        output.status,
        log_path.display()
    ))
}
