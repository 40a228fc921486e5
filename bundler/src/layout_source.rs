//! Local OCI image layouts as image sources: a directory (`oci:DIR`) or a tar of one
//! (`oci-archive:FILE`). An archive is indexed once by scanning its tar headers, then blobs are
//! read in place by offset: nothing is extracted.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use airgap::oci::{Descriptor, ImageIndex, MAX_MANIFEST_SIZE, REF_NAME_ANNOTATION};
use airgap::tar::{EntryKind, Strictness, TarReader};
use airgap::Digest;

use crate::spec::LayoutKind;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{layout}: {cause}")]
    Io { layout: String, cause: io::Error },
    #[error("{layout}: not an OCI image layout (not a tar archive)")]
    NotATar {
        layout: String,
        #[source]
        cause: airgap::tar::TarError,
    },
    #[error("{layout}: not an OCI image layout (index.json unreadable)")]
    NoIndex {
        layout: String,
        #[source]
        cause: io::Error,
    },
    #[error("{layout}: not an OCI image layout (index.json is not valid)")]
    BadIndex {
        layout: String,
        #[source]
        cause: serde_json::Error,
    },
    #[error("{layout}: no image named `{name}` (it has: {available})")]
    NoSuchImage {
        layout: String,
        name: String,
        available: String,
    },
    #[error("{layout}: holds {count} images; name the one you mean as {layout}:NAME")]
    Ambiguous { layout: String, count: usize },
    #[error("{layout}: blob {digest} is missing")]
    MissingBlob { layout: String, digest: Digest },
    #[error("{layout}: blob {digest} is corrupt: its content hashes to {actual}")]
    CorruptBlob {
        layout: String,
        digest: Digest,
        actual: Digest,
    },
    #[error(
        "{layout}: manifest {digest} is {size} bytes, more than the {MAX_MANIFEST_SIZE}-byte limit"
    )]
    ManifestTooLarge {
        layout: String,
        digest: Digest,
        size: u64,
    },
}

pub struct LayoutSource {
    shown: String,
    store: Store,
    index: ImageIndex,
}

enum Store {
    Directory(PathBuf),
    Archive {
        path: PathBuf,
        entries: HashMap<String, (u64, u64)>,
    },
}

impl LayoutSource {
    pub fn open(kind: LayoutKind, path: &Path) -> Result<Self, SourceError> {
        let shown = path.display().to_string();
        let io = |cause| SourceError::Io {
            layout: shown.clone(),
            cause,
        };
        let store = match kind {
            LayoutKind::Directory => Store::Directory(path.to_path_buf()),
            LayoutKind::Archive => {
                let file = File::open(path).map_err(io)?;
                let mut tar = TarReader::new(BufReader::new(file), Strictness::Lenient);
                let mut entries = HashMap::new();
                while let Some(h) = tar.next_header().map_err(|cause| SourceError::NotATar {
                    layout: shown.clone(),
                    cause,
                })? {
                    if h.kind == EntryKind::Regular {
                        let name = h.path.trim_start_matches("./").to_string();
                        entries.insert(name, (h.data_offset, h.size));
                    }
                }
                Store::Archive {
                    path: path.to_path_buf(),
                    entries,
                }
            }
        };
        let mut source = LayoutSource {
            shown: shown.clone(),
            store,
            index: ImageIndex {
                media_type: None,
                manifests: Vec::new(),
            },
        };
        let index_bytes = source
            .read_file("index.json", MAX_MANIFEST_SIZE)
            .map_err(|cause| SourceError::NoIndex {
                layout: shown.clone(),
                cause,
            })?;
        source.index =
            serde_json::from_slice(&index_bytes).map_err(|cause| SourceError::BadIndex {
                layout: shown.clone(),
                cause,
            })?;
        Ok(source)
    }

    pub fn name(&self) -> &str {
        &self.shown
    }

    /// The top-level descriptor named `name` (the `org.opencontainers.image.ref.name`
    /// annotation), or the only one when no name is given.
    pub fn resolve(&self, name: Option<&str>) -> Result<Descriptor, SourceError> {
        let manifests = &self.index.manifests;
        let Some(name) = name else {
            return match manifests.as_slice() {
                [only] => Ok(only.clone()),
                _ => Err(SourceError::Ambiguous {
                    layout: self.shown.clone(),
                    count: manifests.len(),
                }),
            };
        };
        manifests
            .iter()
            .find(|d| d.annotations.get(REF_NAME_ANNOTATION).map(String::as_str) == Some(name))
            .cloned()
            .ok_or_else(|| SourceError::NoSuchImage {
                layout: self.shown.clone(),
                name: name.to_string(),
                available: manifests
                    .iter()
                    .filter_map(|d| d.annotations.get(REF_NAME_ANNOTATION).cloned())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// A manifest's bytes, size-bounded and digest-checked.
    pub fn read_manifest(&self, desc: &Descriptor) -> Result<Vec<u8>, SourceError> {
        if desc.size > MAX_MANIFEST_SIZE {
            return Err(SourceError::ManifestTooLarge {
                layout: self.shown.clone(),
                digest: desc.digest,
                size: desc.size,
            });
        }
        let bytes = self
            .read_file(&desc.digest.blob_path(), MAX_MANIFEST_SIZE)
            .map_err(|e| self.blob_error(desc.digest, e))?;
        let actual = Digest::of(&bytes);
        if actual != desc.digest {
            return Err(SourceError::CorruptBlob {
                layout: self.shown.clone(),
                digest: desc.digest,
                actual,
            });
        }
        Ok(bytes)
    }

    /// A blob's content stream. The caller checks the digest while copying.
    pub fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, SourceError> {
        self.open_file(&digest.blob_path())
            .map_err(|e| self.blob_error(*digest, e))
    }

    fn blob_error(&self, digest: Digest, e: io::Error) -> SourceError {
        if e.kind() == io::ErrorKind::NotFound {
            SourceError::MissingBlob {
                layout: self.shown.clone(),
                digest,
            }
        } else {
            SourceError::Io {
                layout: self.shown.clone(),
                cause: e,
            }
        }
    }

    fn read_file(&self, name: &str, limit: u64) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_file(name)?
            .take(limit + 1)
            .read_to_end(&mut buf)?;
        if buf.len() as u64 > limit {
            return Err(io::Error::other(format!(
                "{name} is larger than {limit} bytes"
            )));
        }
        Ok(buf)
    }

    fn open_file(&self, name: &str) -> io::Result<Box<dyn Read + Send>> {
        match &self.store {
            Store::Directory(dir) => Ok(Box::new(File::open(dir.join(name))?)),
            Store::Archive { path, entries } => {
                let &(offset, size) = entries.get(name).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{name} is not in the archive"),
                    )
                })?;
                let mut file = File::open(path)?;
                file.seek(SeekFrom::Start(offset))?;
                Ok(Box::new(file.take(size)))
            }
        }
    }
}
