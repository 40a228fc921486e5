//! Checks on an operator's own FQDN certificate before anything is written: it must parse,
//! use a strong key, be inside its validity window, chain to the given CA, cover the FQDN
//! (RFC 6125 wildcards, as webpki applies them) and match its private key.

use rcgen::KeyPair;
use rustls_pki_types::{CertificateDer, DnsName, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{what} holds no PEM certificate")]
    NoCertificate { what: &'static str },
    #[error("{what} is not a valid X.509 certificate")]
    Unparsable {
        what: &'static str,
        #[source]
        source: x509_parser::nom::Err<x509_parser::error::X509Error>,
    },
    #[error("{what} is not a valid X.509 certificate")]
    Rejected {
        what: &'static str,
        #[source]
        source: webpki::Error,
    },
    #[error("the certificate's public key is not valid")]
    PublicKey(#[source] x509_parser::error::X509Error),
    #[error("the key is {found}; use RSA with at least 2048 bits, or ECDSA P-256 or P-384")]
    WeakKey { found: String },
    #[error("the certificate is not valid before {not_before}")]
    NotYetValid { not_before: String },
    #[error("the certificate expired on {not_after}")]
    Expired { not_after: String },
    #[error("the certificate does not chain to the given CA")]
    Chain(#[source] webpki::Error),
    #[error("the certificate's names ({sans}) do not cover {fqdn}")]
    Name { fqdn: String, sans: String },
    #[error("the private key is not PEM text; give an unencrypted PKCS#8 PEM key (`openssl pkcs8 -topk8 -nocrypt`)")]
    KeyNotText,
    #[error("the private key cannot be read; give an unencrypted PKCS#8 PEM key (`openssl pkcs8 -topk8 -nocrypt`)")]
    KeyUnreadable(#[source] rcgen::Error),
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
}

/// Runs every check on a server certificate chain (`cert_pem`: leaf first, then any
/// intermediates), its key and the CA that must anchor it.
pub fn check_server_certificate(
    cert_pem: &[u8],
    key_pem: &[u8],
    ca_pem: &[u8],
    fqdn: &str,
) -> Result<(), ImportError> {
    let chain = pem_certificates(cert_pem, "the certificate file")?;
    let cas = pem_certificates(ca_pem, "the CA file")?;
    let (_, leaf) =
        X509Certificate::from_der(&chain[0]).map_err(|source| ImportError::Unparsable {
            what: "the certificate",
            source,
        })?;

    check_key_strength(&leaf)?;

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let validity = leaf.validity();
    if now < validity.not_before.timestamp() {
        return Err(ImportError::NotYetValid {
            not_before: validity.not_before.to_string(),
        });
    }
    if now > validity.not_after.timestamp() {
        return Err(ImportError::Expired {
            not_after: validity.not_after.to_string(),
        });
    }

    let leaf_der = CertificateDer::from(chain[0].as_slice());
    let end_entity =
        webpki::EndEntityCert::try_from(&leaf_der).map_err(|source| ImportError::Rejected {
            what: "the certificate",
            source,
        })?;
    let ca_ders: Vec<CertificateDer<'_>> = cas
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let anchors = ca_ders
        .iter()
        .map(|c| {
            webpki::anchor_from_trusted_cert(c).map_err(|source| ImportError::Rejected {
                what: "the CA",
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            UnixTime::now(),
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(ImportError::Chain)?;

    let name = DnsName::try_from(fqdn.to_string()).map_err(|_| ImportError::Name {
        fqdn: fqdn.to_string(),
        sans: "not a DNS name".into(),
    })?;
    end_entity
        .verify_is_valid_for_subject_name(&ServerName::DnsName(name))
        .map_err(|_| ImportError::Name {
            fqdn: fqdn.to_string(),
            sans: describe_sans(&leaf),
        })?;

    let key_pem = std::str::from_utf8(key_pem).map_err(|_| ImportError::KeyNotText)?;
    let key = KeyPair::from_pem(key_pem).map_err(ImportError::KeyUnreadable)?;
    if leaf.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(ImportError::KeyMismatch);
    }
    Ok(())
}

fn check_key_strength(cert: &X509Certificate<'_>) -> Result<(), ImportError> {
    use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384};
    let spki = cert.public_key();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            if bits >= 2048 {
                Ok(())
            } else {
                Err(ImportError::WeakKey {
                    found: format!("RSA-{bits}"),
                })
            }
        }
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            match curve {
                Some(oid) if oid == OID_EC_P256 || oid == OID_NIST_EC_P384 => Ok(()),
                Some(oid) => Err(ImportError::WeakKey {
                    found: format!("ECDSA on curve {oid}"),
                }),
                None => Err(ImportError::WeakKey {
                    found: "ECDSA on an unnamed curve".into(),
                }),
            }
        }
        Ok(_) => Err(ImportError::WeakKey {
            found: format!("of algorithm {}", spki.algorithm.algorithm),
        }),
        Err(e) => Err(ImportError::PublicKey(e)),
    }
}

fn describe_sans(cert: &X509Certificate<'_>) -> String {
    use x509_parser::extensions::GeneralName;
    let names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_string()),
                GeneralName::IPAddress(b) => Some(format!("IP {}", hex::encode(b))),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        "no subject alternative names".into()
    } else {
        names.join(", ")
    }
}

/// Every certificate in a PEM text, in order.
pub fn pem_certificates(pem: &[u8], what: &'static str) -> Result<Vec<Vec<u8>>, ImportError> {
    let ders: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(pem)
        .map_while(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
        .collect();
    if ders.is_empty() {
        return Err(ImportError::NoCertificate { what });
    }
    for der in &ders {
        X509Certificate::from_der(der)
            .map_err(|source| ImportError::Unparsable { what, source })?;
    }
    Ok(ders)
}
