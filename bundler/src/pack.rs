//! Packs: versioned layers of a cluster profile, each a directory with `pack.json`,
//! `values.yaml` and optional manifests and charts. This module validates one, finds the images
//! it needs, and turns it into an OCI artifact (config = `pack.json`, one tar.gz layer).

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use airgap::digest::{Digest, HashingWriter};
use airgap::oci::{Descriptor, OCI_MANIFEST};
use airgap::tar::{padding, ustar_header, HeaderKind, END_OF_ARCHIVE};
use airgap::ImageReference;
use serde::{Deserialize, Deserializer};

pub const PACK_ARTIFACT_TYPE: &str = "application/vnd.airgap.pack.v1";
pub const PACK_CONFIG_TYPE: &str = "application/vnd.airgap.pack.config.v1+json";
pub const PACK_LAYER_TYPE: &str = "application/vnd.airgap.pack.layer.v1.tar+gzip";

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{file}")]
    Invalid {
        file: String,
        #[source]
        problem: PackProblem,
    },
    #[error("{path}: {cause}")]
    Io { path: String, cause: io::Error },
    #[error("{path}: packs may hold only regular files and directories, this is a {kind}")]
    Unsupported { path: String, kind: &'static str },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PackError + '_ {
    move |cause| PackError::Io {
        path: path.display().to_string(),
        cause,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Os,
    K8s,
    Cni,
    Csi,
    Addon,
}

impl Layer {
    pub fn as_str(&self) -> &'static str {
        match self {
            Layer::Os => "os",
            Layer::K8s => "k8s",
            Layer::Cni => "cni",
            Layer::Csi => "csi",
            Layer::Addon => "addon",
        }
    }
}

/// `pack.json`. Unknown fields are allowed: published packs carry more than we read.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackMeta {
    #[serde(deserialize_with = "pack_name")]
    pub name: String,
    pub display_name: String,
    #[serde(deserialize_with = "semver_string")]
    pub version: String,
    pub layer: Layer,
    #[serde(default)]
    pub addon_type: Option<String>,
    #[serde(default)]
    pub cloud_types: Vec<String>,
    #[serde(default)]
    pub constraints: Option<Constraints>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Constraints {
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    pub pack_name: String,
    pub layer: Layer,
    #[serde(default)]
    pub min_version: Option<String>,
    #[serde(default)]
    pub max_version: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// The pack's version is also its tag in every registry (`packs/<name>:<version>`): semver
/// without build metadata (`+` is not allowed in a tag).
fn semver_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = String::deserialize(d)?;
    semver::Version::parse(&v)
        .map_err(|e| serde::de::Error::custom(format!("version `{v}` is not semver ({e})")))?;
    if !airgap::name::is_valid_tag(&v) {
        return Err(serde::de::Error::custom(format!(
            "version `{v}` is not usable as a tag ({})",
            airgap::name::TAG_RULE
        )));
    }
    Ok(v)
}

/// The pack's name becomes the repository `packs/<name>` and a directory name on nodes: a
/// name that is not one repository component could write over another repository's tags.
fn pack_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    if !airgap::name::is_valid_pack_name(&name) {
        let shown: String = name.chars().take(64).collect();
        return Err(serde::de::Error::custom(format!(
            "name `{shown}{}` is not valid: {}",
            if shown.len() < name.len() { "…" } else { "" },
            airgap::name::PACK_NAME_RULE
        )));
    }
    Ok(name)
}

#[derive(Debug, Default, Deserialize)]
struct Values {
    #[serde(default)]
    pack: Option<ValuesPack>,
}

#[derive(Debug, Default, Deserialize)]
struct ValuesPack {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    content: Option<ValuesContent>,
}

#[derive(Debug, Default, Deserialize)]
struct ValuesContent {
    #[serde(default)]
    images: Vec<ValuesImage>,
}

#[derive(Debug, Deserialize)]
struct ValuesImage {
    image: String,
}

/// A validated pack directory.
#[derive(Debug, Clone)]
pub struct Pack {
    pub dir: PathBuf,
    pub meta: PackMeta,
    pub meta_bytes: Vec<u8>,
    pub namespace: Option<String>,
    /// Normalized references of every image the pack needs, sorted, once each.
    pub images: Vec<ImageReference>,
}

