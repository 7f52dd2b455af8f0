//! Reading the log back for `GET /api/v1/audit`: the newest file first, each file from its end
//! in fixed blocks, line by line, stopping once `limit` records matched. Memory is bounded by the
//! block size, the longest line and `limit` records, whatever the size of the log; a query for
//! the latest records reads only the newest blocks.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{log_files, AuditError, AuditPage, AuditQuery, AuditRecord};

/// `limit` when the query has none.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` a query may ask for.
pub const MAX_LIMIT: usize = 1000;
/// Bytes read from a file at a time.
const BLOCK: usize = 64 * 1024;
/// A "line" longer than this (garbage without newlines) is counted invalid and skipped.
const MAX_LINE: usize = 1 << 20;
/// Attempts to open a consistent set of files while the writer rotates.
const OPEN_ATTEMPTS: usize = 3;

/// One line, from the end of a file towards its start.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RevLine {
    /// A line without its newline. `terminated` is false for the last bytes of a file that does
    /// not end with a newline (a line still being written).
    Text { bytes: Vec<u8>, terminated: bool },
    /// A run of more than [`MAX_LINE`] bytes without a newline, skipped.
    TooLong,
}

/// The lines of `[0, len)` of a file, last first, read backwards in blocks of `block` bytes.
pub(crate) struct ReverseLines<R> {
    inner: R,
    /// Bytes `[0, pos)` are not read yet.
    pos: u64,
    /// Bytes read and not yet returned (they end where the next line to return ends).
    buf: Vec<u8>,
    block: usize,
    max_line: usize,
    /// Dropping an over-long line until its start is found.
    skipping: bool,
    /// Whether the next line returned is the file's last one (it may lack a newline).
    at_end: bool,
    /// Bytes read from `inner` so far.
    pub bytes_read: u64,
}

impl<R: Read + Seek> ReverseLines<R> {
    pub(crate) fn new(inner: R, len: u64, block: usize, max_line: usize) -> Self {
        Self {
            inner,
            pos: len,
            buf: Vec::new(),
            block: block.max(1),
            max_line,
            skipping: false,
            at_end: true,
            bytes_read: 0,
        }
    }

    fn read_block(&mut self) -> std::io::Result<()> {
        let n = self
            .block
            .min(usize::try_from(self.pos).unwrap_or(usize::MAX));
        self.pos -= n as u64;
        self.inner.seek(SeekFrom::Start(self.pos))?;
        let mut block = vec![0; n];
        self.inner.read_exact(&mut block)?;
        self.bytes_read += n as u64;
        if self.at_end && self.buf.is_empty() {
            // The file's last byte: a final newline ends the last line (no empty line after it).
            if block.last() == Some(&b'\n') {
                block.pop();
                self.at_end = false;
            }
        }
        block.extend_from_slice(&self.buf);
        self.buf = block;
        Ok(())
    }

    fn emit(&mut self, bytes: Vec<u8>) -> RevLine {
        let terminated = !std::mem::take(&mut self.at_end);
        if std::mem::take(&mut self.skipping) || bytes.len() > self.max_line {
            RevLine::TooLong
        } else {
            RevLine::Text { bytes, terminated }
        }
    }

    /// The next line towards the start of the file; `None` at its start.
    pub(crate) fn next_line(&mut self) -> std::io::Result<Option<RevLine>> {
        loop {
            if self.pos > 0 && self.buf.is_empty() && self.at_end {
                self.read_block()?;
                continue;
            }
            if let Some(i) = self.buf.iter().rposition(|&b| b == b'\n') {
                let line = self.buf.split_off(i + 1);
                self.buf.pop();
                return Ok(Some(self.emit(line)));
            }
            if self.pos == 0 {
                if self.buf.is_empty() && !self.skipping {
                    return Ok(None);
                }
                let line = std::mem::take(&mut self.buf);
                return Ok(Some(self.emit(line)));
            }
            if self.buf.len() > self.max_line {
                self.skipping = true;
                self.buf.clear();
            }
            self.read_block()?;
        }
    }
}

