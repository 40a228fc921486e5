//! Service definitions: what the agent runs and keeps running, one JSON file per service under
//! `etc/airgap/services/`. Phases write them; the agent notices new or changed files and
//! (re)starts the service. Writing the same definition twice changes nothing, so phases stay
//! idempotent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::{write_if_changed, PUBLIC};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("service definition {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("service definition {path} is not valid")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("refusing {path}: owned by uid {uid} with mode {mode:04o}, so someone other than root could have written what the agent runs as root; remove it, or `chown root` and `chmod go-w` it if it is yours")]
    Untrusted { path: String, uid: u32, mode: u32 },
}

impl ServiceSpec {
    pub fn path_in(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}.json"))
    }

    /// Writes the definition; returns whether it changed.
    pub fn write(&self, dir: &Path) -> Result<bool, ServiceError> {
        let path = Self::path_in(dir, &self.name);
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|source| ServiceError::Json {
            path: path.display().to_string(),
            source,
        })?;
        bytes.push(b'\n');
        write_if_changed(&path, &bytes, PUBLIC).map_err(|source| ServiceError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Every definition in `dir`, by name. A file that does not parse is reported, not
    /// skipped: a supervisor silently ignoring etcd would be worse than one that says why.
    /// Every definition in `dir`. The agent runs what these files say, as root: a directory
    /// that another user owns or could write into is refused whole, and such a definition is
    /// left out and logged.
    pub fn load_all(dir: &Path) -> Result<BTreeMap<String, ServiceSpec>, ServiceError> {
        if dir.exists() {
            check_owner_and_mode(dir)?;
        }
        let mut out = BTreeMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(source) => {
                return Err(ServiceError::Io {
                    path: dir.display().to_string(),
                    source,
                })
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            // One planted file must not stop the agent from running the real ones.
            if let Err(e) = check_owner_and_mode(&path) {
                tracing::error!("{e}");
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|source| ServiceError::Io {
                path: path.display().to_string(),
                source,
            })?;
            let spec: ServiceSpec =
                serde_json::from_slice(&bytes).map_err(|source| ServiceError::Json {
                    path: path.display().to_string(),
                    source,
                })?;
            out.insert(spec.name.clone(), spec);
        }
        Ok(out)
    }
}

/// Refuses `path` unless this process's user owns it and neither group nor others may write it.
fn check_owner_and_mode(path: &Path) -> Result<(), ServiceError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).map_err(|source| ServiceError::Io {
        path: path.display().to_string(),
        source,
    })?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mode = meta.mode() & 0o7777;
    if meta.uid() != me || mode & 0o022 != 0 || meta.file_type().is_symlink() {
        return Err(ServiceError::Untrusted {
            path: path.display().to_string(),
            uid: meta.uid(),
            mode,
        });
    }
    Ok(())
}
