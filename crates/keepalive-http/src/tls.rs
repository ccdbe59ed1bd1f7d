//! TLS client configuration (rustls) and its failures in words.
//!
//! Trust: the system's store by default, as curl and OpenSSL read it (rustls-native-certs:
//! `SSL_CERT_FILE` and `SSL_CERT_DIR` when set, else the distribution's bundle, on Debian
//! /etc/ssl/certs from the ca-certificates package); `--cacert FILE` instead of it (PEM, one
//! or more certificates, as curl's `--cacert`); or `--insecure`, which accepts any certificate
//! but still checks the handshake's signatures.

use crate::HttpError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::PathBuf;
use std::sync::Arc;

/// Whom to trust.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Accept any certificate.
    pub insecure: bool,
    /// Trust only the certificates in this PEM file.
    pub cacert: Option<PathBuf>,
}

/// ALPN protocol ids (RFC 7301, IANA registry).
pub const HTTP1: &[u8] = b"http/1.1";
pub const H2: &[u8] = b"h2";

/// A client configuration offering `alpn`.
pub fn config(trust: &Trust, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>, HttpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?;
    let verifier = if trust.insecure {
        Verifier {
            webpki: None,
            given: Vec::new(),
            provider,
        }
    } else {
        let (roots, given) = roots(trust)?;
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| HttpError::Tls(e.to_string()))?;
        Verifier {
            webpki: Some(webpki),
            given,
            provider,
        }
    };
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The certificates to trust, or why there are none; and the same as given, for pinning.
fn roots(
    trust: &Trust,
) -> Result<(rustls::RootCertStore, Vec<CertificateDer<'static>>), HttpError> {
    let mut store = rustls::RootCertStore::empty();
    if let Some(path) = &trust.cacert {
        let bad = |why: String| HttpError::Input(format!("--cacert {}: {why}", path.display()));
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(pem_error(&e)))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(pem_error(&e)))?;
        if certs.is_empty() {
            return Err(bad(
                "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        let (added, _) = store.add_parsable_certificates(certs.clone());
        if added == 0 {
            return Err(bad("none of its certificates could be read as X.509".into()));
        }
        return Ok((store, certs));
    }
    let found = rustls_native_certs::load_native_certs();
    store.add_parsable_certificates(found.certs.clone());
    if store.is_empty() {
        let from = match (
            std::env::var_os("SSL_CERT_FILE"),
            std::env::var_os("SSL_CERT_DIR"),
        ) {
            (None, None) => "the system's certificate store is empty or missing (on Debian: the \
                             ca-certificates package)"
                .to_owned(),
            (file, dir) => {
                let named = |var: &str, v: Option<std::ffi::OsString>| {
                    v.map(|v| format!("{var}={}", v.to_string_lossy().escape_debug()))
                };
                let given: Vec<String> = [named("SSL_CERT_FILE", file), named("SSL_CERT_DIR", dir)]
                    .into_iter()
                    .flatten()
                    .collect();
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(" ({})", e.to_string().escape_debug()))
                    .unwrap_or_default();
                format!("{} holds no certificate{why}", given.join(" and "))
            }
        };
        return Err(HttpError::Tls(format!(
            "no trusted certificates: {from}; pass --cacert FILE, or --insecure"
        )));
    }
    Ok((store, found.certs))
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) => io.to_string(),
        other => format!("not a PEM file ({other:?})"),
    }
}

/// The name rustls verifies the certificate against and sends as SNI (not for an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, HttpError> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| HttpError::Tls(format!("{host} is not a name TLS can verify ({e})")))
}

