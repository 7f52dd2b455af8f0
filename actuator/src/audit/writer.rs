//! The durable writer: one thread, group commit (all records queued while an fsync runs share
//! the next one), size-based rotation, and torn-tail recovery at open.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{log_files, parse_lines, rotated_path, AuditError, AuditRecord};

/// Where and how to keep the log.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// The current log file; rotated files are `path.1` (newest) to `path.N`.
    pub path: PathBuf,
    /// Rotate once the current file reaches this size.
    pub max_bytes: u64,
    /// Rotated files kept; 0 is taken as 1. The file just rotated is always kept, so rotation
    /// never deletes a record it has just answered and `seq` survives a restart.
    pub max_files: usize,
}

/// What was found on disk at open.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every readable record, oldest first (all files).
    pub records: Vec<AuditRecord>,
    /// Bytes of a torn last line that were cut off (0 when the tail was clean).
    pub torn_bytes: u64,
    /// Lines in the middle of a file that did not parse, skipped.
    pub invalid_lines: usize,
}

/// Called after each fsync with its duration and the number of records it made durable.
pub type CommitObserver = Box<dyn Fn(Duration, usize) + Send>;

/// Receives every record once it is durable, in file order, with its exact line (without the
/// newline). Called on the writer thread after the batch's callers were answered, so it must
/// not block: hand the line to a bounded queue and return (see [`super::topic`]).
pub trait CommitSink: Send {
    /// One durable record and its line as written to the file.
    fn committed(&mut self, record: &AuditRecord, line: &[u8]);
}

struct Job {
    records: Vec<AuditRecord>,
    reply: oneshot::Sender<Result<Vec<u64>, AuditError>>,
}

/// A handle to the audit log; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
    options: AuditOptions,
    healthy: Arc<AtomicBool>,
    fsyncs: Arc<AtomicU64>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Cut a torn last line (no trailing newline) off the file; returns the bytes removed.
fn repair_tail(path: &Path) -> Result<u64, AuditError> {
    let mut f = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(path)(e)),
    };
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(io(path))?;
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(0);
    }
    let keep = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    f.set_len(keep as u64).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    Ok((bytes.len() - keep) as u64)
}

impl AuditLog {
    /// Open (or create) the log, repair a torn tail, read back what is there, and start the writer.
    /// `seq` continues from the highest one found in the current or any kept rotated file.
    pub fn open(
        options: AuditOptions,
        observer: Option<CommitObserver>,
    ) -> Result<(Self, Recovered), AuditError> {
        Self::open_with_sink(options, observer, None)
    }

    /// As [`AuditLog::open`], and every durable record is also handed to `sink` (in file
    /// order, after the file write and fsync that the callers wait for).
    pub fn open_with_sink(
        mut options: AuditOptions,
        observer: Option<CommitObserver>,
        sink: Option<Box<dyn CommitSink>>,
    ) -> Result<(Self, Recovered), AuditError> {
        options.max_files = options.max_files.max(1);
        let path = options.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let torn_bytes = repair_tail(&path)?;
        let mut recovered = Recovered {
            torn_bytes,
            ..Default::default()
        };
        for file in log_files(&path, options.max_files) {
            let bytes = match std::fs::read(&file) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&file)(e)),
            };
            let (records, bad) = parse_lines(&String::from_utf8_lossy(&bytes));
            recovered.invalid_lines += bad;
            recovered.records.extend(records);
        }
        let last_seq = recovered.records.iter().map(|r| r.seq).max().unwrap_or(0);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        sync_dir(&path).map_err(io(&path))?;
        let size = file.metadata().map_err(io(&path))?.len();
        let (tx, rx) = mpsc::channel::<Job>();
        let healthy = Arc::new(AtomicBool::new(true));
        let fsyncs = Arc::new(AtomicU64::new(0));
        let mut w = Writer {
            options: options.clone(),
            file,
            size,
            seq: last_seq,
            healthy: healthy.clone(),
            fsyncs: fsyncs.clone(),
            observer,
            sink,
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || w.run(rx))
            .map_err(io(&path))?;
        Ok((
            Self {
                tx,
                options,
                healthy,
                fsyncs,
            },
            recovered,
        ))
    }

    /// Append records and wait until they are fsynced; returns their sequence numbers.
    pub async fn append(&self, records: Vec<AuditRecord>) -> Result<Vec<u64>, AuditError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { records, reply })
            .map_err(|_| AuditError::Stopped)?;
        rx.await.map_err(|_| AuditError::Stopped)?
    }

    /// Where the log lives.
    pub fn options(&self) -> &AuditOptions {
        &self.options
    }

    /// False after a write or fsync failed (cleared by the next successful commit).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// fsyncs done since open.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }
}

