//! The snapshot a scrape serves, and the health verdict derived from it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;

use crate::lag::LagReport;

/// What the HTTP server serves: the last successful lag report (maybe stale), the broker's
/// health from the last collection, and how the last attempt went.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub report: Arc<LagReport>,
    /// The lag families, held compressed (see [`CompressedText`]).
    pub lag_text: Arc<CompressedText>,
    pub(crate) broker_text: String,
    /// Unix seconds of the last successful collection.
    pub(crate) last_success: Option<f64>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
}

/// The snapshot, swapped whole by the collector and read by every scrape.
#[derive(Debug, Default)]
pub struct SnapshotCell(RwLock<Arc<Snapshot>>);

impl SnapshotCell {
    pub fn load(&self) -> Arc<Snapshot> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub(crate) fn store(&self, s: Snapshot) {
        let s = Arc::new(s);
        match self.0.write() {
            Ok(mut g) => *g = s,
            Err(p) => *p.into_inner() = s,
        }
    }
}

/// Exposition text held deflate-compressed: at 100,000 partitions the lag families are
/// about 45 MB of text, and compressed they are a few MB.
///
/// `deflate` is a raw deflate stream that ends with a sync flush and no final block, so a
/// scrape can append the text it renders at scrape time as further blocks and serve one gzip
/// member without recompressing the lag text ([`CompressedText::gzip_with`]).
#[derive(Clone, Default)]
pub struct CompressedText {
    deflate: Vec<u8>,
    crc: u32,
    len: u64,
}

impl std::fmt::Debug for CompressedText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressedText")
            .field("compressed_bytes", &self.deflate.len())
            .field("text_bytes", &self.len)
            .finish()
    }
}

/// An empty fixed-Huffman final block: ends a sync-flushed deflate stream.
const FINAL_EMPTY_BLOCK: [u8; 2] = [0x03, 0x00];

impl CompressedText {
    /// Compresses a text at once (tests, and small texts).
    pub fn new(text: &str) -> CompressedText {
        let mut w = TextWriter::new();
        let _ = std::fmt::Write::write_str(&mut w, text);
        w.finish()
    }

    /// Bytes held.
    pub fn compressed_len(&self) -> usize {
        self.deflate.len()
    }

    /// Bytes of the text.
    pub fn text_len(&self) -> u64 {
        self.len
    }

    /// The text, decompressed (for clients that do not accept gzip, and tests).
    pub fn text(&self) -> String {
        use std::io::Read;
        let mut out = String::with_capacity(usize::try_from(self.len).unwrap_or(0));
        let stream = self.deflate.as_slice().chain(&FINAL_EMPTY_BLOCK[..]);
        // Our own stream: it cannot fail to decompress.
        let _ = flate2::read::DeflateDecoder::new(stream).read_to_string(&mut out);
        out
    }

    /// Whether the text contains `needle` (tests).
    pub fn contains(&self, needle: &str) -> bool {
        self.text().contains(needle)
    }

    /// One gzip member: this text followed by `tail`, which is compressed now.
    pub(crate) fn gzip_with(&self, tail: &str) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::with_capacity(self.deflate.len() + tail.len() / 4 + 64);
        // Header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
        out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
        out.extend_from_slice(&self.deflate);
        let mut enc = flate2::write::DeflateEncoder::new(out, flate2::Compression::fast());
        let _ = enc.write_all(tail.as_bytes());
        // Writing into a Vec cannot fail.
        let mut out = enc.finish().unwrap_or_default();
        let mut crc = crc32fast::Hasher::new_with_initial_len(self.crc, self.len);
        let mut tail_crc = crc32fast::Hasher::new();
        tail_crc.update(tail.as_bytes());
        crc.combine(&tail_crc);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        // ISIZE is the length modulo 2^32.
        let total = self.len + tail.len() as u64;
        out.extend_from_slice(&((total & 0xffff_ffff) as u32).to_le_bytes());
        out
    }
}

/// Shows the text, decompressed (test failures print it).
impl std::fmt::Display for CompressedText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

