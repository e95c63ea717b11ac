//! The segmented append-only log of one partition.
//!
//! # On-disk layout
//! `<partition dir>/log/<first position, 20 digits>.log`, for example `00000000000000000001.log`.
//! A segment holds consecutive records; the next segment starts at the position after the last
//! record of the previous one. Only the last segment (the active one) is ever appended to; the
//! others are sealed and immutable, which lets a backup upload them while the partition goes on.
//!
//! # Record frame
//! `| payload_len: u32 LE | crc32c: u32 LE | position: u64 LE | payload |`, where the CRC32C covers
//! the 8 position bytes followed by the payload. Positions start at 1 and grow by exactly 1.
//!
//! # Durability
//! `append` only buffers; `flush` writes the buffer and calls `fdatasync`. The partition
//! acknowledges nothing before `flush` returned (group commit: one fsync per batch). On open, a torn
//! tail of the last segment (a partial or checksum-failing frame, what a crash mid-write leaves) is
//! truncated; a bad frame in a sealed segment is corruption and refuses to open.
//!
//! A tail is torn only when no valid frame follows the bad one: a crash mid-write leaves a
//! partial frame, zeros (unwritten pages, preallocation) or garbage up to the end of the file,
//! never a complete, checksummed frame of a later position. A bad frame followed by a valid one is
//! corruption of records that may have been acknowledged: open refuses, naming the segment and
//! the offset, instead of truncating them away (see `find_valid_frame_after`).

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{io_err, BrokerError, Result};

pub const FRAME_HEADER_BYTES: u64 = 16;
/// Upper bound of one record's payload: a guard against reading garbage lengths as allocations.
pub const RECORD_PAYLOAD_BYTES_MAX: u32 = 4 * 1024 * 1024;
const SEGMENT_SUFFIX: &str = ".log";

/// Name of the segment file whose first record has `first_position`.
pub fn segment_file_name(first_position: u64) -> String {
    format!("{first_position:020}{SEGMENT_SUFFIX}")
}

/// Parses a segment file name back into its first position.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub first_position: u64,
    /// `None` while the segment holds no record.
    pub last_position: Option<u64>,
    pub path: PathBuf,
    pub len_bytes: u64,
}

/// Where a record landed: used to cut a backup right after a checkpoint record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub position: u64,
    pub segment_first_position: u64,
    /// Byte offset in the segment right after this record.
    pub end_offset: u64,
}

/// A prefix of one segment file, as a backup uploads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSlice {
    pub name: String,
    pub path: PathBuf,
    pub len_bytes: u64,
}

pub struct Log {
    dir: PathBuf,
    segment_bytes_max: u64,
    /// Sorted by first position; never empty; the last one is the active segment.
    segments: Vec<SegmentInfo>,
    active: File,
    /// Frames appended but not yet written and synced.
    pending: Vec<u8>,
    next_position: u64,
}

/// Result of scanning one segment file.
struct Scan {
    last_position: Option<u64>,
    valid_len: u64,
    /// Why the scan stopped before the end of the file, if it did.
    invalid_tail: Option<String>,
}

fn encode_frame(position: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("payload length checked by caller");
    let mut crc = crc32c::crc32c(&position.to_le_bytes());
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Where a record's frame starts: its segment file and the byte offset in it.
#[derive(Debug, Clone, Copy)]
pub struct FrameAt<'a> {
    pub path: &'a Path,
    pub offset: u64,
}

