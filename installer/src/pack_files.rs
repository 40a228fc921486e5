//! Files inside a pack the bundle carries, read straight from the archive: the pack's one
//! layer (a tar.gz of the pack directory) is streamed once, each file is offered to a visitor,
//! and the whole entry is hashed to the end so nothing a visitor saw counts until the signed
//! index's digest agreed. No temporary directory, no second copy on disk.

use std::io::{self, Read};
use std::path::PathBuf;

use airgap::tar::{EntryKind, Strictness, TarError, TarReader};
use airgap::PackRecord;

use crate::source::{ContentSource, SourceError};

#[derive(Debug, thiserror::Error)]
#[error("pack {pack}")]
pub struct PackFilesError {
    pub pack: String,
    #[source]
    pub cause: PackFileCause,
}

/// What went wrong inside a pack.
#[derive(Debug, thiserror::Error)]
pub enum PackFileCause {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("pack manifest is not valid")]
    Manifest(#[source] serde_json::Error),
    #[error("a pack manifest must have exactly one layer, this one has {0}")]
    LayerCount(usize),
    #[error("pack layer")]
    Tar(#[from] TarError),
    #[error("reading the pack layer")]
    Read(#[source] io::Error),
    #[error("{path} is {size} bytes, more than the {limit} allowed")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{what} {}", path.display())]
    Write {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The digest of a pack's one layer, read from its (verified) manifest.
fn layer_digest(
    source: &dyn ContentSource,
    pack: &PackRecord,
) -> Result<airgap::Digest, PackFileCause> {
    let bytes = source.read_blob(&pack.digest, airgap::oci::MAX_MANIFEST_SIZE)?;
    let manifest: airgap::oci::ImageManifest =
        serde_json::from_slice(&bytes).map_err(PackFileCause::Manifest)?;
    match manifest.layers.as_slice() {
        [layer] => Ok(layer.digest),
        layers => Err(PackFileCause::LayerCount(layers.len())),
    }
}

/// A path inside the pack directory. Packs sit at the layer's root or, when published by
/// other tools, in one top-level directory; `wanted` is asked about both readings.
fn within_pack(name: &str, wanted: &impl Fn(&str) -> bool) -> Option<String> {
    let name = name.trim_start_matches("./");
    if wanted(name) {
        return Some(name.to_string());
    }
    name.split_once('/')
        .map(|(_, rest)| rest)
        .filter(|rest| wanted(rest))
        .map(str::to_string)
}

/// Streams `pack`'s layer and calls `visit(path, size, contents)` for every regular file whose
/// pack-relative path `wanted` accepts. Returns `Ok` only once the layer's digest matched the
/// signed index: callers must not act on what they read (rename, apply) before that.
pub fn visit_files(
    source: &dyn ContentSource,
    pack: &PackRecord,
    wanted: impl Fn(&str) -> bool,
    mut visit: impl FnMut(&str, u64, &mut dyn Read) -> Result<(), PackFileCause>,
) -> Result<(), PackFilesError> {
    let fail = |cause: PackFileCause| PackFilesError {
        pack: format!("{}:{}", pack.name, pack.version),
        cause,
    };
    let layer = layer_digest(source, pack).map_err(fail)?;
    let mut entry = source
        .open_blob(&layer)
        .map_err(|e| fail(PackFileCause::Source(e)))?;
    {
        let gz = flate2::read::GzDecoder::new(io::BufReader::new(&mut entry));
        let mut tar = TarReader::new(gz, Strictness::Lenient);
        while let Some(header) = tar.next_header().map_err(|e| fail(e.into()))? {
            if header.kind != EntryKind::Regular {
                continue;
            }
            let Some(path) = within_pack(&header.path, &wanted) else {
                continue;
            };
            let mut contents = (&mut tar).take(header.size);
            visit(&path, header.size, &mut contents).map_err(fail)?;
            // Whatever the visitor left unread is skipped by the tar reader's next header.
        }
        // Drain the gzip stream so the whole entry is hashed.
        let mut inner = tar.into_inner();
        io::copy(&mut inner, &mut io::sink()).map_err(|e| fail(PackFileCause::Read(e)))?;
    }
    io::copy(&mut entry, &mut io::sink()).map_err(|e| fail(PackFileCause::Read(e)))?;
    entry.finish().map_err(|e| fail(e.into()))
}

/// Reads the files `wanted` accepts into memory, at most `limit` bytes each (packs hold
/// configuration; anything larger is refused rather than buffered). Sorted by path.
pub fn read_files(
    source: &dyn ContentSource,
    pack: &PackRecord,
    wanted: impl Fn(&str) -> bool,
    limit: u64,
) -> Result<Vec<(String, Vec<u8>)>, PackFilesError> {
    let mut files = Vec::new();
    visit_files(source, pack, wanted, |path, size, contents| {
        if size > limit {
            return Err(PackFileCause::TooLarge {
                path: path.to_string(),
                size,
                limit,
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        contents
            .read_to_end(&mut bytes)
            .map_err(PackFileCause::Read)?;
        files.push((path.to_string(), bytes));
        Ok(())
    })?;
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::within_pack;

    #[test]
    fn paths_are_read_at_the_root_or_under_one_directory() {
        let yaml = |p: &str| p.starts_with("manifests/") && p.ends_with(".yaml");
        assert_eq!(
            within_pack("manifests/a.yaml", &yaml).as_deref(),
            Some("manifests/a.yaml")
        );
        assert_eq!(
            within_pack("./core-1.0/manifests/a.yaml", &yaml).as_deref(),
            Some("manifests/a.yaml")
        );
        assert_eq!(within_pack("x/y/manifests/a.yaml", &yaml), None);
        assert_eq!(within_pack("values.yaml", &yaml), None);
    }
}
