//! A replica's logs, bounded on disk and in the daemon's memory whatever the workload writes.
//! The workload appends to its own file (`O_APPEND`, so it outlives the daemon); the supervisor
//! rotates it past [`LOG_MAX_BYTES`], keeping the last [`LOG_KEPT_BYTES`]. Readers cut lines at
//! [`MAX_LOG_LINE`], read [`LOG_READ_CHUNK`] at a time and read `tail` backwards, at most
//! [`TAIL_MAX_BYTES`]. Must not know processes, cgroups or namespaces.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;

use crate::LogLines;
use pazar_api::provider::{LogLine, LogStream};
use pazar_files::write_atomic;

/// A replica's live log is rotated past this size, checked at every supervisor round. The
/// workload writes its log itself (its stdout is the file, so it outlives the daemon), so
/// between two rounds it can write past the bound: the worst overshoot is what it writes in
/// one round, its write speed times [`SUPERVISE_EVERY`](super::supervise::SUPERVISE_EVERY) plus the round's own time (at a page
/// cache speed of 2 GB/s, about 600 MB; a workload with a fraction of a CPU writes that
/// fraction of it). The cgroup's CPU bound is thus also the bound on that overshoot.
const LOG_MAX_BYTES: u64 = 16 << 20;
/// What rotation keeps of a live log, in `.log.1`: so a replica's logs take at most
/// `LOG_MAX_BYTES + LOG_KEPT_BYTES` on disk, plus the overshoot above.
const LOG_KEPT_BYTES: u64 = 4 << 20;
const _: () = assert!(LOG_KEPT_BYTES <= LOG_MAX_BYTES);
/// Longest log line a reader emits: a longer one comes in pieces of this size.
pub const MAX_LOG_LINE: usize = 16 << 10;
/// Most bytes one read of a followed log takes from the file.
const LOG_READ_CHUNK: usize = 64 << 10;
/// Most bytes of a log read back for `tail` lines.
const TAIL_MAX_BYTES: u64 = 1 << 20;
const _: () = assert!(MAX_LOG_LINE <= LOG_READ_CHUNK && LOG_READ_CHUNK as u64 <= TAIL_MAX_BYTES);

/// Rotates a log past [`LOG_MAX_BYTES`]: its last [`LOG_KEPT_BYTES`] become `.log.1` (the one
/// old file kept, replaced whole by a rename) and the live file is emptied. The workload holds
/// the live file open with `O_APPEND`, so it writes on at the new end without noticing;
/// nothing is copied but the kept part, so rotating costs the same however large the workload
/// made the file. What the workload writes between the copy and the truncation is lost, as
/// when a log driver drops lines.
pub(super) fn rotate_log(log: &Path) {
    let Ok(mut f) = File::options().read(true).write(true).open(log) else {
        return;
    };
    let len = f.metadata().map_or(0, |m| m.len());
    if len <= LOG_MAX_BYTES {
        return;
    }
    let start = len - LOG_KEPT_BYTES;
    let old = log.with_extension("log.1");
    let mut kept = Vec::with_capacity(LOG_KEPT_BYTES as usize);
    let read = f
        .seek(SeekFrom::Start(start))
        .and_then(|_| (&mut f).take(LOG_KEPT_BYTES).read_to_end(&mut kept));
    // The live file is emptied even when the old one cannot be written: the bound on the disk
    // matters more than the old lines.
    if read.is_ok() {
        let _ = write_atomic(&old, &kept, 0o600);
    }
    let _ = f.set_len(0);
}

/// Cuts a replica's output into lines of at most [`MAX_LOG_LINE`] bytes: a longer line is
/// emitted in pieces (as Docker does), so a reader never holds more than one piece of a line
/// however long the workload makes it. A piece is cut before a UTF-8 character that it would
/// split; bytes that are not UTF-8 are shown as U+FFFD.
#[derive(Debug, Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

