//! Snapshots: the live sessions written to a new file beside the journal, so that start-up
//! reads the snapshot and the journal written since, and older segments can go.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::journal::{sync_dir, FileName, Segment, SnapshotWriter};
use super::writer::Shared;
use crate::chain::Chain;
use crate::clock::{Clock as _, SystemClock};

/// Sessions copied out under one hold of the lock: small, so that requests never wait long.
const CHUNK: usize = 1024;

/// A snapshot being written on a thread of its own.
pub(super) struct Running {
    thread: JoinHandle<Option<u64>>,
    stop: Arc<AtomicBool>,
}

impl Running {
    /// Itself back while it runs; once it has ended, the new snapshot's size, or `None` when
    /// it failed (the journal then stays, and a later snapshot tries again).
    pub(super) fn poll(self) -> Result<Option<u64>, Self> {
        if self.thread.is_finished() {
            Ok(self.thread.join().ok().flatten())
        } else {
            Err(self)
        }
    }

    /// Waits until it has ended (put in place, or failed and said so).
    pub(super) fn finish(self) {
        let _ = self.thread.join();
    }

    /// Stops it and waits: the partial file is removed, and the journal stays as it is.
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
    }
}

/// Starts a snapshot: the writer moves on to a new journal segment (`segment` is replaced), and
/// a thread writes what is synced so far as the snapshot that the new segment continues.
///
/// The snapshot is fuzzy: it copies the sessions in chunks while the writer goes on, so a
/// session may be copied before or after a change that lands in the new segment. Replaying
/// that segment over the snapshot still ends in the right state, because each record sets or
/// clears one key whole: for every key, the last record since the snapshot began decides, and
/// a key without one has not changed since, so the snapshot's copy is its state.
pub(super) fn start(
    shared: &Arc<Shared>,
    dir: &Path,
    segment: &mut Segment,
) -> io::Result<Running> {
    let next = Segment::create(dir, segment.seq() + 1)?;
    let seq = next.seq();
    *segment = next;
    let stop = Arc::new(AtomicBool::new(false));
    let (shared, dir, stopped) = (shared.clone(), dir.to_owned(), stop.clone());
    let thread = std::thread::Builder::new()
        .name("sessionauth-store-snapshot".into())
        .spawn(move || match write(&shared, &dir, seq, &stopped) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => {
                tracing::error!(error = %Chain(&e), "session store snapshot failed");
                None
            }
        })?;
    Ok(Running { thread, stop })
}

/// Writes the snapshot that segment `seq` continues, puts it in place, and removes the older
/// snapshots and segments. Returns its size.
pub(super) fn write(shared: &Shared, dir: &Path, seq: u64, stop: &AtomicBool) -> io::Result<u64> {
    let now = SystemClock.now();
    let keys = shared.state.lock().synced_keys();
    let mut out = SnapshotWriter::create(dir, seq)?;
    let mut copied = Vec::with_capacity(CHUNK);
    let written = (|| {
        for chunk in keys.chunks(CHUNK) {
            if stop.load(Ordering::Acquire) {
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            {
                let state = shared.state.lock();
                copied.extend(chunk.iter().filter_map(|k| {
                    // Expired ones are left out: at the next start they are simply gone.
                    state
                        .synced(k)
                        .filter(|s| !s.is_expired(now))
                        .map(|s| (*k, s.clone()))
                }));
            }
            for (key, session) in copied.drain(..) {
                out.put(&key, &session)?;
            }
        }
        let notes = shared.state.lock().notes.clone();
        for (name, value) in &notes {
            out.note(name, value)?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        out.abandon();
        return Err(e);
    }
    let path = out.finish()?;
    let bytes = std::fs::metadata(&path)?.len();
    remove_before(dir, seq)?;
    Ok(bytes)
}

/// Removes the snapshots and journal segments older than `seq`, which the snapshot of `seq`
/// replaces.
pub(super) fn remove_before(dir: &Path, seq: u64) -> io::Result<()> {
    let mut old: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        match FileName::parse(&name.to_string_lossy()) {
            FileName::Segment(n) | FileName::Snapshot(n) if n < seq => old.push(entry.path()),
            _ => {}
        }
    }
    if old.is_empty() {
        return Ok(());
    }
    for path in old {
        std::fs::remove_file(path)?;
    }
    sync_dir(dir)
}
