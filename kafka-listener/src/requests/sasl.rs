//! SASL authentication with SCRAM-SHA-256, as Kafka's clients speak it:
//! SaslHandshake v0 followed by raw SCRAM messages on the socket
//! (kafka-python), or v1 followed by SaslAuthenticate requests carrying them
//! (librdkafka). Until a connection of a listener with users is
//! authenticated, only ApiVersions, SaslHandshake and SaslAuthenticate are
//! served on it; anything else closes it. A failed exchange is answered
//! SASL_AUTHENTICATION_FAILED (or, raw, not at all) and the connection closed.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use kacrab_protocol::generated::sasl_authenticate_request::SaslAuthenticateRequestData;
use kacrab_protocol::generated::sasl_authenticate_response::SaslAuthenticateResponseData;
use kacrab_protocol::generated::sasl_handshake_request::SaslHandshakeRequestData;
use kacrab_protocol::generated::sasl_handshake_response::SaslHandshakeResponseData;
use kacrab_protocol::KafkaString;

use super::{decode, respond, Context, Request, Undecodable, API_VERSIONS};
use crate::scram::{self, Exchange, Step};

pub const SASL_HANDSHAKE: i16 = 17;
pub const SASL_AUTHENTICATE: i16 = 36;

const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// Where a connection stands with authentication.
#[derive(Debug)]
pub enum Auth {
    /// The listener asks for no credentials (loopback, no users file).
    NotRequired,
    /// Waiting for a SaslHandshake.
    Required,
    /// After SaslHandshake v0: the next frames are raw SCRAM messages.
    RawTokens(Exchange),
    /// After SaslHandshake v1: SaslAuthenticate requests carry them.
    Authenticating(Exchange),
    /// The user it proved to be.
    Authenticated(String),
}

impl Auth {
    /// Whether the connection may send request `api_key` now.
    pub fn allows(&self, api_key: i16) -> bool {
        match self {
            Auth::NotRequired | Auth::Authenticated(_) => true,
            _ => matches!(api_key, API_VERSIONS | SASL_HANDSHAKE | SASL_AUTHENTICATE),
        }
    }

    pub fn wants_raw_token(&self) -> bool {
        matches!(self, Auth::RawTokens(_))
    }
}

/// The server's part of a SCRAM nonce: 18 random bytes, in base64.
fn server_nonce() -> Result<String, Undecodable> {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(|e| Undecodable(format!("no randomness: {e}")))?;
    Ok(BASE64.encode(bytes))
}

/// Steps the connection's exchange with `message`: what to answer, or why it failed.
fn step(cx: &mut Context<'_>, message: &[u8]) -> Result<Vec<u8>, Undecodable> {
    let users = cx.users.ok_or_else(|| Undecodable("no users".into()))?;
    let nonce = server_nonce()?;
    let (Auth::RawTokens(exchange) | Auth::Authenticating(exchange)) = &mut cx.connection.auth
    else {
        return Err(Undecodable("no exchange under way".into()));
    };
    match exchange.step(users, message, &nonce) {
        Step::Continue(next) => Ok(next),
        Step::Authenticated { response, user } => {
            cx.connection.auth = Auth::Authenticated(user);
            Ok(response)
        }
        Step::Failed(why) => Err(Undecodable(format!("authentication failed: {why}"))),
    }
}

pub fn handshake(request: &Request, cx: &mut Context<'_>) -> Result<Vec<u8>, Undecodable> {
    let asked = decode(request, SaslHandshakeRequestData::read)?;
    let offered: Vec<KafkaString> = cx
        .users
        .map(|_| KafkaString::from(scram::MECHANISM.to_string()))
        .into_iter()
        .collect();
    let error_code = if cx.users.is_none() {
        // A port that asks for no credentials offers no mechanism.
        UNSUPPORTED_SASL_MECHANISM
    } else if !matches!(cx.connection.auth, Auth::Required) {
        ILLEGAL_SASL_STATE
    } else if asked.mechanism.as_str() != scram::MECHANISM {
        UNSUPPORTED_SASL_MECHANISM
    } else {
        cx.connection.auth = if request.version == 0 {
            Auth::RawTokens(Exchange::default())
        } else {
            Auth::Authenticating(Exchange::default())
        };
        0
    };
    let response = SaslHandshakeResponseData {
        error_code,
        mechanisms: offered,
        ..Default::default()
    };
    respond(request, |out, v| response.write(out, v))
}

pub fn authenticate(request: &Request, cx: &mut Context<'_>) -> Result<Vec<u8>, Undecodable> {
    let asked = decode(request, SaslAuthenticateRequestData::read)?;
    let response = if !matches!(cx.connection.auth, Auth::Authenticating(_)) {
        SaslAuthenticateResponseData {
            error_code: ILLEGAL_SASL_STATE,
            error_message: Some(KafkaString::from(
                "SaslAuthenticate before a SaslHandshake v1".to_string(),
            )),
            ..Default::default()
        }
    } else {
        match step(cx, &asked.auth_bytes) {
            Ok(next) => SaslAuthenticateResponseData {
                auth_bytes: Bytes::from(next),
                ..Default::default()
            },
            Err(Undecodable(why)) => {
                cx.connection.report = Some(why);
                cx.connection.close_after_answer = true;
                SaslAuthenticateResponseData {
                    error_code: SASL_AUTHENTICATION_FAILED,
                    error_message: Some(KafkaString::from(
                        "Authentication failed: invalid credentials with SASL mechanism SCRAM-SHA-256"
                            .to_string(),
                    )),
                    ..Default::default()
                }
            }
        }
    };
    respond(request, |out, v| response.write(out, v))
}

/// A raw SCRAM message after SaslHandshake v0: the next one, size-prefixed as
/// it came; a failure closes the connection without an answer, as Kafka does.
pub fn raw_token(frame: &[u8], cx: &mut Context<'_>) -> Result<Vec<u8>, Undecodable> {
    let next = step(cx, frame)?;
    let mut out = (next.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&next);
    Ok(out)
}