impl From<&str> for CompressedText {
    fn from(text: &str) -> Self {
        CompressedText::new(text)
    }
}

/// Renders straight into a [`CompressedText`], so the whole text never exists at once.
pub(crate) struct TextWriter {
    enc: std::io::BufWriter<flate2::write::DeflateEncoder<Vec<u8>>>,
    crc: crc32fast::Hasher,
    len: u64,
}

impl TextWriter {
    pub(crate) fn new() -> TextWriter {
        TextWriter {
            enc: std::io::BufWriter::with_capacity(
                64 * 1024,
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast()),
            ),
            crc: crc32fast::Hasher::new(),
            len: 0,
        }
    }

    pub(crate) fn finish(mut self) -> CompressedText {
        use std::io::Write;
        // A sync flush: the stream ends on a byte boundary, without a final block.
        let _ = self.enc.flush();
        let mut deflate = std::mem::take(self.enc.get_mut().get_mut());
        deflate.shrink_to_fit();
        CompressedText {
            deflate,
            crc: self.crc.finalize(),
            len: self.len,
        }
    }
}

impl std::fmt::Write for TextWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        use std::io::Write;
        self.crc.update(s.as_bytes());
        self.len += s.len() as u64;
        // Writing into a Vec cannot fail.
        self.enc
            .write_all(s.as_bytes())
            .map_err(|_| std::fmt::Error)
    }
}

/// The `/healthz` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Health {
    pub(crate) status: &'static str,
    pub(crate) healthy: bool,
    pub(crate) cluster: String,
    pub(crate) mode: String,
    pub(crate) last_success: Option<f64>,
    pub(crate) snapshot_age_seconds: Option<f64>,
    pub last_error: Option<String>,
    /// Why the agent is unhealthy, in words.
    pub(crate) reason: Option<String>,
}

