//! Anchor checkpoints: `{log_id, segment, seq, tag, time}` JSON, kept outside the
//! writer's reach so that deleting the newest records of the log is caught. An anchor is
//! either a file the checkpoints are appended (and fsynced) to, or an object store where
//! each checkpoint is a new object that is never replaced (S3, with Object Lock where the
//! bucket has it).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::record::io_error;
use super::AuditError;

/// Why a [`CheckpointStore`] failed, in the store's own terms.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// A store that keeps each checkpoint as its own object, written once. The audit side owns
/// this trait and a storage backend implements it, so the audit log depends on no backend.
pub trait CheckpointStore: Send + Sync {
    /// Stores a new object `name`; fails rather than replace an existing one.
    fn put_new(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// The names of all objects in the store.
    fn names(&self) -> Result<Vec<String>, StoreError>;
    /// The bytes of object `name`.
    fn get(&self, name: &str) -> Result<Vec<u8>, StoreError>;
    /// Where the store is, for messages.
    fn describe(&self) -> String;
}

/// Where a log's checkpoints go: one anchor per log.
#[derive(Clone)]
pub enum AnchorTarget {
    /// A local file, one JSON line per checkpoint.
    File(PathBuf),
    /// An object store, one object per checkpoint, named so that name order is seq order.
    Store(Arc<dyn CheckpointStore>),
}

impl AnchorTarget {
    /// Where the anchor is, for messages.
    pub fn describe(&self) -> String {
        match self {
            AnchorTarget::File(path) => path.display().to_string(),
            AnchorTarget::Store(store) => store.describe(),
        }
    }
}

/// The object name of a checkpoint: zero-padded, so name order is (segment, seq) order.
fn object_name(checkpoint: &Checkpoint) -> String {
    format!("{:010}-{:020}.json", checkpoint.segment, checkpoint.seq)
}

fn store_error(store: &dyn CheckpointStore) -> impl FnOnce(StoreError) -> AuditError + '_ {
    move |source| AuditError::AnchorStore {
        anchor: store.describe(),
        source,
    }
}

/// A checkpoint is due after this many records...
pub(crate) const EVERY_RECORDS: u64 = 1000;
/// ...or this much time, whichever comes first (checked when a record is written).
pub(crate) const EVERY: Duration = Duration::from_secs(10);

/// One checkpoint: the log's state after record `seq`. Fields in line order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Checkpoint {
    pub log_id: String,
    pub segment: u32,
    pub seq: u64,
    pub tag: String,
    pub time: String,
}

/// Where the writer puts checkpoints.
enum Sink {
    File { file: File, path: PathBuf },
    Store(Arc<dyn CheckpointStore>),
}

/// The writer's side of an anchor.
pub(crate) struct Anchor {
    sink: Sink,
    records: u64,
    last: Instant,
}

impl Anchor {
    /// Opens the anchor: a file is created (mode 0600) or opened for appending.
    pub fn open(target: &AnchorTarget) -> Result<Anchor, AuditError> {
        let sink = match target {
            AnchorTarget::File(path) => Sink::File {
                file: OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io_error(path))?,
                path: path.clone(),
            },
            AnchorTarget::Store(store) => Sink::Store(Arc::clone(store)),
        };
        Ok(Anchor {
            sink,
            records: 0,
            last: Instant::now(),
        })
    }

    /// Counts one record; true when a checkpoint is due.
    pub fn count(&mut self) -> bool {
        self.records += 1;
        self.records >= EVERY_RECORDS || self.last.elapsed() >= EVERY
    }

    /// Appends `checkpoint` and fsyncs (or stores it as a new object). The caller must have
    /// synced the log first, so an anchor never gets ahead of the durable log.
    pub fn write(&mut self, checkpoint: &Checkpoint) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(checkpoint).expect("a checkpoint serializes");
        line.push(b'\n');
        match &mut self.sink {
            Sink::File { file, path } => file
                .write_all(&line)
                .and_then(|()| file.sync_data())
                .map_err(io_error(path))?,
            Sink::Store(store) => store
                .put_new(&object_name(checkpoint), &line)
                .map_err(store_error(store.as_ref()))?,
        }
        self.records = 0;
        self.last = Instant::now();
        Ok(())
    }
}

