//! A small Kafka client built on the `kafka-protocol` codec, for the batched admin reads that
//! rdkafka's high-level API does not offer: ListGroups per broker, OffsetFetch for many groups
//! at once, ListOffsets per leader, and Fetch for record timestamps.

pub mod client;
pub mod conn;
pub mod error;
pub mod sasl;
pub mod tls;

pub use client::{
    ClientConfig, ClusterMetadata, FetchOutcome, GroupOffsets, KafkaClient, ListedGroup, Tp,
};
pub use conn::{SaslCredentials, Security};
pub use error::KafkaError;
pub use sasl::SaslMechanism;
