//! medic-kafka: a small Kafka client built on the `kafka-protocol` codec, shared by
//! medic-agent (the batched reads rdkafka's high-level API does not offer: ListGroups per
//! broker, OffsetFetch for many groups at once, ListOffsets per leader, Fetch for record
//! timestamps) and medic-actuator (the admin requests of its `kafka` backend).
//!
//! - [`conn`]: one connection: framing, correlation ids, version negotiation, TLS and SASL.
//! - [`client`]: a connection per broker and the typed, batched requests.
//! - [`records`]: record timestamps in Fetch responses (pure).
//! - [`security`]: `security_protocol` ([`SecurityProtocol`]), TLS and SASL settings.
//! - [`sasl`], [`tls`]: SASL tokens (PLAIN, SCRAM, OAUTHBEARER) and rustls configuration from
//!   PEM files.
//! - [`token`], [`oidc`]: bearer tokens for OAUTHBEARER, their cache (shared by every
//!   connection, refreshed at 80% of their lifetime) and the OIDC client-credentials source.
//! - [`observer`]: every request reported to whoever embeds the client.
//! - [`error`]: the errors, [`KafkaError`].
//!
//! The embedding binary names itself ([`ClientConfig::client_id`]) and decides where request
//! counts go ([`ClientConfig::observer`]); this crate installs no metrics recorder.

pub(crate) mod client;
pub(crate) mod conn;
pub mod error;
pub mod msk_iam;
pub(crate) mod observer;
pub mod oidc;
pub(crate) mod records;
pub(crate) mod sasl;
pub(crate) mod security;
pub mod tls;
pub mod token;

pub use client::{
    ClientConfig, ClusterMetadata, DescribedGroup, GroupDescription, GroupMember, GroupOffsets,
    GroupType, KafkaClient, ListedGroup, Tp,
};
pub use error::KafkaError;
pub use observer::{api_name, Outcome, RequestEvent, RequestObserver};
pub use oidc::{OidcSettings, OidcTokenSource};
pub use records::FetchOutcome;
pub use sasl::{oauthbearer_initial_response, SaslMechanism};
pub use security::{
    read_password_file, Sasl, SaslCredentials, Security, SecurityProtocol, SecuritySettings,
    SettingProblem,
};
pub use token::{BearerToken, TokenCache, TokenFuture, TokenSource};
