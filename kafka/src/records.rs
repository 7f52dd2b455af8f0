//! Record timestamps in Fetch responses: which record sits at a wanted offset, and when it was
//! written. Pure, so it is tested on encoded batches without a broker.

use bytes::{Buf, Bytes};
use kafka_protocol::records::RecordBatchDecoder;

/// What a timestamp fetch found at an offset.
#[derive(Debug, Clone, PartialEq)]
pub enum FetchOutcome {
    /// The timestamp (ms since the epoch) of the first record at or after the offset.
    Timestamp(i64),
    /// The offset is below the log start; the broker said where the log starts now, if it did.
    OutOfRange { log_start: Option<i64> },
    /// The broker returned no complete record this time (size limit, or nothing there).
    NoRecord,
    /// A partition-level error code.
    Error(i16),
}

/// Size of a record batch header up to and including `maxTimestamp`.
const BATCH_HEADER_TIMESTAMPS_END: usize = 43;

/// The timestamp of the first record at or after each of `offsets` (sorted ascending) in a
/// Fetch response's record bytes.
///
/// Complete batches are decoded (and decompressed) to find the exact records. If the data ends
/// in a batch cut short by the size limit, its header still holds the batch's first
/// timestamp; an offset not found in complete batches but inside that batch's range takes it
/// (exact when the batch starts at that offset, else the closest lower bound available).
pub fn timestamps_at(mut records: Bytes, offsets: &[i64]) -> Vec<(i64, FetchOutcome)> {
    let mut out: Vec<(i64, FetchOutcome)> = Vec::with_capacity(offsets.len());
    let mut next = 0usize;
    let mut truncated_first_ts = None;
    'batches: while records.remaining() >= 12 && next < offsets.len() {
        let base_offset = i64::from_be_bytes(records[0..8].try_into().unwrap_or([0; 8]));
        let len = i32::from_be_bytes(records[8..12].try_into().unwrap_or([0; 4]));
        let Ok(len) = usize::try_from(len) else {
            break;
        };
        let total = 12 + len;
        if records.remaining() < total {
            if records.remaining() >= BATCH_HEADER_TIMESTAMPS_END {
                let ts = i64::from_be_bytes(records[27..35].try_into().unwrap_or([0; 8]));
                truncated_first_ts = Some((base_offset, ts));
            }
            break;
        }
        let mut batch = records.split_to(total);
        match RecordBatchDecoder::decode(&mut batch) {
            Ok(set) => {
                for r in set.records.iter().filter(|r| !r.control) {
                    while next < offsets.len() && r.offset >= offsets[next] {
                        out.push((offsets[next], FetchOutcome::Timestamp(r.timestamp)));
                        next += 1;
                    }
                    if next == offsets.len() {
                        break 'batches;
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot decode record batch");
                break;
            }
        }
    }
    for o in &offsets[next..] {
        let outcome = match truncated_first_ts {
            Some((base, ts)) if *o <= base || out.is_empty() => FetchOutcome::Timestamp(ts),
            _ => FetchOutcome::NoRecord,
        };
        out.push((*o, outcome));
    }
    out
}

/// The timestamp of the first record at or after `offset` (see [`timestamps_at`]).
#[cfg(test)]
pub(crate) fn timestamp_at(records: Bytes, offset: i64) -> FetchOutcome {
    timestamps_at(records, &[offset])
        .pop()
        .map(|(_, f)| f)
        .unwrap_or(FetchOutcome::NoRecord)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn record(offset: i64, ts: i64) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: -1,
            timestamp: ts,
            key: None,
            value: Some(Bytes::from_static(b"payload-payload-payload")),
            headers: Default::default(),
        }
    }

    fn batch(records: &[Record], compression: Compression) -> Bytes {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn finds_the_exact_record_inside_a_batch() {
        let recs: Vec<_> = (10..20).map(|o| record(o, 1_000 + o * 10)).collect();
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Snappy,
        ] {
            let b = batch(&recs, c);
            assert_eq!(
                timestamp_at(b.clone(), 10),
                FetchOutcome::Timestamp(1_100),
                "{c:?}"
            );
            assert_eq!(
                timestamp_at(b.clone(), 15),
                FetchOutcome::Timestamp(1_150),
                "{c:?}"
            );
            assert_eq!(timestamp_at(b, 25), FetchOutcome::NoRecord, "{c:?}");
        }
    }

    #[test]
    fn walks_several_batches_and_skips_earlier_ones() {
        let mut all = BytesMut::new();
        all.extend_from_slice(&batch(&[record(0, 500), record(1, 600)], Compression::None));
        all.extend_from_slice(&batch(&[record(2, 700), record(3, 800)], Compression::None));
        assert_eq!(timestamp_at(all.freeze(), 3), FetchOutcome::Timestamp(800));
    }

    #[test]
    fn a_truncated_batch_falls_back_to_its_header_timestamp() {
        let b = batch(&[record(7, 4_242), record(8, 4_343)], Compression::None);
        let cut = b.slice(0..b.len() - 5);
        assert_eq!(timestamp_at(cut, 7), FetchOutcome::Timestamp(4_242));
        let too_short = b.slice(0..20);
        assert_eq!(timestamp_at(too_short, 7), FetchOutcome::NoRecord);
        assert_eq!(timestamp_at(Bytes::new(), 7), FetchOutcome::NoRecord);
    }

    #[test]
    fn several_offsets_in_one_read() {
        let mut all = BytesMut::new();
        all.extend_from_slice(&batch(&[record(0, 500), record(1, 600)], Compression::None));
        all.extend_from_slice(&batch(&[record(2, 700), record(3, 800)], Compression::Gzip));
        let got = timestamps_at(all.freeze(), &[1, 3, 9]);
        assert_eq!(
            got,
            vec![
                (1, FetchOutcome::Timestamp(600)),
                (3, FetchOutcome::Timestamp(800)),
                (9, FetchOutcome::NoRecord)
            ]
        );
    }
}