impl Pack {
    pub fn load(dir: &Path) -> Result<Self, PackError> {
        let meta_path = dir.join("pack.json");
        let meta_bytes = fs::read(&meta_path).map_err(io_err(&meta_path))?;
        let meta: PackMeta =
            serde_json::from_slice(&meta_bytes).map_err(|e| invalid(&meta_path, e))?;
        let values_path = dir.join("values.yaml");
        let values_text = fs::read_to_string(&values_path).map_err(io_err(&values_path))?;
        let values: Values = if values_text.trim().is_empty() {
            Values::default()
        } else {
            serde_yaml_ng::from_str(&values_text).map_err(|e| invalid(&values_path, e))?
        };
        let pack = values.pack.unwrap_or_default();
        let mut images = Vec::new();
        for item in pack.content.unwrap_or_default().images {
            images.push(parse_image(&values_path, &item.image)?);
        }
        for manifest in manifest_files(dir)? {
            let text = fs::read_to_string(&manifest).map_err(io_err(&manifest))?;
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let value =
                    serde_yaml_ng::Value::deserialize(doc).map_err(|e| invalid(&manifest, e))?;
                let mut found = Vec::new();
                collect_images(&value, &mut found);
                for image in found {
                    images.push(parse_image(&manifest, &image)?);
                }
            }
        }
        images.sort();
        images.dedup();
        Ok(Pack {
            dir: dir.to_path_buf(),
            meta,
            meta_bytes,
            namespace: pack.namespace,
            images,
        })
    }

    /// Name of the pack inside a bundle and under a mirror prefix.
    pub fn reference(&self) -> String {
        format!("packs/{}:{}", self.meta.name, self.meta.version)
    }

    /// Writes the pack directory as a deterministic tar.gz (sorted, owner 0, mtime 0, modes
    /// normalized) and returns its descriptor.
    pub fn write_layer(&self, out: &Path) -> Result<Descriptor, PackError> {
        let file = File::create(out).map_err(io_err(out))?;
        let mut hashing = HashingWriter::new(BufWriter::new(file));
        {
            let gz = flate2::GzBuilder::new().write(&mut hashing, flate2::Compression::default());
            let mut gz = BufWriter::new(gz);
            let mut files = Vec::new();
            walk(&self.dir, &self.dir, &mut files)?;
            for (rel, path, is_dir) in files {
                let write = |gz: &mut BufWriter<_>| -> io::Result<()> {
                    if is_dir {
                        let h =
                            ustar_header(&format!("{rel}/"), HeaderKind::Directory, 0o755, 0, 0)
                                .map_err(io::Error::other)?;
                        return gz.write_all(&h);
                    }
                    let meta = fs::metadata(&path)?;
                    let mode = if is_executable(&meta) { 0o755 } else { 0o644 };
                    let h = ustar_header(&rel, HeaderKind::Regular, mode, meta.len(), 0)
                        .map_err(io::Error::other)?;
                    gz.write_all(&h)?;
                    let copied = io::copy(&mut File::open(&path)?.take(meta.len()), gz)?;
                    if copied != meta.len() {
                        return Err(io::Error::other("file changed size while being packed"));
                    }
                    gz.write_all(&END_OF_ARCHIVE[..padding(meta.len()) as usize])
                };
                write(&mut gz).map_err(io_err(&path))?;
            }
            gz.write_all(&END_OF_ARCHIVE).map_err(io_err(out))?;
            let gz = gz.into_inner().map_err(|e| PackError::Io {
                path: out.display().to_string(),
                cause: e.into_error(),
            })?;
            gz.finish().map_err(io_err(out))?;
        }
        let (_, digest, size) = hashing.finish().map_err(io_err(out))?;
        Ok(Descriptor {
            media_type: PACK_LAYER_TYPE.into(),
            digest,
            size,
            platform: None,
            artifact_type: None,
            annotations: [(
                "org.opencontainers.image.title".to_string(),
                format!("{}-{}.tar.gz", self.meta.name, self.meta.version),
            )]
            .into_iter()
            .collect(),
        })
    }

    /// The artifact manifest for this pack given its layer.
    pub fn manifest(&self, layer: &Descriptor) -> Vec<u8> {
        let value = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": PACK_ARTIFACT_TYPE,
            "config": {
                "mediaType": PACK_CONFIG_TYPE,
                "digest": Digest::of(&self.meta_bytes),
                "size": self.meta_bytes.len(),
            },
            "layers": [layer],
            "annotations": {
                "io.airgap.pack.name": self.meta.name,
                "io.airgap.pack.version": self.meta.version,
                "io.airgap.pack.layer": self.meta.layer.as_str(),
            },
        });
        serde_json::to_vec(&value).unwrap_or_default()
    }
}

