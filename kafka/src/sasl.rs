//! SASL client mechanisms: PLAIN (RFC 4616), SCRAM-SHA-256/512 (RFC 5802, RFC 7677) and
//! OAUTHBEARER (RFC 7628; AWS MSK IAM uses it too).
//!
//! The exchange itself (SaslHandshake, then SaslAuthenticate round trips) lives in
//! [`crate::conn`]; this module only produces and checks the tokens, so it is pure and tested
//! against the RFC test vectors.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};

/// The largest SCRAM iteration count a server may ask for. Kafka's default is 4096 and its own
/// maximum 16384; a larger figure would only make each connection burn CPU (or be an attack).
pub const MAX_SCRAM_ITERATIONS: u32 = 100_000;

/// The SASL mechanisms the client can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    /// RFC 7628 with a bearer token from a [`crate::token::TokenSource`] (OIDC).
    #[serde(rename = "OAUTHBEARER")]
    OAuthBearer,
    /// AWS MSK IAM: OAUTHBEARER on the wire, carrying a SigV4-signed token.
    #[serde(rename = "AWS_MSK_IAM")]
    AwsMskIam,
}

impl SaslMechanism {
    /// Every mechanism, in the order error messages list them.
    pub const ALL: [SaslMechanism; 5] = [
        SaslMechanism::Plain,
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
        SaslMechanism::OAuthBearer,
        SaslMechanism::AwsMskIam,
    ];

    /// The mechanism's name in the configuration (`sasl_mechanism`).
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
            SaslMechanism::AwsMskIam => "AWS_MSK_IAM",
        }
    }

    /// The mechanism name as sent in SaslHandshake (AWS_MSK_IAM travels as OAUTHBEARER).
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::AwsMskIam => "OAUTHBEARER",
            m => m.as_str(),
        }
    }

    /// Authenticates with a bearer token rather than a user name and password.
    pub fn uses_token(self) -> bool {
        matches!(self, SaslMechanism::OAuthBearer | SaslMechanism::AwsMskIam)
    }
}

impl std::str::FromStr for SaslMechanism {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SaslMechanism::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown SASL mechanism {:?}; expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM",
                    s.to_ascii_uppercase()
                )
            })
    }
}

/// The OAUTHBEARER initial client response (RFC 7628 §3.1): the GS2 header `n,,` (no channel
/// binding, no authorization identity), then the `auth` key-value pair, each pair and the
/// message ended by `\x01`.
pub fn oauthbearer_initial_response(token: &str) -> Vec<u8> {
    let mut t = Vec::with_capacity(token.len() + 20);
    t.extend_from_slice(b"n,,\x01auth=Bearer ");
    t.extend_from_slice(token.as_bytes());
    t.extend_from_slice(b"\x01\x01");
    t
}

/// The client's answer to an OAUTHBEARER server error (RFC 7628 §3.2.3): a lone `\x01`, after
/// which the server fails the exchange.
pub const OAUTHBEARER_ERROR_ACK: &[u8] = b"\x01";

/// The single PLAIN token: authzid (empty), NUL, user, NUL, password.
pub fn plain_token(user: &str, password: &str) -> Vec<u8> {
    let mut t = Vec::with_capacity(user.len() + password.len() + 2);
    t.push(0);
    t.extend_from_slice(user.as_bytes());
    t.push(0);
    t.extend_from_slice(password.as_bytes());
    t
}

#[derive(Debug, Clone, Copy)]
enum Hash {
    Sha256,
    Sha512,
}

/// A SCRAM client conversation: `client_first`, then `client_final(server_first)`, then
/// `verify_server_final(server_final)`.
#[derive(Debug)]
pub struct ScramClient {
    hash: Hash,
    password: String,
    nonce: String,
    client_first_bare: String,
    expected_server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// Starts a conversation with a random nonce.
    pub fn new(mechanism: SaslMechanism, user: &str, password: &str) -> Option<Self> {
        use rand::RngExt;
        let mut raw = [0u8; 24];
        rand::rng().fill(&mut raw[..]);
        Self::with_nonce(mechanism, user, password, &B64.encode(raw))
    }

    /// Starts a conversation with a given nonce (tests use the RFC's).
    pub fn with_nonce(
        mechanism: SaslMechanism,
        user: &str,
        password: &str,
        nonce: &str,
    ) -> Option<Self> {
        let hash = match mechanism {
            SaslMechanism::ScramSha256 => Hash::Sha256,
            SaslMechanism::ScramSha512 => Hash::Sha512,
            _ => return None,
        };
        let user = user.replace('=', "=3D").replace(',', "=2C");
        let client_first_bare = format!("n={user},r={nonce}");
        Some(ScramClient {
            hash,
            password: password.to_string(),
            nonce: nonce.to_string(),
            client_first_bare,
            expected_server_signature: None,
        })
    }

