//! The programs a node runs, taken from the bundle: `bin/<name>` files of its packs (etcd;
//! the `k8s` pack's containerd, shim, runc, ctr, crictl, kubeadm, kubelet, kubectl) and CNI
//! plugins under `cni/bin/`. Each lands at `var/lib/airgap/bin/<name>/<pack dir>/<name>` (CNI
//! plugins together under `bin/cni/<pack dir>/`), where the pack directory is the pack's
//! version and the start of its signed manifest digest ([`pack_dir`]): an upgrade puts the
//! next pack beside the running one instead of overwriting a busy executable, even when a
//! rebuilt pack keeps its version, so rolling back finds the previous bytes where they were.
//!
//! Files are streamed out of the pack's layer while it is hashed and appear only once the
//! whole layer matched the signed index. A file already in place is compared by content: the
//! same bytes are left alone, anything else (a tampered or truncated binary) is replaced. A
//! program the bundle does not carry is taken from PATH, and the caller is told which.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use airgap::PackRecord;
use sha2::{Digest as _, Sha256};

use crate::host::Host;
use crate::pack_files::{visit_files, PackFileCause, PackFilesError};
use crate::source::ContentSource;

/// The container runtime's programs, as containerd and the kubelet need them.
pub const RUNTIME: [&str; 5] = [
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "ctr",
    "crictl",
];
/// The Kubernetes node programs.
pub const KUBERNETES: [&str; 3] = ["kubeadm", "kubelet", "kubectl"];
/// Where CNI plugins sit in a pack, and their name in the binary store.
const CNI_IN_PACK: &str = "cni/bin/";
pub const CNI: &str = "cni";

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("no {name} binary: no pack in the bundle carries bin/{name} and none is on PATH")]
    NotFound { name: String },
    #[error("reading node binaries")]
    Pack(#[from] PackFilesError),
    #[error("installing {}", path.display())]
    Install {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl BinaryError {
    /// The Debian package that provides `name`, for hints.
    pub fn debian_package(name: &str) -> Option<&'static str> {
        match name {
            "etcd" => Some("etcd-server"),
            "containerd" | "ctr" | "containerd-shim-runc-v2" => Some("containerd"),
            "runc" => Some("runc"),
            _ => None,
        }
    }
}

/// Where a program came from, for status, the audit log and the phase's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// From pack `name:version` of the bundle.
    Bundle { pack: String },
    /// The node's own, found on PATH.
    Path,
}

/// What installing one file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    Written,
    /// The file on disk had other content (tampered, truncated, stale) and was replaced.
    Replaced,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    pub name: String,
    pub path: PathBuf,
    pub origin: Origin,
    pub change: Change,
}

impl Binary {
    pub fn describe(&self) -> String {
        match &self.origin {
            Origin::Bundle { pack } => format!("{} from pack {pack}", self.name),
            Origin::Path => format!("{} from PATH ({})", self.name, self.path.display()),
        }
    }
}

/// Programs installed from the bundle, by name (CNI plugins under [`CNI`] as their directory).
#[derive(Debug, Clone, Default)]
pub struct NodeBinaries {
    found: BTreeMap<String, Binary>,
    /// Every file written or checked, for `replaced` counts.
    pub files: Vec<Binary>,
}

impl NodeBinaries {
    /// Installs `names` (and CNI plugins when `cni`) from the packs `packs` accepts, first
    /// pack wins per name.
    pub fn install(
        source: &dyn ContentSource,
        packs: impl Fn(&PackRecord) -> bool,
        names: &[&str],
        cni: bool,
        store: &Path,
    ) -> Result<Self, BinaryError> {
        let mut out = NodeBinaries::default();
        for pack in source.verified().index().packs.iter().filter(|p| packs(p)) {
            let label = format!("{}:{}", pack.name, pack.version);
            let mut staged: Vec<(String, PathBuf, PathBuf)> = Vec::new();
            let wanted = |p: &str| {
                p.strip_prefix("bin/")
                    .is_some_and(|n| names.contains(&n) && !out.found.contains_key(n))
                    || (cni
                        && !out.found.contains_key(CNI)
                        && p.strip_prefix(CNI_IN_PACK)
                            .is_some_and(|n| !n.is_empty() && !n.contains('/')))
            };
            let streamed = visit_files(source, pack, wanted, |path, _, contents| {
                let (group, file) = match path.strip_prefix(CNI_IN_PACK) {
                    Some(plugin) => (CNI, plugin),
                    None => {
                        let name = path.trim_start_matches("bin/");
                        (name, name)
                    }
                };
                let target = store.join(group).join(pack_dir(pack)).join(file);
                let partial = target.with_file_name(format!(".{file}.partial"));
                write_executable(&partial, contents).map_err(|source| PackFileCause::Write {
                    what: "writing",
                    path: partial.clone(),
                    source,
                })?;
                staged.push((group.to_string(), partial, target));
                Ok(())
            });
            if let Err(e) = streamed {
                for (_, partial, _) in &staged {
                    let _ = fs::remove_file(partial);
                }
                return Err(e.into());
            }
            // The layer checked out: only now do the files take their place.
            for (group, partial, target) in staged {
                let change = settle(&partial, &target)?;
                let binary = Binary {
                    name: group.clone(),
                    path: if group == CNI {
                        target.parent().unwrap_or(store).to_path_buf()
                    } else {
                        target.clone()
                    },
                    origin: Origin::Bundle {
                        pack: label.clone(),
                    },
                    change,
                };
                out.files.push(Binary {
                    path: target,
                    ..binary.clone()
                });
                out.found.entry(group).or_insert(binary);
            }
        }
        Ok(out)
    }