/// Most bytes a published pack may unpack to: packs are configuration, manifests and charts,
/// so anything larger is refused rather than written out (a gzip bomb).
const MAX_UNPACKED: u64 = 512 << 20;

/// Unpacks a published pack layer (a tar.gz of the pack directory) into `dest` and returns the
/// pack directory: `dest` itself, or its only top-level directory when the archive wraps the
/// pack in one. Only regular files and directories with relative, `..`-free paths are
/// accepted; nothing is written outside `dest`.
pub fn unpack_layer(layer: &Path, dest: &Path) -> Result<PathBuf, PackError> {
    use airgap::tar::{EntryKind, Strictness, TarReader};
    let file = File::open(layer).map_err(io_err(layer))?;
    let gz = flate2::read::GzDecoder::new(io::BufReader::new(file));
    let mut tar = TarReader::new(gz, Strictness::Lenient);
    let bad = |problem: PackProblem| invalid(layer, problem);
    let mut total = 0u64;
    fs::create_dir_all(dest).map_err(io_err(dest))?;
    while let Some(header) = tar
        .next_header()
        .map_err(|e| bad(PackProblem::NotATar(e)))?
    {
        let name = header.path.trim_end_matches('/').trim_start_matches("./");
        if name.is_empty() || name == "." {
            continue;
        }
        let path = airgap::EntryPath::new(name).map_err(|cause| {
            bad(PackProblem::Entry {
                entry: header.path.clone(),
                cause,
            })
        })?;
        let target = dest.join(path.as_str());
        match header.kind {
            EntryKind::Directory => fs::create_dir_all(&target).map_err(io_err(&target))?,
            EntryKind::Regular => {
                total += header.size;
                if total > MAX_UNPACKED {
                    return Err(bad(PackProblem::TooLarge));
                }
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                let mut out = File::create(&target).map_err(io_err(&target))?;
                io::copy(&mut (&mut tar).take(header.size), &mut out).map_err(io_err(&target))?;
            }
            other => {
                return Err(PackError::Unsupported {
                    path: format!("{}: {}", layer.display(), header.path),
                    kind: match other {
                        EntryKind::Symlink => "symlink",
                        EntryKind::Hardlink => "hardlink",
                        _ => "special file",
                    },
                })
            }
        }
    }
    if dest.join("pack.json").is_file() {
        return Ok(dest.to_path_buf());
    }
    let dirs: Vec<PathBuf> = fs::read_dir(dest)
        .map_err(io_err(dest))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    match dirs.as_slice() {
        [only] if only.join("pack.json").is_file() => Ok(only.clone()),
        _ => Err(bad(PackProblem::NoPackJson)),
    }
}

/// What is wrong with one file of a pack.
#[derive(Debug, thiserror::Error)]
pub enum PackProblem {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error(transparent)]
    Image(#[from] airgap::reference::ReferenceError),
    #[error("not a tar.gz pack layer")]
    NotATar(#[source] airgap::tar::TarError),
    #[error("entry `{entry}`")]
    Entry {
        entry: String,
        #[source]
        cause: airgap::entry_path::EntryPathError,
    },
    #[error("unpacks to more than {MAX_UNPACKED} bytes; packs hold configuration, not images")]
    TooLarge,
    #[error("holds no pack.json at its root or in a single top-level directory")]
    NoPackJson,
    #[error("is outside the pack directory")]
    Outside,
}

fn invalid(file: &Path, problem: impl Into<PackProblem>) -> PackError {
    PackError::Invalid {
        file: file.display().to_string(),
        problem: problem.into(),
    }
}

fn parse_image(file: &Path, image: &str) -> Result<ImageReference, PackError> {
    ImageReference::parse(image).map_err(|e| invalid(file, e))
}

fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, PackError> {
    let manifests = dir.join("manifests");
    if !manifests.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = fs::read_dir(&manifests)
        .map_err(io_err(&manifests))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

/// Every string value of an `image:` key, anywhere in the document (the rule the installer
/// rewrites by).
fn collect_images(value: &serde_yaml_ng::Value, out: &mut Vec<String>) {
    let mut copy = value.clone();
    let _ = registry::mirror::for_each_image(&mut copy, &mut |image| {
        out.push(image.clone());
        Ok::<(), ()>(())
    });
}

/// Collects (relative path, path, is_dir) under `dir`, sorted by relative path.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf, bool)>) -> Result<(), PackError> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(io_err(&path))?;
        let rel = path
            .strip_prefix(root)
            .map_err(|_| invalid(&path, PackProblem::Outside))?
            .to_string_lossy()
            .replace('\\', "/");
        if kind.is_symlink() {
            return Err(PackError::Unsupported {
                path: path.display().to_string(),
                kind: "symlink",
            });
        } else if kind.is_dir() {
            out.push((rel, path.clone(), true));
            walk(root, &path, out)?;
        } else if kind.is_file() {
            out.push((rel, path, false));
        } else {
            return Err(PackError::Unsupported {
                path: path.display().to_string(),
                kind: "special file",
            });
        }
    }
    Ok(())
}

