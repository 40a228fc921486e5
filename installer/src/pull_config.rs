//! The node's pull configuration: where its container runtimes send image pulls. containerd
//! reads `etc/containerd/certs.d/<host>/hosts.toml`; CRI-O, podman and skopeo read
//! `etc/containers/registries.conf.d/50-airgap.conf` with the login in `etc/airgap/mirror/auth.json`
//! (their `global_auth_file` / `--authfile`). Both name the node's registry (or the
//! cluster's external one) and never an upstream host, so a mirror failure fails the pull
//! instead of leaving the air gap (see [`registry::mirror::containerd_hosts`]).
//!
//! The runtime phase writes it before containerd starts: every install and upgrade path has
//! it, whatever phases were skipped, and containerd is not reported ready without it.

use std::path::PathBuf;

use airgap::BundleIndex;
use registry::auth::Credentials;
use registry::mirror::{containerd_hosts, registries_conf, HostAccess, MirrorTarget, HOST_CA_FILE};

use crate::files::{PRIVATE, PUBLIC};
use crate::kubernetes::RenderedFile;
use crate::layout::NodeLayout;

/// What the files are rendered from.
pub struct PullAccess<'a> {
    pub target: &'a MirrorTarget,
    /// The registry's CA (PEM), if it needs one: copied beside each `hosts.toml`.
    pub ca: Option<&'a [u8]>,
    /// The login containerd presents (the pull-only one).
    pub credentials: Option<&'a Credentials>,
}

/// Every file of the pull configuration for the release `index`.
pub fn render(
    layout: &NodeLayout,
    index: &BundleIndex,
    access: &PullAccess<'_>,
) -> Vec<RenderedFile> {
    let hosts = containerd_hosts(
        index,
        access.target,
        HostAccess {
            ca: access.ca.is_some(),
            credentials: access.credentials,
        },
    );
    let mut files = Vec::new();
    for (host, text) in hosts {
        let dir = layout.containerd_certs_dir().join(&host);
        if let Some(ca) = access.ca {
            files.push(RenderedFile {
                path: dir.join(HOST_CA_FILE),
                bytes: ca.to_vec(),
                mode: PUBLIC,
            });
        }
        files.push(RenderedFile {
            path: dir.join("hosts.toml"),
            bytes: text.into_bytes(),
            // The registry's password rides in an Authorization header.
            mode: if access.credentials.is_some() {
                PRIVATE
            } else {
                PUBLIC
            },
        });
    }
    files.push(RenderedFile {
        path: layout.registries_conf(),
        bytes: registries_conf(index, access.target).into_bytes(),
        mode: PUBLIC,
    });
    if let Some(c) = access.credentials {
        let auth = serde_json::json!({
            "auths": { access.target.host.clone(): { "auth": c.basic_header().trim_start_matches("Basic ") } }
        });
        files.push(RenderedFile {
            path: layout.pull_auth_file(),
            bytes: format!("{auth:#}\n").into_bytes(),
            mode: PRIVATE,
        });
    }
    files
}

/// The files of `rendered` that are not on disk as rendered: containerd is not ready while
/// any is.
pub fn drifted(rendered: &[RenderedFile]) -> Vec<PathBuf> {
    rendered
        .iter()
        .filter(|f| std::fs::read(&f.path).ok().as_deref() != Some(f.bytes.as_slice()))
        .map(|f| f.path.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn every_file_is_under_the_root_and_credentials_make_hosts_private() {
        let layout = NodeLayout::new("/srv/node");
        let index = crate::kubernetes::tests::index("1.34.2", &["registry.k8s.io/pause:3.10.1"]);
        let target = MirrorTarget::parse("https://mgmt.example.internal:5000", false).unwrap();
        let login = Credentials {
            username: "containerd".into(),
            password: "s3cret".into(),
        };
        for credentials in [None, Some(&login)] {
            let files = render(
                &layout,
                &index,
                &PullAccess {
                    target: &target,
                    ca: Some(b"-----BEGIN CERTIFICATE-----\n"),
                    credentials,
                },
            );
            let names: Vec<String> = files
                .iter()
                .map(|f| {
                    f.path
                        .strip_prefix("/srv/node")
                        .unwrap()
                        .display()
                        .to_string()
                })
                .collect();
            assert!(names.contains(&"etc/containerd/certs.d/registry.k8s.io/hosts.toml".into()));
            assert!(names.contains(&"etc/containerd/certs.d/_default/hosts.toml".into()));
            assert!(names.contains(&"etc/containerd/certs.d/_default/ca.crt".into()));
            assert!(names
                .contains(&"etc/containerd/certs.d/mgmt.example.internal:5000/hosts.toml".into()));
            assert!(names.contains(&"etc/containers/registries.conf.d/50-airgap.conf".into()));
            let auth = files.iter().find(|f| f.path.ends_with("auth.json"));
            match credentials {
                Some(_) => assert_eq!(auth.map(|f| f.mode), Some(PRIVATE)),
                None => assert!(auth.is_none(), "an auth file without a login"),
            }
            for f in files.iter().filter(|f| f.path.ends_with("hosts.toml")) {
                let expected = if credentials.is_some() {
                    PRIVATE
                } else {
                    PUBLIC
                };
                assert_eq!(f.mode, expected, "{}", f.path.display());
            }
        }
    }
}