/// Open the log's files newest first, each with its length at open. If the writer rotated while
/// they were opened, open them again, so the handles hold one consistent set of files.
fn open_newest_first(
    path: &Path,
    max_files: usize,
) -> Result<Vec<(PathBuf, File, u64)>, AuditError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| AuditError::Io { path: p, source }
    };
    let mut opened = Vec::new();
    for _ in 0..OPEN_ATTEMPTS {
        opened.clear();
        for file in log_files(path, max_files).into_iter().rev() {
            let f = match File::open(&file) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&file)(e)),
            };
            let len = f.metadata().map_err(io(&file))?.len();
            opened.push((file, f, len));
        }
        if !rotated_since(path, opened.first())? {
            break;
        }
    }
    Ok(opened)
}

/// Whether `path` is no longer the file first opened (a rotation happened meanwhile).
fn rotated_since(path: &Path, first: Option<&(PathBuf, File, u64)>) -> Result<bool, AuditError> {
    use std::os::unix::fs::MetadataExt;
    let now = match std::fs::metadata(path) {
        Ok(m) => Some((m.dev(), m.ino())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(AuditError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let then = match first {
        Some((p, f, _)) if p == path => {
            let m = f.metadata().map_err(|source| AuditError::Io {
                path: p.clone(),
                source,
            })?;
            Some((m.dev(), m.ino()))
        }
        _ => None,
    };
    Ok(now != then)
}

/// Cheap necessary conditions of the string filters, checked on the raw line before parsing:
/// a record whose `target` is `x` contains `"x"` as serde_json writes it.
struct Prefilter(Vec<String>);

impl Prefilter {
    fn new(q: &AuditQuery) -> Self {
        let mut needles = Vec::new();
        for s in [&q.target, &q.reason, &q.cluster, &q.broker]
            .into_iter()
            .flatten()
        {
            if let Ok(quoted) = serde_json::to_string(s) {
                needles.push(quoted);
            }
        }
        if let Some(a) = q.action {
            needles.push(format!("\"{}\"", a.as_str()));
        }
        if let Some(o) = q.outcome {
            needles.push(format!("\"{}\"", o.as_str()));
        }
        Self(needles)
    }

    fn may_match(&self, line: &str) -> bool {
        self.0.iter().all(|n| line.contains(n.as_str()))
    }
}

/// Read the log newest first and apply the query (blocking; call from `spawn_blocking`).
///
/// Returns at most `limit` (default [`DEFAULT_LIMIT`], clamped to `1..=`[`MAX_LIMIT`]) matching
/// records, oldest first; `truncated` says whether older matching records were left out. The
/// scan stops there, so `invalid_lines` counts the lines that did not parse among those read.
pub fn read_log(path: &Path, max_files: usize, q: &AuditQuery) -> Result<AuditPage, AuditError> {
    read_log_blocks(path, max_files, q, BLOCK, MAX_LINE)
}

pub(crate) fn read_log_blocks(
    path: &Path,
    max_files: usize,
    q: &AuditQuery,
    block: usize,
    max_line: usize,
) -> Result<AuditPage, AuditError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let prefilter = Prefilter::new(q);
    let mut newest_first: Vec<AuditRecord> = Vec::new();
    let mut invalid_lines = 0;
    let mut bytes_read = 0;
    let mut truncated = false;
    'files: for (file, f, len) in open_newest_first(path, max_files)? {
        let mut lines = ReverseLines::new(f, len, block, max_line);
        let before = bytes_read;
        loop {
            let next = lines.next_line();
            bytes_read = before + lines.bytes_read;
            let line = match next {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(source) => return Err(AuditError::Io { path: file, source }),
            };
            let (bytes, terminated) = match line {
                RevLine::TooLong => {
                    invalid_lines += 1;
                    continue;
                }
                RevLine::Text { bytes, terminated } => (bytes, terminated),
            };
            let Ok(text) = std::str::from_utf8(&bytes) else {
                invalid_lines += usize::from(terminated);
                continue;
            };
            if text.trim().is_empty() || !prefilter.may_match(text) {
                continue;
            }
            match serde_json::from_str::<AuditRecord>(text) {
                Ok(r) if q.matches(&r) => {
                    if newest_first.len() == limit {
                        truncated = true;
                        break 'files;
                    }
                    newest_first.push(r);
                }
                Ok(_) => {}
                // An unterminated last line is one being written, not a bad one.
                Err(_) => invalid_lines += usize::from(terminated),
            }
        }
    }
    newest_first.reverse();
    Ok(AuditPage {
        records: newest_first,
        truncated,
        invalid_lines,
        bytes_read,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::audit::{rotated_path, Action, Outcome};
    use crate::decide::Trigger;
    use jiff::Timestamp;
    use std::io::Cursor;

    fn lines_of(text: &[u8], block: usize, max_line: usize) -> Vec<RevLine> {
        let mut r = ReverseLines::new(
            Cursor::new(text.to_vec()),
            text.len() as u64,
            block,
            max_line,
        );
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            out.push(l);
        }
        out
    }

    fn text(s: &str, terminated: bool) -> RevLine {
        RevLine::Text {
            bytes: s.as_bytes().to_vec(),
            terminated,
        }
    }

    #[test]
    fn reverse_lines_across_every_block_size() {
        let body = b"first\n\nthird line\nfourth\n";
        for block in 1..=body.len() + 1 {
            assert_eq!(
                lines_of(body, block, 1000),
                vec![
                    text("fourth", true),
                    text("third line", true),
                    text("", true),
                    text("first", true)
                ],
                "block {block}"
            );
        }
        for block in [1, 3, 64] {
            assert_eq!(
                lines_of(b"a\nb\ntorn", block, 1000),
                vec![text("torn", false), text("b", true), text("a", true)],
                "an unterminated last line is marked, block {block}"
            );
        }
        assert_eq!(lines_of(b"", 4, 1000), vec![]);
        assert_eq!(lines_of(b"\n\n", 4, 1000), vec![text("", true)]);
    }

    #[test]
    fn reverse_lines_skip_an_over_long_line() {
        let mut body = b"ok1\n".to_vec();
        body.extend(std::iter::repeat_n(b'x', 100));
        body.extend_from_slice(b"\nok2\n");
        for block in [1, 7, 16, 200] {
            assert_eq!(
                lines_of(&body, block, 20),
                vec![text("ok2", true), RevLine::TooLong, text("ok1", true)],
                "block {block}"
            );
        }
        // The whole file one long line.
        assert_eq!(lines_of(&[b'y'; 50], 8, 20), vec![RevLine::TooLong]);
    }

    fn rec(i: i64, target: &str, outcome: Outcome) -> AuditRecord {
        AuditRecord {
            seq: i as u64,
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

    fn line(r: &AuditRecord) -> String {
        let mut s = serde_json::to_string(r).unwrap();
        s.push('\n');
        s
    }

    /// `audit.log.2` holds 1..=10, `audit.log.1` 11..=20, `audit.log` 21..=30; every third record
    /// is on target `a/c` and skipped, the others on `a/b` and applied.
    fn three_files(dir: &Path) -> PathBuf {
        let path = dir.join("audit.log");
        for (file, range) in [
            (rotated_path(&path, 2), 1..=10),
            (rotated_path(&path, 1), 11..=20),
            (path.clone(), 21..=30),
        ] {
            let body: String = range
                .map(|i| {
                    if i % 3 == 0 {
                        line(&rec(i, "a/c", Outcome::Skipped))
                    } else {
                        line(&rec(i, "a/b", Outcome::Applied))
                    }
                })
                .collect();
            std::fs::write(file, body).unwrap();
        }
        path
    }

    fn seqs(p: &AuditPage) -> Vec<u64> {
        p.records.iter().map(|r| r.seq).collect()
    }

    fn query(limit: usize) -> AuditQuery {
        AuditQuery {
            limit: Some(limit),
            ..Default::default()
        }
    }

    #[test]
    fn newest_records_oldest_first_across_file_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = three_files(dir.path());
        for block in [16, 100, 4096] {
            let page = read_log_blocks(&path, 5, &query(13), block, MAX_LINE).unwrap();
            assert_eq!(seqs(&page), (18..=30).collect::<Vec<_>>(), "block {block}");
            assert!(page.truncated);
            assert_eq!(page.invalid_lines, 0);
            let page = read_log_blocks(&path, 5, &query(1000), block, MAX_LINE).unwrap();
            assert_eq!(seqs(&page), (1..=30).collect::<Vec<_>>(), "block {block}");
            assert!(!page.truncated, "everything returned");
        }
        // Exactly the matching count: not truncated.
        let page = read_log(&path, 5, &query(30)).unwrap();
        assert_eq!((page.records.len(), page.truncated), (30, false));
        // max_files 1: audit.log.2 is not part of the log.
        let page = read_log(&path, 1, &query(1000)).unwrap();
        assert_eq!(seqs(&page), (11..=30).collect::<Vec<_>>());
        // The limit is clamped to 1..=MAX_LIMIT.
        let page = read_log(&path, 5, &query(0)).unwrap();
        assert_eq!(seqs(&page), vec![30]);
    }

    #[test]
    fn filters_apply_before_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = three_files(dir.path());
        let page = read_log(
            &path,
            5,
            &AuditQuery {
                target: Some("a/c".into()),
                limit: Some(4),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(seqs(&page), vec![21, 24, 27, 30]);
        assert!(page.truncated);
        let page = read_log(
            &path,
            5,
            &AuditQuery {
                outcome: Some(Outcome::Applied),
                since: Some(Timestamp::from_second(1_800_000_008).unwrap()),
                until: Some(Timestamp::from_second(1_800_000_013).unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(seqs(&page), vec![8, 10, 11]);
        assert!(!page.truncated);
        let page = read_log(
            &path,
            5,
            &AuditQuery {
                target: Some("a/none".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((seqs(&page), page.truncated), (vec![], false));
        // A value that appears in another field passes the prefilter but not the filter.
        let page = read_log(
            &path,
            5,
            &AuditQuery {
                reason: Some("a/b".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(page.records.is_empty());
    }

    #[test]
    fn limit_one_reads_only_the_newest_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        // Older files: 4 MB of garbage each, a long line without newlines, and torn JSON.
        let garbage: String = (0..40_000)
            .map(|i| format!("{{\"seq\":{i},\"not an audit record\":\"{:0>70}\"}}\n", i))
            .collect();
        std::fs::write(rotated_path(&path, 2), &garbage).unwrap();
        std::fs::write(
            rotated_path(&path, 1),
            format!("{garbage}{}\n", "z".repeat(3 << 20)),
        )
        .unwrap();
        let mut current = garbage.clone();
        current.push_str(&line(&rec(41, "a/b", Outcome::Applied)));
        current.push_str(&line(&rec(42, "a/b", Outcome::Applied)));
        current.push_str("{\"seq\":43,\"ts\":\"2027-");
        std::fs::write(&path, current).unwrap();

        let page = read_log(&path, 5, &query(1)).unwrap();
        assert_eq!(seqs(&page), vec![42]);
        assert!(page.truncated);
        assert_eq!(
            page.invalid_lines, 0,
            "the line being written is not invalid"
        );
        assert!(
            page.bytes_read <= BLOCK as u64,
            "read {} bytes for the newest record",
            page.bytes_read
        );
        // Asking for more reads everything (to know that nothing older matches), counts the
        // garbage, and stays correct.
        let page = read_log(&path, 5, &query(2)).unwrap();
        assert_eq!(seqs(&page), vec![41, 42]);
        assert!(!page.truncated);
        let total: u64 = [path.clone(), rotated_path(&path, 1), rotated_path(&path, 2)]
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum();
        assert_eq!(
            page.bytes_read, total,
            "every byte of the three files, once"
        );
        assert_eq!(
            page.invalid_lines,
            3 * 40_000 + 1,
            "garbage lines and the long line"
        );
    }

    #[test]
    fn missing_log_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let page = read_log(&dir.path().join("audit.log"), 5, &query(10)).unwrap();
        assert!(page.records.is_empty());
        assert_eq!(page.bytes_read, 0);
    }
}
