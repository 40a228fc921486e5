//! Where bundle content lives in a mirror registry, and the two files that point clients at
//! it: the rewrite map (original reference -> mirrored reference) and containerd `hosts.toml`
//! files (one per upstream registry).
//!
//! Convention (DESIGN.md): images at `<prefix>/<original host>/<original path>` with the same
//! tag, packs at `<prefix>/packs/<name>:<version>`. The built-in server uses the same names
//! with an empty prefix.

use std::collections::BTreeMap;
use std::fmt;

use airgap::{BundleIndex, Digest, ImageReference};
use serde::Serialize;

/// `https://HOST[:PORT][/PREFIX]`, as given to `registry seed --to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorTarget {
    /// `host[:port]`.
    pub host: String,
    /// Repository prefix without leading or trailing `/`; may be empty.
    pub prefix: String,
    pub plain_http: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("`{0}` is not a registry URL: expected https://HOST[:PORT][/PREFIX]")]
    NotAUrl(String),
    #[error("`{0}` is plain HTTP: credentials and content would cross the network unencrypted; pass --plain-http to allow it")]
    PlainHttpNotAllowed(String),
    #[error("`{url}`: prefix component `{component}` is not a valid repository name component (lowercase [a-z0-9], separated by . _ -)")]
    BadPrefix { url: String, component: String },
}

impl MirrorTarget {
    pub fn parse(url: &str, allow_plain_http: bool) -> Result<Self, TargetError> {
        let (plain_http, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            if !allow_plain_http {
                return Err(TargetError::PlainHttpNotAllowed(url.into()));
            }
            (true, rest)
        } else {
            return Err(TargetError::NotAUrl(url.into()));
        };
        let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() || host.contains(['@', '?', '#', ' ']) {
            return Err(TargetError::NotAUrl(url.into()));
        }
        let prefix = prefix.trim_matches('/');
        for component in prefix.split('/').filter(|_| !prefix.is_empty()) {
            if !crate::name::is_valid_component(component) {
                return Err(TargetError::BadPrefix {
                    url: url.into(),
                    component: component.into(),
                });
            }
        }
        Ok(MirrorTarget {
            host: host.to_ascii_lowercase(),
            prefix: prefix.to_string(),
            plain_http,
        })
    }

    /// The repository `path` lives at under the prefix.
    pub fn repository(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            path.to_string()
        } else {
            format!("{}/{}", self.prefix, path)
        }
    }

    /// The registry API URL of repository `path` (under the prefix), as containerd's
    /// `override_path` wants it: `https://host/v2/<prefix>/<path>`.
    pub fn api_url(&self, path: &str) -> String {
        format!(
            "{}://{}/v2/{}",
            self.scheme(),
            self.host,
            self.repository(path)
        )
    }

    fn scheme(&self) -> &'static str {
        if self.plain_http {
            "http"
        } else {
            "https"
        }
    }
}

impl fmt::Display for MirrorTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme(), self.host)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// One manifest tree to push: an image or a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirroredName {
    /// Repository in the target, prefix included.
    pub repository: String,
    /// Tag to push the root manifest under, if the reference has one.
    pub tag: Option<String>,
    /// The root manifest as stored in the bundle.
    pub digest: Digest,
    pub media_type: String,
}

/// The repository and tag of every image and pack of a bundle under `target`.
pub fn mirrored_names(index: &BundleIndex, target: &MirrorTarget) -> Vec<MirroredName> {
    let images = index.images.iter().map(|image| MirroredName {
        repository: target.repository(&image.mirror_repository),
        tag: ImageReference::parse(&image.reference)
            .ok()
            .and_then(|r| r.tag),
        digest: image.digest,
        media_type: image.media_type.clone(),
    });
    let packs = index.packs.iter().map(|pack| MirroredName {
        repository: target.repository(&format!("packs/{}", pack.name)),
        tag: Some(pack.version.clone()),
        digest: pack.digest,
        media_type: airgap::oci::OCI_MANIFEST.to_string(),
    });
    images.chain(packs).collect()
}

/// `rewrite-map.json`: what each original reference is called in the mirror.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RewriteMap {
    pub registry: String,
    pub images: BTreeMap<String, String>,
    pub packs: BTreeMap<String, String>,
}

impl RewriteMap {
    pub fn new(index: &BundleIndex, target: &MirrorTarget) -> Self {
        let base = |repo: &str| format!("{}/{}", target.host, target.repository(repo));
        let mut images = BTreeMap::new();
        for image in &index.images {
            let Ok(reference) = ImageReference::parse(&image.reference) else {
                continue;
            };
            let mirrored = base(&image.mirror_repository);
            let value = match (&reference.tag, reference.digest) {
                (_, Some(_)) => {
                    let tag = reference
                        .tag
                        .as_ref()
                        .map(|t| format!(":{t}"))
                        .unwrap_or_default();
                    format!("{mirrored}{tag}@{}", image.digest)
                }
                (Some(tag), None) => format!("{mirrored}:{tag}"),
                (None, None) => format!("{mirrored}@{}", image.digest),
            };
            images.insert(image.reference.clone(), value.clone());
            if image.source != image.reference {
                images.insert(image.source.clone(), value.clone());
            }
            // A digest-pinned reference to the upstream manifest still resolves when a
            // filtered index changed the digest.
            let by_upstream = format!(
                "{}/{}@{}",
                reference.registry, reference.repository, image.upstream_digest
            );
            images
                .entry(by_upstream)
                .or_insert_with(|| format!("{mirrored}@{}", image.digest));
        }
        let packs = index
            .packs
            .iter()
            .map(|p| {
                (
                    format!("{}:{}", p.name, p.version),
                    format!("{}:{}", base(&format!("packs/{}", p.name)), p.version),
                )
            })
            .collect();
        RewriteMap {
            registry: target.to_string(),
            images,
            packs,
        }
    }