    /// The client-first message (no channel binding).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Consumes server-first and returns client-final.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| "server-first message is not UTF-8".to_string())?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in server_first.split(',') {
            if let Some(v) = part.strip_prefix("r=") {
                nonce = Some(v);
            } else if let Some(v) = part.strip_prefix("s=") {
                salt = Some(
                    B64.decode(v)
                        .map_err(|_| "server-first salt is not base64".to_string())?,
                );
            } else if let Some(v) = part.strip_prefix("i=") {
                iterations = Some(
                    v.parse::<u32>()
                        .map_err(|_| format!("server-first iteration count {v:?} is invalid"))?,
                );
            } else if let Some(v) = part.strip_prefix("e=") {
                return Err(format!("server rejected the client-first message: {v}"));
            }
        }
        let nonce = nonce.ok_or("server-first has no nonce")?;
        let salt = salt.ok_or("server-first has no salt")?;
        let iterations = iterations.ok_or("server-first has no iteration count")?;
        if !nonce.starts_with(&self.nonce) {
            return Err("server nonce does not extend the client nonce".to_string());
        }
        if iterations == 0 {
            return Err("server-first iteration count is 0".to_string());
        }
        if iterations > MAX_SCRAM_ITERATIONS {
            return Err(format!(
                "server-first iteration count {iterations} is above the limit of {MAX_SCRAM_ITERATIONS}"
            ));
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let (proof, server_signature) = match self.hash {
            Hash::Sha256 => scram_sha256(
                self.password.as_bytes(),
                &salt,
                iterations,
                auth_message.as_bytes(),
            )?,
            Hash::Sha512 => scram_sha512(
                self.password.as_bytes(),
                &salt,
                iterations,
                auth_message.as_bytes(),
            )?,
        };
        self.expected_server_signature = Some(server_signature);
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server's signature in server-final.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(server_final)
            .map_err(|_| "server-final message is not UTF-8".to_string())?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(format!("server rejected the credentials: {e}"));
        }
        let v = text
            .split(',')
            .find_map(|p| p.strip_prefix("v="))
            .ok_or("server-final has no verifier")?;
        let got = B64
            .decode(v)
            .map_err(|_| "server-final verifier is not base64".to_string())?;
        match &self.expected_server_signature {
            Some(expected) if *expected == got => Ok(()),
            Some(_) => Err(
                "server signature does not match: the server does not know the password"
                    .to_string(),
            ),
            None => Err("server-final received before server-first".to_string()),
        }
    }
}

/// Generates the client proof and the server signature for one hash function. `Hi()` of
/// RFC 5802 is PBKDF2 with HMAC as the PRF and one output block of the hash's size.
macro_rules! scram_math {
    ($name:ident, $hash:ty) => {
        fn $name(
            password: &[u8],
            salt: &[u8],
            iterations: u32,
            auth_message: &[u8],
        ) -> Result<(Vec<u8>, Vec<u8>), String> {
            type H = Hmac<$hash>;
            let mac = |key: &[u8], data: &[u8]| -> Result<Vec<u8>, String> {
                let mut m = <H as KeyInit>::new_from_slice(key)
                    .map_err(|_| "HMAC key rejected".to_string())?;
                m.update(data);
                Ok(m.finalize().into_bytes().to_vec())
            };
            let mut salted = vec![0u8; <$hash as Digest>::output_size()];
            pbkdf2::pbkdf2_hmac::<$hash>(password, salt, iterations, &mut salted);
            let client_key = mac(&salted, b"Client Key")?;
            let stored_key = <$hash>::digest(&client_key).to_vec();
            let client_signature = mac(&stored_key, auth_message)?;
            let proof = client_key
                .iter()
                .zip(&client_signature)
                .map(|(k, s)| k ^ s)
                .collect();
            let server_key = mac(&salted, b"Server Key")?;
            Ok((proof, mac(&server_key, auth_message)?))
        }
    };
}