/// A handshake failure in words, with what to do about it.
/// `offered` is the protocol this connection offered in ALPN ("HTTP/1.1" or "HTTP/2").
pub fn explain(e: &rustls::Error, host: &str, trust: &Trust, offered: &str) -> String {
    use rustls::CertificateError as C;
    let remedy = if trust.cacert.is_some() {
        "check that --cacert holds the CA that signed it, or pass --insecure"
    } else {
        "pass --cacert FILE with the CA's certificate, or --insecure"
    };
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => format!(
                "the server's certificate is not signed by an authority this machine trusts \
                 (self-signed, or a private CA): {remedy}"
            ),
            C::Expired | C::ExpiredContext { .. } => {
                "the server's certificate has expired: renew it, or pass --insecure".into()
            }
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (check both clocks), or pass --insecure"
                    .into()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "the server's certificate is not for {host}: connect by a name it holds, or \
                 pass --insecure"
            ),
            C::Revoked => "the server's certificate has been revoked".into(),
            C::BadSignature => "the server's certificate has a bad signature".into(),
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                "the server's certificate is not for TLS servers (extended key usage)".into()
            }
            C::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
                Some(webpki::Error::CaUsedAsEndEntity) => format!(
                    "the server presents a CA certificate as its own (a self-signed CA): {remedy}"
                ),
                Some(w) => format!("the server's certificate was refused ({w})"),
                None => format!("the server's certificate was refused ({other})"),
            },
            other => format!("the server's certificate was refused ({other:?})"),
        },
        rustls::Error::AlertReceived(alert) => alert_in_words(*alert, offered),
        rustls::Error::PeerIncompatible(p) => format!(
            "the server and keepalive share no TLS version or cipher (keepalive speaks TLS 1.2 \
             and 1.3): {p:?}"
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the server does not speak TLS on this port (plain HTTP? use http://)".into()
        }
        other => other.to_string(),
    }
}

/// What a fatal alert from the server means for this client, which offers no client
/// certificate and one ALPN protocol (RFC 8446 section 6.2, RFC 7301 section 3.2).
pub fn alert_in_words(alert: rustls::AlertDescription, offered: &str) -> String {
    use rustls::AlertDescription as A;
    match alert {
        // TLS 1.3 servers send it after the client's (empty) Certificate message, so it
        // arrives with the first read after the handshake.
        A::CertificateRequired => "the server requires a client certificate, which keepalive \
                                   does not send"
            .into(),
        A::NoApplicationProtocol => {
            format!("the server does not speak {offered} on this port (refused in ALPN)")
        }
        A::HandshakeFailure => "the server ended the handshake (HandshakeFailure: it may want \
                                a client certificate, or share no cipher with keepalive)"
            .into(),
        A::ProtocolVersion => "the server speaks no TLS version keepalive does (TLS 1.2 and \
                               1.3)"
            .into(),
        A::UnrecognisedName => "the server has no certificate for this name (SNI)".into(),
        A::AccessDenied => "the server denied access (AccessDenied)".into(),
        other => format!("the server ended TLS with a {other:?} alert"),
    }
}

/// The words for a read or write error after the handshake, when TLS caused it.
pub fn after_handshake(e: &std::io::Error, offered: &str) -> Option<String> {
    Some(match rustls_cause(e)? {
        rustls::Error::AlertReceived(alert) => alert_in_words(*alert, offered),
        other => other.to_string(),
    })
}

/// The rustls error inside an I/O error from a TLS stream, if TLS caused it.
fn rustls_cause(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// An error from a handshake, which rustls reports through std::io.
pub fn explain_io(e: &std::io::Error, host: &str, trust: &Trust, offered: &str) -> String {
    match rustls_cause(e) {
        Some(tls) => explain(tls, host, trust, offered),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the server closed the connection during the TLS handshake (is this a TLS port?)".into()
        }
        None => format!("during the TLS handshake: {e}"),
    }
}

/// The Web PKI's verification, and one thing more: a server whose own certificate is byte for
/// byte one of those trusted (from `--cacert`, SSL_CERT_FILE or the system's store) is
/// trusted, as a pinned certificate, although the Web PKI
/// refuses it for being a CA, for naming the host only in its subject's CN, or for having no
/// issuer it knows (what `openssl req -x509 -subj /CN=host` makes, and what curl with OpenSSL
/// accepts from `--cacert`). Its dates and names are then not checked: the user gave exactly
/// this certificate.
///
/// Without the Web PKI (`--insecure`) any certificate is accepted. The handshake's signatures
/// are checked either way.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    given: Vec<CertificateDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        };
        let refused =
            match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
                Ok(ok) => return Ok(ok),
                Err(e) => e,
            };
        use rustls::CertificateError as C;
        let pinnable = match &refused {
            rustls::Error::InvalidCertificate(C::Other(o)) => matches!(
                o.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            ),
            rustls::Error::InvalidCertificate(
                C::UnknownIssuer | C::NotValidForName | C::NotValidForNameContext { .. },
            ) => true,
            _ => false,
        };
        if pinnable && self.given.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        Err(refused)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
