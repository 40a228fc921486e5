//! `bundle.yaml`: what a bundle should contain. Parsing is strict (unknown fields are errors)
//! and every error carries the file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BundleSpec {
    #[serde(deserialize_with = "api_version")]
    pub api_version: String,
    #[serde(deserialize_with = "kind_bundle")]
    pub kind: String,
    pub metadata: Metadata,
    pub spec: SpecBody,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    /// Semantic version (`4.5.0`): the installer compares releases by it.
    #[serde(deserialize_with = "release_version")]
    pub version: semver::Version,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecBody {
    /// `os/arch[/variant]` entries to keep from multi-platform indexes; empty or `all` keeps all.
    #[serde(default)]
    pub platforms: Vec<String>,
    #[serde(default)]
    pub packs: Vec<PackSource>,
    #[serde(default)]
    pub images: Vec<ImageEntry>,
    #[serde(default)]
    pub registries: Vec<RegistrySettings>,
    /// The signature policy of every image pulled from a registry that does not set its own.
    #[serde(default)]
    pub verify: Option<SignaturePolicy>,
}

/// Upstream signatures an image must carry: a cosign / containers/image `sigstoreSigned`
/// signature by one of `keys` (PEM public keys, relative to the spec file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignaturePolicy {
    #[serde(deserialize_with = "some_keys")]
    pub keys: Vec<PathBuf>,
}

fn some_keys<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    let keys = Vec::<PathBuf>::deserialize(d)?;
    if keys.is_empty() {
        return Err(de::Error::custom(
            "`keys` lists no key; name at least one public key file, or write `verify: none`",
        ));
    }
    Ok(keys)
}

/// An image entry's `verify:`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Verify {
    /// Not set: `spec.verify` applies.
    #[default]
    Default,
    Policy(SignaturePolicy),
    /// `verify: none`: taken without a signature even when `spec.verify` is set.
    Unsigned,
}

impl<'de> Deserialize<'de> for Verify {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct VerifyVisitor;
        impl<'de> Visitor<'de> for VerifyVisitor {
            type Value = Verify;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`none`, or a map with `keys`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Verify, E> {
                match v {
                    "none" => Ok(Verify::Unsigned),
                    other => Err(E::custom(format!(
                        "`verify: {other}`: expected `none` or `{{keys: [FILE, ...]}}`"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Verify, A::Error> {
                SignaturePolicy::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(Verify::Policy)
            }
        }
        d.deserialize_any(VerifyVisitor)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistrySettings {
    pub host: String,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub plain_http: bool,
}

/// Where a pack comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackSource {
    Path(PathBuf),
    Oci(String),
}

impl<'de> Deserialize<'de> for PackSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            path: Option<PathBuf>,
            oci: Option<String>,
        }
        match Raw::deserialize(d)? {
            Raw {
                path: Some(p),
                oci: None,
            } => Ok(PackSource::Path(p)),
            Raw {
                path: None,
                oci: Some(r),
            } => Ok(PackSource::Oci(r)),
            _ => Err(de::Error::custom(
                "a pack entry needs exactly one of `path: DIR` or `oci: REF`",
            )),
        }
    }
}

/// An image to include: pulled by reference, or taken from a local layout under a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageEntry {
    Pull { reference: String, verify: Verify },
    Local { reference: String, from: LocalImage },
}

impl ImageEntry {
    pub fn reference(&self) -> &str {
        match self {
            ImageEntry::Pull { reference, .. } => reference,
            ImageEntry::Local { reference, .. } => reference,
        }
    }
}

/// `oci:DIR[:REF]` or `oci-archive:FILE[:REF]`, as skopeo names them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalImage {
    pub kind: LayoutKind,
    pub path: PathBuf,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayoutKind {
    Directory,
    Archive,
}

/// A `from:` that is not a local layout reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalImageError {
    #[error("`{0}` must start with `oci:` or `oci-archive:`")]
    Scheme(String),
    #[error("`{0}` names no path")]
    NoPath(String),
}

impl LocalImage {
    pub fn parse(text: &str) -> Result<Self, LocalImageError> {
        let (kind, rest) = if let Some(rest) = text.strip_prefix("oci-archive:") {
            (LayoutKind::Archive, rest)
        } else if let Some(rest) = text.strip_prefix("oci:") {
            (LayoutKind::Directory, rest)
        } else {
            return Err(LocalImageError::Scheme(text.to_string()));
        };
        let (path, name) = match rest.split_once(':') {
            Some((p, n)) => (p, Some(n.to_string()).filter(|n| !n.is_empty())),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(LocalImageError::NoPath(text.to_string()));
        }
        Ok(LocalImage {
            kind,
            path: PathBuf::from(path),
            name,
        })
    }

