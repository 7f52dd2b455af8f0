//! One connection to one broker: framing, correlation ids, version negotiation, TLS and SASL.
//!
//! A [`Connection`] sends one request at a time and waits for its response. The pool in
//! [`crate::client`] keeps one per broker and serialises access, which is all a collector that
//! sends one batched request per broker per stage needs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{code_name, KafkaError};
use crate::observer::{api_name_of, Outcome, RequestEvent, RequestObserver};
use crate::sasl::{
    oauthbearer_initial_response, plain_token, SaslMechanism, ScramClient, OAUTHBEARER_ERROR_ACK,
};
use crate::security::{Sasl, Security};

/// The share of a SASL session's lifetime (KIP-368 `session_lifetime_ms`) after which the
/// connection re-authenticates before its next request: early enough that a request sent just
/// before the mark still arrives in time, late enough not to re-authenticate often.
pub const REAUTH_AT: f64 = 0.85;

/// Largest response the client accepts, as a guard against a corrupt length prefix.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A live, authenticated connection to one broker.
pub struct Connection {
    io: Box<dyn Io>,
    addr: String,
    next_correlation_id: i32,
    versions: HashMap<i16, (i16, i16)>,
    timeout: Duration,
    client_id: StrBytes,
    observer: Option<RequestObserver>,
    /// How to (re-)authenticate and reconnect.
    security: Security,
    identity: Identity,
    /// When the session needs renewing (85% of the broker's `session_lifetime_ms`), and when
    /// the broker considers it over; `None` when the broker set no lifetime.
    session: Option<(Instant, Instant)>,
}

/// Who a connection speaks as, and who hears about its requests.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The `client_id` of every request header (brokers log it and quota by it).
    pub client_id: String,
    /// Told about every request sent, the connection's own ApiVersions and SASL ones included.
    pub observer: Option<RequestObserver>,
}

