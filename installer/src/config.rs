//! `install.yaml`: what the operator asks for. Parsing validates every field it can on its own
//! (an error names the field and its line and column); [`InstallConfig::load`] then checks what
//! only the whole document can tell (mode against node count, the VIP).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstallConfig {
    pub api_version: ApiVersion,
    pub kind: Kind,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiVersion {
    #[serde(rename = "airgap/v1")]
    V1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Installation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: DnsLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    pub mode: Mode,
    pub fqdn: Fqdn,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<IpAddr>,
    pub nodes: Vec<Node>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<CertificatesSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Standalone,
    Ha,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: DnsLabel,
    pub address: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatesSpec {
    pub import: ImportSpec,
}

/// Files are relative to the directory holding `install.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportSpec {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRegistry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<BuiltinRegistry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalRegistry {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinRegistry {
    pub port: u16,
}

pub const DEFAULT_REGISTRY_PORT: u16 = 5000;

/// A DNS name of one or more labels (letters, digits, `-`), as certificates and kubeadm use
/// for the cluster's endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct Fqdn(String);

impl TryFrom<String> for Fqdn {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let s = s.to_ascii_lowercase();
        if s.is_empty() || s.len() > 253 {
            return Err(format!("`{s}` is not a DNS name (1 to 253 characters)"));
        }
        if s.parse::<IpAddr>().is_ok() {
            return Err(format!(
                "`{s}` is an IP address; the FQDN must be a DNS name"
            ));
        }
        for label in s.split('.') {
            check_label(label).map_err(|e| format!("`{s}` is not a DNS name: {e}"))?;
        }
        Ok(Fqdn(s))
    }
}

impl From<Fqdn> for String {
    fn from(f: Fqdn) -> String {
        f.0
    }
}

impl Fqdn {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fqdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One DNS label: node and installation names end up in certificate subjects, etcd member
/// names and file names, so they are kept to what all of those accept.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct DnsLabel(String);

impl TryFrom<String> for DnsLabel {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        check_label(&s).map_err(|e| format!("`{s}`: {e}"))?;
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!("`{s}`: use lower case"));
        }
        Ok(DnsLabel(s))
    }
}

impl From<DnsLabel> for String {
    fn from(l: DnsLabel) -> String {
        l.0
    }
}

impl DnsLabel {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnsLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Validates while the scalar is being read (not after, as `serde(try_from)` would), so the
/// parser's error carries the field's own path, line and column.
struct CheckedString<T>(std::marker::PhantomData<T>);

impl<T: TryFrom<String, Error = String>> serde::de::Visitor<'_> for CheckedString<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        T::try_from(v.to_string()).map_err(E::custom)
    }
}

macro_rules! deserialize_checked {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(CheckedString(std::marker::PhantomData))
            }
        }
    )*};
}
deserialize_checked!(Fqdn, DnsLabel);

fn check_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() || label.len() > 63 {
        return Err("each label must be 1 to 63 characters");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err("only letters, digits and `-` are allowed");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("a label cannot start or end with `-`");
    }
    Ok(())
}