/// Reads frames from `reader`, calling `visit(position, payload, end_offset)` for each valid one.
/// Stops at the end of the file or at the first invalid frame (reported in `invalid_tail`).
fn scan_frames(
    path: &Path,
    expected_first_position: u64,
    mut visit: impl FnMut(u64, &[u8], u64) -> Result<()>,
) -> Result<Scan> {
    let file = File::open(path).map_err(io_err(path, "open segment"))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut offset = 0u64;
    let mut expected = expected_first_position;
    let mut last_position = None;
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; FRAME_HEADER_BYTES as usize];
        match read_full(&mut reader, &mut header).map_err(io_err(path, "read segment"))? {
            0 => break,
            n if n < header.len() => {
                return Ok(Scan {
                    last_position,
                    valid_len: offset,
                    invalid_tail: Some(format!("partial frame header of {n} bytes")),
                })
            }
            _ => {}
        }
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let position = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        if len > RECORD_PAYLOAD_BYTES_MAX {
            return Ok(Scan {
                last_position,
                valid_len: offset,
                invalid_tail: Some(format!("frame length {len} exceeds the maximum")),
            });
        }
        payload.resize(len as usize, 0);
        let read = read_full(&mut reader, &mut payload).map_err(io_err(path, "read segment"))?;
        if read < payload.len() {
            return Ok(Scan {
                last_position,
                valid_len: offset,
                invalid_tail: Some(format!("partial payload: {read} of {len} bytes")),
            });
        }
        let actual = crc32c::crc32c_append(crc32c::crc32c(&position.to_le_bytes()), &payload);
        if actual != crc {
            return Ok(Scan {
                last_position,
                valid_len: offset,
                invalid_tail: Some(format!(
                    "checksum mismatch at position {position}: stored {crc:08x}, computed {actual:08x}"
                )),
            });
        }
        if position != expected {
            return Err(BrokerError::CorruptLog {
                path: path.to_path_buf(),
                offset,
                reason: format!("expected position {expected}, found {position}"),
            });
        }
        offset += FRAME_HEADER_BYTES + u64::from(len);
        visit(position, &payload, offset)?;
        last_position = Some(position);
        expected += 1;
    }
    Ok(Scan {
        last_position,
        valid_len: offset,
        invalid_tail: None,
    })
}

/// Bytes read at a time by [`find_valid_frame_after`].
const RESYNC_WINDOW_BYTES: usize = 1024 * 1024;

/// After a bad frame at `bad_offset` (where position `expected_position` should start), looks
/// for a valid frame later in the file: a header whose length fits in the file, whose position is
/// `expected_position` or later, and whose CRC32C checks out. Returns its `(offset, position)`.
///
/// The frame length of the bad frame cannot be trusted, so every byte offset after it is a
/// candidate. The scan reads the rest of the file once, in windows of [`RESYNC_WINDOW_BYTES`],
/// and rejects almost every offset on its header alone: frames are at least
/// [`FRAME_HEADER_BYTES`] long, so a genuine frame `k` frames after the bad one starts at least
/// `16 * k` bytes after it and has position `expected_position + k` at most. Its 8 position bytes
/// must fall in that narrow window, which zeros (position 0), JSON payload bytes (ASCII, huge
/// numbers) and random garbage practically never do; only offsets that pass read a payload and
/// compute its CRC. So the cost is one sequential read of the bytes after the bad frame
/// (bounded by the file size, linear, not quadratic), and it runs only when open finds a bad
/// frame in the active segment, that is after a crash or corruption.
fn find_valid_frame_after(
    path: &Path,
    bad_offset: u64,
    expected_position: u64,
) -> Result<Option<(u64, u64)>> {
    let mut file = File::open(path).map_err(io_err(path, "open segment"))?;
    let file_len = file.metadata().map_err(io_err(path, "stat segment"))?.len();
    let mut window = vec![0u8; RESYNC_WINDOW_BYTES];
    let mut payload = Vec::new();
    let mut base = bad_offset + 1;
    while base + FRAME_HEADER_BYTES <= file_len {
        let filled = read_at(&mut file, base, &mut window).map_err(io_err(path, "read segment"))?;
        if (filled as u64) < FRAME_HEADER_BYTES {
            break;
        }
        let last_start = filled - FRAME_HEADER_BYTES as usize;
        for start in 0..=last_start {
            let offset = base + start as u64;
            let header = &window[start..start + FRAME_HEADER_BYTES as usize];
            let position = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
            let frames_between = (offset - bad_offset) / FRAME_HEADER_BYTES;
            if position < expected_position || position - expected_position > frames_between {
                continue;
            }
            let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
            let end = offset + FRAME_HEADER_BYTES + u64::from(len);
            if len > RECORD_PAYLOAD_BYTES_MAX || end > file_len {
                continue;
            }
            let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
            let payload_start = start + FRAME_HEADER_BYTES as usize;
            let bytes = if payload_start + len as usize <= filled {
                &window[payload_start..payload_start + len as usize]
            } else {
                payload.resize(len as usize, 0);
                let read = read_at(&mut file, offset + FRAME_HEADER_BYTES, &mut payload)
                    .map_err(io_err(path, "read segment"))?;
                if read < payload.len() {
                    continue;
                }
                &payload[..]
            };
            if crc32c::crc32c_append(crc32c::crc32c(&position.to_le_bytes()), bytes) == crc {
                return Ok(Some((offset, position)));
            }
        }
        base += last_start as u64 + 1;
    }
    Ok(None)
}

