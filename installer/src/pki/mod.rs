//! The node's PKI: the cluster CA and etcd CA (RSA-2048, or found on disk), the certificates
//! issued from them, and the FQDN certificate (issued, or imported after [`imported`]'s checks).
//!
//! Every issue is idempotent: a certificate already on disk is kept when it still chains to its
//! CA, matches its key, carries the names asked for and has more than 30 days left; otherwise it
//! is issued again. A re-run therefore changes nothing, and a run killed between writing a key
//! and its certificate repairs the pair.

pub mod imported;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_RSA_SHA256,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::files::{write_atomic, PRIVATE, PUBLIC};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating an RSA-2048 key")]
    RsaGeneration(#[source] rsa::Error),
    #[error("encoding a generated RSA-2048 key")]
    RsaEncoding(#[source] rsa::pkcs8::Error),
    #[error("loading a generated key")]
    KeyLoad(#[source] rcgen::Error),
    #[error("issuing {name}")]
    Issue {
        name: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("issuing {name}: SAN `{san}` is not a DNS name")]
    San {
        name: String,
        san: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("{name}: the CA just written does not load back")]
    Reload { name: String },
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("writing {path}")]
    Write {
        path: String,
        #[source]
        cause: std::io::Error,
    },
    #[error("imported certificate")]
    Imported(#[from] imported::ImportError),
}

/// How long issued certificates live, and when a re-run issues them again.
const CA_LIFETIME: Duration = Duration::days(3650);
const LEAF_LIFETIME: Duration = Duration::days(365);
const RENEW_BEFORE: Duration = Duration::days(30);

/// Generates an RSA-2048 key pair. ring (rcgen's backend) signs with RSA but cannot generate
/// RSA keys, so generation is the `rsa` crate's.
pub fn generate_rsa_2048() -> Result<KeyPair, PkiError> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
        .map_err(PkiError::RsaGeneration)?;
    let der = key.to_pkcs8_der().map_err(PkiError::RsaEncoding)?;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
    KeyPair::from_pkcs8_der_and_sign_algo(&der, &PKCS_RSA_SHA256).map_err(PkiError::KeyLoad)
}

/// A certificate and key pair on disk.
#[derive(Debug, Clone)]
pub struct PairPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl PairPaths {
    pub fn new(dir: &Path, stem: &str) -> Self {
        PairPaths {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        }
    }
}

/// A CA this node signs with.
pub struct CertificateAuthority {
    /// The CA re-derived from its certificate, as rcgen needs it to sign.
    issuer: rcgen::Certificate,
    key: KeyPair,
    der: Vec<u8>,
    pub cert_pem: String,
}

/// Whether an ensure call wrote anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    Created,
    Kept,
}

