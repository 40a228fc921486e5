//! The containerd airgap runs on a node: its configuration and its service definition.
//!
//! What a stock containerd gets wrong on an air-gapped node, and this configuration sets:
//! the CRI plugin reads `certs.d` only when `registry.config_path` names it (so pulls by
//! original name reach the mirror); the default sandbox image (`registry.k8s.io/pause:3.6` on
//! 1.6) is not the one in the bundle, and every pod needs it; runc and the shim must be the
//! bundle's; cgroups are driven the way the kubelet drives them.

use std::path::{Path, PathBuf};

use airgap::BundleIndex;
use registry::mirror::toml_string;

use crate::layout::NodeLayout;
use crate::service::ServiceSpec;

/// The programs containerd is configured with.
#[derive(Debug, Clone)]
pub struct RuntimePrograms {
    pub containerd: PathBuf,
    pub runc: PathBuf,
    /// `containerd-shim-runc-v2`: containerd finds it on its PATH.
    pub shim: PathBuf,
    /// Where CNI plugins are, when the bundle carries them.
    pub cni_bin: Option<PathBuf>,
}

/// How cgroups are managed: systemd's way when the node runs systemd (what the rendered
/// `KubeletConfiguration` asks for), else cgroupfs (containers without an init system).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    Systemd,
    Cgroupfs,
}

impl CgroupDriver {
    pub fn of_this_host() -> Self {
        if Path::new("/run/systemd/system").is_dir() {
            CgroupDriver::Systemd
        } else {
            CgroupDriver::Cgroupfs
        }
    }
}

/// What this host lets containerd do, probed rather than assumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    pub cgroups: CgroupDriver,
    /// The host cannot lower OOM scores (root without CAP_SYS_RESOURCE: a container, a
    /// sandbox), so containerd must not try to give pod sandboxes their usual -998, or runc
    /// fails to start every pod ("can't get final child's PID from pipe").
    pub restrict_oom_score_adj: bool,
}

impl HostLimits {
    pub fn of_this_host() -> Self {
        HostLimits {
            cgroups: CgroupDriver::of_this_host(),
            restrict_oom_score_adj: !can_lower_oom_score(),
        }
    }
}

/// Tries to lower this process's `oom_score_adj` by one and puts it back (raising is always
/// allowed).
fn can_lower_oom_score() -> bool {
    let path = "/proc/self/oom_score_adj";
    let Some(current) = std::fs::read_to_string(path)
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
    else {
        return false;
    };
    if current <= -1000 {
        return true;
    }
    let lowered = std::fs::write(path, (current - 1).to_string()).is_ok();
    if lowered {
        let _ = std::fs::write(path, current.to_string());
    }
    lowered
}

/// The bundle's pause image, by its original name: the `k8s` pack's image whose repository
/// ends in `/pause`.
pub fn sandbox_image(index: &BundleIndex) -> Option<String> {
    index
        .packs
        .iter()
        .filter(|p| p.layer == "k8s")
        .flat_map(|p| &p.images)
        .find(|i| {
            let name = i.split('@').next().unwrap_or(i);
            let repo = name.rsplit_once(':').map_or(name, |(r, _)| r);
            repo.rsplit('/').next() == Some("pause")
        })
        .cloned()
}

/// `config.toml` (version 2, containerd 1.6 and 1.7). Pure: the same inputs give the same
/// bytes, so re-runs change nothing.
pub fn render_config(
    layout: &NodeLayout,
    programs: &RuntimePrograms,
    sandbox_image: &str,
    limits: HostLimits,
) -> String {
    let p = |path: &Path| toml_string(&path.display().to_string());
    let cni_bin = programs
        .cni_bin
        .as_deref()
        .map(p)
        .unwrap_or_else(|| toml_string("/opt/cni/bin"));
    format!(
        r#"# Written by airgap: the node's containerd. Changes are overwritten by `airgap install`.
version = 2
root = {root}
state = {state}

[grpc]
  address = {socket}

[plugins."io.containerd.grpc.v1.cri"]
  # The bundle's pause image: pulled through the mirror like every other image.
  sandbox_image = {sandbox}
  restrict_oom_score_adj = {restrict_oom}

  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = {runc}
        SystemdCgroup = {systemd}

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {cni_bin}
    conf_dir = {cni_conf}

  [plugins."io.containerd.grpc.v1.cri".registry]
    # Without this the CRI plugin never reads certs.d: pulls would go upstream and fail.
    config_path = {certs}
"#,
        root = p(&layout.containerd_root()),
        state = p(&layout.containerd_state()),
        socket = p(&layout.containerd_socket()),
        sandbox = toml_string(sandbox_image),
        runc = p(&programs.runc),
        systemd = limits.cgroups == CgroupDriver::Systemd,
        restrict_oom = limits.restrict_oom_score_adj,
        cni_bin = cni_bin,
        cni_conf = p(&layout.cni_conf_dir()),
        certs = p(&layout.containerd_certs_dir()),
    )
}

