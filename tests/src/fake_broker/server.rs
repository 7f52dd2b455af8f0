//! One broker's listener and connections: framing, the request header, version checks, the
//! SASL session (handshake, authenticate, lifetime, re-authentication) and the request log.
//! The answers themselves are in [`super::answer`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::{RequestRecord, Shared};

const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const UNSUPPORTED_VERSION: i16 = 35;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// Largest request frame accepted (Kafka's `socket.request.max.bytes` default).
const MAX_FRAME: i32 = 100 * 1024 * 1024;

/// Accepts connections until aborted; aborting drops the JoinSet, which aborts every
/// connection task.
pub(crate) async fn accept_loop(listener: TcpListener, broker: i32, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            return;
        };
        let _ = sock.set_nodelay(true);
        while conns.try_join_next().is_some() {}
        let shared = shared.clone();
        let id = shared.next_connection.fetch_add(1, Ordering::SeqCst) + 1;
        conns.spawn(async move {
            let _ = serve(sock, broker, id, shared).await;
        });
    }
}

/// SASL state of one connection.
#[derive(Default)]
struct Session {
    /// The mechanism of a handshake not yet followed by SaslAuthenticate.
    mechanism: Option<String>,
    principal: Option<String>,
    expires: Option<Instant>,
}

/// What to do after answering.
enum After {
    Continue,
    Close,
}

async fn serve(
    sock: TcpStream,
    broker: i32,
    conn: u64,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut session = Session::default();
    loop {
        let len = r.read_i32().await?;
        if !(4..=MAX_FRAME).contains(&len) {
            return Ok(());
        }
        let mut buf = BytesMut::zeroed(len as usize);
        r.read_exact(&mut buf).await?;
        let mut body: Bytes = buf.freeze();
        let key = i16::from_be_bytes([body[0], body[1]]);
        let version = i16::from_be_bytes([body[2], body[3]]);
        // An API key Kafka does not know: the broker closes the connection.
        let Ok(api) = ApiKey::try_from(key) else {
            return Ok(());
        };
        let Ok(header) = RequestHeader::decode(&mut body, api.request_header_version(version))
        else {
            return Ok(());
        };
        shared.record(RequestRecord {
            broker,
            api_key: key,
            version,
            client_id: header.client_id.as_ref().map(|c| c.to_string()),
            principal: session.principal.clone(),
            connection: conn,
        });

        let range = shared.table.read().unwrap().api_versions.get(&key).copied();
        let in_range = range.is_some_and(|(lo, hi)| (lo..=hi).contains(&version));
        let mut out = BytesMut::with_capacity(256);
        out.extend_from_slice(&[0, 0, 0, 0]);
        let header_version = api.response_header_version(version);
        let after = if api == ApiKey::ApiVersions && !in_range {
            // Kafka answers an ApiVersions it cannot parse with v0 and its ranges.
            ResponseHeader::default()
                .with_correlation_id(header.correlation_id)
                .encode(&mut out, 0)
                .map_err(io)?;
            api_versions(&shared, UNSUPPORTED_VERSION, &mut out, 0)?;
            After::Continue
        } else if !in_range {
            return Ok(());
        } else {
            ResponseHeader::default()
                .with_correlation_id(header.correlation_id)
                .encode(&mut out, header_version)
                .map_err(io)?;
            match gate(&shared, &session, api) {
                Gate::Close => return Ok(()),
                Gate::Expired => {
                    shared.expired_closed.fetch_add(1, Ordering::SeqCst);
                    return Ok(());
                }
                Gate::Open => {}
            }
            match api {
                ApiKey::ApiVersions => {
                    api_versions(&shared, 0, &mut out, version)?;
                    After::Continue
                }
                ApiKey::SaslHandshake => handshake(&shared, &mut session, body, version, &mut out)?,
                ApiKey::SaslAuthenticate => {
                    authenticate(&shared, &mut session, body, version, &mut out)?
                }
                _ => {
                    let table = shared.table.read().unwrap();
                    if super::answer::answer(api, version, &mut body, broker, &table, &mut out)
                        .is_err()
                    {
                        // Undecodable body: Kafka closes the connection.
                        return Ok(());
                    }
                    After::Continue
                }
            }
        };
        let n = (out.len() - 4) as i32;
        out[0..4].copy_from_slice(&n.to_be_bytes());
        w.write_all(&out).await?;
        if let After::Close = after {
            return Ok(());
        }
    }
}