impl CertificateAuthority {
    /// Loads the CA at `paths`, or creates it (RSA-2048, ten years) when either file is missing
    /// or the two do not belong together.
    pub fn ensure(paths: &PairPaths, common_name: &str) -> Result<(Self, Ensured), PkiError> {
        if let Some(ca) = Self::load(paths)? {
            return Ok((ca, Ensured::Kept));
        }
        let key = generate_rsa_2048()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, Some("airgap"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + CA_LIFETIME;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(|source| PkiError::Issue {
            name: common_name.to_string(),
            source,
        })?;
        // Key first: a certificate on disk never points at a key that is not there yet.
        write(&paths.key, key.serialize_pem().as_bytes(), PRIVATE)?;
        write(&paths.cert, cert.pem().as_bytes(), PUBLIC)?;
        let ca = Self::load(paths)?.ok_or_else(|| PkiError::Reload {
            name: common_name.to_string(),
        })?;
        Ok((ca, Ensured::Created))
    }

    fn load(paths: &PairPaths) -> Result<Option<Self>, PkiError> {
        let (Ok(cert_pem), Ok(key_pem)) = (
            std::fs::read_to_string(&paths.cert),
            std::fs::read_to_string(&paths.key),
        ) else {
            return Ok(None);
        };
        let Ok(key) = KeyPair::from_pem(&key_pem) else {
            return Ok(None);
        };
        let Some(der) = pem_der(&cert_pem) else {
            return Ok(None);
        };
        {
            let Ok((_, cert)) = X509Certificate::from_der(&der) else {
                return Ok(None);
            };
            if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw()
                || !cert.is_ca()
            {
                return Ok(None);
            }
        }
        let params =
            CertificateParams::from_ca_cert_pem(&cert_pem).map_err(|source| PkiError::Read {
                path: paths.cert.display().to_string(),
                source,
            })?;
        let issuer = params.self_signed(&key).map_err(|source| PkiError::Read {
            path: paths.cert.display().to_string(),
            source,
        })?;
        Ok(Some(CertificateAuthority {
            issuer,
            key,
            der,
            cert_pem,
        }))
    }

    /// Issues (or keeps) a leaf certificate with an RSA-2048 key.
    pub fn ensure_leaf(&self, paths: &PairPaths, spec: &LeafSpec) -> Result<Ensured, PkiError> {
        if self.leaf_is_current(paths, spec) {
            return Ok(Ensured::Kept);
        }
        let key = generate_rsa_2048()?;
        let cert = spec
            .params()?
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(|source| PkiError::Issue {
                name: spec.common_name.clone(),
                source,
            })?;
        write(&paths.key, key.serialize_pem().as_bytes(), PRIVATE)?;
        write(&paths.cert, cert.pem().as_bytes(), PUBLIC)?;
        Ok(Ensured::Created)
    }

    /// Issues a certificate for the key of a certificate signing request. The CSR's
    /// signature proves the requester holds the key; everything the certificate says comes
    /// from `spec` (what the cluster decided this node is), never from the request.
    pub fn issue_for_csr(&self, csr_pem: &str, spec: &LeafSpec) -> Result<String, PkiError> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|source| {
            PkiError::Issue {
                name: spec.common_name.clone(),
                source,
            }
        })?;
        let cert = spec
            .params()?
            .signed_by(&csr.public_key, &self.issuer, &self.key)
            .map_err(|source| PkiError::Issue {
                name: spec.common_name.clone(),
                source,
            })?;
        Ok(cert.pem())
    }

    fn leaf_is_current(&self, paths: &PairPaths, spec: &LeafSpec) -> bool {
        let (Ok(cert_pem), Ok(key_pem)) = (
            std::fs::read_to_string(&paths.cert),
            std::fs::read_to_string(&paths.key),
        ) else {
            return false;
        };
        let (Some(der), Ok(key)) = (pem_der(&cert_pem), KeyPair::from_pem(&key_pem)) else {
            return false;
        };
        let (Ok((_, cert)), Ok((_, ca))) = (
            X509Certificate::from_der(&der),
            X509Certificate::from_der(&self.der),
        ) else {
            return false;
        };
        let signed_by_ca = cert.verify_signature(Some(ca.public_key())).is_ok();
        let key_matches =
            cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw();
        let renew_at = OffsetDateTime::now_utc() + RENEW_BEFORE;
        let fresh = cert.validity().not_after.timestamp() > renew_at.unix_timestamp();
        signed_by_ca && key_matches && fresh && sans_of(&cert) == spec.sans()
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
    /// etcd members and the agent are both (peers dial each other).
    ServerAndClient,
}

impl Usage {
    fn purposes(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerAndClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        }
    }
}

#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub common_name: String,
    pub organization: Option<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub usage: Usage,
}

/// A new RSA-2048 key (PEM, kept in memory) and a signing request for it, to be issued by
/// the cluster (`CertificateAuthority::issue_for_csr`): the key never leaves the node.
pub fn key_and_csr_in_memory(
    common_name: &str,
) -> Result<(crate::secret::SecretString, String), PkiError> {
    let key = generate_rsa_2048()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name, None);
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|source| PkiError::Issue {
            name: common_name.to_string(),
            source,
        })?;
    Ok((crate::secret::SecretString::new(key.serialize_pem()), csr))
}

impl LeafSpec {
    /// An etcd member's server and peer certificate: its name and address, and loopback.
    pub fn etcd_member(node: &crate::config::Node) -> Self {
        LeafSpec {
            common_name: node.name.to_string(),
            organization: None,
            dns_names: vec![node.name.to_string(), "localhost".into()],
            ip_addresses: vec![node.address, std::net::Ipv4Addr::LOCALHOST.into()],
            usage: Usage::ServerAndClient,
        }
    }

    /// The node agent's certificate (the join API, agent-to-agent calls).
    pub fn agent(node: &crate::config::Node) -> Self {
        LeafSpec {
            common_name: format!("airgap-agent:{}", node.name),
            organization: Some("airgap:agents".into()),
            dns_names: vec![node.name.to_string()],
            ip_addresses: vec![node.address],
            usage: Usage::ServerAndClient,
        }
    }

