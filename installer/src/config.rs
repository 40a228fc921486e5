//! `install.yaml`: what the operator asks for. Parsing validates every field it can on its own
//! (an error names the field and its line and column); [`InstallConfig::load`] then checks what
//! only the whole document can tell (mode against node count, the VIP).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        cause: std::io::Error,
    },
    #[error("{path}")]
    Problem {
        path: String,
        #[source]
        problem: ConfigProblem,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// What is wrong inside `install.yaml`; each names the field (and, from the parser, its
/// line and column).
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    #[error(transparent)]
    Yaml(#[from] serde_yaml_ng::Error),
    /// A rule that only the whole document can check (mode against node count, the VIP).
    #[error("{0}")]
    Rule(String),
}

/// A name that is not a DNS name or label.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("`{0}` is not a DNS name (1 to 253 characters)")]
    Length(String),
    #[error("`{0}` is an IP address; the FQDN must be a DNS name")]
    IpAddress(String),
    #[error("`{name}` is not a DNS name: {rule}")]
    Label { name: String, rule: &'static str },
    #[error("`{0}`: use lower case")]
    UpperCase(String),
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
    /// The data centre's NTP servers, which every node's chrony follows (the `time` phase).
    /// etcd leases, certificates and token expiry all read the clock.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub time_servers: Vec<TimeServer>,
}

/// An NTP server: an address or a DNS name, never anything that could carry another chrony
/// directive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TimeServer {
    Address(IpAddr),
    Name(Fqdn),
}

impl TryFrom<String> for TimeServer {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        match s.parse::<IpAddr>() {
            Ok(address) => Ok(TimeServer::Address(address)),
            Err(_) => Fqdn::try_from(s).map(TimeServer::Name),
        }
    }
}

impl From<TimeServer> for String {
    fn from(t: TimeServer) -> String {
        t.to_string()
    }
}

impl fmt::Display for TimeServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeServer::Address(a) => a.fmt(f),
            TimeServer::Name(n) => n.fmt(f),
        }
    }
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