/// Reads into `buf` from `offset`; returns how many bytes were read (fewer at the end of the file).
fn read_at(file: &mut File, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    file.seek(SeekFrom::Start(offset))?;
    read_full(file, buf)
}

/// Like `read_exact`, but returns how many bytes were read when the file ends early.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync directory"))
}

/// Lists the segment files of `dir`, sorted by first position. Other files are an error: the log
/// directory belongs to the log alone.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir, "list log directory"))? {
        let entry = entry.map_err(io_err(dir, "list log directory"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let first = parse_segment_file_name(&name)
            .ok_or_else(|| BrokerError::UnexpectedLogFile { path: entry.path() })?;
        segments.push((first, entry.path()));
    }
    segments.sort();
    Ok(segments)
}

/// What [`scan_all`] does with an invalid tail of the last segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TornTail {
    /// Cut it off (opening the log for writing: a crash in the middle of a write).
    Truncate,
    /// Refuse it like any other bad frame (reading a log that must be whole).
    Refuse,
}

/// Scans every segment of `dir` strictly, with `torn_tail` deciding about an invalid tail of
/// the last segment. Calls `visit` for every valid record.
fn scan_all(
    dir: &Path,
    torn_tail: TornTail,
    mut visit: impl FnMut(u64, &[u8], u64, &SegmentInfo) -> Result<()>,
) -> Result<Vec<SegmentInfo>> {
    let files = list_segments(dir)?;
    let mut infos: Vec<SegmentInfo> = Vec::with_capacity(files.len());
    let count = files.len();
    for (index, (first_position, path)) in files.into_iter().enumerate() {
        if let Some(previous) = infos.last() {
            let expected = previous
                .last_position
                .map_or(previous.first_position, |p| p + 1);
            if first_position != expected {
                return Err(BrokerError::LogSegmentsDisjoint {
                    path,
                    first_position,
                    expected_position: expected,
                });
            }
        }
        let mut info = SegmentInfo {
            first_position,
            last_position: None,
            path: path.clone(),
            len_bytes: 0,
        };
        let scan = scan_frames(&path, first_position, |position, payload, end| {
            visit(position, payload, end, &info)
        })?;
        info.last_position = scan.last_position;
        info.len_bytes = scan.valid_len;
        if let Some(reason) = scan.invalid_tail {
            let is_last = index + 1 == count;
            if !(is_last && torn_tail == TornTail::Truncate) {
                return Err(BrokerError::CorruptLog {
                    path,
                    offset: scan.valid_len,
                    reason,
                });
            }
            let expected = scan.last_position.map_or(first_position, |p| p + 1);
            if let Some((offset, position)) =
                find_valid_frame_after(&path, scan.valid_len, expected)?
            {
                return Err(BrokerError::CorruptLog {
                    path,
                    offset: scan.valid_len,
                    reason: format!(
                        "bad frame where position {expected} should start ({reason}), but a valid frame of position {position} follows at offset {offset}: this is not a torn tail, the records after the bad frame may have been acknowledged, so the log is not truncated"
                    ),
                });
            }
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err(&path, "open segment for truncation"))?;
            let before = file
                .metadata()
                .map_err(io_err(&path, "stat segment"))?
                .len();
            file.set_len(scan.valid_len)
                .and_then(|()| file.sync_all())
                .map_err(io_err(&path, "truncate torn tail"))?;
            tracing::warn!(
                path = %path.display(),
                offset = scan.valid_len,
                dropped_bytes = before - scan.valid_len,
                %reason,
                "truncated torn tail of the log"
            );
        }
        infos.push(info);
    }
    Ok(infos)
}