    /// Relative paths are relative to the spec file.
    pub fn resolved(&self, base: &Path) -> LocalImage {
        LocalImage {
            path: base.join(&self.path),
            ..self.clone()
        }
    }
}

impl fmt::Display for LocalImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            LayoutKind::Directory => "oci",
            LayoutKind::Archive => "oci-archive",
        };
        write!(f, "{scheme}:{}", self.path.display())?;
        if let Some(n) = &self.name {
            write!(f, ":{n}")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for ImageEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = ImageEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an image reference, or a map with `ref` and `from`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ImageEntry, E> {
                Ok(ImageEntry::Pull {
                    reference: v.to_string(),
                    verify: Verify::Default,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ImageEntry, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Raw {
                    #[serde(rename = "ref")]
                    reference: String,
                    from: Option<String>,
                    #[serde(default)]
                    verify: Verify,
                }
                let raw = Raw::deserialize(de::value::MapAccessDeserializer::new(map))?;
                match raw.from {
                    None => Ok(ImageEntry::Pull {
                        reference: raw.reference,
                        verify: raw.verify,
                    }),
                    Some(_) if raw.verify != Verify::Default => Err(de::Error::custom(format!(
                        "{}: `verify` applies to images pulled from a registry, not to a `from:` layout",
                        raw.reference
                    ))),
                    Some(from) => Ok(ImageEntry::Local {
                        reference: raw.reference,
                        from: LocalImage::parse(&from).map_err(de::Error::custom)?,
                    }),
                }
            }
        }
        d.deserialize_any(EntryVisitor)
    }
}

/// A release version without build metadata: `4.5.0+r2` has the precedence of `4.5.0` (semver
/// ignores it), so it could neither replace that release nor be told apart from it, and it is
/// not a valid tag in a registry.
fn release_version<'de, D: Deserializer<'de>>(d: D) -> Result<semver::Version, D::Error> {
    let v = semver::Version::deserialize(d)?;
    if !v.build.is_empty() {
        return Err(de::Error::custom(format!(
            "version `{v}` carries build metadata (`+{}`), which does not order releases; use a new patch or pre-release version",
            v.build
        )));
    }
    Ok(v)
}

fn api_version<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = String::deserialize(d)?;
    if v != "airgap/v1" {
        return Err(de::Error::custom(format!(
            "apiVersion is `{v}`, expected `airgap/v1`"
        )));
    }
    Ok(v)
}

fn kind_bundle<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = String::deserialize(d)?;
    if v != "Bundle" {
        return Err(de::Error::custom(format!(
            "kind is `{v}`, expected `Bundle`"
        )));
    }
    Ok(v)
}

