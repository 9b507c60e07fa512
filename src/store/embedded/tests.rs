//! The embedded store's own tests: recovery from what a crash leaves behind, snapshots, the
//! group commit, the folder.

use std::io::Write as _;
use std::time::Duration;

use super::journal::{self, FileName, SnapshotWriter};
use super::writer::queued;
use super::*;

/// The time the tests' sessions are made at.
const NOW: Millis = Millis::from_epoch_millis(1_000_000);

/// A store in a fresh data folder: the folder (removed when dropped), the data folder's path,
/// and the store.
fn temp_store() -> (tempfile::TempDir, PathBuf, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = EmbeddedStore::open(&data).unwrap();
    (dir, data, store)
}

/// A user's session, `id`, made at `now` for an hour.
fn session(user: i64, id: i64, now: Millis) -> Session {
    Session {
        id: SessionId(id),
        kind: crate::session::SessionKind::User { user: UserId(user) },
        created: now,
        expires: now.saturating_add(Duration::from_secs(3600)),
        client_ip: None,
        user_agent: Some("test agent".into()),
        credential: None,
        chain: Box::default(),
        fingerprint: None,
    }
}

fn key(n: u8) -> TokenHash {
    TokenHash::from_bytes([n; 32])
}

/// The names of the store's files, sorted.
fn files(data: &Path) -> Vec<FileName> {
    let mut names: Vec<String> = std::fs::read_dir(data.join(DB_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.iter().map(|n| FileName::parse(n)).collect()
}

/// The newest journal segment's path.
fn last_segment(data: &Path) -> PathBuf {
    let last = files(data)
        .into_iter()
        .filter_map(|f| match f {
            FileName::Segment(n) => Some(n),
            _ => None,
        })
        .max()
        .unwrap();
    data.join(DB_DIR).join(journal::segment_name(last))
}

/// Where the frames written to the journal segment at `path` end (the rest is allocated space).
fn data_end(path: &Path) -> u64 {
    match journal::read(path, journal::Kind::Journal, |_| Ok(())).unwrap() {
        journal::Tail::Clean(end) => end,
        torn => panic!("{torn:?}"),
    }
}

/// Writes `bytes` into the file at `path` at `offset`.
fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek as _, SeekFrom};
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
}

/// Makes the writer take a snapshot now, and waits until it is in place and the segments it
/// replaces are gone.
async fn snapshot_now(store: &EmbeddedStore, data: &Path) {
    let before = files(data);
    store
        .write(|tx| {
            tx.snapshot();
            tx.sync();
            Ok(())
        })
        .await
        .unwrap();
    for _ in 0..1000 {
        let now = files(data);
        let snapshots = now
            .iter()
            .filter(|f| matches!(f, FileName::Snapshot(_)))
            .count();
        let partial = now.contains(&FileName::Partial);
        if now != before && snapshots == 1 && !partial && !before.is_empty() {
            let segments = now
                .iter()
                .filter(|f| matches!(f, FileName::Segment(_)))
                .count();
            if segments == 1 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no snapshot: {:?}", files(data));
}

/// The data folder and the store's folder are 0700: only the server's user reads them.
#[cfg(unix)]
#[test]
fn files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let (_dir, data, store) = temp_store();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join(DB_DIR)), 0o700);
    drop(store);
}

/// `close` returns once the folder is let go: it opens again at once and holds what was
/// written, and the closed store refuses reads and writes as unavailable.
#[tokio::test]
async fn close_then_reopen() {
    let (_dir, data, store) = temp_store();
    let (k, s) = (key(5), session(5, 50, NOW));
    store.insert(k, s.clone()).await.unwrap();
    store.close().await;
    store.close().await;
    let unavailable = |r: Result<_, StoreError>| matches!(r, Err(StoreError::Unavailable(_)));
    assert!(unavailable(store.get(&k, NOW).await.map(|_| ())));
    assert!(unavailable(
        store.list_user(UserId(5), NOW).await.map(|_| ())
    ));
    assert!(unavailable(store.count().await.map(|_| ())));
    assert!(unavailable(store.insert(key(6), session(5, 51, NOW)).await));
    assert!(unavailable(store.remove(&k, NOW).await.map(|_| ())));

    let reopened = EmbeddedStore::open(&data).unwrap();
    assert_eq!(reopened.get(&k, NOW).await.unwrap(), Some(s));
    assert_eq!(reopened.count().await.unwrap(), 1);
}