impl InstallConfig {
    /// Reads and checks `install.yaml`. Relative file paths in it are resolved against its
    /// directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.display().to_string(),
            cause,
        })?;
        let mut config = Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses and validates the document. The error is one line naming the field.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: InstallConfig =
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string().replace('\n', " "))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let spec = &self.spec;
        match (spec.mode, spec.nodes.len()) {
            (Mode::Standalone, 1) | (Mode::Ha, 3) => {}
            (Mode::Standalone, n) => {
                return Err(format!(
                    "spec.nodes: standalone mode takes exactly 1 node, found {n}"
                ))
            }
            (Mode::Ha, n) => {
                return Err(format!(
                    "spec.nodes: ha mode takes exactly 3 nodes, found {n}"
                ))
            }
        }
        if spec.mode == Mode::Ha {
            // Refused for now rather than half-installed: the join API is the next step.
            return Err(
                "spec.mode: ha is not supported by this version yet; use standalone".into(),
            );
        }
        if spec.mode == Mode::Standalone && spec.vip.is_some() {
            return Err("spec.vip: only ha mode has a virtual IP; remove it".into());
        }
        for (i, a) in spec.nodes.iter().enumerate() {
            for b in &spec.nodes[..i] {
                if a.name == b.name {
                    return Err(format!("spec.nodes[{i}].name: `{}` appears twice", a.name));
                }
                if a.address == b.address {
                    return Err(format!(
                        "spec.nodes[{i}].address: {} appears twice",
                        a.address
                    ));
                }
            }
        }
        if let Some(registry) = &spec.registry {
            if let Some(external) = &registry.external {
                if registry.builtin.is_some() {
                    return Err("spec.registry: give either external or builtin, not both".into());
                }
                if !external.url.starts_with("https://") {
                    return Err(format!(
                        "spec.registry.external.url: `{}` must start with https://",
                        external.url
                    ));
                }
                if external.username.is_some() != external.password_file.is_some() {
                    return Err(
                        "spec.registry.external: username and passwordFile go together".into(),
                    );
                }
            }
            if let Some(builtin) = &registry.builtin {
                if builtin.port == 0 {
                    return Err("spec.registry.builtin.port: 0 is not a port".into());
                }
            }
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(certs) = &mut self.spec.certificates {
            join(&mut certs.import.cert);
            join(&mut certs.import.key);
            join(&mut certs.import.ca);
        }
        if let Some(external) = self
            .spec
            .registry
            .as_mut()
            .and_then(|r| r.external.as_mut())
        {
            if let Some(ca) = &mut external.ca {
                join(ca);
            }
            if let Some(pw) = &mut external.password_file {
                join(pw);
            }
        }
    }

    /// The node this installer runs on (standalone: the only one).
    pub fn this_node(&self) -> &Node {
        &self.spec.nodes[0]
    }

    pub fn external_registry(&self) -> Option<&ExternalRegistry> {
        self.spec
            .registry
            .as_ref()
            .and_then(|r| r.external.as_ref())
    }

    pub fn registry_port(&self) -> u16 {
        self.spec
            .registry
            .as_ref()
            .and_then(|r| r.builtin.as_ref())
            .map_or(DEFAULT_REGISTRY_PORT, |b| b.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: airgap/v1
kind: Installation
metadata: {name: mgmt}
spec:
  mode: standalone
  fqdn: mgmt.example.internal
  nodes: [{name: node1, address: 10.10.0.11}]
";

    #[test]
    fn parses_the_design_example() {
        let c = InstallConfig::parse(GOOD).unwrap();
        assert_eq!(c.spec.fqdn.as_str(), "mgmt.example.internal");
        assert_eq!(c.registry_port(), 5000);
        assert_eq!(c.this_node().name.as_str(), "node1");
    }

    #[test]
    fn errors_name_the_field_and_position() {
        let cases = [
            (
                GOOD.replace("fqdn:", "fqnd:"),
                "unknown field `fqnd`",
                "line 6",
            ),
            (
                GOOD.replace("mgmt.example.internal", "mgmt_example"),
                "spec.fqdn",
                "line 6",
            ),
            (
                GOOD.replace("10.10.0.11", "10.10.0.300"),
                "spec.nodes[0].address",
                "line 7",
            ),
            (GOOD.replace("standalone", "cluster"), "spec.mode", "line 5"),
            (
                GOOD.replace("airgap/v1", "airgap/v2"),
                "apiVersion",
                "line 1",
            ),
            (
                GOOD.replace("name: node1", "name: Node_1"),
                "spec.nodes[0].name",
                "line 7",
            ),
        ];
        for (text, field, position) in cases {
            let err = InstallConfig::parse(&text).unwrap_err();
            assert!(err.contains(field), "{err}");
            assert!(err.contains(position), "{err}");
            assert!(!err.contains('\n'));
        }
        let two = GOOD.replace(
            "[{name: node1, address: 10.10.0.11}]",
            "[{name: a, address: 10.0.0.1}, {name: b, address: 10.0.0.2}]",
        );
        assert!(InstallConfig::parse(&two)
            .unwrap_err()
            .starts_with("spec.nodes:"));
    }
}
