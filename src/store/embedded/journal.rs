//! The files: framed records (length, CRC-32, payload), the journal's segments and the
//! snapshots, their names, and reading them back at start-up (where a torn tail is cut).

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::session::Session;
use crate::token::TokenHash;

/// The file format this build reads and writes: the first frame of every journal segment and
/// snapshot says it.
pub const LAYOUT_VERSION: u32 = 4;

/// A frame's header: the payload's length and its CRC-32, both little-endian.
const HEADER: usize = 8;
/// No frame is larger: a longer length read back is a torn or corrupt header.
const MAX_FRAME: u32 = 1 << 30;

/// Record tags, the first byte of each record in a frame's payload.
const PUT: u8 = b'P';
const DEL: u8 = b'D';
const NOTE: u8 = b'N';
/// A file's first frame: the format, and whether it is a journal segment or a snapshot.
const HEAD: u8 = b'H';
/// A snapshot's last frame: how many sessions it holds. A snapshot without it is incomplete.
const END: u8 = b'E';
/// A record that says nothing: the readiness probe's, so that its frame is not empty (an
/// all-zero header is where a segment's written part ends).
const SYNC: u8 = b'S';

/// The space each journal segment is given up front: a sync then only writes data into blocks
/// the file already has, instead of also committing the file's growth (measured here: about
/// 250 µs per `fdatasync` of a 300-byte append into allocated space, 700 to 1,000 µs when the
/// append grows the file). A segment that fills up is followed by the next.
pub(super) const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// What a journal segment's or a snapshot's head frame says it is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    Journal,
    Snapshot,
}

impl Kind {
    fn tag(self) -> u8 {
        match self {
            Self::Journal => b'J',
            Self::Snapshot => b'S',
        }
    }
}

/// One record, as read back.
pub(super) enum Record {
    /// The session now under this key.
    Put(TokenHash, Session),
    /// No session under this key.
    Del(TokenHash),
    /// The server's note `name` now holds this.
    Note(String, Vec<u8>),
    /// A snapshot's end, with its session count.
    End(u64),
}

/// The payload of one frame, built record by record.
#[derive(Default)]
pub(super) struct Frame {
    buf: Vec<u8>,
}

impl Frame {
    /// Whether no record has been added.
    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// How many bytes the records take.
    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Records that `session` is now under `key`.
    pub(super) fn put(
        &mut self,
        key: &TokenHash,
        session: &Session,
    ) -> Result<(), serde_json::Error> {
        self.buf.push(PUT);
        self.buf.extend_from_slice(key.as_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        serde_json::to_writer(&mut self.buf, session)?;
        let len = u32::try_from(self.buf.len() - len_at - 4).unwrap_or(u32::MAX);
        self.buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
        Ok(())
    }

    /// Records that no session is under `key`.
    pub(super) fn del(&mut self, key: &TokenHash) {
        self.buf.push(DEL);
        self.buf.extend_from_slice(key.as_bytes());
    }

    /// Records the note `name`.
    pub(super) fn note(&mut self, name: &str, value: &[u8]) {
        self.buf.push(NOTE);
        put_bytes(&mut self.buf, name.as_bytes());
        put_bytes(&mut self.buf, value);
    }

    /// Records nothing, so that the frame is written and synced all the same.
    pub(super) fn sync(&mut self) {
        self.buf.push(SYNC);
    }

    /// Records a snapshot's end.
    pub(super) fn end(&mut self, sessions: u64) {
        self.buf.push(END);
        self.buf.extend_from_slice(&sessions.to_le_bytes());
    }

    /// Empties the frame for reuse.
    pub(super) fn clear(&mut self) {
        self.buf.clear();
    }

    /// Writes the frame (header and payload) to `out` in one call.
    pub(super) fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&framed(&self.buf))
    }
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// A payload with its header in front.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The head frame of a new file of `kind`.
fn head(kind: Kind) -> Vec<u8> {
    let mut payload = vec![HEAD, kind.tag()];
    payload.extend_from_slice(&LAYOUT_VERSION.to_le_bytes());
    framed(&payload)
}

/// The name of journal segment `seq`.
pub(super) fn segment_name(seq: u64) -> String {
    format!("journal-{seq:016}.log")
}

/// The name of the snapshot that the journal from segment `seq` on continues.
pub(super) fn snapshot_name(seq: u64) -> String {
    format!("snapshot-{seq:016}.snap")
}