/// Dropping a store does not wait for its writer (here held inside a change until after the
/// drop): the queued change still commits and is answered, and the folder opens again once the
/// writer has let go.
#[tokio::test]
async fn drop_does_not_wait_for_the_writer() {
    let (_dir, data, store) = temp_store();
    let (k, s) = (key(7), session(7, 70, NOW));
    let (release, held) = std::sync::mpsc::channel::<()>();
    let s2 = s.clone();
    let (op, answer) = queued(move |tx| {
        let _ = held.recv();
        tx.sessions.insert_capped(k, s2, usize::MAX)
    });
    store.writer.send(op).unwrap();
    drop(store);
    release.send(()).unwrap();
    assert!(answer.await.unwrap().unwrap().is_empty());

    let reopened = EmbeddedStore::open(&data).unwrap();
    assert_eq!(reopened.get(&k, NOW).await.unwrap(), Some(s));
}

/// Changes queued together commit as one group in which each sees the ones before it: a
/// session added and removed in one group is removed once, and nothing of it is left.
#[tokio::test]
async fn a_group_reads_its_own_changes() {
    let (_dir, data, store) = temp_store();
    // The writer is held inside this change, so that the next three queue up as one group.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (hold, held_answer) = queued(move |_| {
        let _ = held.recv();
        Ok(())
    });
    store.writer.send(hold).unwrap();
    let (k, s) = (key(1), session(7, 70, NOW));
    let s2 = s.clone();
    let (a, ins) = queued(move |tx| tx.sessions.insert_capped(k, s2, usize::MAX));
    let (b, rm) = queued(move |tx| Ok(tx.sessions.remove_one(&k, NOW)));
    let (c, rm_again) = queued(move |tx| Ok(tx.sessions.remove_one(&k, NOW)));
    for op in [a, b, c] {
        store.writer.send(op).unwrap();
    }
    release.send(()).unwrap();
    held_answer.await.unwrap().unwrap();
    assert!(ins.await.unwrap().unwrap().is_empty());
    assert_eq!(rm.await.unwrap().unwrap(), vec![s]);
    assert!(rm_again.await.unwrap().unwrap().is_empty());
    assert_eq!(store.get(&k, NOW).await.unwrap(), None);
    assert_eq!(store.count().await.unwrap(), 0);

    // The same after the journal is replayed.
    store.close().await;
    let store = EmbeddedStore::open(&data).unwrap();
    assert_eq!(store.get(&k, NOW).await.unwrap(), None);
    assert_eq!(store.count().await.unwrap(), 0);
}

/// While a group's changes are worked out but not yet synced, readers see the state as the
/// last sync left it: a session the group removed is still there (in `get`, `list_user`, the
/// counts), one it added is not, one it removed and reused reads as it was; once published,
/// the group's changes are what readers see.
#[test]
fn readers_see_only_what_is_synced() {
    use super::writer::State;
    let (old_key, old) = (key(2), session(8, 80, NOW));
    let (reused_key, reused) = (key(3), session(8, 81, NOW));
    let mut inner = Inner::default();
    inner.put(old_key, old.clone());
    inner.put(reused_key, reused.clone());
    let mut state = State::new(inner, HashMap::new());

    state.inner.record();
    assert_eq!(state.inner.remove_one(&old_key, NOW), vec![old.clone()]);
    assert_eq!(
        state.inner.remove_one(&reused_key, NOW),
        vec![reused.clone()]
    );
    let replacement = session(9, 90, NOW);
    state
        .inner
        .insert_capped(reused_key, replacement.clone(), usize::MAX)
        .unwrap();
    let (new_key, new) = (key(4), session(8, 82, NOW));
    state
        .inner
        .insert_capped(new_key, new.clone(), usize::MAX)
        .unwrap();
    state.stage();

    assert_eq!(state.synced(&old_key), Some(&old));
    assert_eq!(state.synced(&reused_key), Some(&reused));
    assert_eq!(state.synced(&new_key), None);
    assert_eq!(state.count(), 2);
    assert_eq!(state.kinds().session, 2);
    let mut listed: Vec<i64> = state
        .list_user(UserId(8), NOW)
        .iter()
        .map(|s| s.id.0)
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, [80, 81]);
    let mut keys = state.synced_keys();
    keys.sort_unstable_by_key(|k| *k.as_bytes());
    assert_eq!(keys, [old_key, reused_key]);

    state.publish(Vec::new());
    assert_eq!(state.synced(&old_key), None);
    assert_eq!(state.synced(&reused_key), Some(&replacement));
    assert_eq!(state.synced(&new_key), Some(&new));
    assert_eq!(state.count(), 2);
    let listed: Vec<i64> = state
        .list_user(UserId(8), NOW)
        .iter()
        .map(|s| s.id.0)
        .collect();
    assert_eq!(listed, [82]);
}