/// How many bytes at the end of `b` begin a UTF-8 character that is not complete there.
fn incomplete_utf8_tail(b: &[u8]) -> usize {
    for back in 1..=b.len().min(3) {
        let c = b[b.len() - back];
        if c & 0xC0 == 0x80 {
            continue; // A continuation byte: the lead byte is further back.
        }
        let need = match c {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if need > back { back } else { 0 };
    }
    0
}

impl LineSplitter {
    /// Feeds `buf`; complete lines and full pieces go to `out`.
    fn push(&mut self, mut buf: &[u8], out: &mut Vec<String>) {
        while let Some(i) = buf.iter().position(|c| *c == b'\n') {
            self.take(&buf[..i], true, out);
            buf = &buf[i + 1..];
        }
        self.take(buf, false, out);
        debug_assert!(self.partial.len() < MAX_LOG_LINE);
    }

    /// What is left of an unfinished line, as a last line.
    fn finish(&mut self, out: &mut Vec<String>) {
        if !self.partial.is_empty() {
            self.take(&[], true, out);
        }
    }

    fn take(&mut self, mut piece: &[u8], end: bool, out: &mut Vec<String>) {
        loop {
            let room = MAX_LOG_LINE - self.partial.len();
            if piece.len() < room || (end && piece.len() == room) {
                self.partial.extend_from_slice(piece);
                break;
            }
            self.partial.extend_from_slice(&piece[..room]);
            piece = &piece[room..];
            let carry = self.partial.len() - incomplete_utf8_tail(&self.partial);
            let carry = self.partial.split_off(carry);
            out.push(String::from_utf8_lossy(&self.partial).into_owned());
            self.partial = carry;
        }
        if end {
            let line = std::mem::take(&mut self.partial);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            out.push(String::from_utf8_lossy(line).into_owned());
        }
    }
}

/// Where the last `tail` lines of the file begin, reading it backwards from `len` and at most
/// [`TAIL_MAX_BYTES`] of it (a file of one endless line is not read whole for one line).
fn tail_start(f: &mut File, len: u64, tail: usize) -> std::io::Result<u64> {
    if tail == 0 {
        return Ok(len);
    }
    let floor = len.saturating_sub(TAIL_MAX_BYTES);
    let mut end = len;
    let mut seen = 0;
    let mut buf = vec![0u8; LOG_READ_CHUNK];
    while end > floor {
        let start = end.saturating_sub(LOG_READ_CHUNK as u64).max(floor);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        for (i, c) in chunk.iter().enumerate().rev() {
            let at = start + i as u64;
            // The newline that ends the last line starts no line.
            if *c == b'\n' && at + 1 < len {
                seen += 1;
                if seen == tail {
                    return Ok(at + 1);
                }
            }
        }
        end = start;
    }
    Ok(floor)
}

/// The last `tail` lines of the log at `path` (fewer when they are more than
/// [`TAIL_MAX_BYTES`]), and the length they were read up to.
fn read_tail(path: &Path, tail: usize) -> (Vec<String>, u64) {
    let Ok(mut f) = File::open(path) else {
        return (Vec::new(), 0);
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let Ok(start) = tail_start(&mut f, len, tail) else {
        return (Vec::new(), len);
    };
    let mut bytes = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.take(len - start).read_to_end(&mut bytes).is_err() {
        return (Vec::new(), len);
    }
    let mut text: &[u8] = &bytes;
    // Started mid-line at the byte bound: what comes before the first newline is the end of a
    // longer line, shown as its last pieces, from the first whole UTF-8 character.
    while start > 0 && text.first().is_some_and(|c| c & 0xC0 == 0x80) {
        text = &text[1..];
    }
    let mut lines = Vec::new();
    let mut split = LineSplitter::default();
    split.push(text, &mut lines);
    split.finish(&mut lines);
    let skip = lines.len().saturating_sub(tail);
    lines.drain(..skip);
    (lines, len)
}

/// Reads what was appended to the log at `path` since `pos`, at most [`LOG_READ_CHUNK`] bytes,
/// into `split`; a log shorter than `pos` was rotated and is read from its start. Returns the
/// lines completed and whether the reader caught up with the file; `None` when the file is
/// gone.
fn read_more(path: &Path, pos: &mut u64, split: &mut LineSplitter) -> Option<(Vec<String>, bool)> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    if len < *pos {
        *pos = 0;
    }
    let mut lines = Vec::new();
    if len > *pos {
        let mut buf = Vec::with_capacity(LOG_READ_CHUNK);
        f.seek(SeekFrom::Start(*pos)).ok()?;
        f.take((len - *pos).min(LOG_READ_CHUNK as u64))
            .read_to_end(&mut buf)
            .ok()?;
        *pos += buf.len() as u64;
        split.push(&buf, &mut lines);
    }
    Some((lines, *pos >= len))
}

/// The last `tail` lines of a replica's log (of its rotated log too when the live one holds
/// fewer), then (with `follow`) lines as they are written. What one stream holds is bounded
/// whatever the workload writes: at most twice [`TAIL_MAX_BYTES`] for the tail, then one read of [`LOG_READ_CHUNK`] bytes and one unfinished line of less
/// than [`MAX_LOG_LINE`] at a time.
pub(super) fn log_stream(path: PathBuf, service: String, replica: u32, tail: usize, follow: bool) -> LogLines {
    let (mut first, pos) = read_tail(&path, tail);
    // A log just rotated holds few lines: the rest come from the end of the old one.
    if first.len() < tail {
        let (mut older, _) = read_tail(&path.with_extension("log.1"), tail - first.len());
        older.append(&mut first);
        first = older;
    }
    let line = {
        let service = service.clone();
        move |l: String| {
            Ok(LogLine {
                service: service.clone(),
                replica,
                stream: LogStream::Output,
                line: l,
            })
        }
    };
    let initial = futures_util::stream::iter(first.into_iter().map(line.clone()));
    if !follow {
        return initial.boxed();
    }
    let rest = futures_util::stream::unfold(
        (path, pos, LineSplitter::default()),
        move |(path, mut pos, mut split)| {
            let line = line.clone();
            async move {
                loop {
                    let (lines, caught_up) = read_more(&path, &mut pos, &mut split)?;
                    if !lines.is_empty() {
                        let lines: Vec<_> = lines.into_iter().map(&line).collect();
                        return Some((futures_util::stream::iter(lines), (path, pos, split)));
                    }
                    if !caught_up {
                        // A piece of a long line was read and kept: read on, yielding first.
                        tokio::task::yield_now().await;
                        continue;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        },
    )
    .flatten();
    initial.chain(rest).boxed()
}

#[cfg(test)]
mod tests {
    use super::{read_tail, LineSplitter, MAX_LOG_LINE, TAIL_MAX_BYTES};

    fn split(chunks: &[&[u8]]) -> (Vec<String>, usize) {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        let held = s.partial.len();
        s.finish(&mut out);
        (out, held)
    }

    #[test]
    fn a_line_longer_than_the_bound_comes_in_pieces_and_nothing_more_is_held() {
        let long = vec![b'x'; 3 * MAX_LOG_LINE + 5];
        let (lines, held) = split(&[b"a\r\nb", &long, b"\nc\n", &long]);
        assert!(held < MAX_LOG_LINE, "held {held}");
        let lens: Vec<usize> = lines.iter().map(String::len).collect();
        assert_eq!(
            lens,
            [
                1,
                MAX_LOG_LINE,
                MAX_LOG_LINE,
                MAX_LOG_LINE,
                6,
                1,
                MAX_LOG_LINE,
                MAX_LOG_LINE,
                MAX_LOG_LINE,
                5
            ]
        );
        assert_eq!(lines[0], "a");
        assert!(lines[1].starts_with('b'));
        // The bytes come out in order, none lost, however the input is chunked.
        let one_by_one: Vec<&[u8]> = b"hello\nworld".iter().map(std::slice::from_ref).collect();
        assert_eq!(split(&one_by_one).0, ["hello", "world"]);
    }

    #[test]
    fn a_piece_is_never_cut_inside_a_utf8_character() {
        let mut text = vec![b'a'; MAX_LOG_LINE - 1];
        text.extend("é€".as_bytes());
        text.push(b'\n');
        let (lines, _) = split(&[&text]);
        assert_eq!(
            lines.len(),
            2,
            "{:?}",
            lines.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(lines[0].len(), MAX_LOG_LINE - 1);
        assert_eq!(lines[1], "é€");
    }

    #[test]
    fn tail_reads_only_the_end_of_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        let mut text: Vec<u8> = (0..100).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        std::fs::write(&path, &text).expect("write");
        let (lines, pos) = read_tail(&path, 3);
        assert_eq!(lines, ["line 97", "line 98", "line 99"]);
        assert_eq!(pos, text.len() as u64);
        assert!(read_tail(&path, 0).0.is_empty());
        assert_eq!(read_tail(&path, 1000).0.len(), 100);
        // One endless line: at most the byte bound is read, and it comes back in pieces.
        text.extend(std::iter::repeat_n(b'z', 3 * TAIL_MAX_BYTES as usize));
        std::fs::write(&path, &text).expect("write");
        let (lines, _) = read_tail(&path, 1_000_000);
        let bytes: usize = lines.iter().map(String::len).sum();
        assert!(bytes <= TAIL_MAX_BYTES as usize, "{bytes}");
        assert!(lines
            .iter()
            .all(|l| l.len() <= MAX_LOG_LINE && l.bytes().all(|c| c == b'z')));
        assert_eq!(read_tail(&path, 2).0.len(), 2);
        // The same line ended: its last pieces are the last lines.
        text.extend(b"end\n");
        std::fs::write(&path, &text).expect("write");
        let (lines, _) = read_tail(&path, 2);
        assert_eq!(lines.len(), 2);
        assert!(lines[1].ends_with("zend"), "{}", &lines[1][lines[1].len() - 8..]);
    }
}
