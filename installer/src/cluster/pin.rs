//! The cluster CA's pin (sha256 of its DER certificate, as kubeadm's
//! `--discovery-token-ca-cert-hash`) and a TLS verifier that trusts exactly the CA with that
//! pin: the joining node has no CA yet, so it accepts the chain the server sends only if the
//! pinned CA is in it and the leaf is valid under it (signature, validity, server name). An
//! impostor presenting any other CA is refused during the handshake, before a byte of the
//! request, and the refusal is recorded so the caller can say so instead of "TLS error".

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CaPin([u8; 32]);

impl CaPin {
    pub fn of_der(der: &[u8]) -> Self {
        CaPin(Sha256::digest(der).into())
    }

    /// The pin of the first certificate in `pem`.
    pub fn of_pem(pem: &str) -> Option<Self> {
        crate::pki::pem_der(pem).map(|der| CaPin::of_der(&der))
    }

    /// `sha256:<64 hex>`.
    pub fn parse(text: &str) -> Option<Self> {
        let hex_part = text.strip_prefix("sha256:")?;
        let bytes = hex::decode(hex_part).ok()?;
        Some(CaPin(bytes.try_into().ok()?))
    }
}

impl fmt::Display for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What the verifier saw of the server's CA when it refused it.
pub type PinMismatch = Arc<Mutex<Option<String>>>;

#[derive(Debug)]
pub struct PinnedCaVerifier {
    pin: CaPin,
    provider: Arc<CryptoProvider>,
    mismatch: PinMismatch,
}

impl PinnedCaVerifier {
    /// A rustls client configuration (TLS 1.2+, the library's defaults otherwise) trusting only
    /// the CA pinned by `pin`; `mismatch` receives what the server presented when refused.
    pub fn client_config(pin: CaPin, mismatch: PinMismatch) -> rustls::ClientConfig {
        let provider = registry::crypto::provider();
        let verifier = Arc::new(PinnedCaVerifier {
            pin,
            provider: provider.clone(),
            mismatch,
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            // ring's provider supports every default version; a failure here is a build bug.
            .expect("ring supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }

    fn refuse(&self, what: String) -> rustls::Error {
        if let Ok(mut m) = self.mismatch.lock() {
            *m = Some(what.clone());
        }
        rustls::Error::General(what)
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| CaPin::of_der(c.as_ref()) == self.pin)
        else {
            let presented = intermediates
                .last()
                .map(|c| CaPin::of_der(c.as_ref()).to_string())
                .unwrap_or_else(|| "no CA certificate".into());
            return Err(self.refuse(format!(
                "the server presents {presented}, not the CA the token pins ({})",
                self.pin
            )));
        };
        let anchor = webpki::anchor_from_trusted_cert(ca)
            .map_err(|e| self.refuse(format!("the pinned CA is not usable: {e}")))?;
        let leaf = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| self.refuse(format!("the server certificate does not parse: {e}")))?;
        leaf.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &[anchor],
            &[],
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| {
            self.refuse(format!(
                "the server certificate is not valid under the pinned CA: {e}"
            ))
        })?;
        leaf.verify_is_valid_for_subject_name(server_name)
            .map_err(|e| {
                self.refuse(format!(
                    "the server certificate does not name {server_name:?}: {e}"
                ))
            })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
