//! Registry credentials: the standard auth files docker, podman and skopeo write, and the
//! `WWW-Authenticate` challenges registries answer with.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

/// A username and password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read auth file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("auth file {path} is not valid JSON")]
    Malformed {
        path: PathBuf,
        #[source]
        cause: serde_json::Error,
    },
    #[error("auth file {path}: the `auth` entry for {host} is not base64 of `user:password`")]
    BadEntry { path: PathBuf, host: String },
}

#[derive(Debug, Default, Deserialize)]
struct AuthFileJson {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntryJson>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntryJson {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The credentials of one auth file, keyed by normalized registry host.
#[derive(Debug, Default, Clone)]
pub struct AuthFile {
    entries: BTreeMap<String, Credentials>,
}

impl AuthFile {
    /// The first auth file that exists, in the order skopeo and docker look:
    /// `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
    /// `$DOCKER_CONFIG/config.json`, `~/.docker/config.json`. None is not an error.
    pub fn discover() -> Result<Self, AuthFileError> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let candidates = [
            env("REGISTRY_AUTH_FILE"),
            env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")),
            env("DOCKER_CONFIG").map(|d| d.join("config.json")),
            env("HOME").map(|d| d.join(".docker/config.json")),
        ];
        for path in candidates.into_iter().flatten() {
            if path.is_file() {
                tracing::debug!(path = %path.display(), "using auth file");
                return Self::load(&path);
            }
        }
        Ok(AuthFile::default())
    }

    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let bytes = std::fs::read(path).map_err(|cause| AuthFileError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::parse(path, &bytes)
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Self, AuthFileError> {
        let json: AuthFileJson =
            serde_json::from_slice(bytes).map_err(|cause| AuthFileError::Malformed {
                path: path.to_path_buf(),
                cause,
            })?;
        let mut entries = BTreeMap::new();
        for (key, entry) in json.auths {
            let host = normalize_host(&key);
            let creds = match (
                entry.auth.as_deref().filter(|a| !a.is_empty()),
                entry.username,
            ) {
                (Some(auth), _) => decode_auth(auth).ok_or_else(|| AuthFileError::BadEntry {
                    path: path.to_path_buf(),
                    host: host.clone(),
                })?,
                (None, Some(username)) => Credentials {
                    username,
                    password: entry.password.unwrap_or_default(),
                },
                // Entries that defer to a credential helper carry nothing here.
                (None, None) => continue,
            };
            entries.insert(host, creds);
        }
        Ok(AuthFile { entries })
    }

    /// Credentials for a registry host (`host[:port]`).
    pub fn get(&self, host: &str) -> Option<&Credentials> {
        self.entries.get(&normalize_host(host))
    }
}

fn decode_auth(auth: &str) -> Option<Credentials> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    })
}

/// `https://index.docker.io/v1/`, `docker.io` and `registry-1.docker.io` are one registry;
/// other keys lose their scheme and path.
fn normalize_host(key: &str) -> String {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme.split('/').next().unwrap_or_default();
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        other => other.to_ascii_lowercase(),
    }
}

/// What a registry's `WWW-Authenticate` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Challenge {
    pub fn parse(header: &str) -> Option<Challenge> {
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(params);
        Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
        })
    }
}

/// `key="value", key=value` pairs; quoted values may hold commas.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_string());
        rest = tail.trim_start().trim_start_matches(',');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_base64_and_plain_entries_and_normalizes_hosts() {
        let json = br#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"dXNlcjpwYTpzcw=="},
            "Registry.Example.com:5000":{"username":"robot","password":"pw"},
            "helper.example.com":{}
        }}"#;
        let file = AuthFile::parse(Path::new("config.json"), json).unwrap();
        let hub = file.get("docker.io").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("user", "pa:ss")
        );
        assert_eq!(
            file.get("registry.example.com:5000").unwrap().username,
            "robot"
        );
        assert!(file.get("helper.example.com").is_none());
        assert!(!format!("{hub:?}").contains("pa:ss"));
    }

    #[test]
    fn bad_auth_entries_name_the_host() {
        let json = br#"{"auths":{"r.io":{"auth":"!!!"}}}"#;
        let err = AuthFile::parse(Path::new("c.json"), json).unwrap_err();
        assert!(err.to_string().contains("r.io"), "{err}");
        assert!(AuthFile::parse(Path::new("c.json"), b"{").is_err());
    }

    #[test]
    fn parses_challenges() {
        assert_eq!(
            Challenge::parse("Basic realm=\"Registry\""),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.io/token",service="registry.io",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.io/token".into(),
                service: Some("registry.io".into())
            })
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
    }
}