impl Log {
    /// Opens (or creates) the log in `dir`, truncating a torn tail.
    pub fn open(dir: &Path, segment_bytes_max: u64) -> Result<Log> {
        fs::create_dir_all(dir).map_err(io_err(dir, "create log directory"))?;
        let mut segments = scan_all(dir, TornTail::Truncate, |_, _, _, _| Ok(()))?;
        if segments.is_empty() {
            let path = dir.join(segment_file_name(1));
            File::create(&path).map_err(io_err(&path, "create segment"))?;
            sync_dir(dir)?;
            segments.push(SegmentInfo {
                first_position: 1,
                last_position: None,
                path,
                len_bytes: 0,
            });
        }
        let last = segments.last().expect("at least one segment");
        let next_position = last.last_position.map_or(last.first_position, |p| p + 1);
        let active = OpenOptions::new()
            .append(true)
            .open(&last.path)
            .map_err(io_err(&last.path, "open active segment"))?;
        Ok(Log {
            dir: dir.to_path_buf(),
            segment_bytes_max,
            segments,
            active,
            pending: Vec::new(),
            next_position,
        })
    }

    pub fn next_position(&self) -> u64 {
        self.next_position
    }

    /// Position of the first record still on disk.
    pub fn first_position(&self) -> u64 {
        self.segments[0].first_position
    }

    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    /// Buffers one record; it is durable only after [`Log::flush`].
    pub fn append(&mut self, payload: &[u8]) -> Result<Appended> {
        if payload.len() > RECORD_PAYLOAD_BYTES_MAX as usize {
            return Err(BrokerError::InvalidRequest(format!(
                "record of {} bytes exceeds the maximum of {RECORD_PAYLOAD_BYTES_MAX} bytes",
                payload.len()
            )));
        }
        let frame_len = FRAME_HEADER_BYTES + payload.len() as u64;
        let active_len = self.segments.last().expect("active segment").len_bytes;
        if active_len > 0 && active_len + frame_len > self.segment_bytes_max {
            self.roll()?;
        }
        let position = self.next_position;
        encode_frame(position, payload, &mut self.pending);
        let active = self.segments.last_mut().expect("active segment");
        active.len_bytes += frame_len;
        active.last_position = Some(position);
        self.next_position += 1;
        Ok(Appended {
            position,
            segment_first_position: active.first_position,
            end_offset: active.len_bytes,
        })
    }