#[derive(Debug, thiserror::Error)]
#[error("{file}")]
pub struct SpecError {
    pub file: String,
    #[source]
    pub problem: SpecProblem,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecProblem {
    #[error("cannot read")]
    Read(#[source] std::io::Error),
    #[error(transparent)]
    Yaml(#[from] serde_yaml_ng::Error),
}

impl BundleSpec {
    pub fn parse(text: &str, file: &Path) -> Result<Self, SpecError> {
        serde_yaml_ng::from_str(text).map_err(|e| SpecError {
            file: file.display().to_string(),
            problem: SpecProblem::Yaml(e),
        })
    }

    pub fn load(file: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(file).map_err(|e| SpecError {
            file: file.display().to_string(),
            problem: SpecProblem::Read(e),
        })?;
        Self::parse(&text, file)
    }

    /// The policy an image pulled from a registry is held to: its entry's own, else
    /// `spec.verify`. `entry` is `None` for an image only a pack names.
    pub fn policy_for<'a>(&'a self, entry: Option<&'a ImageEntry>) -> Option<&'a SignaturePolicy> {
        match entry {
            Some(ImageEntry::Pull {
                verify: Verify::Policy(p),
                ..
            }) => Some(p),
            Some(ImageEntry::Pull {
                verify: Verify::Unsigned,
                ..
            })
            | Some(ImageEntry::Local { .. }) => None,
            _ => self.spec.verify.as_ref(),
        }
    }

    /// Every policy the spec writes: `spec.verify` and each image's own.
    pub fn policies(&self) -> impl Iterator<Item = &SignaturePolicy> {
        self.spec
            .verify
            .iter()
            .chain(self.spec.images.iter().filter_map(|e| match e {
                ImageEntry::Pull {
                    verify: Verify::Policy(p),
                    ..
                } => Some(p),
                _ => None,
            }))
    }

    /// True when every platform is kept.
    pub fn keeps_all_platforms(&self) -> bool {
        self.spec.platforms.is_empty() || self.spec.platforms.iter().any(|p| p == "all")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BundleSpec, String> {
        BundleSpec::parse(text, Path::new("bundle.yaml"))
            .map_err(|e| airgap::error_chain::chain(&e))
    }

    const HEAD: &str = "apiVersion: airgap/v1\nkind: Bundle\nmetadata: {name: n, version: 1.0.0}\n";

    #[test]
    fn parses_every_source_form() {
        let s = parse(&format!(
            "{HEAD}spec:\n  packs:\n    - path: packs/a\n    - oci: r.io/p/a:1\n  images:\n    - r.io/x:1\n    - ref: r.io/y:2\n      from: oci:layout:y\n    - ref: r.io/z:3\n      from: oci-archive:z.tar\n"
        ))
        .unwrap();
        assert_eq!(s.spec.packs[0], PackSource::Path("packs/a".into()));
        assert_eq!(
            s.spec.images[0],
            ImageEntry::Pull {
                reference: "r.io/x:1".into(),
                verify: Verify::Default
            }
        );
        match &s.spec.images[2] {
            ImageEntry::Local { from, .. } => {
                assert_eq!(from.kind, LayoutKind::Archive);
                assert_eq!(from.name, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_image_gets_its_own_policy_or_the_default() {
        let s = parse(&format!(
            "{HEAD}spec:\n  verify: {{keys: [default.pub]}}\n  images:\n    - r.io/x:1\n    - ref: r.io/y:2\n      verify: {{keys: [y.pub, y2.pub]}}\n    - ref: r.io/z:3\n      verify: none\n"
        ))
        .unwrap();
        let keys = |i: Option<usize>| {
            s.policy_for(i.map(|i| &s.spec.images[i]))
                .map(|p| p.keys.clone())
        };
        assert_eq!(keys(Some(0)), Some(vec!["default.pub".into()]));
        assert_eq!(keys(Some(1)), Some(vec!["y.pub".into(), "y2.pub".into()]));
        assert_eq!(keys(Some(2)), None);
        assert_eq!(keys(None), Some(vec!["default.pub".into()]));

        let e = parse(&format!(
            "{HEAD}spec:\n  images:\n    - ref: r.io/y:2\n      verify: {{keys: []}}\n"
        ))
        .unwrap_err();
        assert!(e.contains("lists no key"), "{e}");
        let e = parse(&format!(
            "{HEAD}spec:\n  images:\n    - ref: r.io/y:2\n      verify: always\n"
        ))
        .unwrap_err();
        assert!(e.contains("expected `none`"), "{e}");
        let e = parse(&format!(
            "{HEAD}spec:\n  images:\n    - ref: r.io/y:2\n      from: oci:l\n      verify: none\n"
        ))
        .unwrap_err();
        assert!(e.contains("not to a `from:` layout"), "{e}");
        let e = parse(&format!(
            "{HEAD}spec:\n  verify: {{keys: [a.pub], keyless: true}}\n"
        ))
        .unwrap_err();
        assert!(e.contains("unknown field `keyless`"), "{e}");
    }

    #[test]
    fn a_version_with_build_metadata_is_refused() {
        let e = parse(
            "apiVersion: airgap/v1\nkind: Bundle\nmetadata: {name: n, version: 4.5.0+r2}\nspec: {}\n",
        )
        .unwrap_err();
        assert!(e.contains("carries build metadata (`+r2`)"), "{e}");
        parse("apiVersion: airgap/v1\nkind: Bundle\nmetadata: {name: n, version: 4.5.1-rc.1}\nspec: {}\n")
            .unwrap();
    }

    #[test]
    fn errors_name_file_position_and_expectation() {
        let e = parse(&format!(
            "{HEAD}spec:\n  packs:\n    - path: a\n      oci: b\n"
        ))
        .unwrap_err();
        assert!(e.starts_with("bundle.yaml: spec.packs"), "{e}");
        assert!(e.contains("exactly one of"), "{e}");
        assert!(e.contains("line 6"), "{e}");
        let e = parse(&format!("{HEAD}spec:\n  imagez: []\n")).unwrap_err();
        assert!(
            e.contains("unknown field `imagez`") && e.contains("line 5"),
            "{e}"
        );
        let e = parse("apiVersion: airgap/v2\nkind: Bundle\n").unwrap_err();
        assert!(e.contains("expected `airgap/v1`"), "{e}");
        let e = parse(&format!(
            "{HEAD}spec:\n  images:\n    - ref: a\n      from: docker:x\n"
        ))
        .unwrap_err();
        assert!(e.contains("must start with `oci:`"), "{e}");
        let e = parse("apiVersion: [").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }
}