/// Reads every checkpoint of an anchor with its 1-based position (line of a file, or
/// object in name order). In a file, an incomplete last line (a crash while appending) is
/// ignored; anything else that does not parse is an error.
pub(crate) fn read(target: &AnchorTarget) -> Result<Vec<(usize, Checkpoint)>, AuditError> {
    let path = match target {
        AnchorTarget::File(path) => path,
        AnchorTarget::Store(store) => return read_store(store.as_ref()),
    };
    let mut reader = BufReader::new(File::open(path).map_err(io_error(path))?);
    let mut checkpoints = Vec::new();
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .map_err(io_error(path))?
            == 0
        {
            break;
        }
        if line.pop() != Some(b'\n') {
            break;
        }
        let checkpoint = serde_json::from_slice(&line).map_err(|_| AuditError::BadAnchor {
            anchor: path.display().to_string(),
            line: number,
        })?;
        checkpoints.push((number, checkpoint));
    }
    Ok(checkpoints)
}

/// Reads a store's checkpoints in name order; an object whose name is not the one its
/// content gives is an error (a checkpoint cannot be moved to another place in order).
fn read_store(store: &dyn CheckpointStore) -> Result<Vec<(usize, Checkpoint)>, AuditError> {
    let mut names = store.names().map_err(store_error(store))?;
    names.sort();
    let mut checkpoints = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let bytes = store.get(name).map_err(store_error(store))?;
        let bad = || AuditError::BadAnchor {
            anchor: format!("{}{name}", store.describe()),
            line: index + 1,
        };
        let line = bytes.strip_suffix(b"\n").ok_or_else(bad)?;
        let checkpoint: Checkpoint = serde_json::from_slice(line).map_err(|_| bad())?;
        if object_name(&checkpoint) != *name {
            return Err(bad());
        }
        checkpoints.push((index + 1, checkpoint));
    }
    Ok(checkpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(seq: u64) -> Checkpoint {
        Checkpoint {
            log_id: "ab".repeat(16),
            segment: 2,
            seq,
            tag: "cd".repeat(32),
            time: "2025-01-01T00:00:00.000000000Z".to_owned(),
        }
    }

    #[test]
    fn checkpoints_round_trip_and_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anchor");
        let target = AnchorTarget::File(path.clone());
        let mut anchor = Anchor::open(&target).unwrap();
        anchor.write(&checkpoint(1)).unwrap();
        anchor.write(&checkpoint(9)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\"log_id\":\"abab"), "{text}");
        std::fs::write(&path, format!("{text}{{\"log_id\":\"ab")).unwrap();
        let read_back = read(&target).unwrap();
        assert_eq!(
            read_back,
            vec![(1, checkpoint(1)), (2, checkpoint(9))],
            "torn tail ignored"
        );
        std::fs::write(&path, format!("{text}garbage\n")).unwrap();
        assert!(matches!(
            read(&target),
            Err(AuditError::BadAnchor { line: 3, .. })
        ));
    }

    #[test]
    fn checkpoint_is_due_after_many_records() {
        let dir = tempfile::tempdir().unwrap();
        let target = AnchorTarget::File(dir.path().join("anchor"));
        let mut anchor = Anchor::open(&target).unwrap();
        let due = (0..EVERY_RECORDS).filter(|_| anchor.count()).count();
        assert_eq!(due, 1);
        anchor.write(&checkpoint(0)).unwrap();
        assert!(!anchor.count());
    }

    /// Objects in memory, write-once like the S3 store.
    #[derive(Default)]
    struct MemoryStore(parking_lot::Mutex<std::collections::BTreeMap<String, Vec<u8>>>);

    impl CheckpointStore for MemoryStore {
        fn put_new(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
            let mut objects = self.0.lock();
            if objects.contains_key(name) {
                return Err(format!("{name} already exists").into());
            }
            objects.insert(name.into(), bytes.to_vec());
            Ok(())
        }
        fn names(&self) -> Result<Vec<String>, StoreError> {
            Ok(self.0.lock().keys().rev().cloned().collect())
        }
        fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
            Ok(self.0.lock()[name].clone())
        }
        fn describe(&self) -> String {
            "memory/".into()
        }
    }

    #[test]
    fn store_checkpoints_read_back_in_order_and_moved_ones_are_refused() {
        let store = Arc::new(MemoryStore::default());
        let target = AnchorTarget::Store(store.clone());
        let mut anchor = Anchor::open(&target).unwrap();
        for seq in [2, 1000, 30] {
            anchor.write(&checkpoint(seq)).unwrap();
        }
        let seqs: Vec<u64> = read(&target).unwrap().iter().map(|(_, c)| c.seq).collect();
        assert_eq!(seqs, [2, 30, 1000], "name order is seq order");
        assert!(anchor.write(&checkpoint(30)).is_err(), "never replaced");

        let moved = store
            .0
            .lock()
            .remove(&object_name(&checkpoint(1000)))
            .unwrap();
        store.0.lock().insert(object_name(&checkpoint(5)), moved);
        assert!(matches!(
            read(&target),
            Err(AuditError::BadAnchor { line: 2, .. })
        ));
    }
}
