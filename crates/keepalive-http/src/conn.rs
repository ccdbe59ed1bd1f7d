//! One connection, plain TCP or TLS (rustls), with a buffer of bytes read ahead.

use crate::{HttpError, Url};
use rustls::pki_types::ServerName;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

pub struct Conn {
    stream: Stream,
    /// Bytes read and not yet consumed.
    pub buf: Vec<u8>,
    /// When the last byte of the last response arrived.
    pub last_byte_at: Instant,
    host: String,
}

pub enum Wait {
    Quiet,
    Data,
    Closed { reset: bool },
}

impl Conn {
    pub fn open(url: &Url, insecure: bool, timeout: Duration) -> Result<Conn, HttpError> {
        let addr = format!("{}:{}", url.host, url.port);
        let connect_err = |source| HttpError::Connect {
            addr: addr.clone(),
            source,
        };
        let addrs: Vec<_> = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(connect_err)?
            .collect();
        let mut last = std::io::Error::new(ErrorKind::NotFound, "no address");
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or_else(|| connect_err(last))?;
        let _ = tcp.set_nodelay(true);
        let stream = if url.tls {
            Stream::Tls(Box::new(tls(url, tcp, insecure)?))
        } else {
            Stream::Plain(tcp)
        };
        Ok(Conn {
            stream,
            buf: Vec::new(),
            last_byte_at: Instant::now(),
            host: url.host.clone(),
        })
    }

    fn tcp(&self) -> &TcpStream {
        match &self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }

    pub fn send_request(&mut self, url: &Url) -> Result<(), HttpError> {
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: keepalive-http\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n",
            url.target,
            url.host_header()
        );
        let io = |source| HttpError::Io {
            what: "sending the request".into(),
            source,
        };
        match &mut self.stream {
            Stream::Plain(s) => s.write_all(request.as_bytes()).map_err(io),
            Stream::Tls(s) => s
                .write_all(request.as_bytes())
                .and_then(|()| s.flush())
                .map_err(io),
        }
    }

    /// Reads more bytes into `buf`, waiting at most `timeout`. `Ok(0)`: the server closed.
    pub fn fill(&mut self, timeout: Duration) -> std::io::Result<usize> {
        self.tcp()
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut chunk = [0u8; 16 * 1024];
        let n = match &mut self.stream {
            Stream::Plain(s) => s.read(&mut chunk)?,
            Stream::Tls(s) => match s.read(&mut chunk) {
                // A close without close_notify is still the server closing.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => 0,
                other => other?,
            },
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Whether the server speaks, closes, or stays quiet for `slice`.
    pub fn wait_readable(&mut self, slice: Duration) -> Wait {
        if !self.buf.is_empty() {
            return Wait::Data;
        }
        match self.fill(slice) {
            Ok(0) => Wait::Closed { reset: false },
            Ok(_) => Wait::Data,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                Wait::Quiet
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Wait::Closed { reset: true },
            Err(_) => Wait::Closed { reset: false },
        }
    }

    /// The host, for TLS error messages.
    pub fn host(&self) -> &str {
        &self.host
    }
}

fn tls(
    url: &Url,
    tcp: TcpStream,
    insecure: bool,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, HttpError> {
    let fail = |message: String| HttpError::Tls {
        host: url.host.clone(),
        message,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    let name = ServerName::try_from(url.host.clone()).map_err(|e| fail(e.to_string()))?;
    let conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| fail(e.to_string()))?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    // Complete the handshake now, so certificate problems are reported as such.
    stream
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| fail(e.to_string()))?;
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).map_err(|e| {
            let hint = if insecure {
                ""
            } else {
                " (for a self-signed test server, --insecure)"
            };
            fail(format!("{e}{hint}"))
        })?;
    }
    Ok(stream)
}

/// `--insecure`: accepts any certificate, still checks the handshake's signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