/// A group whose sync failed is undone: the state is again what the last sync left.
#[test]
fn a_failed_group_is_rolled_back() {
    use super::writer::State;
    let (old_key, old) = (key(2), session(8, 80, NOW));
    let mut inner = Inner::default();
    inner.put(old_key, old.clone());
    let mut state = State::new(inner, HashMap::new());
    state.inner.record();
    state.inner.remove_one(&old_key, NOW);
    state
        .inner
        .insert_capped(key(5), session(8, 85, NOW), usize::MAX)
        .unwrap();
    state
        .inner
        .insert_capped(old_key, session(9, 99, NOW), usize::MAX)
        .unwrap();
    state.stage();
    state.roll_back();
    assert_eq!(state.inner.sessions.len(), 1);
    assert_eq!(state.inner.sessions.get(&old_key), Some(&old));
    assert_eq!(state.inner.kinds.session, 1);
    assert_eq!(state.inner.user_keys(UserId(9)).count(), 0);
    assert_eq!(state.list_user(UserId(8), NOW), vec![old]);
}

/// A write cut off in the middle (a crash during an append) leaves a torn frame at the
/// journal's end: start-up cuts it off and keeps every whole frame before it, and the store
/// then writes on normally, across another restart.
#[tokio::test]
async fn a_torn_journal_tail_is_cut_off() {
    let (_dir, data, store) = temp_store();
    for n in 1..=3u8 {
        store
            .insert(key(n), session(1, i64::from(n), NOW))
            .await
            .unwrap();
    }
    store.close().await;
    let segment = last_segment(&data);
    let whole = data_end(&segment);
    // A frame's header that promises more than follows, then the start of a payload.
    write_at(&segment, whole, &[200, 0, 0, 0, 1, 2, 3, 4, b'P', 9, 9]);

    let store = EmbeddedStore::open(&data).unwrap();
    // Cut off (and the space after the whole frames allocated ahead again, zeros): the store
    // goes on appending to this segment.
    let bytes = std::fs::read(&segment).unwrap();
    let torn = usize::try_from(whole).unwrap();
    assert!(bytes.len() >= torn + 11, "{} bytes", bytes.len());
    assert!(bytes[torn..torn + 11].iter().all(|b| *b == 0));
    assert_eq!(store.count().await.unwrap(), 3);
    store.insert(key(4), session(1, 4, NOW)).await.unwrap();
    store.close().await;

    // And a last frame whose bytes are all there but damaged (its checksum fails).
    let segment = last_segment(&data);
    let last = data_end(&segment) - 3;
    write_at(&segment, last, &[0xff]);
    let store = EmbeddedStore::open(&data).unwrap();
    assert_eq!(store.count().await.unwrap(), 3);
    assert_eq!(store.get(&key(4), NOW).await.unwrap(), None);
    assert!(store.get(&key(3), NOW).await.unwrap().is_some());
}

/// Damage that is not a torn tail (a segment that a later one follows) is refused at start-up,
/// never skipped.
#[tokio::test]
async fn damage_before_the_tail_is_refused() {
    let (_dir, data, store) = temp_store();
    store.insert(key(1), session(1, 1, NOW)).await.unwrap();
    store.insert(key(2), session(1, 2, NOW)).await.unwrap();
    store.close().await;
    let first = last_segment(&data);
    let at = data_end(&first) - 3;
    write_at(&first, at, &[0xff]);
    // A later segment follows it.
    drop(super::journal::Segment::create(&data.join(DB_DIR), 1000).unwrap());
    let err = EmbeddedStore::open(&data).unwrap_err();
    let text = crate::chain::Chain(&err).to_string();
    assert!(text.contains("damaged"), "{text}");
}