/// What the agent runs: containerd with `config` (as written to the layout's path), the
/// shim's and runc's directories first on its PATH. The agent restarts a service whose
/// definition changed, not one whose configuration file did, so the definition carries the
/// configuration's digest.
pub fn service(layout: &NodeLayout, programs: &RuntimePrograms, config: &str) -> ServiceSpec {
    use sha2::Digest as _;
    let mut path: Vec<String> = Vec::new();
    for dir in [programs.shim.parent(), programs.runc.parent()]
        .into_iter()
        .flatten()
    {
        let dir = dir.display().to_string();
        if !path.contains(&dir) {
            path.push(dir);
        }
    }
    path.push("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    ServiceSpec {
        name: "containerd".into(),
        program: programs.containerd.clone(),
        args: vec![
            "--config".into(),
            layout.containerd_config().display().to_string(),
        ],
        env: [
            ("PATH".to_string(), path.join(":")),
            (
                "AIRGAP_CONFIG_SHA256".to_string(),
                hex::encode(sha2::Sha256::digest(config.as_bytes())),
            ),
        ]
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_sets_what_a_stock_containerd_gets_wrong() {
        let layout = NodeLayout::new("/srv/node");
        let programs = RuntimePrograms {
            containerd: "/srv/node/var/lib/airgap/bin/containerd/1.34.2/containerd".into(),
            runc: "/srv/node/var/lib/airgap/bin/runc/1.34.2/runc".into(),
            shim: "/srv/node/var/lib/airgap/bin/containerd-shim-runc-v2/1.34.2/containerd-shim-runc-v2"
                .into(),
            cni_bin: None,
        };
        let text = render_config(
            &layout,
            &programs,
            "registry.k8s.io/pause:3.10.1",
            HostLimits {
                cgroups: CgroupDriver::Systemd,
                restrict_oom_score_adj: false,
            },
        );
        let config: toml::Table = text.parse().unwrap();
        let cri = &config["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(
            cri["registry"]["config_path"].as_str(),
            Some("/srv/node/etc/containerd/certs.d")
        );
        assert_eq!(
            cri["sandbox_image"].as_str(),
            Some("registry.k8s.io/pause:3.10.1")
        );
        let runc = &cri["containerd"]["runtimes"]["runc"]["options"];
        assert_eq!(runc["SystemdCgroup"].as_bool(), Some(true));
        assert_eq!(
            runc["BinaryName"].as_str(),
            Some(programs.runc.to_str().unwrap())
        );
        assert_eq!(
            config["grpc"]["address"].as_str(),
            Some("/srv/node/run/containerd/containerd.sock")
        );
        assert_eq!(cri["restrict_oom_score_adj"].as_bool(), Some(false));
        let limited = HostLimits {
            cgroups: CgroupDriver::Cgroupfs,
            restrict_oom_score_adj: true,
        };
        let cgroupfs = render_config(&layout, &programs, "p", limited);
        assert!(cgroupfs.contains("SystemdCgroup = false"));
        assert!(cgroupfs.contains("restrict_oom_score_adj = true"));
        let spec = service(&layout, &programs, &text);
        assert_ne!(
            spec.env["AIRGAP_CONFIG_SHA256"],
            service(&layout, &programs, &cgroupfs).env["AIRGAP_CONFIG_SHA256"],
            "a changed configuration restarts containerd"
        );
        assert!(spec.env["PATH"].starts_with(
            "/srv/node/var/lib/airgap/bin/containerd-shim-runc-v2/1.34.2:/srv/node/var/lib/airgap/bin/runc/1.34.2:"
        ));
    }
}
