//! The recipient list of a v1 bucket. A zero-knowledge (v2) bucket keeps its list in the
//! manifest; a v1 bucket keeps it in one small object, [`POLICY_KEY`], sealed like any file
//! to the very recipients it lists and bound to its location, so the store can neither
//! read nor alter it unnoticed. `seal` uses it when no `--to` is given, and `recipients`
//! prints it. It is not a file of the tree: mounts and `migrate` skip it, and no file may
//! be sealed under its name.
//!
//! A v1 bucket has no rollback protection (docs/SECURITY.md), and neither has its list:
//! the store could serve an older copy, which only ever names recipients the bucket had.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::{BucketError, ManifestStore};
use crate::backend::Backend;
use crate::format;
use crate::keys::{Identity, Recipient};
use crate::seal::{self, NewObject, SealOptions};

/// The object that holds a v1 bucket's recipient list, at the bucket's root.
pub const POLICY_KEY: &str = ".smpfs-recipients";

/// Whether `key` is a recipient list: the bucket's own, or, seen from a mount of a parent
/// prefix, that of a tree sealed below it. The name is reserved at every depth.
pub fn is_policy_key(key: &str) -> bool {
    key.rsplit('/').next() == Some(POLICY_KEY)
}

/// First line of the plaintext; one `smpfs1…` recipient per line follows.
const MAGIC: &str = "smpfs-recipients 1";

/// The list, if the bucket has one. Fails if it is sealed to others only (this identity
/// is not on it), damaged, moved, or not a list.
pub fn read(
    store: &ManifestStore,
    identity: &Identity,
) -> Result<Option<Vec<Recipient>>, BucketError> {
    if store.backend().stat(POLICY_KEY)?.is_none() {
        return Ok(None);
    }
    let plaintext = store.open_object(identity, POLICY_KEY)?;
    let text = std::str::from_utf8(&plaintext).map_err(|_| malformed())?;
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(malformed());
    }
    let recipients: Vec<Recipient> = lines
        .map(|line| line.parse().map_err(|_| malformed()))
        .collect::<Result<_, _>>()?;
    if recipients.is_empty() {
        return Err(malformed());
    }
    Ok(Some(recipients))
}

/// Seals `recipients` as the bucket's list, replacing any earlier one atomically.
pub fn write(backend: &Arc<dyn Backend>, recipients: &[Recipient]) -> Result<(), BucketError> {
    let mut text = Zeroizing::new(format!("{MAGIC}\n"));
    for recipient in recipients {
        text.push_str(&recipient.to_string());
        text.push('\n');
    }
    let options = SealOptions {
        recipients: recipients.to_vec(),
        chunk_log2: format::DEFAULT_CHUNK_LOG2,
        overwrite: true,
    };
    let object = NewObject {
        key: POLICY_KEY,
        source: std::path::Path::new(POLICY_KEY),
        size: text.len() as u64,
        sealed_len: text.len() as u64,
        overwrite: true,
    };
    seal::write_object(backend, &object, &mut text.as_bytes(), &options, &|_| {})?;
    Ok(())
}

fn malformed() -> BucketError {
    BucketError::Object(format!(
        "{POLICY_KEY}: not a recipient list (damaged, or written by a newer smpfs)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;

    fn bucket() -> (tempfile::TempDir, ManifestStore) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("b");
        std::fs::create_dir(&root).unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::open(&root).unwrap());
        (dir, ManifestStore::new(backend, None))
    }

    #[test]
    fn the_name_is_reserved_at_every_depth() {
        assert!(is_policy_key(POLICY_KEY));
        assert!(is_policy_key("site/p1/.smpfs-recipients"));
        assert!(!is_policy_key("site/p1/.smpfs-recipients.txt"));
        assert!(!is_policy_key("x.smpfs-recipients"));
    }

    #[test]
    fn the_list_round_trips_for_its_recipients_only() {
        let (_dir, store) = bucket();
        let (a, b, c) = (
            Identity::from([1; 32]),
            Identity::from([2; 32]),
            Identity::from([3; 32]),
        );
        assert_eq!(read(&store, &a).unwrap(), None);
        write(store.backend(), &[a.recipient(), b.recipient()]).unwrap();
        let expected = vec![a.recipient(), b.recipient()];
        assert_eq!(read(&store, &a).unwrap(), Some(expected.clone()));
        assert_eq!(read(&store, &b).unwrap(), Some(expected));
        assert!(read(&store, &c).is_err(), "a stranger opened the list");
        write(store.backend(), &[c.recipient()]).unwrap();
        assert_eq!(read(&store, &c).unwrap(), Some(vec![c.recipient()]));
    }
}