impl Connection {
    /// Connects, negotiates API versions and authenticates.
    pub async fn connect(
        addr: &str,
        security: &Security,
        timeout: Duration,
        identity: &Identity,
    ) -> Result<Self, KafkaError> {
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| KafkaError::Timeout {
                api: "connect",
                addr: addr.to_string(),
                timeout,
            })?
            .map_err(|source| KafkaError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        // Nagle only delays small requests; a failure here changes nothing else.
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &security.tls {
            None => Box::new(tcp),
            Some(config) => {
                let host = security
                    .tls_server_name
                    .clone()
                    .unwrap_or_else(|| host_of(addr).to_string());
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| {
                        KafkaError::Tls(format!("invalid TLS server name {host:?}: {e}"))
                    })?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let tls = tokio::time::timeout(timeout, connector.connect(name, tcp))
                    .await
                    .map_err(|_| KafkaError::Timeout {
                        api: "tls_handshake",
                        addr: addr.to_string(),
                        timeout,
                    })?
                    .map_err(|e| KafkaError::Tls(format!("handshake with {addr}: {e}")))?;
                Box::new(tls)
            }
        };
        let mut conn = Connection {
            io,
            addr: addr.to_string(),
            next_correlation_id: 1,
            versions: HashMap::new(),
            timeout,
            client_id: StrBytes::from_string(identity.client_id.clone()),
            observer: identity.observer.clone(),
            security: security.clone(),
            identity: identity.clone(),
            session: None,
        };
        let versions: ApiVersionsResponse =
            conn.send_raw(&ApiVersionsRequest::default(), 0).await?;
        if versions.error_code != 0 {
            return Err(KafkaError::broker(
                "api_versions",
                addr,
                versions.error_code,
            ));
        }
        conn.versions = versions
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        conn.authenticate().await?;
        Ok(conn)
    }

    /// The highest version of `R` both sides speak, capped at `cap`.
    pub fn version<R: Request>(&self, cap: i16) -> Result<i16, KafkaError> {
        let unsupported = || KafkaError::Unsupported {
            api: api_name_of(R::KEY),
            addr: self.addr.clone(),
            ours: format!("{}..{}", R::VERSIONS.min, R::VERSIONS.max.min(cap)),
        };
        let (min, max) = *self.versions.get(&R::KEY).ok_or_else(unsupported)?;
        let v = max.min(R::VERSIONS.max).min(cap);
        if v < min.max(R::VERSIONS.min) {
            return Err(unsupported());
        }
        Ok(v)
    }

    /// Sends one request at `version` and waits for its response. A SASL session near the
    /// end of its lifetime is renewed first (KIP-368): re-authenticated on this connection, or,
    /// if it already ended while the connection sat idle, replaced by a new connection.
    pub async fn send<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, KafkaError> {
        if let Some((renew_at, ends_at)) = self.session {
            let now = Instant::now();
            if now >= ends_at {
                tracing::debug!(addr = %self.addr, "SASL session ended while idle; reconnecting");
                let fresh =
                    Connection::connect(&self.addr, &self.security, self.timeout, &self.identity)
                        .await?;
                *self = fresh;
            } else if now >= renew_at {
                tracing::debug!(addr = %self.addr, "re-authenticating (KIP-368)");
                self.authenticate().await?;
            }
        }
        self.send_raw(request, version).await
    }

    /// Sends one request without looking at the SASL session (the SASL exchange itself).
    async fn send_raw<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, KafkaError> {
        let api = api_name_of(R::KEY);
        let timeout = self.timeout;
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(timeout, self.round_trip(request, version)).await;
        let outcome = match &result {
            Ok(Ok(_)) => Outcome::Ok,
            Ok(Err(_)) => Outcome::Error,
            Err(_) => Outcome::Timeout,
        };
        if let (Some(observer), Ok(key)) = (&self.observer, ApiKey::try_from(R::KEY)) {
            observer.observe(&RequestEvent {
                api: key,
                broker: &self.addr,
                outcome,
                duration: started.elapsed(),
            });
        }
        result.map_err(|_| KafkaError::Timeout {
            api,
            addr: self.addr.clone(),
            timeout,
        })?
    }

    async fn round_trip<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, KafkaError> {
        let api = api_name_of(R::KEY);
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(self.client_id.clone());

        let encode_err = |e: anyhow::Error| KafkaError::Encode {
            api,
            message: e.to_string(),
        };
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0);
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(encode_err)?;
        request.encode(&mut buf, version).map_err(encode_err)?;
        let len = i32::try_from(buf.len() - 4).map_err(|_| KafkaError::Encode {
            api,
            message: "request larger than 2 GiB".to_string(),
        })?;
        buf[0..4].copy_from_slice(&len.to_be_bytes());

        let io_err = |source| KafkaError::Io {
            addr: self.addr.clone(),
            source,
        };
        self.io.write_all(&buf).await.map_err(io_err)?;
        self.io.flush().await.map_err(io_err)?;

        let size = self.io.read_i32().await.map_err(io_err)?;
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s >= 4 && *s <= MAX_RESPONSE_BYTES)
            .ok_or_else(|| KafkaError::Decode {
                api,
                addr: self.addr.clone(),
                message: format!("response length {size} out of range"),
            })?;
        let mut body = vec![0u8; size];
        self.io.read_exact(&mut body).await.map_err(io_err)?;
        let mut body = Bytes::from(body);
        let decode_err = |message: String| KafkaError::Decode {
            api,
            addr: self.addr.clone(),
            message,
        };
        let header = ResponseHeader::decode(
            &mut body,
            <R::Response as HeaderVersion>::header_version(version),
        )
        .map_err(|e| decode_err(e.to_string()))?;
        if header.correlation_id != correlation_id {
            return Err(decode_err(format!(
                "correlation id {} does not match request {correlation_id}",
                header.correlation_id
            )));
        }
        let response =
            R::Response::decode(&mut body, version).map_err(|e| decode_err(e.to_string()))?;
        if body.has_remaining() && api != "api_versions" {
            tracing::debug!(api, addr = %self.addr, trailing = body.remaining(), "response has trailing bytes");
        }
        Ok(response)
    }

    /// Runs the SASL exchange (SaslHandshake, then SaslAuthenticate rounds), when configured;
    /// also used to re-authenticate a live connection, and remembers the session's lifetime.
    async fn authenticate(&mut self) -> Result<(), KafkaError> {
        let Some(sasl) = self.security.sasl.clone() else {
            return Ok(());
        };
        let mechanism = sasl.mechanism();
        let sasl_err = |addr: &str, message: String| KafkaError::Sasl {
            addr: addr.to_string(),
            message: format!("{}: {message}", mechanism.as_str()),
        };
        // A token is fetched before the exchange starts, so a slow token endpoint does not
        // hold the broker's handshake open.
        let token = match &sasl {
            Sasl::Token { tokens, .. } => Some(
                tokens
                    .get()
                    .await
                    .map_err(|e| sasl_err(&self.addr, format!("cannot get a token: {e}")))?,
            ),
            Sasl::Password(_) => None,
        };
        let started = Instant::now();
        let mut handshake = SaslHandshakeRequest::default();
        handshake.mechanism = StrBytes::from_static_str(mechanism.name());
        let v = self.version::<SaslHandshakeRequest>(1)?;
        let resp = self.send_raw(&handshake, v).await?;
        if resp.error_code != 0 {
            let enabled: Vec<&str> = resp.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(sasl_err(
                &self.addr,
                format!(
                    "broker refused mechanism {} (enabled: {})",
                    mechanism.name(),
                    enabled.join(", ")
                ),
            ));
        }
        let lifetime_ms = match (&sasl, token) {
            (Sasl::Password(c), _) if c.mechanism == SaslMechanism::Plain => {
                self.sasl_step(mechanism, plain_token(&c.username, &c.password))
                    .await?
                    .1
            }
            (Sasl::Password(c), _) => {
                let mut scram = ScramClient::new(c.mechanism, &c.username, &c.password)
                    .ok_or_else(|| sasl_err(&self.addr, "not a SCRAM mechanism".to_string()))?;
                let (server_first, _) = self.sasl_step(mechanism, scram.client_first()).await?;
                let client_final = scram
                    .client_final(&server_first)
                    .map_err(|e| sasl_err(&self.addr, e))?;
                let (server_final, lifetime) = self.sasl_step(mechanism, client_final).await?;
                scram
                    .verify_server_final(&server_final)
                    .map_err(|e| sasl_err(&self.addr, e))?;
                lifetime
            }
            (Sasl::Token { .. }, Some(token)) => {
                let (challenge, lifetime) = self
                    .sasl_step(mechanism, oauthbearer_initial_response(&token.value))
                    .await?;
                if !challenge.is_empty() {
                    // RFC 7628 §3.2.2: the server sent its error; the client acknowledges and
                    // the server then fails the exchange.
                    let said = String::from_utf8_lossy(&challenge).into_owned();
                    let then = match self
                        .sasl_step(mechanism, OAUTHBEARER_ERROR_ACK.to_vec())
                        .await
                    {
                        Err(KafkaError::Sasl { message, .. }) => format!("; {message}"),
                        Err(e) => format!("; {e}"),
                        Ok(_) => String::new(),
                    };
                    return Err(sasl_err(
                        &self.addr,
                        format!("the broker refused the token: {said}{then}"),
                    ));
                }
                lifetime
            }
            (Sasl::Token { .. }, None) => {
                return Err(sasl_err(&self.addr, "no token".to_string()));
            }
        };
        self.session = u64::try_from(lifetime_ms)
            .ok()
            .filter(|ms| *ms > 0)
            .map(|ms| {
                let lifetime = Duration::from_millis(ms);
                (started + lifetime.mul_f64(REAUTH_AT), started + lifetime)
            });
        Ok(())
    }

    /// One SaslAuthenticate round: the server's bytes and its `session_lifetime_ms` (v1+, 0
    /// for none). A refusal names the mechanism and carries the broker's message.
    async fn sasl_step(
        &mut self,
        mechanism: SaslMechanism,
        token: Vec<u8>,
    ) -> Result<(Bytes, i64), KafkaError> {
        let mut req = SaslAuthenticateRequest::default();
        req.auth_bytes = Bytes::from(token);
        let v = self.version::<SaslAuthenticateRequest>(2)?;
        let resp = self.send_raw(&req, v).await?;
        if resp.error_code != 0 {
            return Err(KafkaError::Sasl {
                addr: self.addr.clone(),
                message: format!(
                    "{}: {} ({})",
                    mechanism.as_str(),
                    resp.error_message
                        .as_ref()
                        .map(|m| m.as_str())
                        .unwrap_or("no message"),
                    code_name(resp.error_code)
                ),
            });
        }
        Ok((resp.auth_bytes, resp.session_lifetime_ms))
    }
}

/// The host part of `host:port` (IPv6 literals in brackets are unwrapped).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_handles_ipv4_names_and_ipv6() {
        assert_eq!(host_of("127.0.0.1:9092"), "127.0.0.1");
        assert_eq!(host_of("kafka-0.kafka:9093"), "kafka-0.kafka");
        assert_eq!(host_of("[::1]:9092"), "::1");
        assert_eq!(host_of("noport"), "noport");
    }
}