    /// The mirrored name of `image` as a manifest wrote it (any spelling that normalizes to a
    /// bundle image: `nginx`, `docker.io/library/nginx:latest`).
    pub fn mirrored(&self, image: &str) -> Option<&str> {
        self.images
            .get(image)
            .or_else(|| {
                let normalized = ImageReference::parse(image).ok()?.to_string();
                self.images.get(&normalized)
            })
            .map(String::as_str)
    }

    /// Points every `image:` in a Kubernetes manifest document at the mirror, so the
    /// workload pulls from it by name rather than through containerd's mirror fallback.
    /// Fails on the first image the bundle does not hold: applying it would leave a pod in
    /// `ImagePullBackOff` on a node that cannot download anything.
    pub fn rewrite_manifest(
        &self,
        document: &mut serde_yaml_ng::Value,
    ) -> Result<usize, ImageNotInBundle> {
        let mut rewritten = 0;
        for_each_image(document, &mut |image| {
            let mirrored = self
                .mirrored(image)
                .ok_or_else(|| ImageNotInBundle(image.clone()))?;
            *image = mirrored.to_string();
            rewritten += 1;
            Ok(())
        })?;
        Ok(rewritten)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// A manifest names an image the bundle does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image `{0}` is not in the bundle")]
pub struct ImageNotInBundle(pub String);

/// Calls `f` on the string value of every `image:` key anywhere in a YAML document: the
/// images a manifest runs (containers, init and ephemeral containers, and the `image:` keys
/// charts and operators put in their own resources). The bundler collects with it; the
/// installer rewrites with it, so both agree on what counts as an image.
pub fn for_each_image<E>(
    value: &mut serde_yaml_ng::Value,
    f: &mut impl FnMut(&mut String) -> Result<(), E>,
) -> Result<(), E> {
    use serde_yaml_ng::Value;
    match value {
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                match (k.as_str(), v) {
                    (Some("image"), Value::String(s)) => f(s)?,
                    (_, v) => for_each_image(v, f)?,
                }
            }
        }
        Value::Sequence(items) => {
            for v in items {
                for_each_image(v, f)?;
            }
        }
        Value::Tagged(t) => for_each_image(&mut t.value, f)?,
        _ => {}
    }
    Ok(())
}

/// How containerd reaches the mirror: whether it must trust a CA for it, which the caller
/// puts beside each `hosts.toml` as [`HOST_CA_FILE`] (containerd resolves a relative `ca`
/// against the host directory, so the directory is self-contained wherever it is copied),
/// and, when the mirror wants a login, the credentials sent as a static
/// `Authorization: Basic` header (containerd's `hosts.toml` has no other way to carry them;
/// files holding one must be private).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostAccess<'a> {
    pub ca: bool,
    pub credentials: Option<&'a crate::auth::Credentials>,
}

/// The CA's file name in every host directory that needs one.
pub const HOST_CA_FILE: &str = "ca.crt";

/// The directory containerd reads for a registry it has no directory of its own for
/// (`certs.d/_default`, containerd 1.5 and later).
pub const DEFAULT_HOST_DIR: &str = "_default";

/// Where `_default` sends pulls of registries the bundle has no image from: a repository
/// under the mirror's prefix that no bundle writes (pack and image repositories start with a
/// registry host or `packs`, and hosts hold a dot, a colon or are `localhost`), so such a pull
/// fails at the mirror with "not found" instead of leaving the air gap.
pub const UNLISTED_REGISTRY_REPOSITORY: &str = "airgap-unlisted-registry";

/// containerd `hosts.toml` contents by host directory (`certs.d/<dir>/hosts.toml`): one per
/// upstream registry the bundle's images come from, one for the mirror itself (pulls by
/// mirrored name), and `_default` for every other registry. Each file names the mirror and
/// nothing else: containerd tries `server` after the `[host]` entries and, when `server` is
/// absent, falls back to the upstream registry itself, so `server` is the mirror too. A mirror
/// failure (401, unknown CA, down, not found) then fails the pull instead of sending it to the
/// internet.
pub fn containerd_hosts(
    index: &BundleIndex,
    target: &MirrorTarget,
    access: HostAccess<'_>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (host, mirror_root) in upstream_hosts(index) {
        if out.contains_key(&host) || host == target.host {
            continue;
        }
        let text = hosts_toml(
            &format!("pulls of {host} go to the mirror and nowhere else"),
            &target.api_url(&mirror_root),
            true,
            access,
        );
        out.insert(host, text);
    }
    out.insert(
        DEFAULT_HOST_DIR.to_string(),
        hosts_toml(
            "registries the bundle has no image from: pulls fail at the mirror, never upstream",
            &target.api_url(UNLISTED_REGISTRY_REPOSITORY),
            true,
            access,
        ),
    );
    let own = format!("{}://{}", target.scheme(), target.host);
    let text = hosts_toml(
        "the mirror itself, for pulls by mirrored name",
        &own,
        false,
        access,
    );
    out.insert(target.host.clone(), text);
    out
}