enum Gate {
    Open,
    Close,
    Expired,
}

/// Whether a request may be served on this connection now.
fn gate(shared: &Shared, session: &Session, api: ApiKey) -> Gate {
    if shared.authenticator.is_none() {
        return Gate::Open;
    }
    let sasl = matches!(api, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate);
    if session.principal.is_none() {
        return if sasl || api == ApiKey::ApiVersions {
            Gate::Open
        } else {
            Gate::Close
        };
    }
    match session.expires {
        Some(at) if Instant::now() >= at && !sasl => Gate::Expired,
        _ => Gate::Open,
    }
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn api_versions(
    shared: &Shared,
    error_code: i16,
    out: &mut BytesMut,
    version: i16,
) -> std::io::Result<()> {
    let keys = shared
        .table
        .read()
        .unwrap()
        .api_versions
        .iter()
        .map(|(k, (lo, hi))| {
            ApiVersion::default()
                .with_api_key(*k)
                .with_min_version(*lo)
                .with_max_version(*hi)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(keys)
        .encode(out, version)
        .map_err(io)
}

fn handshake(
    shared: &Shared,
    session: &mut Session,
    mut body: Bytes,
    version: i16,
    out: &mut BytesMut,
) -> std::io::Result<After> {
    let req = SaslHandshakeRequest::decode(&mut body, version).map_err(io)?;
    let Some(auth) = &shared.authenticator else {
        // A listener without SASL: Kafka answers ILLEGAL_SASL_STATE.
        SaslHandshakeResponse::default()
            .with_error_code(ILLEGAL_SASL_STATE)
            .encode(out, version)
            .map_err(io)?;
        return Ok(After::Close);
    };
    let offered = auth.mechanisms();
    let mechanism = req.mechanism.to_string();
    let ok = offered.contains(&mechanism);
    SaslHandshakeResponse::default()
        .with_error_code(if ok { 0 } else { UNSUPPORTED_SASL_MECHANISM })
        .with_mechanisms(offered.into_iter().map(StrBytes::from_string).collect())
        .encode(out, version)
        .map_err(io)?;
    if ok {
        session.mechanism = Some(mechanism);
        Ok(After::Continue)
    } else {
        Ok(After::Close)
    }
}

fn authenticate(
    shared: &Shared,
    session: &mut Session,
    mut body: Bytes,
    version: i16,
    out: &mut BytesMut,
) -> std::io::Result<After> {
    let req = SaslAuthenticateRequest::decode(&mut body, version).map_err(io)?;
    let (Some(auth), Some(mechanism)) = (&shared.authenticator, session.mechanism.take()) else {
        SaslAuthenticateResponse::default()
            .with_error_code(ILLEGAL_SASL_STATE)
            .with_error_message(Some(StrBytes::from_static_str(
                "SaslAuthenticate without a SaslHandshake before it",
            )))
            .encode(out, version)
            .map_err(io)?;
        return Ok(After::Close);
    };
    match auth.authenticate(&mechanism, &req.auth_bytes) {
        Ok(ok) => {
            if let Some(before) = &session.principal {
                if *before != ok.principal {
                    SaslAuthenticateResponse::default()
                        .with_error_code(SASL_AUTHENTICATION_FAILED)
                        .with_error_message(Some(StrBytes::from_string(format!(
                            "Cannot change principals during re-authentication from {before}: {}",
                            ok.principal
                        ))))
                        .encode(out, version)
                        .map_err(io)?;
                    return Ok(After::Close);
                }
            }
            let mut resp =
                SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(ok.server_bytes));
            if version >= 1 {
                resp.session_lifetime_ms = ok.session_lifetime_ms;
            }
            resp.encode(out, version).map_err(io)?;
            session.principal = Some(ok.principal);
            session.expires = (ok.session_lifetime_ms > 0)
                .then(|| Instant::now() + Duration::from_millis(ok.session_lifetime_ms as u64));
            Ok(After::Continue)
        }
        Err(e) => {
            SaslAuthenticateResponse::default()
                .with_error_code(e.error_code)
                .with_error_message(Some(StrBytes::from_string(e.message)))
                .with_auth_bytes(Bytes::from(e.server_bytes))
                .encode(out, version)
                .map_err(io)?;
            Ok(After::Close)
        }
    }
}
