//! Read-ahead across files. A reader that opens a directory's files one after another in
//! name order (a DICOM series loader, `cp -r`, `find | xargs cat`) has the next few files
//! opened ahead of it on the read-ahead workers: header read and checked against the
//! manifest entry, file key unwrapped, last chunk authenticated. Its own open then finds
//! the file ready. On a local disk that takes key agreement off each open; from a remote
//! store, the round trip of the first read.
//!
//! Opening ahead is not an access: nothing is audited and no byte reaches a reader until
//! its own open is recorded. A file that fails to open ahead is left alone; its own open
//! fails again and records why.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;

use super::tree::{Ino, Tree};

/// Who is reading in order, and which files are being opened ahead.
pub(super) struct FilesAhead {
    count: usize,
    /// The file opened last in each directory that had one opened.
    last_opened: Mutex<HashMap<Ino, Ino>>,
    /// Files queued or being opened ahead; not queued again meanwhile.
    pub(super) pending: Mutex<HashSet<Ino>>,
}

impl FilesAhead {
    /// Opens up to `count` files ahead of each reader (none with 0).
    pub fn new(count: usize) -> Self {
        FilesAhead {
            count,
            last_opened: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashSet::new()),
        }
    }

    /// Notes that file `ino` was opened. When the file opened before it in its directory
    /// is the entry just before it, returns the files to open ahead, now pending: those
    /// of the `count` entries after it that are not opened, nor pending already.
    pub fn opened(&self, tree: &Tree, ino: Ino) -> Vec<Ino> {
        let Some(dir) = tree.parent(ino) else {
            return Vec::new();
        };
        let before = self.last_opened.lock().insert(dir, ino);
        if self.count == 0 || before.is_none() || before != tree.sibling_before(ino) {
            return Vec::new();
        }
        let mut pending = self.pending.lock();
        tree.unopened_after(ino, self.count)
            .into_iter()
            .filter(|&file| pending.insert(file))
            .collect()
    }

    /// Notes that opening `ino` ahead is over (done, failed or dropped).
    pub fn finished(&self, ino: Ino) {
        self.pending.lock().remove(&ino);
    }
}