/// Healthy while the last attempt succeeded and the last success is at most `stale_after` old.
pub(crate) fn health(
    s: &Snapshot,
    now: f64,
    stale_after: Duration,
    cluster: &str,
    mode: &str,
) -> Health {
    let age = s.last_success.map(|t| (now - t).max(0.0));
    let reason = match (s.last_success, &s.last_error, age) {
        (None, None, _) => Some("no collection has completed yet".to_string()),
        (None, Some(e), _) => Some(format!("no collection has succeeded yet; last error: {e}")),
        (Some(_), Some(e), Some(a)) => Some(format!(
            "the last collection failed ({e}); serving a snapshot {a:.0}s old"
        )),
        (Some(_), None, Some(a)) if a > stale_after.as_secs_f64() => Some(format!(
            "the last successful collection is {a:.0}s old (more than {}s)",
            stale_after.as_secs()
        )),
        _ => None,
    };
    Health {
        status: if reason.is_none() { "ok" } else { "unhealthy" },
        healthy: reason.is_none(),
        cluster: cluster.to_string(),
        mode: mode.to_string(),
        last_success: s.last_success,
        snapshot_age_seconds: age,
        last_error: s.last_error.clone(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lag::{partition_report, GroupReport, TopicEnds, TopicReport};
    use crate::render::{count_samples, render_lag_into, LagOptions};
    use std::io::Read;

    fn gunzip(bytes: &[u8]) -> String {
        let mut out = String::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_string(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn compressed_text_round_trips_and_gzips_with_a_tail() {
        let text = "kafka_consumergroup_lag{x=\"1\"} 5\n".repeat(1000);
        let c = CompressedText::new(&text);
        assert_eq!(c.text(), text);
        assert_eq!(c.text_len(), text.len() as u64);
        assert!(c.compressed_len() < text.len() / 20, "{c:?}");
        let tail = "medic_agent_healthy{cluster=\"c\"} 1\n";
        let gz = c.gzip_with(tail);
        assert_eq!(gunzip(&gz), format!("{text}{tail}"));
        // The empty text and an empty tail are valid too.
        assert_eq!(gunzip(&CompressedText::default().gzip_with("")), "");
        assert_eq!(gunzip(&CompressedText::new("").gzip_with("a")), "a");
        assert_eq!(CompressedText::default().text(), "");
        // A corrupted CRC is caught by a gzip reader: the trailer is really checked.
        let mut bad = gz.clone();
        let n = bad.len();
        bad[n - 8] ^= 1;
        let mut out = Vec::new();
        assert!(flate2::read::GzDecoder::new(&bad[..])
            .read_to_end(&mut out)
            .is_err());
    }

    /// A report of `groups` groups with one topic of `partitions` partitions each.
    pub(crate) fn big_report(groups: usize, partitions: i32) -> LagReport {
        LagReport {
            cluster: "production-eu-west-1".into(),
            collected_at: 1_700_000_000.0,
            groups: (0..groups)
                .map(|g| GroupReport {
                    group: format!("service-{g:05}-consumer"),
                    state: "Stable".into(),
                    coordinator: 1,
                    info: Default::default(),
                    topics: vec![TopicReport {
                        topic: format!("events.orders.v{}", g % 50),
                        lag: 0,
                        lag_max: 0,
                        lag_seconds_max: None,
                        consumption_rate: None,
                        drain_seconds: None,
                        partitions: (0..partitions)
                            .map(|p| {
                                let end = 1_000_000_000 + i64::from(p) * 7_919 + g as i64;
                                let committed = end - (g as i64 * 31 + i64::from(p)) % 5_000;
                                let mut r = partition_report(p, committed, end, 0.0, None, None);
                                r.lag_seconds = Some(r.lag as f64 / 13.0);
                                r
                            })
                            .collect(),
                    }],
                })
                .collect(),
            topic_end_offsets: (0..50)
                .map(|t| TopicEnds {
                    topic: format!("events.orders.v{t}"),
                    partitions: (0..partitions)
                        .map(|p| (p, 1_000_000_000 + i64::from(p) * 7_919))
                        .collect(),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// The measurement behind the README's figures: bytes held per series by the old plain
    /// String and by the compressed text, at 2,000 groups x 10 partitions (62,505 series).
    /// `cargo test -p medic-agent --lib bytes_held_per_series -- --nocapture` prints them.
    #[test]
    fn bytes_held_per_series() {
        let r = big_report(2_000, 10);
        let mut plain = String::new();
        render_lag_into(&r, &LagOptions::default(), &mut plain);
        let mut w = TextWriter::new();
        render_lag_into(&r, &LagOptions::default(), &mut w);
        let c = w.finish();
        assert_eq!(c.text(), plain, "the same text, compressed");
        let series = count_samples(&plain);
        let plain_per = plain.len() as f64 / series as f64;
        let held_per = c.compressed_len() as f64 / series as f64;
        println!(
            "{series} series: plain {} bytes ({plain_per:.1}/series), compressed {} bytes ({held_per:.1}/series)",
            plain.len(),
            c.compressed_len()
        );
        assert!(plain_per > 80.0, "{plain_per}");
        assert!(held_per < 25.0, "{held_per}");
    }

    #[test]
    fn health_verdicts() {
        let stale = Duration::from_secs(30);
        let fresh = Snapshot {
            last_success: Some(100.0),
            ..Default::default()
        };
        let h = health(&fresh, 110.0, stale, "c", "cluster");
        assert!(h.healthy && h.reason.is_none() && h.snapshot_age_seconds == Some(10.0));

        let old = health(&fresh, 200.0, stale, "c", "cluster");
        assert_eq!(
            old.reason.as_deref(),
            Some("the last successful collection is 100s old (more than 30s)")
        );

        let failed = Snapshot {
            last_error: Some("cannot read cluster metadata".into()),
            ..fresh.clone()
        };
        let h = health(&failed, 105.0, stale, "c", "cluster");
        assert!(!h.healthy);
        assert_eq!(h.reason.as_deref(), Some("the last collection failed (cannot read cluster metadata); serving a snapshot 5s old"));

        let never = health(&Snapshot::default(), 1.0, stale, "c", "cluster");
        assert_eq!(
            never.reason.as_deref(),
            Some("no collection has completed yet")
        );
    }
}
