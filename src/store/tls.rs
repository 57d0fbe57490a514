//! TLS to Postgres with rustls (behaviour §8 `DB_SSLMODE`, `DB_CA_FILE`), with the
//! aws-lc-rs provider only — the one the AWS SDK already brings — handed to
//! each `ClientConfig` explicitly, so no process-wide provider is installed
//! and `ring` is not compiled.
//!
//! Modes follow libpq: `disable` never uses TLS; `prefer` tries TLS and falls
//! back to plain text; `require` insists on TLS but, like libpq without a root
//! certificate, does not verify the server's certificate; `verify-full`
//! verifies the chain (Mozilla's roots plus `DB_CA_FILE`, e.g. the RDS global
//! bundle) and the host name.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::configuration::SslMode;

/// What tokio-postgres itself enforces (TLS or not); verification is the connector's.
pub fn wire(mode: SslMode) -> tokio_postgres::config::SslMode {
    match mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("DB_CA_FILE could not be read: {0}")]
    CaFile(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The connector for `mode`, or `None` for `disable`.
pub fn connector(
    mode: SslMode,
    ca_file: Option<&str>,
) -> Result<Option<MakeRustlsConnect>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let config = match mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
        SslMode::VerifyFull => {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(path) = ca_file {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .map_err(|e| TlsError::CaFile(format!("{path}: {e}")))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| TlsError::CaFile(format!("{path}: {e}")))?;
                if certs.is_empty() {
                    return Err(TlsError::CaFile(format!("{path}: no certificate in it")));
                }
                let (added, _ignored) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(TlsError::CaFile(format!("{path}: no usable certificate")));
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(MakeRustlsConnect::new(config)))
}

/// `prefer`/`require`: encrypt, but accept any certificate (libpq's meaning).
/// Handshake signatures are still checked, so the session key is the server's.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_like_libpq() {
        assert_eq!(SslMode::parse("verify-full"), Some(SslMode::VerifyFull));
        assert_eq!(SslMode::parse(" Require "), Some(SslMode::Require));
        assert_eq!(SslMode::parse("verify-ca"), None);
        assert!(connector(SslMode::Disable, None).unwrap().is_none());
        assert!(connector(SslMode::VerifyFull, None).unwrap().is_some());
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error() {
        let err = connector(SslMode::VerifyFull, Some("/nonexistent/ca.pem"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("DB_CA_FILE"), "{err}");
        let empty = std::env::temp_dir().join(format!("empty-ca-{}.pem", std::process::id()));
        std::fs::write(&empty, "").unwrap();
        let err = connector(SslMode::VerifyFull, empty.to_str())
            .err()
            .unwrap();
        assert!(err.to_string().contains("no certificate"), "{err}");
        let _ = std::fs::remove_file(empty);
    }
}
