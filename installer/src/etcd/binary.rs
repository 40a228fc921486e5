//! Which etcd runs: the one a pack in the bundle carries (`bin/etcd`), so the node runs the
//! version the bundle was built and tested with, else the node's own from PATH.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::host::Host;
use crate::pack_files::{visit_files, PackFileCause, PackFilesError};
use crate::source::ContentSource;

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("no etcd binary: no pack in the bundle carries bin/etcd and none is on PATH")]
    NotFound,
    #[error("reading bin/etcd")]
    Pack(#[from] PackFilesError),
    #[error("installing {}", path.display())]
    Install {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
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
pub fn locate(
    source: &dyn ContentSource,
    bin_dir: &Path,
    host: &dyn Host,
) -> Result<EtcdBinary, BinaryError> {
    let target = bin_dir.join("etcd");
    for pack in &source.verified().index().packs {
        let label = format!("{}:{}", pack.name, pack.version);
        let tmp = target.with_extension("partial");
        let mut found = false;
        let streamed = visit_files(
            source,
            pack,
            |p| p == "bin/etcd",
            |_, _, contents| {
                if found {
                    return Ok(());
                }
                found = true;
                write_executable(&tmp, contents).map_err(|source| PackFileCause::Write {
                    what: "writing",
                    path: tmp.clone(),
                    source,
                })
            },
        );
        if let Err(e) = streamed {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        if found {
            fs::rename(&tmp, &target).map_err(|source| BinaryError::Install {
                path: target.clone(),
                source,
            })?;
            if let Some(dir) = target.parent() {
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
            return Ok(EtcdBinary::Bundle {
                pack: label,
                path: target,
            });
        }
    }
    host.find_program("etcd")
        .map(EtcdBinary::Path)
        .ok_or(BinaryError::NotFound)
}

fn write_executable(tmp: &Path, contents: &mut dyn Read) -> io::Result<()> {
    if let Some(dir) = tmp.parent() {
        fs::create_dir_all(dir)?;
    }
    let _ = fs::remove_file(tmp);
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(tmp)?;
    io::copy(contents, &mut out)?;
    out.flush()?;
    out.sync_all()?;
    fs::set_permissions(tmp, fs::Permissions::from_mode(0o755))
}
