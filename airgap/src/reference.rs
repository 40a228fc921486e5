//! Image references, normalized the way docker does (`nginx` is
//! `docker.io/library/nginx:latest`), so that a pack's `image:` and a spec's image entry name the
//! same thing however each spelled it.

use std::fmt;

use crate::digest::Digest;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageReference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{reference}` is not a valid image reference: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: &'static str,
}

const DOCKER_HUB: &str = "docker.io";

impl ImageReference {
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let err = |reason| ReferenceError {
            reference: input.to_string(),
            reason,
        };
        if input.is_empty() || input.len() > 1024 || input.chars().any(|c| c.is_whitespace()) {
            return Err(err("empty, too long, or contains white space"));
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => (
                n,
                Some(
                    d.parse::<Digest>()
                        .map_err(|_| err("digest is not sha256:<64 hex>"))?,
                ),
            ),
            None => (input, None),
        };
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(&name_tag[last_slash + i + 1..]),
            ),
            None => (name_tag, None),
        };
        if let Some(tag) = tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && !tag.starts_with(['.', '-'])
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(err(
                    "tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if !registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        {
            return Err(err("registry host has invalid characters"));
        }
        if !crate::name::is_valid_repository(&repository) {
            return Err(err("repository path components must be lowercase [a-z0-9] separated by single `.`, `_`, `__` or dashes"));
        }
        let tag = match (tag, digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.map(str::to_string),
        };
        Ok(ImageReference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `<host>/<path>`: where the image goes under a mirror prefix. A port is written
    /// `host_port`, because `:` is not allowed in a repository name and `_` is.
    pub fn mirror_repository(&self) -> String {
        format!(
            "{}/{}",
            self.registry.to_ascii_lowercase().replace(':', "_"),
            self.repository
        )
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageReference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(norm("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("calico/cni:v3.27.0"), "docker.io/calico/cni:v3.27.0");
        assert_eq!(
            norm("index.docker.io/library/nginx:1"),
            "docker.io/library/nginx:1"
        );
        assert_eq!(
            norm("registry.k8s.io/pause:3.9"),
            "registry.k8s.io/pause:3.9"
        );
        assert_eq!(norm("127.0.0.1:5001/a/b"), "127.0.0.1:5001/a/b:latest");
        assert_eq!(norm("localhost/x:y"), "localhost/x:y");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(norm(&format!("host.io/x@{d}")), format!("host.io/x@{d}"));
        assert_eq!(
            ImageReference::parse("registry.k8s.io/pause:3.9")
                .unwrap()
                .mirror_repository(),
            "registry.k8s.io/pause"
        );
        assert_eq!(
            ImageReference::parse("127.0.0.1:5001/a/b:1")
                .unwrap()
                .mirror_repository(),
            "127.0.0.1_5001/a/b"
        );
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "",
            "Upper/case",
            "a b",
            "x:",
            "x@sha256:zz",
            "host.io/a//b",
            "x:-tag",
            "host.io/a..b",
            "host.io/a/../b",
            "host.io/%2e%2e/b",
        ] {
            assert!(ImageReference::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