/// The name a snapshot is written under until it is complete and synced.
pub(super) fn partial_name(seq: u64) -> String {
    format!("snapshot-{seq:016}.partial")
}

/// What a file in the store's folder is, by its name.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FileName {
    Segment(u64),
    Snapshot(u64),
    Partial,
    Lock,
    Unknown,
}

/// The lock file's name: held (an advisory lock) while a store has the folder open.
pub(super) const LOCK_FILE: &str = "journal.lock";

impl FileName {
    pub(super) fn parse(name: &str) -> Self {
        let seq = |prefix: &str, suffix: &str| {
            name.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(suffix))
                .filter(|digits| digits.len() == 16)
                .and_then(|digits| digits.parse::<u64>().ok())
        };
        if name == LOCK_FILE {
            Self::Lock
        } else if let Some(n) = seq("journal-", ".log") {
            Self::Segment(n)
        } else if let Some(n) = seq("snapshot-", ".snap") {
            Self::Snapshot(n)
        } else if seq("snapshot-", ".partial").is_some() {
            Self::Partial
        } else {
            Self::Unknown
        }
    }
}

/// Creates a new file of `kind` at `path` (which must not exist) with its head frame written,
/// not yet synced (removed again when the head cannot be written).
pub(super) fn create(path: &Path, kind: Kind) -> io::Result<File> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    if let Err(e) = file.write_all(&head(kind)) {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(file)
}

/// Syncs a directory, so that the files created, renamed or removed in it stay so.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// How reading a file ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Tail {
    /// Every frame up to this offset was whole and intact; what follows, if anything, is the
    /// zeros of a segment's allocated but unwritten space.
    Clean(u64),
    /// From this offset on, the bytes are not a whole intact frame: a write cut short.
    Torn(u64),
}

/// Why a file cannot be read back.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is damaged: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("{path} has layout version {found}; this build reads {LAYOUT_VERSION}")]
    Version { path: PathBuf, found: u32 },
}

/// Reads the frames of the file at `path` (of `kind`), calling `each` with every record in
/// order, and says how the file ended. A file too short for its head frame (created, then cut
/// off) holds no records. Only the frames before the first damaged one are read, and none past
/// an all-zero header (a segment's unwritten space).
pub(super) fn read(
    path: &Path,
    kind: Kind,
    mut each: impl FnMut(Record) -> Result<(), ReadError>,
) -> Result<Tail, ReadError> {
    let io_error = |source| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let corrupt = |what: &str| ReadError::Corrupt {
        path: path.to_owned(),
        what: what.to_owned(),
    };
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(io_error)?);
    let mut offset = 0u64;
    let mut payload = Vec::new();
    let mut first = true;
    loop {
        match next_frame(&mut reader, &mut payload).map_err(io_error)? {
            None => return Ok(Tail::Clean(offset)),
            Some(false) => return Ok(Tail::Torn(offset)),
            Some(true) => {}
        }
        if first {
            first = false;
            match payload.as_slice() {
                [HEAD, tag, v @ ..] if *tag == kind.tag() && v.len() == 4 => {
                    let found = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                    if found != LAYOUT_VERSION {
                        return Err(ReadError::Version {
                            path: path.to_owned(),
                            found,
                        });
                    }
                }
                _ => return Err(corrupt("its first frame is not this kind of file's head")),
            }
        } else {
            decode_records(&payload, &mut each).map_err(|what| corrupt(&what))??;
        }
        offset += (HEADER + payload.len()) as u64;
    }
}