    /// `name` from the bundle if it carried it, else from PATH.
    pub fn resolve(&self, name: &str, host: &dyn Host) -> Option<Binary> {
        self.found.get(name).cloned().or_else(|| {
            host.find_program(name).map(|path| Binary {
                name: name.to_string(),
                path,
                origin: Origin::Path,
                change: Change::Unchanged,
            })
        })
    }

    pub fn require(&self, name: &str, host: &dyn Host) -> Result<Binary, BinaryError> {
        self.resolve(name, host)
            .ok_or_else(|| BinaryError::NotFound {
                name: name.to_string(),
            })
    }

    /// How many files on disk differed from the bundle and were replaced.
    pub fn replaced(&self) -> usize {
        self.files
            .iter()
            .filter(|b| b.change == Change::Replaced)
            .count()
    }
}

/// `name` as an earlier phase installed it from the bundle (under the version of the first
/// pack that has it in the store), else from PATH: for phases that run a program without
/// streaming the packs again.
pub fn locate(
    store: &Path,
    index: &airgap::BundleIndex,
    name: &str,
    host: &dyn Host,
) -> Option<Binary> {
    index
        .packs
        .iter()
        .find_map(|pack| {
            let path = store.join(name).join(pack_dir(pack)).join(name);
            path.is_file().then(|| Binary {
                name: name.to_string(),
                path,
                origin: Origin::Bundle {
                    pack: format!("{}:{}", pack.name, pack.version),
                },
                change: Change::Unchanged,
            })
        })
        .or_else(|| NodeBinaries::default().resolve(name, host))
}

/// The directory of `pack`'s programs under each name: its version and the first 12 hex
/// digits of its manifest digest, which the signed index holds.
pub fn pack_dir(pack: &PackRecord) -> String {
    let hex = pack.digest.hex();
    format!("{}-{}", pack.version, &hex[..hex.len().min(12)])
}

/// Moves `partial` to `target` unless `target` already has the same bytes.
fn settle(partial: &Path, target: &Path) -> Result<Change, BinaryError> {
    let install = |source| BinaryError::Install {
        path: target.to_path_buf(),
        source,
    };
    let change = match (sha256_of(target), sha256_of(partial)) {
        (Ok(Some(old)), Ok(Some(new))) if old == new => {
            fs::remove_file(partial).map_err(install)?;
            // Same bytes; the mode is put right all the same.
            fs::set_permissions(target, fs::Permissions::from_mode(0o755)).map_err(install)?;
            return Ok(Change::Unchanged);
        }
        (Ok(Some(_)), _) => Change::Replaced,
        (Ok(None), _) => Change::Written,
        (Err(e), _) => return Err(install(e)),
    };
    fs::rename(partial, target).map_err(install)?;
    if let Some(dir) = target.parent() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(change)
}

fn sha256_of(path: &Path) -> io::Result<Option<[u8; 32]>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(Some(hasher.finalize().into()));
        }
        hasher.update(&buf[..n]);
    }
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

/// Copies the airgap binary at `exe` to `bin_dir/airgap/<version>-<sha256 prefix>/airgap`
/// (0755, written atomically, left alone when the same bytes are there) and returns that path.
/// Root's services and the systemd unit run this copy: the binary that ran the install may sit
/// in a user's directory, and whoever can replace it there would choose what root runs.
pub fn install_self(exe: &Path, bin_dir: &Path) -> Result<PathBuf, BinaryError> {
    let reading = |source| BinaryError::Install {
        path: exe.to_path_buf(),
        source,
    };
    let digest = sha256_of(exe)
        .map_err(reading)?
        .ok_or_else(|| reading(io::ErrorKind::NotFound.into()))?;
    let dir = bin_dir.join("airgap").join(format!(
        "{}-{}",
        env!("CARGO_PKG_VERSION"),
        &hex::encode(digest)[..12]
    ));
    let target = dir.join("airgap");
    // Streamed, and only when the copy is missing or differs: the binary is tens of MB.
    if sha256_of(&target).ok().flatten() == Some(digest) {
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).map_err(|source| {
            BinaryError::Install {
                path: target.clone(),
                source,
            }
        })?;
        return Ok(target);
    }
    let partial = dir.join(".airgap.partial");
    let mut source = File::open(exe).map_err(reading)?;
    write_executable(&partial, &mut source).map_err(|source| BinaryError::Install {
        path: partial.clone(),
        source,
    })?;
    settle(&partial, &target)?;
    Ok(target)
}
