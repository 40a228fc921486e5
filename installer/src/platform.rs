//! Phase platform: the manifests that make the management platform, rendered under
//! `etc/airgap/manifests/` and applied with kubectl once a cluster exists.
//!
//! * `00-namespaces.yaml`: `airgap-system` and every addon pack's namespace (its
//!   `values.yaml` `pack.namespace`), with Pod Security labels.
//! * `<NN>-<pack>/<file>.yaml`: every `addon` pack's `manifests/*.yaml`, in bundle order, each
//!   `image:` rewritten through the rewrite map to the private registry.
//!
//! The directory holds exactly what was rendered: files a previous bundle left are removed, so
//! `kubectl apply --recursive` never applies something this bundle no longer carries.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use registry::mirror::RewriteMap;
use serde_json::json;

use crate::files::PUBLIC;
use crate::kube_object::NAMESPACE as AIRGAP_NAMESPACE;
use crate::kubernetes::schema::{documents, SchemaError};
use crate::kubernetes::RenderedFile;
use crate::layout::NodeLayout;
use crate::pack_files::read_files;
use crate::source::ContentSource;
use crate::template::{self, Values};

/// Largest manifest or values file read from a pack; packs hold configuration.
const MAX_FILE: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Pack(#[from] crate::pack_files::PackFilesError),
    #[error("pack {pack}: {file}")]
    Manifest {
        pack: String,
        file: String,
        #[source]
        cause: ManifestProblem,
    },
    #[error(transparent)]
    Template(#[from] template::TemplateError),
}

/// What is wrong with one manifest of a pack.
#[derive(Debug, thiserror::Error)]
pub enum ManifestProblem {
    #[error("not UTF-8")]
    NotUtf8,
    #[error(transparent)]
    Yaml(Box<SchemaError>),
    #[error(transparent)]
    Rewrite(#[from] registry::mirror::ImageNotInBundle),
    #[error("re-serializing")]
    Serialize(#[source] serde_yaml_ng::Error),
}

/// Renders the platform manifests. Pure given the release: byte-identical on every run.
pub fn render(
    source: &dyn ContentSource,
    layout: &NodeLayout,
    rewrite: &RewriteMap,
) -> Result<Vec<RenderedFile>, PlatformError> {
    let index = source.verified().index();
    let dir = layout.manifests_dir();
    let mut namespaces = BTreeSet::from([AIRGAP_NAMESPACE.to_string()]);
    let mut files = Vec::new();
    let addons = index.packs.iter().filter(|p| p.layer == "addon");
    for (n, pack) in addons.enumerate() {
        let label = format!("{}:{}", pack.name, pack.version);
        let wanted = |p: &str| {
            p == "values.yaml"
                || p.strip_prefix("manifests/").is_some_and(|name| {
                    !name.contains('/') && (name.ends_with(".yaml") || name.ends_with(".yml"))
                })
        };
        let bad = |file: &str, cause: ManifestProblem| PlatformError::Manifest {
            pack: label.clone(),
            file: file.to_string(),
            cause,
        };
        for (path, bytes) in read_files(source, pack, wanted, MAX_FILE)? {
            let text =
                String::from_utf8(bytes).map_err(|_| bad(&path, ManifestProblem::NotUtf8))?;
            let docs =
                documents(&text).map_err(|e| bad(&path, ManifestProblem::Yaml(Box::new(e))))?;
            if path == "values.yaml" {
                if let Some(ns) = docs
                    .first()
                    .and_then(|d| d.get("pack"))
                    .and_then(|p| p.get("namespace"))
                    .and_then(|n| n.as_str())
                {
                    namespaces.insert(ns.to_string());
                }
                continue;
            }
            let mut out = format!(
                "# Rendered by airgap install (phase platform) from pack {label} {path};\n# images point at the private registry.\n"
            );
            for mut doc in docs {
                rewrite
                    .rewrite_manifest(&mut doc)
                    .map_err(|cause| bad(&path, ManifestProblem::Rewrite(cause)))?;
                let yaml = serde_yaml_ng::to_string(&doc)
                    .map_err(|e| bad(&path, ManifestProblem::Serialize(e)))?;
                out.push_str("---\n");
                out.push_str(&yaml);
            }
            let name = Path::new(&path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push(RenderedFile {
                // The name passed the index check at verify: one repository component.
                path: dir.join(format!("{:02}-{}", n + 1, pack.name)).join(name),
                bytes: out.into_bytes(),
                mode: PUBLIC,
            });
        }
    }
    let mut text = String::from(
        "# Rendered by airgap install (phase platform) from manifests/namespace.yaml.\n",
    );
    for ns in &namespaces {
        // The platform's own namespace runs only airgap's components, held to restricted.
        let pod_security = if ns == AIRGAP_NAMESPACE {
            "restricted"
        } else {
            "baseline"
        };
        text.push_str("---\n");
        text.push_str(&template::NAMESPACE.render(&Values::from([
            ("name", json!(ns)),
            ("pod_security", json!(pod_security)),
        ]))?);
    }
    files.insert(
        0,
        RenderedFile {
            path: dir.join("00-namespaces.yaml"),
            bytes: text.into_bytes(),
            mode: PUBLIC,
        },
    );
    Ok(files)
}

/// Files under `dir` that are not in `keep`: what a previous render left behind.
pub fn stale_files(dir: &Path, keep: &[PathBuf]) -> Vec<PathBuf> {
    let mut stale = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if !keep.contains(&path) {
                stale.push(path);
            }
        }
    }
    stale.sort();
    stale
}
