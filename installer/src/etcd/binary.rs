//! Which etcd runs: the one a pack in the bundle carries (`bin/etcd`), so the node runs the
//! version the bundle was built and tested with, else the node's own from PATH.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use airgap::BundleArchive;

use crate::pack_files::visit_files;

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("no etcd binary: no pack in the bundle carries bin/etcd and none is on PATH; add a pack with bin/etcd to the bundle, or install etcd (Debian: etcd-server)")]
    NotFound,
    #[error("reading bin/etcd from pack {pack}: {cause}")]
    Pack { pack: String, cause: String },
}

/// Where the binary came from, for status and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdBinary {
    Bundle { pack: String, path: PathBuf },
    Path(PathBuf),
}

impl EtcdBinary {
    pub fn path(&self) -> &Path {
        match self {
            EtcdBinary::Bundle { path, .. } | EtcdBinary::Path(path) => path,
        }
    }
}

/// Extracts `bin/etcd` from the first pack that has it into `bin_dir/etcd` (verified against
/// the signed index as it streams; the file appears only once the whole layer checked out),
/// or finds `etcd` on PATH.
pub fn locate(archive: &BundleArchive, bin_dir: &Path) -> Result<EtcdBinary, BinaryError> {
    let target = bin_dir.join("etcd");
    for pack in &archive.verified().index().packs {
        let label = format!("{}:{}", pack.name, pack.version);
        let failed = |cause: String| BinaryError::Pack {
            pack: label.clone(),
            cause,
        };
        let tmp = target.with_extension("partial");
        let mut found = false;
        let streamed = visit_files(
            archive,
            pack,
            |p| p == "bin/etcd",
            |_, _, contents| {
                if found {
                    return Ok(());
                }
                found = true;
                write_executable(&tmp, contents)
            },
        );
        if let Err(e) = streamed {
            let _ = fs::remove_file(&tmp);
            return Err(failed(e.cause));
        }
        if found {
            fs::rename(&tmp, &target).map_err(|e| failed(e.to_string()))?;
            if let Some(dir) = target.parent() {
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
            return Ok(EtcdBinary::Bundle {
                pack: label,
                path: target,
            });
        }
    }
    find_on_path("etcd")
        .map(EtcdBinary::Path)
        .ok_or(BinaryError::NotFound)
}

fn write_executable(tmp: &Path, contents: &mut dyn Read) -> Result<(), String> {
    if let Some(dir) = tmp.parent() {
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let _ = fs::remove_file(tmp);
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    io::copy(contents, &mut out).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    out.sync_all().map_err(|e| e.to_string())?;
    fs::set_permissions(tmp, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
}

pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}