/// Every upstream registry host of the bundle's images with the first component of its
/// mirrored repositories (the host as a repository component).
fn upstream_hosts(index: &BundleIndex) -> BTreeMap<String, String> {
    let mut hosts = BTreeMap::new();
    for image in &index.images {
        let Ok(reference) = ImageReference::parse(&image.reference) else {
            continue;
        };
        let root = image
            .mirror_repository
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        hosts.entry(reference.registry).or_insert(root);
    }
    hosts
}

/// containers-registries.conf(5) v2 for CRI-O, podman and skopeo nodes: every upstream
/// registry of the bundle is rewritten to its repositories in the mirror (`location`, not a
/// `[[registry.mirror]]`, which would fall back upstream), short names are not searched
/// anywhere, and the mirror's own host is listed so its TLS settings apply.
pub fn registries_conf(index: &BundleIndex, target: &MirrorTarget) -> String {
    let mut text = format!(
        "{HOSTS_TOML_MARK}: pulls of the bundle's registries go to the mirror and nowhere else.\n\
         unqualified-search-registries = []\nshort-name-mode = \"enforcing\"\n"
    );
    for (host, mirror_root) in upstream_hosts(index) {
        if host == target.host {
            continue;
        }
        text.push_str(&format!(
            "\n[[registry]]\nprefix = {}\nlocation = {}\ninsecure = {}\n",
            toml_string(&host),
            toml_string(&format!(
                "{}/{}",
                target.host,
                target.repository(&mirror_root)
            )),
            target.plain_http,
        ));
    }
    text.push_str(&format!(
        "\n[[registry]]\nprefix = {0}\nlocation = {0}\ninsecure = {1}\n",
        toml_string(&target.host),
        target.plain_http,
    ));
    text
}

/// First line of every `hosts.toml` airgap writes, so `reset` removes only its own.
pub const HOSTS_TOML_MARK: &str = "# Written by airgap";

/// One host file: the same settings on `server` (top-level keys) and on its one `[host]`
/// entry. containerd 1.6 refuses a file without a `[host]` table and then falls back to the
/// upstream registry, so the entry is kept even though `server` alone would do.
fn hosts_toml(why: &str, url: &str, override_path: bool, access: HostAccess<'_>) -> String {
    let settings = |indent: &str, header_table: &str| {
        let mut s = format!("{indent}capabilities = [\"pull\", \"resolve\"]\n");
        if override_path {
            s.push_str(&format!("{indent}override_path = true\n"));
        }
        if access.ca {
            s.push_str(&format!("{indent}ca = {}\n", toml_string(HOST_CA_FILE)));
        }
        if let Some(c) = access.credentials {
            use base64::Engine as _;
            let basic = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.username, c.password));
            s.push_str(&format!(
                "{indent}[{header_table}]\n{indent}  Authorization = [{}]\n",
                toml_string(&format!("Basic {basic}"))
            ));
        }
        s
    };
    let mut text = format!("{HOSTS_TOML_MARK}: {why}.\n");
    text.push_str(&format!("server = {}\n", toml_string(url)));
    text.push_str(&settings("", "header"));
    text.push_str(&format!("\n[host.{}]\n", toml_string(url)));
    text.push_str(&settings(
        "  ",
        &format!("host.{}.header", toml_string(url)),
    ));
    text
}

/// `s` as a TOML basic string, quoted and escaped.
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = MirrorTarget::parse("https://reg.local:5000/airgap/base/", false).unwrap();
        assert_eq!(
            (t.host.as_str(), t.prefix.as_str(), t.plain_http),
            ("reg.local:5000", "airgap/base", false)
        );
        assert_eq!(
            t.repository("docker.io/library/nginx"),
            "airgap/base/docker.io/library/nginx"
        );
        let bare = MirrorTarget::parse("https://reg.local", false).unwrap();
        assert_eq!(bare.repository("packs/x"), "packs/x");
        assert_eq!(
            MirrorTarget::parse("http://reg.local", false),
            Err(TargetError::PlainHttpNotAllowed("http://reg.local".into()))
        );
        assert!(
            MirrorTarget::parse("http://reg.local", true)
                .unwrap()
                .plain_http
        );
        assert!(MirrorTarget::parse("reg.local", false).is_err());
        assert!(MirrorTarget::parse("https://reg.local/../x", false).is_err());
        assert!(MirrorTarget::parse("https://reg.local/UP", false).is_err());
    }

    #[test]
    fn toml_strings_escape() {
        assert_eq!(toml_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
