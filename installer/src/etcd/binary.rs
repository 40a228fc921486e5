//! Which etcd runs: the one a pack in the bundle carries (`bin/etcd`), so the node runs the
//! version the bundle was built and tested with, else the node's own from PATH.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use airgap::tar::{EntryKind, Strictness, TarReader};
use airgap::BundleArchive;

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
    for pack in &archive.verified().index().packs {
        let label = format!("{}:{}", pack.name, pack.version);
        let target = bin_dir.join("etcd");
        let layer = pack_layer(archive, &pack.digest).map_err(|cause| BinaryError::Pack {
            pack: label.clone(),
            cause,
        })?;
        if extract(archive, &layer, &target).map_err(|cause| BinaryError::Pack {
            pack: label.clone(),
            cause,
        })? {
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

/// The entry path of a pack's one layer, read from its (verified) manifest.
fn pack_layer(archive: &BundleArchive, manifest: &airgap::Digest) -> Result<String, String> {
    let bytes = archive
        .read_small(&manifest.blob_path(), airgap::oci::MAX_MANIFEST_SIZE)
        .map_err(|e| e.to_string())?;
    let manifest: airgap::oci::ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| format!("pack manifest: {e}"))?;
    match manifest.layers.as_slice() {
        [layer] => Ok(layer.digest.blob_path()),
        _ => Err("a pack manifest must have exactly one layer".into()),
    }
}

fn extract(archive: &BundleArchive, layer: &str, target: &Path) -> Result<bool, String> {
    let mut entry = archive.open_entry(layer).map_err(|e| e.to_string())?;
    let mut found = false;
    let tmp = target.with_extension("partial");
    {
        let gz = flate2::read::GzDecoder::new(io::BufReader::new(&mut entry));
        let mut tar = TarReader::new(gz, Strictness::Lenient);
        while let Some(header) = tar.next_header().map_err(|e| e.to_string())? {
            let name = header.path.trim_start_matches("./");
            // The pack may sit at the layer's root or in one top-level directory.
            let is_etcd = name == "bin/etcd"
                || name
                    .split_once('/')
                    .is_some_and(|(_, rest)| rest == "bin/etcd");
            if !is_etcd || header.kind != EntryKind::Regular || found {
                continue;
            }
            if let Some(dir) = tmp.parent() {
                fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            }
            let _ = fs::remove_file(&tmp);
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o700)
                .open(&tmp)
                .map_err(|e| format!("{}: {e}", tmp.display()))?;
            io::copy(&mut (&mut tar).take(header.size), &mut out).map_err(|e| e.to_string())?;
            out.flush().map_err(|e| e.to_string())?;
            out.sync_all().map_err(|e| e.to_string())?;
            found = true;
        }
        // Drain the gzip stream so the whole entry is hashed.
        let mut inner = tar.into_inner();
        io::copy(&mut inner, &mut io::sink()).map_err(|e| e.to_string())?;
    }
    io::copy(&mut entry, &mut io::sink()).map_err(|e| e.to_string())?;
    if let Err(e) = entry.finish() {
        let _ = fs::remove_file(&tmp);
        return Err(e.to_string());
    }
    if found {
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        fs::rename(&tmp, target).map_err(|e| e.to_string())?;
        if let Some(dir) = target.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
    }
    Ok(found)
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