    fn params(&self) -> Result<CertificateParams, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&self.common_name, self.organization.as_deref());
        params.subject_alt_names = self
            .dns_names
            .iter()
            .map(|d| {
                d.clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|source| PkiError::San {
                        name: self.common_name.clone(),
                        san: d.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        params
            .subject_alt_names
            .extend(self.ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = self.usage.purposes();
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + LEAF_LIFETIME;
        params.serial_number = Some(random_serial());
        Ok(params)
    }

    fn sans(&self) -> Vec<String> {
        let mut sans: Vec<String> = self
            .dns_names
            .iter()
            .map(|d| format!("DNS:{}", d.to_ascii_lowercase()))
            .chain(self.ip_addresses.iter().map(|ip| format!("IP:{ip}")))
            .collect();
        sans.sort();
        sans.dedup();
        sans
    }
}

fn sans_of(cert: &X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => sans.push(format!("DNS:{}", d.to_ascii_lowercase())),
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        sans.push(format!("IP:{ip}"));
                    }
                }
                _ => {}
            }
        }
    }
    sans.sort();
    sans.dedup();
    sans
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    // No common name at all rather than an empty one (etcd's gateway clients carry none).
    if !common_name.is_empty() {
        dn.push(DnType::CommonName, common_name);
    }
    dn
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // A serial only needs to be unique; on the (never seen) failure of the OS RNG the time
    // keeps it so.
    if getrandom::getrandom(&mut bytes).is_err() {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        bytes.copy_from_slice(&nanos.to_be_bytes());
    }
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

/// The DER of the first certificate in a PEM text.
pub fn pem_der(pem: &str) -> Option<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    write_atomic(path, bytes, mode).map_err(|cause| PkiError::Write {
        path: path.display().to_string(),
        cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_once_and_keeps_what_is_current() {
        let dir = tempfile::tempdir().unwrap();
        let ca_paths = PairPaths::new(dir.path(), "ca");
        let (ca, e) = CertificateAuthority::ensure(&ca_paths, "test-ca").unwrap();
        assert_eq!(e, Ensured::Created);
        let mode = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode(&ca_paths.key), 0o600);
        let spec = LeafSpec {
            common_name: "node1".into(),
            organization: None,
            dns_names: vec!["node1".into(), "localhost".into()],
            ip_addresses: vec!["10.0.0.1".parse().unwrap()],
            usage: Usage::ServerAndClient,
        };
        let leaf = PairPaths::new(dir.path(), "server");
        assert_eq!(ca.ensure_leaf(&leaf, &spec).unwrap(), Ensured::Created);
        let first = std::fs::read(&leaf.cert).unwrap();
        assert_eq!(ca.ensure_leaf(&leaf, &spec).unwrap(), Ensured::Kept);

        // Reloaded from disk, the CA still recognises its own leaf.
        let (again, e) = CertificateAuthority::ensure(&ca_paths, "test-ca").unwrap();
        assert_eq!(e, Ensured::Kept);
        assert_eq!(again.ensure_leaf(&leaf, &spec).unwrap(), Ensured::Kept);
        assert_eq!(std::fs::read(&leaf.cert).unwrap(), first);

        // A lost key, or a changed name list, reissues.
        std::fs::remove_file(&leaf.key).unwrap();
        assert_eq!(again.ensure_leaf(&leaf, &spec).unwrap(), Ensured::Created);
        let mut more = spec.clone();
        more.ip_addresses.push("10.0.0.2".parse().unwrap());
        assert_eq!(again.ensure_leaf(&leaf, &more).unwrap(), Ensured::Created);

        // A leaf of another CA is replaced.
        let other = PairPaths::new(&dir.path().join("other"), "ca");
        let (other, _) = CertificateAuthority::ensure(&other, "other").unwrap();
        other.ensure_leaf(&leaf, &more).unwrap();
        assert_eq!(again.ensure_leaf(&leaf, &more).unwrap(), Ensured::Created);

        // The result passes webpki as a server certificate for its IP.
        imported::check_server_certificate(
            &std::fs::read(&leaf.cert).unwrap(),
            &std::fs::read(&leaf.key).unwrap(),
            &std::fs::read(&ca_paths.cert).unwrap(),
            "node1",
        )
        .unwrap();
    }
}