/// A snapshot replaces the segments before it; start-up reads it and replays the journal
/// written since (sessions added and removed after it, notes), and ends in the same state.
/// Expired sessions are left out of the snapshot.
#[tokio::test]
async fn snapshot_then_journal_replay() {
    let (_dir, data, store) = temp_store();
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    for n in 1..=50u8 {
        store
            .insert(key(n), session(1, i64::from(n), now))
            .await
            .unwrap();
    }
    let mut expired = session(2, 999, Millis::from_epoch_millis(1));
    expired.expires = Millis::from_epoch_millis(2);
    store.insert(key(200), expired).await.unwrap();
    store
        .write_note("applied-directory", b"one".to_vec())
        .await
        .unwrap();
    assert_eq!(store.remove(&key(1), now).await.unwrap().len(), 1);
    snapshot_now(&store, &data).await;
    // After the snapshot: in the journal only.
    assert_eq!(store.remove(&key(2), now).await.unwrap().len(), 1);
    store.insert(key(100), session(3, 100, now)).await.unwrap();
    store
        .write_note("applied-directory", b"two".to_vec())
        .await
        .unwrap();
    store.close().await;

    let store = EmbeddedStore::open(&data).unwrap();
    assert_eq!(store.count().await.unwrap(), 49);
    assert_eq!(store.get(&key(1), now).await.unwrap(), None);
    assert_eq!(store.get(&key(2), now).await.unwrap(), None);
    assert!(store.get(&key(3), now).await.unwrap().is_some());
    assert!(store.get(&key(100), now).await.unwrap().is_some());
    assert_eq!(store.list_user(UserId(1), now).await.unwrap().len(), 48);
    assert_eq!(
        store
            .read_note("applied-directory")
            .await
            .unwrap()
            .as_deref(),
        Some(b"two".as_slice())
    );
    // A second snapshot over the first, then a restart with nothing after it.
    snapshot_now(&store, &data).await;
    store.close().await;
    // Its end frame, read alone, says how many sessions it holds (start-up sizes the map by
    // it); a file cut short does not.
    let snapshot = files(&data)
        .into_iter()
        .find_map(|f| match f {
            FileName::Snapshot(n) => Some(data.join(DB_DIR).join(journal::snapshot_name(n))),
            _ => None,
        })
        .unwrap();
    assert_eq!(journal::snapshot_sessions(&snapshot), Some(49));
    let cut = data.join("cut.snap");
    let bytes = std::fs::read(&snapshot).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 1]).unwrap();
    assert_eq!(journal::snapshot_sessions(&cut), None);
    let store = EmbeddedStore::open(&data).unwrap();
    assert_eq!(store.count().await.unwrap(), 49);
    assert_eq!(store.live_by_kind(now).await.unwrap().session, 49);
}

/// A crash while a snapshot is written, before it is renamed into place, leaves a partial
/// file: start-up removes it and reads the older snapshot and the segments, which are all still
/// there.
#[tokio::test]
async fn a_crash_before_the_snapshot_is_renamed_loses_nothing() {
    let (_dir, data, store) = temp_store();
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    for n in 1..=10u8 {
        store
            .insert(key(n), session(1, i64::from(n), now))
            .await
            .unwrap();
    }
    snapshot_now(&store, &data).await;
    for n in 11..=20u8 {
        store
            .insert(key(n), session(1, i64::from(n), now))
            .await
            .unwrap();
    }
    store.remove(&key(5), now).await.unwrap();
    store.close().await;
    // What a snapshot thread killed halfway leaves: some sessions, no end, never renamed. Its
    // number is the next segment's, as a real one's would be.
    let dir = data.join(DB_DIR);
    let mut partial = SnapshotWriter::create(&dir, 1000).unwrap();
    partial.put(&key(5), &session(1, 5, now)).unwrap();
    partial.put(&key(99), &session(1, 99, now)).unwrap();
    drop(partial);
    assert!(files(&data).contains(&FileName::Partial));

    let store = EmbeddedStore::open(&data).unwrap();
    assert!(!files(&data).contains(&FileName::Partial));
    assert_eq!(store.count().await.unwrap(), 19);
    assert_eq!(store.get(&key(5), now).await.unwrap(), None);
    assert_eq!(store.get(&key(99), now).await.unwrap(), None);
    assert!(store.get(&key(20), now).await.unwrap().is_some());
}