/// Reads one frame's payload into `payload`: `None` at a clean end of the file, `Some(false)`
/// when the rest is not a whole intact frame.
fn next_frame(reader: &mut impl Read, payload: &mut Vec<u8>) -> io::Result<Option<bool>> {
    let mut header = [0u8; HEADER];
    let got = read_full(reader, &mut header)?;
    if got == 0 || header == [0; HEADER] {
        return Ok(None);
    }
    if got < HEADER {
        return Ok(Some(false));
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_FRAME {
        return Ok(Some(false));
    }
    payload.clear();
    let len = len as usize;
    reader.take(len as u64).read_to_end(payload)?;
    Ok(Some(
        payload.len() == len && crc32fast::hash(payload) == crc,
    ))
}

/// How many sessions the snapshot at `path` says it holds, read from its end frame alone (the
/// file's last bytes), so that the map they go into can be sized before they are read. `None`
/// when those bytes are not an intact end frame (reading the whole file then says why).
pub(super) fn snapshot_sessions(path: &Path) -> Option<u64> {
    use std::io::{Seek as _, SeekFrom};
    const END_FRAME: usize = HEADER + 1 + 8;
    let mut file = File::open(path).ok()?;
    file.seek(SeekFrom::End(-(END_FRAME as i64))).ok()?;
    let mut payload = Vec::with_capacity(END_FRAME);
    match next_frame(&mut file, &mut payload) {
        Ok(Some(true)) => {}
        _ => return None,
    }
    match payload.as_slice() {
        [END, count @ ..] => Some(u64::from_le_bytes(count.try_into().ok()?)),
        _ => None,
    }
}

/// Reads until `buf` is full or the file ends; returns how many bytes it read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Decodes the records of one intact payload. The outer error is a malformed payload (which a
/// matching CRC makes a bug or deliberate damage, not a torn write); the inner one is `each`'s.
fn decode_records(
    mut p: &[u8],
    each: &mut impl FnMut(Record) -> Result<(), ReadError>,
) -> Result<Result<(), ReadError>, String> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if p.len() < n {
            return Err("a record runs past its frame".into());
        }
        let (head, rest) = p.split_at(n);
        *p = rest;
        Ok(head)
    }
    fn take_u32(p: &mut &[u8]) -> Result<usize, String> {
        let b = take(p, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn take_key(p: &mut &[u8]) -> Result<TokenHash, String> {
        TokenHash::from_slice(take(p, TokenHash::LEN)?).ok_or_else(|| "a short key".into())
    }
    while let Some((&tag, rest)) = p.split_first() {
        p = rest;
        let record = match tag {
            PUT => {
                let key = take_key(&mut p)?;
                let len = take_u32(&mut p)?;
                let session = serde_json::from_slice(take(&mut p, len)?)
                    .map_err(|e| format!("a session that does not decode: {e}"))?;
                Record::Put(key, session)
            }
            DEL => Record::Del(take_key(&mut p)?),
            SYNC => continue,
            NOTE => {
                let len = take_u32(&mut p)?;
                let name = String::from_utf8(take(&mut p, len)?.to_vec())
                    .map_err(|_| "a note name that is not UTF-8")?;
                let len = take_u32(&mut p)?;
                Record::Note(name, take(&mut p, len)?.to_vec())
            }
            END => {
                let b = take(&mut p, 8)?;
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                Record::End(u64::from_le_bytes(n))
            }
            other => return Err(format!("an unknown record tag {other}")),
        };
        if let Err(e) = each(record) {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

/// The journal segment being appended to.
pub(super) struct Segment {
    file: File,
    seq: u64,
    /// Where the next frame goes.
    end: u64,
    dir: PathBuf,
}

impl Segment {
    /// Creates segment `seq` in `dir` with space allocated ahead ([`preallocate`]), synced
    /// together with the directory entry, so that what is written and synced later is found at
    /// the next start.
    ///
    /// On failure (a full disk, say) the file is removed again, so that a later attempt, or
    /// the next start, does not find a segment without its head.
    pub(super) fn create(dir: &Path, seq: u64) -> io::Result<Self> {
        let path = dir.join(segment_name(seq));
        let file = create(&path, Kind::Journal)?;
        let end = head(Kind::Journal).len() as u64;
        preallocate(&file);
        if let Err(e) = file.sync_all().and_then(|()| sync_dir(dir)) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Self {
            file,
            seq,
            end,
            dir: dir.to_owned(),
        })
    }

    /// Goes on appending to segment `seq` in `dir`, which recovery read back whole up to `end`
    /// (any torn tail cut off): so that a restart does not leave a segment, allocated ahead but
    /// empty, behind at every start. Its space is allocated ahead again when a cut took it.
    /// When the file has not even its head (a crash while it was made), it is made anew.
    pub(super) fn reopen(dir: &Path, seq: u64, end: u64) -> io::Result<Self> {
        let path = dir.join(segment_name(seq));
        if end < head(Kind::Journal).len() as u64 {
            std::fs::remove_file(&path)?;
            return Self::create(dir, seq);
        }
        let mut file = OpenOptions::new().write(true).open(&path)?;
        if file.metadata()?.len() < SEGMENT_BYTES {
            preallocate(&file);
            file.sync_all()?;
        }
        file.seek(io::SeekFrom::Start(end))?;
        Ok(Self {
            file,
            seq,
            end,
            dir: dir.to_owned(),
        })
    }

    /// The segment's number.
    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    /// Appends `frame` and syncs the data to disk (`fdatasync`) before returning; moves on to
    /// the next segment first when this one's allocated space would not hold it.
    pub(super) fn append(&mut self, frame: &Frame) -> io::Result<()> {
        let len = (HEADER + frame.len()) as u64;
        if self.end + len > SEGMENT_BYTES && self.end > head(Kind::Journal).len() as u64 {
            *self = Self::create(&self.dir, self.seq + 1)?;
        }
        frame.write_to(&mut self.file)?;
        self.end += len;
        self.file.sync_data()
    }
}

/// The smallest allocation [`preallocate`] tries before it gives up.
const MIN_PREALLOCATION: u64 = 1024 * 1024;

/// Allocates space for a new segment, so that an `fdatasync` after an append does not also
/// commit the file's growth (the appends are several times cheaper to sync): [`SEGMENT_BYTES`],
/// or half the disk's free space when that is less, so that the journal never takes the room
/// ahead that something else, or a restart after the disk filled (its new segment), needs.
/// Best effort: when that fails for want of room it tries half as much, down to
/// [`MIN_PREALLOCATION`], then leaves the file to grow with its appends, which is slower to
/// sync but as durable. A disk that is full shows up at the next append, which fails closed.
fn preallocate(file: &File) {
    let free = rustix::fs::fstatvfs(file)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .unwrap_or(u64::MAX);
    let mut len = SEGMENT_BYTES.min(free / 2);
    while len >= MIN_PREALLOCATION {
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => return,
            Err(e) if e == rustix::io::Errno::NOSPC => len /= 2,
            Err(e) => {
                tracing::debug!(error = %e, "journal segment not allocated ahead");
                return;
            }
        }
    }
    tracing::warn!(
        free_bytes = free,
        "the disk is nearly full: the journal grows with its appends"
    );
}

/// Writes a snapshot: frames of records, then the end frame, under its partial name; then
/// [`SnapshotWriter::finish`] syncs it and renames it into place.
pub(super) struct SnapshotWriter {
    out: BufWriter<File>,
    partial: PathBuf,
    done: PathBuf,
    dir: PathBuf,
    sessions: u64,
    frame: Frame,
}

impl SnapshotWriter {
    /// Starts the snapshot that segment `seq` continues.
    pub(super) fn create(dir: &Path, seq: u64) -> io::Result<Self> {
        let partial = dir.join(partial_name(seq));
        let file = create(&partial, Kind::Snapshot)?;
        Ok(Self {
            out: BufWriter::with_capacity(1 << 20, file),
            partial,
            done: dir.join(snapshot_name(seq)),
            dir: dir.to_owned(),
            sessions: 0,
            frame: Frame::default(),
        })
    }

    /// Adds a session.
    pub(super) fn put(&mut self, key: &TokenHash, session: &Session) -> io::Result<()> {
        self.frame.put(key, session).map_err(io::Error::other)?;
        self.sessions += 1;
        self.flush_frame_past(1 << 16)
    }

    /// Adds a note.
    pub(super) fn note(&mut self, name: &str, value: &[u8]) -> io::Result<()> {
        self.frame.note(name, value);
        self.flush_frame_past(1 << 16)
    }

    fn flush_frame_past(&mut self, bytes: usize) -> io::Result<()> {
        if self.frame.len() >= bytes {
            self.frame.write_to(&mut self.out)?;
            self.frame.clear();
        }
        Ok(())
    }

    /// Writes the end frame, syncs the file, renames it into place and syncs the directory:
    /// from then on the next start reads this snapshot.
    pub(super) fn finish(mut self) -> io::Result<PathBuf> {
        self.flush_frame_past(1)?;
        self.frame.end(self.sessions);
        self.flush_frame_past(1)?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.partial, &self.done)?;
        sync_dir(&self.dir)?;
        Ok(self.done)
    }

    /// Abandons the snapshot: its partial file is removed.
    pub(super) fn abandon(self) {
        let partial = self.partial.clone();
        drop(self);
        let _ = std::fs::remove_file(partial);
    }
}

/// Cuts the file at `path` at `offset` (a torn tail) and syncs it.
pub(super) fn truncate(path: &Path, offset: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(offset)?;
    file.sync_all()
}