fn is_executable(meta: &fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack_dir(pack_json: &str, values: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("pack.json"), pack_json).unwrap();
        if let Some(v) = values {
            fs::write(dir.path().join("values.yaml"), v).unwrap();
        }
        dir
    }

    const GOOD: &str =
        r#"{"name":"cni-calico","displayName":"Calico","version":"3.27.0","layer":"cni"}"#;

    #[test]
    fn finds_images_in_values_and_manifests() {
        let dir = pack_dir(GOOD, Some("pack:\n  namespace: calico\n  content:\n    images:\n      - image: calico/cni:v3.27.0\n"));
        fs::create_dir(dir.path().join("manifests")).unwrap();
        fs::write(
            dir.path().join("manifests/ds.yaml"),
            "kind: DaemonSet\nspec:\n  template:\n    spec:\n      containers:\n        - name: node\n          image: docker.io/calico/node:v3.27.0\n---\nkind: Pod\nspec:\n  initContainers:\n    - image: calico/cni:v3.27.0\n",
        )
        .unwrap();
        let pack = Pack::load(dir.path()).unwrap();
        let names: Vec<String> = pack.images.iter().map(|i| i.to_string()).collect();
        assert_eq!(
            names,
            [
                "docker.io/calico/cni:v3.27.0",
                "docker.io/calico/node:v3.27.0"
            ]
        );
        assert_eq!(pack.namespace.as_deref(), Some("calico"));
        assert_eq!(pack.reference(), "packs/cni-calico:3.27.0");
    }

    #[test]
    fn errors_name_file_field_and_position() {
        let cases = [
            (
                r#"{"displayName":"x","version":"1.0.0","layer":"cni"}"#,
                "missing field `name`",
            ),
            (
                r#"{"name":"x","displayName":"x","version":"1.0","layer":"cni"}"#,
                "is not semver",
            ),
            (
                r#"{"name":"x","displayName":"x","version":"1.0.0","layer":"net"}"#,
                "unknown variant `net`",
            ),
            (r#"{"name":"x","#, "EOF while parsing"),
        ];
        for (json, expected) in cases {
            let dir = pack_dir(json, Some(""));
            let e = airgap::error_chain::chain(&Pack::load(dir.path()).unwrap_err());
            assert!(
                e.contains("pack.json: ") && e.contains(expected) && e.contains("line 1 column"),
                "{e}"
            );
        }
        let dir = pack_dir(GOOD, None);
        let e = airgap::error_chain::chain(&Pack::load(dir.path()).unwrap_err());
        assert!(
            e.contains("values.yaml") && e.contains("No such file"),
            "{e}"
        );
        let dir = pack_dir(
            GOOD,
            Some("pack:\n  content:\n    images:\n      - image: Bad Ref\n"),
        );
        let e = airgap::error_chain::chain(&Pack::load(dir.path()).unwrap_err());
        assert!(
            e.contains("values.yaml") && e.contains("not a valid image reference"),
            "{e}"
        );
    }

    #[test]
    fn layer_is_deterministic_and_refuses_symlinks() {
        let dir = pack_dir(GOOD, Some(""));
        let out = tempfile::tempdir().unwrap();
        let a = Pack::load(dir.path())
            .unwrap()
            .write_layer(&out.path().join("a"))
            .unwrap();
        let b = Pack::load(dir.path())
            .unwrap()
            .write_layer(&out.path().join("b"))
            .unwrap();
        assert_eq!(a, b);
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("leak")).unwrap();
        let e = Pack::load(dir.path())
            .unwrap()
            .write_layer(&out.path().join("c"))
            .unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }
}