/// The cluster's shape. Only what `validate` accepted can be viewed as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology<'a> {
    Standalone(&'a Node),
    Ha { nodes: [&'a Node; 3], vip: IpAddr },
}

/// Every address on this machine's interfaces (in its network namespace).
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that freeifaddrs releases; every
    // pointer read is checked for null and only read while the list is alive.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut cursor = list;
        while !cursor.is_null() {
            let addr = (*cursor).ifa_addr;
            if !addr.is_null() {
                match (*addr).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cursor = (*cursor).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

/// A DNS name of one or more labels (letters, digits, `-`), as certificates and kubeadm use
/// for the cluster's endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct Fqdn(String);

impl TryFrom<String> for Fqdn {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        let s = s.to_ascii_lowercase();
        if s.is_empty() || s.len() > 253 {
            return Err(NameError::Length(s));
        }
        if s.parse::<IpAddr>().is_ok() {
            return Err(NameError::IpAddress(s));
        }
        for label in s.split('.') {
            if let Err(rule) = check_label(label) {
                return Err(NameError::Label { name: s, rule });
            }
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
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        if let Err(rule) = check_label(&s) {
            return Err(NameError::Label { name: s, rule });
        }
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(NameError::UpperCase(s));
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

impl<T: TryFrom<String, Error = NameError>> serde::de::Visitor<'_> for CheckedString<T> {
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
        let mut config = Self::parse(&text).map_err(|problem| ConfigError::Problem {
            path: path.display().to_string(),
            problem,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses and validates the document. The error is one line naming the field.
    pub fn parse(text: &str) -> Result<Self, ConfigProblem> {
        let config: InstallConfig = serde_yaml_ng::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigProblem> {
        let spec = &self.spec;
        match (spec.mode, spec.nodes.len()) {
            (Mode::Standalone, 1) | (Mode::Ha, 3) => {}
            (Mode::Standalone, n) => {
                return Err(ConfigProblem::Rule(format!(
                    "spec.nodes: standalone mode takes exactly 1 node, found {n}"
                )))
            }
            (Mode::Ha, n) => {
                return Err(ConfigProblem::Rule(format!(
                    "spec.nodes: ha mode takes exactly 3 nodes, found {n}"
                )))
            }
        }
        if spec.mode == Mode::Ha && spec.vip.is_none() {
            return Err(ConfigProblem::Rule(
                "spec.vip: ha mode needs a virtual IP that follows the healthy nodes".into(),
            ));
        }
        if let Some(vip) = spec.vip {
            if spec.nodes.iter().any(|n| n.address == vip) {
                return Err(ConfigProblem::Rule(format!(
                    "spec.vip: {vip} is a node's own address; the VIP must be a free address on the nodes' network"
                )));
            }
        }
        if spec.mode == Mode::Standalone && spec.vip.is_some() {
            return Err(ConfigProblem::Rule(
                "spec.vip: only ha mode has a virtual IP; remove it".into(),
            ));
        }
        for (i, a) in spec.nodes.iter().enumerate() {
            for b in &spec.nodes[..i] {
                if a.name == b.name {
                    return Err(ConfigProblem::Rule(format!(
                        "spec.nodes[{i}].name: `{}` appears twice",
                        a.name
                    )));
                }
                if a.address == b.address {
                    return Err(ConfigProblem::Rule(format!(
                        "spec.nodes[{i}].address: {} appears twice",
                        a.address
                    )));
                }
            }
        }
        if let Some(registry) = &spec.registry {
            if let Some(external) = &registry.external {
                if registry.builtin.is_some() {
                    return Err(ConfigProblem::Rule(
                        "spec.registry: give either external or builtin, not both".into(),
                    ));
                }
                if !external.url.starts_with("https://") {
                    return Err(ConfigProblem::Rule(format!(
                        "spec.registry.external.url: `{}` must start with https://",
                        external.url
                    )));
                }
                if external.username.is_some() != external.password_file.is_some() {
                    return Err(ConfigProblem::Rule(
                        "spec.registry.external: username and passwordFile go together".into(),
                    ));
                }
            }
            if let Some(builtin) = &registry.builtin {
                if builtin.port == 0 {
                    return Err(ConfigProblem::Rule(
                        "spec.registry.builtin.port: 0 is not a port".into(),
                    ));
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

    /// The cluster's shape, as a type: a standalone node, or three nodes and a VIP.
    /// `validate` guarantees the counts, so this never fails on a loaded configuration.
    pub fn topology(&self) -> Result<Topology<'_>, ConfigError> {
        let invalid = |message: &str| ConfigError::Invalid {
            path: "install.yaml".into(),
            message: message.into(),
        };
        match (self.spec.mode, self.spec.nodes.as_slice(), self.spec.vip) {
            (Mode::Standalone, [node], None) => Ok(Topology::Standalone(node)),
            (Mode::Ha, [a, b, c], Some(vip)) => Ok(Topology::Ha {
                nodes: [a, b, c],
                vip,
            }),
            (Mode::Ha, [_, _, _], None) => Err(invalid("spec.vip: ha mode needs a virtual IP")),
            _ => Err(invalid(
                "spec.nodes: the node count does not match spec.mode",
            )),
        }
    }

    /// The node this installer runs on: the one named by `--node`, else the one whose
    /// address this machine has, never one picked by its position in the list. A standalone
    /// configuration has one node, so that one is it even when the machine does not (yet)
    /// carry its address.
    /// The node a root was installed as: `journal_node` (the name the journal recorded) when
    /// this configuration has it, else the node whose address this machine has.
    pub fn installed_node(
        &self,
        journal_node: Option<&str>,
        local: &[IpAddr],
    ) -> Result<&Node, ConfigError> {
        match journal_node.and_then(|name| self.node(name)) {
            Some(node) => Ok(node),
            None => self.resolve_node(None, local),
        }
    }

    pub fn resolve_node(
        &self,
        requested: Option<&str>,
        local: &[IpAddr],
    ) -> Result<&Node, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: "install.yaml".into(),
            message,
        };
        if let Some(name) = requested {
            return self
                .spec
                .nodes
                .iter()
                .find(|n| n.name.as_str() == name)
                .ok_or_else(|| {
                    invalid(format!(
                        "--node {name}: spec.nodes has no node of that name (it has {})",
                        self.node_names()
                    ))
                });
        }
        let mut local_nodes = self
            .spec
            .nodes
            .iter()
            .filter(|n| local.contains(&n.address));
        match (local_nodes.next(), local_nodes.next(), self.topology()?) {
            (Some(node), None, _) => Ok(node),
            (Some(_), Some(_), _) => Err(invalid(format!(
                "this machine has the addresses of several nodes ({}); name this one with --node NAME",
                self.node_names()
            ))),
            (None, _, Topology::Standalone(node)) => Ok(node),
            (None, _, Topology::Ha { .. }) => Err(invalid(format!(
                "no address of spec.nodes ({}) is on this machine; name this node with --node NAME",
                self.node_names()
            ))),
        }
    }

    fn node_names(&self) -> String {
        self.spec
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The node called `name`, as the journal recorded it.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.spec.nodes.iter().find(|n| n.name.as_str() == name)
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
        assert_eq!(c.resolve_node(None, &[]).unwrap().name.as_str(), "node1");
        assert!(
            matches!(c.topology().unwrap(), Topology::Standalone(n) if n.name.as_str() == "node1")
        );
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
            // As the CLI prints it: the cause chain on one line.
            let err = crate::error::chain(&InstallConfig::parse(&text).unwrap_err());
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
            .to_string()
            .starts_with("spec.nodes:"));
    }

    #[test]
    fn this_node_is_named_or_found_by_address_never_by_position() {
        let c = InstallConfig::parse(GOOD).unwrap();
        let here: IpAddr = "10.10.0.11".parse().unwrap();
        assert_eq!(c.resolve_node(Some("node1"), &[]).unwrap().address, here);
        assert_eq!(
            c.resolve_node(None, &[here]).unwrap().name.as_str(),
            "node1"
        );
        let err = c
            .resolve_node(Some("node7"), &[here])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--node node7") && err.contains("node1"),
            "{err}"
        );

        // Three nodes (built directly: ha is not accepted by `parse` yet).
        let mut ha = c.clone();
        ha.spec.mode = Mode::Ha;
        ha.spec.vip = Some("10.10.0.100".parse().unwrap());
        for (i, name) in ["node2", "node3"].iter().enumerate() {
            ha.spec.nodes.push(Node {
                name: DnsLabel::try_from(name.to_string()).unwrap(),
                address: format!("10.10.0.{}", 12 + i).parse().unwrap(),
            });
        }
        assert!(
            matches!(ha.topology().unwrap(), Topology::Ha { nodes, .. } if nodes[2].name.as_str() == "node3")
        );
        let third: IpAddr = "10.10.0.13".parse().unwrap();
        assert_eq!(
            ha.resolve_node(None, &[third]).unwrap().name.as_str(),
            "node3"
        );
        let err = ha.resolve_node(None, &[]).unwrap_err().to_string();
        assert!(err.contains("--node NAME"), "{err}");
        let err = ha
            .resolve_node(None, &[here, third])
            .unwrap_err()
            .to_string();
        assert!(err.contains("several nodes"), "{err}");
        assert!(!local_addresses().is_empty(), "loopback at least");
    }
}