    /// Writes buffered records and waits until they are durable (fdatasync).
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = &self.segments.last().expect("active segment").path;
        self.active
            .write_all(&self.pending)
            .and_then(|()| self.active.sync_data())
            .map_err(io_err(path, "write and fsync segment"))?;
        self.pending.clear();
        Ok(())
    }

    /// Seals the active segment and starts a new one at the next position.
    fn roll(&mut self) -> Result<()> {
        self.flush()?;
        let path = self.dir.join(segment_file_name(self.next_position));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path, "create segment"))?;
        sync_dir(&self.dir)?;
        self.active = file;
        self.segments.push(SegmentInfo {
            first_position: self.next_position,
            last_position: None,
            path,
            len_bytes: 0,
        });
        Ok(())
    }

    /// Calls `visit` for every durable record with a position ≥ `from_position`, in order, with
    /// where its frame is (so that a record that does not decode can be named).
    pub fn replay(
        &self,
        from_position: u64,
        mut visit: impl FnMut(u64, &[u8], FrameAt<'_>) -> Result<()>,
    ) -> Result<()> {
        for segment in &self.segments {
            if segment
                .last_position
                .is_none_or(|last| last < from_position)
            {
                continue;
            }
            let scan = scan_frames(
                &segment.path,
                segment.first_position,
                |position, payload, end| {
                    if position >= from_position {
                        let at = FrameAt {
                            path: &segment.path,
                            offset: end - FRAME_HEADER_BYTES - payload.len() as u64,
                        };
                        visit(position, payload, at)?;
                    }
                    Ok(())
                },
            )?;
            if let Some(reason) = scan.invalid_tail {
                return Err(BrokerError::CorruptLog {
                    path: segment.path.clone(),
                    offset: scan.valid_len,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Deletes sealed segments whose records are all below `below_position`. Returns how many.
    pub fn compact(&mut self, below_position: u64) -> Result<usize> {
        let mut removed = 0;
        while self.segments.len() > 1 {
            let first = &self.segments[0];
            match first.last_position {
                Some(last) if last < below_position => {
                    fs::remove_file(&first.path).map_err(io_err(&first.path, "delete segment"))?;
                    self.segments.remove(0);
                    removed += 1;
                }
                _ => break,
            }
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// The segment prefixes holding records `from_position ..= through.position`, the last one cut
    /// right after `through`. Records before `from_position` in the first segment come along.
    pub fn slices(&self, from_position: u64, through: Appended) -> Vec<SegmentSlice> {
        self.segments
            .iter()
            .filter(|segment| {
                segment.first_position <= through.position
                    && segment
                        .last_position
                        .is_some_and(|last| last >= from_position)
            })
            .map(|segment| SegmentSlice {
                name: segment_file_name(segment.first_position),
                path: segment.path.clone(),
                len_bytes: if segment.first_position == through.segment_first_position {
                    through.end_offset
                } else {
                    segment.len_bytes
                },
            })
            .collect()
    }
}

/// Verifies every segment of `dir` strictly, finds the record at `position`, truncates the log
/// right after it and deletes later segments. Returns the record's payload. Used by restore.
pub fn truncate_after(dir: &Path, position: u64) -> Result<Vec<u8>> {
    let mut found: Option<(Vec<u8>, u64, PathBuf)> = None;
    let segments = scan_all(
        dir,
        TornTail::Refuse,
        |record_position, payload, end, segment| {
            if record_position == position {
                found = Some((payload.to_vec(), end, segment.path.clone()));
            }
            Ok(())
        },
    )?;
    let (payload, end, path) = found.ok_or_else(|| BrokerError::RecordNotInLog {
        path: dir.to_path_buf(),
        position,
        segments: segments
            .iter()
            .map(|s| format!("{}..{:?}", s.first_position, s.last_position))
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    for segment in &segments {
        if segment.path == path {
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err(&path, "open segment for truncation"))?;
            file.set_len(end)
                .and_then(|()| file.sync_all())
                .map_err(io_err(&path, "truncate segment"))?;
        } else if segment.first_position > position {
            fs::remove_file(&segment.path).map_err(io_err(&segment.path, "delete segment"))?;
        }
    }
    sync_dir(dir)?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(i: u64) -> Vec<u8> {
        format!("record-{i}").into_bytes()
    }

    fn collect(log: &Log, from: u64) -> Vec<(u64, Vec<u8>)> {
        let mut records = Vec::new();
        log.replay(from, |position, payload, _| {
            records.push((position, payload.to_vec()));
            Ok(())
        })
        .unwrap();
        records
    }

    #[test]
    fn appends_roll_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), 100).unwrap();
        for i in 1..=20 {
            assert_eq!(log.append(&payload(i)).unwrap().position, i);
        }
        log.flush().unwrap();
        assert!(log.segments().len() > 3, "segments roll at 100 bytes");
        drop(log);
        let log = Log::open(dir.path(), 100).unwrap();
        assert_eq!(log.next_position(), 21);
        let records = collect(&log, 5);
        assert_eq!(records.len(), 16);
        assert_eq!(records[0], (5, payload(5)));
    }

    #[test]
    fn unflushed_records_are_not_durable() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), 1 << 20).unwrap();
        log.append(b"a").unwrap();
        log.flush().unwrap();
        log.append(b"b").unwrap();
        drop(log);
        let log = Log::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(log.next_position(), 2);
    }

    #[test]
    fn torn_tail_is_truncated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), 1 << 20).unwrap();
        for i in 1..=3 {
            log.append(&payload(i)).unwrap();
        }
        log.flush().unwrap();
        let path = log.segments()[0].path.clone();
        let good_len = fs::metadata(&path).unwrap().len();
        drop(log);
        // A crash mid-write: half a frame at the end.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        let mut frame = Vec::new();
        encode_frame(4, b"torn", &mut frame);
        file.write_all(&frame[..frame.len() - 2]).unwrap();
        drop(file);
        let mut log = Log::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
        assert_eq!(log.next_position(), 4);
        log.append(b"after").unwrap();
        log.flush().unwrap();
        assert_eq!(collect(&log, 1).len(), 4);
    }

    /// The frames of `positions`, each with the payload `record-<position>`.
    fn frames(positions: impl IntoIterator<Item = u64>) -> Vec<u8> {
        let mut bytes = Vec::new();
        for position in positions {
            encode_frame(position, &payload(position), &mut bytes);
        }
        bytes
    }

    /// Deterministic bytes that are no frame (xorshift).
    fn garbage(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[derive(Debug, Clone, Copy)]
    enum Expect {
        /// Open truncates the file to `len_bytes`; the next record gets `next_position`.
        Torn { len_bytes: u64, next_position: u64 },
        /// Open refuses, naming the bad frame's offset; the file is left as it was.
        Corrupt { offset: u64 },
    }

    #[test]
    fn only_a_tail_without_valid_frames_after_it_is_torn() {
        let good = frames(1..=3);
        let good_len = good.len() as u64;
        let torn = Expect::Torn {
            len_bytes: good_len,
            next_position: 4,
        };
        let frame4 = frames([4]);
        let with = |tail: &[&[u8]]| -> Vec<u8> {
            let mut bytes = good.clone();
            for part in tail {
                bytes.extend_from_slice(part);
            }
            bytes
        };
        let mut bad_crc4 = frame4.clone();
        *bad_crc4.last_mut().unwrap() ^= 0x01;
        let mut huge_len = frame4.clone();
        huge_len[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        // Frames 1..=5 with one byte of frame 2's payload flipped.
        let mut flipped = frames(1..=5);
        let frame2_offset = frames([1]).len();
        flipped[frame2_offset + FRAME_HEADER_BYTES as usize] ^= 0x20;
        // Frames 1..=5 with frame 3's length field grown past the end of the file.
        let mut long_len = frames(1..=5);
        let frame3_offset = frames(1..=2).len();
        long_len[frame3_offset..frame3_offset + 4].copy_from_slice(&1_000_000u32.to_le_bytes());
        // Frames 1..=6 with frame 4 zeroed (a page that never reached the disk).
        let mut zeroed = frames(1..=6);
        let frame4_range = good.len()..good.len() + frame4.len();
        zeroed[frame4_range].fill(0);
        // A valid frame after the bad one that straddles a window of the resynchronising scan.
        let mut big = Vec::new();
        encode_frame(4, &vec![b'x'; 100_000], &mut big);
        let straddling_zeros = vec![0u8; RESYNC_WINDOW_BYTES - 50_000];

        let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
            ("half a frame", with(&[&frame4[..frame4.len() - 2]]), torn),
            ("a partial header", with(&[&frame4[..5]]), torn),
            ("zeros (preallocation)", with(&[&[0; 4096]]), torn),
            (
                "a partial frame then zeros",
                with(&[&frame4[..10], &[0; 8192]]),
                torn,
            ),
            ("garbage", with(&[&garbage(10_000)]), torn),
            ("a checksum-failing last frame", with(&[&bad_crc4]), torn),
            ("a length beyond the maximum", with(&[&huge_len]), torn),
            (
                "garbage then a stale copy of an older frame",
                with(&[&garbage(7), &frames([2])]),
                torn,
            ),
            (
                "a flipped bit in a frame followed by valid frames",
                flipped,
                Expect::Corrupt {
                    offset: frame2_offset as u64,
                },
            ),
            (
                "a length field pointing past the end over valid frames",
                long_len,
                Expect::Corrupt {
                    offset: frame3_offset as u64,
                },
            ),
            (
                "a zeroed frame followed by valid frames",
                zeroed,
                Expect::Corrupt { offset: good_len },
            ),
            (
                "garbage then the next frame",
                with(&[&garbage(7), &frame4]),
                Expect::Corrupt { offset: good_len },
            ),
            (
                "a partial frame, zeros, then a frame across a scan window",
                with(&[&frame4[..10], &straddling_zeros, &big]),
                Expect::Corrupt { offset: good_len },
            ),
        ];
        for (name, bytes, expect) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(segment_file_name(1));
            fs::write(&path, &bytes).unwrap();
            match (Log::open(dir.path(), 1 << 30), &expect) {
                (
                    Ok(log),
                    Expect::Torn {
                        len_bytes,
                        next_position,
                    },
                ) => {
                    assert_eq!(fs::metadata(&path).unwrap().len(), *len_bytes, "{name}");
                    assert_eq!(log.next_position(), *next_position, "{name}");
                }
                (
                    Err(BrokerError::CorruptLog {
                        path: error_path,
                        offset,
                        reason,
                    }),
                    Expect::Corrupt { offset: expected },
                ) => {
                    assert_eq!(error_path, path, "{name}");
                    assert_eq!(offset, *expected, "{name}: {reason}");
                    assert!(reason.contains("valid frame"), "{name}: {reason}");
                    assert_eq!(fs::read(&path).unwrap(), bytes, "{name}: file untouched");
                }
                (Ok(_), expect) => panic!("{name}: opened, expected {expect:?}"),
                (Err(error), expect) => panic!("{name}: {error}, expected {expect:?}"),
            }
        }
    }

    #[test]
    fn corruption_in_a_sealed_segment_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), 60).unwrap();
        for i in 1..=10 {
            log.append(&payload(i)).unwrap();
        }
        log.flush().unwrap();
        let sealed = log.segments()[0].path.clone();
        drop(log);
        let mut bytes = fs::read(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&sealed, bytes).unwrap();
        let error = Log::open(dir.path(), 60).err().expect("must refuse");
        assert!(matches!(error, BrokerError::CorruptLog { .. }), "{error}");
    }

    #[test]
    fn compaction_keeps_the_active_segment_and_needed_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), 60).unwrap();
        for i in 1..=10 {
            log.append(&payload(i)).unwrap();
        }
        log.flush().unwrap();
        let before = log.segments().len();
        let removed = log.compact(6).unwrap();
        assert!(removed > 0 && removed < before);
        assert!(log.first_position() <= 6);
        assert_eq!(collect(&log, 6).len(), 5);
        log.compact(u64::MAX).unwrap();
        assert_eq!(log.segments().len(), 1, "the active segment always stays");
    }

    #[test]
    fn slices_cut_after_the_checkpoint_and_truncate_restores_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), 60).unwrap();
        let mut checkpoint = None;
        for i in 1..=10 {
            let appended = log.append(&payload(i)).unwrap();
            if i == 7 {
                checkpoint = Some(appended);
            }
        }
        log.flush().unwrap();
        let checkpoint = checkpoint.unwrap();
        let slices = log.slices(3, checkpoint);
        assert!(!slices.is_empty());
        // Copy the slices elsewhere, as a backup then a restore would.
        let restored = tempfile::tempdir().unwrap();
        for slice in &slices {
            let bytes = fs::read(&slice.path).unwrap();
            fs::write(
                restored.path().join(&slice.name),
                &bytes[..slice.len_bytes as usize],
            )
            .unwrap();
        }
        let payload7 = truncate_after(restored.path(), 7).unwrap();
        assert_eq!(payload7, payload(7));
        let log = Log::open(restored.path(), 60).unwrap();
        assert_eq!(log.next_position(), 8);
        assert!(truncate_after(restored.path(), 9).is_err());
    }
}
