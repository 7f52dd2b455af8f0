//! medic-kafka: a small Kafka client built on the `kafka-protocol` codec, shared by
//! medic-agent (the batched reads rdkafka's high-level API does not offer: ListGroups per
//! broker, OffsetFetch for many groups at once, ListOffsets per leader, Fetch for record
//! timestamps) and medic-actuator (the admin requests of its `kafka` backend).
//!
//! - [`conn`]: one connection: framing, correlation ids, version negotiation, TLS and SASL.
//! - [`client`]: a connection per broker and the typed, batched requests.
//! - [`records`]: record timestamps in Fetch responses (pure).
//! - [`security`]: `security_protocol` ([`SecurityProtocol`]), TLS and SASL settings.
//! - [`sasl`], [`tls`]: SASL tokens (PLAIN, SCRAM) and rustls configuration from PEM files.
//! - [`observer`]: every request reported to whoever embeds the client.
//! - [`error`]: the errors, [`KafkaError`].
//!
//! The embedding binary names itself ([`ClientConfig::client_id`]) and decides where request
//! counts go ([`ClientConfig::observer`]); this crate installs no metrics recorder.

pub(crate) mod client;
pub(crate) mod conn;
pub mod error;
pub(crate) mod observer;
pub(crate) mod records;
pub(crate) mod sasl;
pub(crate) mod security;
pub mod tls;

pub use client::{ClientConfig, ClusterMetadata, GroupOffsets, KafkaClient, ListedGroup, Tp};
pub use error::KafkaError;
pub use observer::{api_name, Outcome, RequestEvent, RequestObserver};
pub use records::FetchOutcome;
pub use sasl::SaslMechanism;
pub use security::{read_password_file, SaslCredentials, Security, SecurityProtocol};
