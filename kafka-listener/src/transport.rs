//! A Kafka connection's bytes: plain TCP, or TLS over it (`--kafka-tls-cert`,
//! `--kafka-tls-key`) with rustls. Both read without blocking into the
//! connection's frame input and write its answers as far as the socket takes
//! them; the loop above sees no difference. A client that does not speak TLS
//! to a TLS port fails the handshake: it is sent an alert and closed.

use std::io::{self, ErrorKind, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use crate::frame::FrameInput;

/// Plaintext the TLS layer may hold for the peer before the connection is
/// read from no more (as `MAX_OUTPUT` for a plain one).
const TLS_BUFFER: usize = 1 << 20;

/// Why the TLS settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("the certificate and key do not go together: {0}")]
    Config(String),
}

/// The listener's TLS settings from a PEM certificate chain and a PEM key.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let file_error = |path: &Path, why: String| TlsSetupError::File {
        path: path.display().to_string(),
        why,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(cert, "no PEM certificate in it".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e.to_string()))?;
    // rustls marks the ring provider deprecated because ring has no
    // post-quantum key exchange; the other provider, aws-lc-rs, needs cmake
    // and more of a C toolchain to build. Classical TLS 1.2/1.3 it is.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsSetupError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// A connection's bytes.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<(TcpStream, ServerConnection)>),
}

impl Transport {
    /// A new connection: TLS when `tls` is set.
    pub fn new(stream: TcpStream, tls: Option<&Arc<ServerConfig>>) -> io::Result<Transport> {
        Ok(match tls {
            None => Transport::Plain(stream),
            Some(config) => {
                let mut session =
                    ServerConnection::new(config.clone()).map_err(io::Error::other)?;
                session.set_buffer_limit(Some(TLS_BUFFER));
                Transport::Tls(Box::new((stream, session)))
            }
        })
    }

    /// The socket, to register with the loop.
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &mut t.0,
        }
    }

    /// Reads what has arrived into `input`: how much, 0 at the end of the
    /// stream, `WouldBlock` when nothing more is there now.
    pub fn read_into(&mut self, input: &mut FrameInput) -> io::Result<usize> {
        let (tcp, tls) = match self {
            Transport::Plain(s) => return input.read_from(s),
            Transport::Tls(t) => (&mut t.0, &mut t.1),
        };
        loop {
            match input.read_from(&mut tls.reader()) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                other => return other,
            }
            // No plaintext waiting: take in what the socket has.
            if tls.read_tls(tcp)? == 0 {
                return Ok(0);
            }
            if let Err(e) = tls.process_new_packets() {
                // The alert saying why goes out before the close.
                let _ = tls.write_tls(tcp);
                return Err(io::Error::new(ErrorKind::InvalidData, e));
            }
            // A handshake answers at once.
            Self::send_tls(tcp, tls)?;
        }
    }

    /// Writes as much of `output` as the peer takes now; false if the
    /// connection is dead.
    pub fn flush(&mut self, output: &mut Vec<u8>) -> bool {
        match self {
            Transport::Plain(s) => flush_plain(s, output),
            Transport::Tls(t) => {
                let (tcp, tls) = (&mut t.0, &mut t.1);
                if !output.is_empty() && !tls.is_handshaking() {
                    match tls.writer().write(output) {
                        Ok(n) => {
                            output.drain(..n);
                        }
                        Err(_) => return false,
                    }
                }
                Self::send_tls(tcp, tls).is_ok()
            }
        }
    }

    /// Whether it has bytes waiting for the socket to take them.
    pub fn wants_write(&self, output: &[u8]) -> bool {
        !output.is_empty()
            || match self {
                Transport::Plain(_) => false,
                Transport::Tls(t) => t.1.wants_write(),
            }
    }

    fn send_tls(tcp: &mut TcpStream, tls: &mut ServerConnection) -> io::Result<()> {
        while tls.wants_write() {
            match tls.write_tls(tcp) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Writes as much output as the socket takes; false if the connection is dead.
fn flush_plain(stream: &mut TcpStream, output: &mut Vec<u8>) -> bool {
    let mut written = 0;
    while written < output.len() {
        match stream.write(&output[written..]) {
            Ok(0) => return false,
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                output.clear();
                return false;
            }
        }
    }
    output.drain(..written);
    true
}