/// A data folder that holds an earlier release's fjall database is refused with an error
/// that says what to do, and nothing in it is touched.
#[test]
fn an_old_fjall_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join(DB_DIR);
    std::fs::create_dir_all(db.join("keyspaces")).unwrap();
    std::fs::write(db.join("version"), b"3").unwrap();
    let err = EmbeddedStore::open(&data).unwrap_err();
    assert!(matches!(err, OpenError::OldLayout { .. }), "{err:?}");
    let text = err.to_string();
    for needle in ["earlier release", "move that folder away", "sessions.db"] {
        assert!(text.contains(needle), "{text}");
    }
    let mut left: Vec<_> = std::fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["keyspaces", "version"]);
}

/// A file written in another layout version is refused with the versions named.
#[tokio::test]
async fn another_layout_version_is_refused() {
    let (_dir, data, store) = temp_store();
    store.close().await;
    let segment = last_segment(&data);
    let mut payload = vec![b'H', b'J'];
    payload.extend_from_slice(&(LAYOUT_VERSION + 1).to_le_bytes());
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    std::fs::write(&segment, bytes).unwrap();
    let err = EmbeddedStore::open(&data).unwrap_err();
    assert!(matches!(err, OpenError::Layout { .. }), "{err:?}");
}

/// A restart goes on appending to the last segment instead of starting one, so that restarts
/// (a crash loop, say) do not leave a segment allocated ahead, and empty, behind each time; what
/// is written after each restart is read back after the next.
#[tokio::test]
async fn restarts_go_on_with_the_last_segment() {
    let (_dir, data, store) = temp_store();
    store.insert(key(1), session(1, 1, NOW)).await.unwrap();
    store.close().await;
    let before = files(&data);
    for n in 2..=5u8 {
        let store = EmbeddedStore::open(&data).unwrap();
        store
            .insert(key(n), session(1, i64::from(n), NOW))
            .await
            .unwrap();
        store.close().await;
    }
    assert_eq!(files(&data), before);
    let store = EmbeddedStore::open(&data).unwrap();
    assert_eq!(store.count().await.unwrap(), 5);
}

/// A clean stop with a long journal since the last snapshot leaves a snapshot behind, so that
/// the next start reads it instead of replaying the journal; a short journal is left as it is.
#[tokio::test]
async fn a_clean_stop_after_a_long_journal_writes_a_snapshot() {
    let snapshots = |data: &Path| {
        files(data)
            .iter()
            .filter(|f| matches!(f, FileName::Snapshot(_)))
            .count()
    };
    // Live sessions: a snapshot leaves expired ones out.
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let (_dir, data, store) = temp_store();
    store.insert(key(1), session(1, 1, now)).await.unwrap();
    store.close().await;
    assert_eq!(snapshots(&data), 0, "a short journal needs none");

    let store = EmbeddedStore::open(&data).unwrap();
    // More than 4 MiB of journal: 40,000 sessions of about 190 bytes, in one group.
    store
        .write(move |tx| {
            for n in 0..40_000u32 {
                let mut hash = [0u8; 32];
                hash[..4].copy_from_slice(&n.to_le_bytes());
                hash[31] = 1;
                tx.sessions
                    .insert_capped(
                        TokenHash::from_bytes(hash),
                        session(7, 1_000 + i64::from(n), now),
                        usize::MAX,
                    )
                    .unwrap();
            }
            Ok(())
        })
        .await
        .unwrap();
    store.close().await;
    assert_eq!(snapshots(&data), 1);
    let store = EmbeddedStore::open(&data).unwrap();
    assert_eq!(store.count().await.unwrap(), 40_001);
}