struct Writer {
    options: AuditOptions,
    file: File,
    size: u64,
    seq: u64,
    healthy: Arc<AtomicBool>,
    fsyncs: Arc<AtomicU64>,
    observer: Option<CommitObserver>,
    sink: Option<Box<dyn CommitSink>>,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Job>) {
        let mut buf = Vec::with_capacity(64 * 1024);
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            buf.clear();
            let start_seq = self.seq;
            let mut seqs: Vec<Vec<u64>> = Vec::with_capacity(batch.len());
            // Each record's line in `buf` (start, end without the newline), in file order.
            let mut spans: Vec<(usize, usize)> = Vec::new();
            let mut count = 0;
            for job in &mut batch {
                let mut mine = Vec::with_capacity(job.records.len());
                for rec in &mut job.records {
                    self.seq += 1;
                    rec.seq = self.seq;
                    let start = buf.len();
                    // Serialising our own struct cannot fail; fall back to a marker just in case.
                    if serde_json::to_writer(&mut buf, rec).is_err() {
                        buf.truncate(start);
                        buf.extend_from_slice(b"{}");
                    }
                    spans.push((start, buf.len()));
                    buf.push(b'\n');
                    mine.push(self.seq);
                    count += 1;
                }
                seqs.push(mine);
            }
            let started = Instant::now();
            let result = self
                .file
                .write_all(&buf)
                .and_then(|()| self.file.sync_data());
            match result {
                Ok(()) => {
                    self.size += buf.len() as u64;
                    self.fsyncs.fetch_add(1, Ordering::Relaxed);
                    self.healthy.store(true, Ordering::Relaxed);
                    if let Some(obs) = &self.observer {
                        obs(started.elapsed(), count);
                    }
                    // Rotate before answering, so a caller that got its answer sees the files
                    // settled. The records are already durable in the renamed file.
                    if self.size >= self.options.max_bytes {
                        if let Err(e) = self.rotate() {
                            tracing::error!(error = %e, "audit log rotation failed");
                            self.healthy.store(false, Ordering::Relaxed);
                        }
                    }
                    let mut done = Vec::with_capacity(batch.len());
                    for (job, seq) in batch.into_iter().zip(seqs) {
                        let _ = job.reply.send(Ok(seq));
                        done.push(job.records);
                    }
                    // The copies (the Kafka topic) come after the answers: they never hold one.
                    if let Some(sink) = &mut self.sink {
                        for (rec, (start, end)) in done.iter().flatten().zip(&spans) {
                            if let Some(line) = buf.get(*start..*end) {
                                sink.committed(rec, line);
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, path = %self.options.path.display(), "audit write failed");
                    self.healthy.store(false, Ordering::Relaxed);
                    self.seq = start_seq;
                    // Cut whatever part of the batch reached the file, so the next batch starts
                    // on a clean line.
                    let _ = self.file.set_len(self.size);
                    for job in batch {
                        let _ = job.reply.send(Err(AuditError::Io {
                            path: self.options.path.clone(),
                            source: std::io::Error::new(e.kind(), e.to_string()),
                        }));
                    }
                }
            }
        }
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let path = &self.options.path;
        // At least one rotated file: the records just answered move to `path.1`, never away.
        let n = self.options.max_files.max(1);
        let oldest = rotated_path(path, n);
        if oldest.exists() {
            std::fs::remove_file(&oldest)?;
        }
        for i in (1..n).rev() {
            let from = rotated_path(path, i);
            if from.exists() {
                std::fs::rename(&from, rotated_path(path, i + 1))?;
            }
        }
        std::fs::rename(path, rotated_path(path, 1))?;
        self.file = OpenOptions::new().create(true).append(true).open(path)?;
        sync_dir(path)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::audit::{read_log, Action, AuditQuery, Outcome};
    use crate::decide::Trigger;
    use jiff::Timestamp;

    fn rec(i: i64, target: &str, outcome: Outcome) -> AuditRecord {
        AuditRecord {
            target: Some(target.into()),
            message: format!("record {i}"),
            ..AuditRecord::new(
                Timestamp::from_second(1_800_000_000 + i).unwrap(),
                "test",
                Trigger::Webhook,
                outcome,
                Action::ScaleUp,
            )
        }
    }

    fn opts(dir: &Path, max_bytes: u64) -> AuditOptions {
        AuditOptions {
            path: dir.join("audit.log"),
            max_bytes,
            max_files: 3,
        }
    }

    #[tokio::test]
    async fn appends_are_durable_numbered_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let (log, rec0) = AuditLog::open(opts(dir.path(), 1 << 20), None).unwrap();
        assert!(rec0.records.is_empty());
        let seqs = log
            .append(vec![
                rec(1, "a/b", Outcome::Applied),
                rec(2, "a/c", Outcome::Skipped),
            ])
            .await
            .unwrap();
        assert_eq!(seqs, vec![1, 2]);
        assert_eq!(
            log.append(vec![rec(3, "a/b", Outcome::Failed)])
                .await
                .unwrap(),
            vec![3]
        );
        let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.ends_with('\n'));
        let page = read_log(
            &dir.path().join("audit.log"),
            3,
            &AuditQuery {
                target: Some("a/b".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let msgs: Vec<_> = page.records.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(msgs, vec!["record 1", "record 3"]);
        let page = read_log(
            &dir.path().join("audit.log"),
            3,
            &AuditQuery {
                outcome: Some(Outcome::Skipped),
                since: Some(Timestamp::from_second(1_800_000_002).unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.records[0].seq, 2);
        let page = read_log(
            &dir.path().join("audit.log"),
            3,
            &AuditQuery {
                until: Some(Timestamp::from_second(1_800_000_002).unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(page.records.len(), 1, "until is exclusive");
        assert!(log.fsyncs() >= 2);
    }

    #[tokio::test]
    async fn torn_tail_is_cut_and_sequence_continues() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = AuditLog::open(opts(dir.path(), 1 << 20), None).unwrap();
            log.append(vec![rec(1, "a/b", Outcome::Applied)])
                .await
                .unwrap();
            log.append(vec![rec(2, "a/b", Outcome::Applied)])
                .await
                .unwrap();
        }
        let path = dir.path().join("audit.log");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":3,"ts":"2027-01-15T08:00:00Z","inst"#)
            .unwrap();
        drop(f);
        let (log, found) = AuditLog::open(opts(dir.path(), 1 << 20), None).unwrap();
        assert_eq!(found.torn_bytes, 42);
        assert_eq!(found.records.len(), 2);
        assert_eq!(found.invalid_lines, 0);
        assert_eq!(
            log.append(vec![rec(3, "a/b", Outcome::Applied)])
                .await
                .unwrap(),
            vec![3]
        );
        let (records, bad) = parse_lines(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(bad, 0);
        assert_eq!(
            records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }

    #[tokio::test]
    async fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = AuditLog::open(opts(dir.path(), 600), None).unwrap();
        for i in 0..40 {
            log.append(vec![rec(i, "a/b", Outcome::Applied)])
                .await
                .unwrap();
        }
        let path = dir.path().join("audit.log");
        assert!(rotated_path(&path, 1).exists());
        assert!(rotated_path(&path, 3).exists());
        assert!(!rotated_path(&path, 4).exists(), "only max_files kept");
        for i in 1..=3 {
            let len = std::fs::metadata(rotated_path(&path, i)).unwrap().len();
            assert!((600..900).contains(&len), "rotated file {i} is {len} bytes");
        }
        let page = read_log(
            &path,
            3,
            &AuditQuery {
                limit: Some(10_000),
                ..Default::default()
            },
        )
        .unwrap();
        let seqs: Vec<u64> = page.records.iter().map(|r| r.seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "ordered, no gaps: {seqs:?}"
        );
        assert_eq!(*seqs.last().unwrap(), 40);
        // Reopening continues the sequence from the rotated files too.
        drop(log);
        let (log, _) = AuditLog::open(opts(dir.path(), 600), None).unwrap();
        assert_eq!(
            log.append(vec![rec(99, "a/b", Outcome::Applied)])
                .await
                .unwrap(),
            vec![41]
        );
    }

    /// Every seq found in the current file and `path.1 ..= path.n`.
    fn seqs_on_disk(path: &Path, n: usize) -> Vec<u64> {
        let mut seqs: Vec<u64> = (1..=n)
            .map(|i| rotated_path(path, i))
            .chain([path.to_path_buf()])
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|t| parse_lines(&t).0)
            .map(|r| r.seq)
            .collect();
        seqs.sort_unstable();
        seqs
    }

    #[tokio::test]
    async fn max_files_zero_keeps_answered_records_and_seq_continues_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let zero = AuditOptions {
            max_files: 0,
            ..opts(dir.path(), 600)
        };
        let (log, _) = AuditLog::open(zero.clone(), None).unwrap();
        assert_eq!(log.options().max_files, 1, "0 is taken as 1");
        for i in 1..=10u64 {
            let seq = log
                .append(vec![rec(i as i64, "a/b", Outcome::Applied)])
                .await
                .unwrap();
            assert_eq!(seq, vec![i]);
            let on_disk = seqs_on_disk(&path, 1);
            assert!(
                on_disk.contains(&i),
                "answered record {i} is not on disk after rotation: {on_disk:?}"
            );
        }
        assert!(rotated_path(&path, 1).exists(), "600 bytes rotated");
        drop(log);
        let (log, found) = AuditLog::open(zero, None).unwrap();
        assert_eq!(
            found.records.iter().map(|r| r.seq).max(),
            Some(10),
            "the newest record survives a rotation and a restart"
        );
        assert_eq!(
            log.append(vec![rec(11, "a/b", Outcome::Applied)])
                .await
                .unwrap(),
            vec![11],
            "seq continues after a restart instead of starting again at 1"
        );
    }

    #[tokio::test]
    async fn smallest_allowed_settings_keep_ten_records_and_seq_after_rotation() {
        use crate::config::{AUDIT_MIN_MAX_BYTES, AUDIT_MIN_MAX_FILES};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let smallest = AuditOptions {
            path: path.clone(),
            max_bytes: AUDIT_MIN_MAX_BYTES,
            max_files: AUDIT_MIN_MAX_FILES,
        };
        // Records far larger than real ones (7 KB each), so ten of them force a rotation.
        let big = |i: i64| AuditRecord {
            message: format!("record {i} {}", "x".repeat(7000)),
            ..rec(i, "a/b", Outcome::Applied)
        };
        let (log, _) = AuditLog::open(smallest.clone(), None).unwrap();
        for i in 1..=10 {
            log.append(vec![big(i)]).await.unwrap();
        }
        assert!(rotated_path(&path, 1).exists(), "ten records rotated once");
        drop(log);
        let (log, found) = AuditLog::open(smallest, None).unwrap();
        assert_eq!(
            found.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<u64>>(),
            "all ten answered records are readable"
        );
        assert!(found.records[9].message.starts_with("record 10 "));
        assert_eq!(
            log.append(vec![rec(11, "a/b", Outcome::Applied)])
                .await
                .unwrap(),
            vec![11]
        );
    }

    /// What a sink was handed: seq, target, line.
    type Kept = Arc<std::sync::Mutex<Vec<(u64, String, Vec<u8>)>>>;

    /// A sink that keeps what it was handed.
    struct Keep(Kept);

    impl CommitSink for Keep {
        fn committed(&mut self, record: &AuditRecord, line: &[u8]) {
            self.0.lock().unwrap().push((
                record.seq,
                record.target.clone().unwrap_or_default(),
                line.to_vec(),
            ));
        }
    }

    #[tokio::test]
    async fn the_sink_gets_every_durable_line_byte_equal_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let kept: Kept = Kept::default();
        let (log, _) = AuditLog::open_with_sink(
            opts(dir.path(), 1 << 30),
            None,
            Some(Box::new(Keep(kept.clone()))),
        )
        .unwrap();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let log = log.clone();
            let target = if i % 2 == 0 { "a/b" } else { "a/c" };
            tasks.push(tokio::spawn(async move {
                log.append(vec![
                    rec(i, target, Outcome::Applied),
                    rec(i, "x/y", Outcome::Skipped),
                ])
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        let lines: Vec<&[u8]> = text.lines().map(str::as_bytes).collect();
        // The writer hands a batch to the sink after it has answered the batch's callers, so
        // the last batch may still be on its way to the sink here.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while kept.lock().unwrap().len() < 100 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let kept = kept.lock().unwrap().clone();
        assert_eq!(kept.len(), 100);
        assert_eq!(
            kept.iter()
                .map(|(_, _, l)| l.as_slice())
                .collect::<Vec<_>>(),
            lines,
            "the same bytes, in file order, without the newline"
        );
        assert_eq!(
            kept.iter().map(|(s, _, _)| *s).collect::<Vec<_>>(),
            (1..=100).collect::<Vec<u64>>(),
            "records carry their seq"
        );
        for (seq, target, line) in &kept {
            let r: AuditRecord = serde_json::from_slice(line).unwrap();
            assert_eq!((r.seq, r.target.unwrap()), (*seq, target.clone()));
        }
    }

    #[tokio::test]
    async fn concurrent_appends_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = AuditLog::open(opts(dir.path(), 1 << 30), None).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                log.append(vec![rec(i, "a/b", Outcome::Applied)])
                    .await
                    .unwrap()
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (1..=200).collect::<Vec<u64>>());
        assert!(log.fsyncs() <= 200);
        let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        assert_eq!(text.lines().count(), 200);
    }
}