scram_math!(scram_sha256, Sha256);
scram_math!(scram_sha512, Sha512);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_token_layout() {
        assert_eq!(plain_token("alice", "s3cret"), b"\0alice\0s3cret".to_vec());
    }

    #[test]
    fn mechanism_names_round_trip() {
        for m in SaslMechanism::ALL {
            assert_eq!(m.as_str().parse::<SaslMechanism>(), Ok(m));
            assert_eq!(m.as_str().to_lowercase().parse::<SaslMechanism>(), Ok(m));
        }
        assert_eq!(SaslMechanism::AwsMskIam.name(), "OAUTHBEARER");
        assert_eq!(SaslMechanism::OAuthBearer.name(), "OAUTHBEARER");
        assert_eq!(SaslMechanism::ScramSha256.name(), "SCRAM-SHA-256");
        assert!(SaslMechanism::AwsMskIam.uses_token() && !SaslMechanism::Plain.uses_token());
        let err = "GSSAPI".parse::<SaslMechanism>().unwrap_err();
        assert_eq!(
            err,
            "unknown SASL mechanism \"GSSAPI\"; expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM"
        );
    }

    /// RFC 7628 §4.1's example, without the optional host and port pairs.
    #[test]
    fn oauthbearer_initial_response_bytes() {
        assert_eq!(
            oauthbearer_initial_response("vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="),
            b"n,,\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01".to_vec()
        );
        let bytes = oauthbearer_initial_response("a.b.c");
        assert_eq!(&bytes[..4], &[b'n', b',', b',', 0x01]);
        assert_eq!(&bytes[bytes.len() - 2..], &[0x01, 0x01]);
        assert_eq!(bytes.len(), 3 + 1 + "auth=Bearer a.b.c".len() + 2);
        assert_eq!(OAUTHBEARER_ERROR_ACK, &[0x01]);
    }

    /// RFC 7677 section 3: the SCRAM-SHA-256 example exchange, byte for byte.
    #[test]
    fn scram_sha256_rfc7677_vector() {
        let mut c = ScramClient::with_nonce(
            SaslMechanism::ScramSha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO",
        )
        .unwrap();
        assert_eq!(
            c.client_first(),
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO".to_vec()
        );
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let fin = c.client_final(server_first).unwrap();
        assert_eq!(
            String::from_utf8(fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        let bad = c
            .verify_server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap_err();
        assert!(bad.contains("does not match"), "{bad}");
    }

    #[test]
    fn scram_rejects_foreign_nonce_and_errors() {
        let mut c = ScramClient::with_nonce(SaslMechanism::ScramSha512, "u", "p", "abc").unwrap();
        let e = c.client_final(b"r=zzz,s=AAAA,i=4096").unwrap_err();
        assert!(e.contains("does not extend"), "{e}");
        let e = c.client_final(b"e=unknown-user").unwrap_err();
        assert!(e.contains("unknown-user"), "{e}");
        let e = c.client_final(b"r=abcdef,s=AAAA").unwrap_err();
        assert!(e.contains("iteration"), "{e}");
        let e = c.verify_server_final(b"e=invalid-proof").unwrap_err();
        assert!(e.contains("invalid-proof"), "{e}");
    }

    #[test]
    fn scram_refuses_an_iteration_count_above_the_cap() {
        let mut c = ScramClient::with_nonce(SaslMechanism::ScramSha256, "u", "p", "abc").unwrap();
        let e = c
            .client_final(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=100001")
            .unwrap_err();
        assert_eq!(
            e,
            "server-first iteration count 100001 is above the limit of 100000"
        );
        // The cap itself is still accepted.
        let fin = c
            .client_final(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=100000")
            .unwrap();
        assert!(fin.starts_with(b"c=biws,r=abcdef,p="));
    }

    /// RFC 7677's SCRAM-SHA-256 exchange redone with SHA-512 (no RFC has a SHA-512 vector);
    /// the expected proof and signature were computed independently with Python's
    /// `hashlib.pbkdf2_hmac` and `hmac`.
    #[test]
    fn scram_sha512_vector() {
        let mut c = ScramClient::with_nonce(
            SaslMechanism::ScramSha512,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO",
        )
        .unwrap();
        let server_first =
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=QSXCR+Q6sek8bf92,i=4096";
        let fin = c.client_final(server_first).unwrap();
        assert_eq!(
            String::from_utf8(fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=EAykbhDbSIdK2NH1gxa6hYeuy//F2vYHhDoID4icsfM4En7tcnA3Z8d4tGEJYtryn0rPgJfK/+/jQRZPhFOnvg=="
        );
        c.verify_server_final(b"v=yax/LDlXoMn1o/AvseJ8T8lP13ZwLqloWBF+Ha+KqzvGcg205ZoJQDqxr01QXLIFNyiqDLEITr05WbdTDPpW6w==")
            .unwrap();
    }

    #[test]
    fn scram_escapes_user_name() {
        let c = ScramClient::with_nonce(SaslMechanism::ScramSha256, "a=b,c", "p", "n").unwrap();
        assert_eq!(c.client_first(), b"n,,n=a=3Db=2Cc,r=n".to_vec());
        assert!(ScramClient::new(SaslMechanism::Plain, "u", "p").is_none());
    }
}
