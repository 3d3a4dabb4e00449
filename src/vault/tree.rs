//! The directory tree built from a bucket listing: inode numbers, names, parents.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::ops::Bound;
use std::sync::Arc;

use super::volumes::Virtual;
use super::{Attr, DirEntry, SealedObject, VaultError};
use crate::backend::{validate_key, ObjectInfo};
use crate::manifest::{Entry, Manifest};

/// Entries left out of the tree or hidden from it, counted by reason with the first of
/// each, so that a bucket full of junk costs one warning rather than one per entry.
#[derive(Default)]
pub struct Skipped {
    reasons: BTreeMap<&'static str, (u64, String)>,
}

impl Skipped {
    /// Counts one entry left out for `reason`; `what` (the entry and its error) is logged
    /// at debug level, and kept for the warning if it is the first for its reason.
    pub fn note(&mut self, reason: &'static str, what: &dyn Display) {
        tracing::debug!("hiding object: {what}");
        self.reasons
            .entry(reason)
            .and_modify(|(count, _)| *count += 1)
            .or_insert_with(|| (1, what.to_string()));
    }

    /// Logs one warning for everything counted in `place`, if anything was.
    pub fn warn(&self, place: &str) {
        if self.reasons.is_empty() {
            return;
        }
        let total: u64 = self.reasons.values().map(|(count, _)| count).sum();
        let reasons = self
            .reasons
            .iter()
            .map(|(reason, (count, first))| format!("{count} {reason} (first: {first})"))
            .collect::<Vec<_>>()
            .join("; ");
        let plural = if total == 1 { "" } else { "s" };
        tracing::warn!(
            "hiding {total} object{plural} in {place}: {reasons}; SMPFS_LOG=debug lists each"
        );
    }
}

/// An inode number; the root is [`ROOT_INO`].
pub type Ino = u64;
/// The root directory's inode number (FUSE's convention).
pub const ROOT_INO: Ino = 1;

/// What an inode is.
enum NodeKind {
    /// A directory; `resolved` once its files' headers were checked.
    Dir {
        children: BTreeMap<String, Ino>,
        resolved: bool,
    },
    /// A sealed object of `size` bytes; `object` is set once its header was opened.
    /// `checked_size` is its authenticated plaintext size from the last time it was
    /// opened, kept over a purge. `bound` is its entry in a v2 bucket's manifest, which
    /// already authenticates its size: such a file is shown without opening it, and its
    /// header is checked against the entry when it is opened.
    File {
        key: String,
        size: u64,
        object: Option<Arc<SealedObject>>,
        checked_size: Option<u64>,
        bound: Option<Entry>,
    },
    /// A file made by the vault (a `.volumes` entry), not stored in the bucket.
    Virtual(Arc<Virtual>),
}

struct Node {
    parent: Ino,
    /// The name in its parent directory (empty for the root).
    name: String,
    kind: NodeKind,
}

/// Inodes indexed by number (`nodes[ino - 1]`); hidden files stay as tombstones.
pub struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// Builds the tree of a v1 bucket from its listing, less recipient lists; keys that
    /// are hostile or clash with a directory are skipped, with one warning that counts them
    /// (each is logged at debug level).
    pub fn build(objects: Vec<ObjectInfo>) -> Tree {
        let mut tree = Tree::empty();
        let mut objects = objects;
        // Directories first where a name is both (`a` and `a/b`): the longer keys win.
        objects.sort_by_key(|o| std::cmp::Reverse(o.key.matches('/').count()));
        let mut skipped = Skipped::default();
        for object in objects {
            if crate::bucket::policy::is_policy_key(&object.key) {
                continue;
            }
            if let Err(e) = validate_key(&object.key) {
                skipped.note("a name that is not a safe path", &e);
                continue;
            }
            if let Err(reason) = tree.insert(&object.key, &object.key, object.size, None) {
                skipped.note(reason, &format_args!("{:?}: {reason}", object.key));
            }
        }
        skipped.warn("the bucket's listing");
        tree
    }

    /// Builds the tree of a v2 bucket from its manifest: every file bound to its entry.
    /// Paths that clash with a directory are skipped, with one warning that counts them.
    pub fn from_manifest(manifest: &Manifest) -> Tree {
        let mut tree = Tree::empty();
        let mut skipped = Skipped::default();
        // Longer paths first, as in `build`: a directory wins over a file of its name.
        let mut entries: Vec<(&String, &Entry)> = manifest.entries.iter().collect();
        entries.sort_by_key(|(path, _)| std::cmp::Reverse(path.matches('/').count()));
        for (path, entry) in entries {
            if let Err(reason) =
                tree.insert(path, &entry.object_key(), entry.object_len, Some(*entry))
            {
                skipped.note(reason, &format_args!("{path:?}: {reason}"));
            }
        }
        skipped.warn("the bucket's manifest");
        tree
    }

    fn empty() -> Tree {
        Tree {
            nodes: vec![Node {
                parent: ROOT_INO,
                name: String::new(),
                kind: NodeKind::Dir {
                    children: BTreeMap::new(),
                    resolved: false,
                },
            }],
        }
    }

    /// Adds file `path` (object `key` of `size` bytes), creating its directories.
    fn insert(
        &mut self,
        path: &str,
        key: &str,
        size: u64,
        bound: Option<Entry>,
    ) -> Result<Ino, &'static str> {
        let mut components: Vec<&str> = path.split('/').collect();
        let file_name = components.pop().expect("validated key is non-empty");
        let mut dir = ROOT_INO;
        for component in components {
            dir = match self.child(dir, component) {
                Some(ino)
                    if matches!(self.node(ino).map(|n| &n.kind), Some(NodeKind::Dir { .. })) =>
                {
                    ino
                }
                Some(_) => return Err("a path component is also an object"),
                None => self.add(
                    dir,
                    component,
                    NodeKind::Dir {
                        children: BTreeMap::new(),
                        resolved: false,
                    },
                ),
            };
        }
        if self.child(dir, file_name).is_some() {
            return Err("name is also a directory");
        }
        Ok(self.add(
            dir,
            file_name,
            NodeKind::File {
                key: key.to_owned(),
                size,
                object: None,
                checked_size: None,
                bound,
            },
        ))
    }

    /// The inode at `path` (`/`-separated, from the root).
    fn find(&self, path: &str) -> Option<Ino> {
        path.split('/')
            .try_fold(ROOT_INO, |dir, name| self.child(dir, name))
    }

    /// Moves the tree from manifest `old` to manifest `new`: removed and replaced files
    /// leave their directories (an open handle keeps its object), added and replaced ones
    /// get new inodes, and directories left empty go too. Returns each name that changed,
    /// with its directory, for the kernel to forget.
    pub fn apply(&mut self, old: &Manifest, new: &Manifest) -> Vec<(Ino, String)> {
        let mut changed = Vec::new();
        for (path, entry) in &old.entries {
            if new.entries.get(path) == Some(entry) {
                continue;
            }
            let Some(mut ino) = self.find(path) else {
                continue;
            };
            while let Some(node) = self.node(ino) {
                let (parent, name) = (node.parent, node.name.clone());
                self.hide(ino);
                changed.push((parent, name));
                let emptied =
                    parent != ROOT_INO && self.children(parent).is_ok_and(|c| c.is_empty());
                if !emptied {
                    break;
                }
                ino = parent;
            }
        }
        let mut skipped = Skipped::default();
        for (path, entry) in &new.entries {
            if old.entries.get(path) == Some(entry) {
                continue;
            }
            match self.insert(path, &entry.object_key(), entry.object_len, Some(*entry)) {
                Ok(ino) => {
                    if let Some(node) = self.node(ino) {
                        changed.push((node.parent, node.name.clone()));
                    }
                }
                Err(reason) => skipped.note(reason, &format_args!("{path:?}: {reason}")),
            }
        }
        skipped.warn("the bucket's new manifest");
        changed
    }

    fn add(&mut self, parent: Ino, name: &str, kind: NodeKind) -> Ino {
        self.nodes.push(Node {
            parent,
            name: name.to_owned(),
            kind,
        });
        let ino = self.nodes.len() as Ino;
        if let Some(Node {
            kind: NodeKind::Dir { children, .. },
            ..
        }) = self.node_mut(parent)
        {
            children.insert(name.to_owned(), ino);
        }
        ino
    }

    fn node(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get((ino as usize).checked_sub(1)?)
    }

    fn node_mut(&mut self, ino: Ino) -> Option<&mut Node> {
        self.nodes.get_mut((ino as usize).checked_sub(1)?)
    }

    fn children(&self, ino: Ino) -> Result<&BTreeMap<String, Ino>, VaultError> {
        match &self.node(ino).ok_or(VaultError::NotFound)?.kind {
            NodeKind::Dir { children, .. } => Ok(children),
            NodeKind::File { .. } | NodeKind::Virtual(_) => Err(VaultError::NotADirectory),
        }
    }

    /// The inode of `name` in directory `dir`.
    pub fn child(&self, dir: Ino, name: &str) -> Option<Ino> {
        self.children(dir).ok()?.get(name).copied()
    }

    /// The `/`-separated path of `ino` from the root (empty for the root).
    pub fn path_of(&self, mut ino: Ino) -> String {
        let mut names = Vec::new();
        while let Some(node) = self.node(ino).filter(|_| ino != ROOT_INO) {
            names.push(node.name.as_str());
            ino = node.parent;
        }
        names.reverse();
        names.join("/")
    }

    /// The parent of `ino`.
    pub fn parent(&self, ino: Ino) -> Option<Ino> {
        self.node(ino).map(|n| n.parent)
    }

    /// The entry just before `ino` in its directory, by name.
    pub fn sibling_before(&self, ino: Ino) -> Option<Ino> {
        let node = self.node(ino)?;
        let children = self.children(node.parent).ok()?;
        children
            .range::<str, _>((Bound::Unbounded, Bound::Excluded(node.name.as_str())))
            .next_back()
            .map(|(_, &sibling)| sibling)
    }

    /// Those of the `count` entries after `ino` in its directory (by name) that are v2
    /// files whose headers were not opened yet.
    pub fn unopened_after(&self, ino: Ino, count: usize) -> Vec<Ino> {
        let Some(node) = self.node(ino) else {
            return Vec::new();
        };
        let Ok(children) = self.children(node.parent) else {
            return Vec::new();
        };
        children
            .range::<str, _>((Bound::Excluded(node.name.as_str()), Bound::Unbounded))
            .take(count)
            .map(|(_, &sibling)| sibling)
            .filter(|&sibling| {
                matches!(
                    self.node(sibling).map(|n| &n.kind),
                    Some(NodeKind::File {
                        object: None,
                        bound: Some(_),
                        ..
                    })
                )
            })
            .collect()
    }

    /// Attributes of a directory or of a resolved file.
    pub fn attr(&self, ino: Ino) -> Option<Attr> {
        match &self.node(ino)?.kind {
            NodeKind::Dir { .. } => Some(Attr {
                ino,
                is_dir: true,
                size: 0,
            }),
            NodeKind::File {
                object: Some(object),
                ..
            } => Some(Attr {
                ino,
                is_dir: false,
                size: object.size(),
            }),
            NodeKind::File {
                bound: Some(entry), ..
            } => Some(Attr {
                ino,
                is_dir: false,
                size: entry.size,
            }),
            NodeKind::File { object: None, .. } => None,
            NodeKind::Virtual(entry) => Some(Attr {
                ino,
                is_dir: false,
                size: entry.size(),
            }),
        }
    }

    /// The visible entries of directory `ino` (subdirectories and resolved files) in name
    /// order, after child `after` (from the start without it; it may be hidden since), at
    /// most `limit` of them. Costs O(log n + limit), so paging through a directory is linear.
    pub fn entries(
        &self,
        ino: Ino,
        after: Option<Ino>,
        limit: usize,
    ) -> Result<Vec<DirEntry>, VaultError> {
        let children = self.children(ino)?;
        let start = match after.and_then(|child| self.node(child)) {
            Some(node) => Bound::Excluded(node.name.as_str()),
            None => Bound::Unbounded,
        };
        Ok(children
            .range::<str, _>((start, Bound::Unbounded))
            .filter_map(|(name, &child)| {
                self.attr(child).map(|attr| DirEntry {
                    name: name.clone(),
                    attr,
                })
            })
            .take(limit)
            .collect())
    }

    /// Files of directory `ino` whose headers were not checked yet: (ino, key, size).
    pub fn unresolved_files(&self, ino: Ino) -> Result<Vec<(Ino, String, u64)>, VaultError> {
        let children = self.children(ino)?;
        if let Some(Node {
            kind: NodeKind::Dir { resolved: true, .. },
            ..
        }) = self.node(ino)
        {
            return Ok(Vec::new());
        }
        Ok(children
            .values()
            .filter_map(|&child| match &self.node(child)?.kind {
                NodeKind::File {
                    key,
                    size,
                    object: None,
                    bound: None,
                    ..
                } => Some((child, key.clone(), *size)),
                _ => None,
            })
            .collect())
    }

    /// The opened object of file `ino`.
    pub fn object(&self, ino: Ino) -> Result<Arc<SealedObject>, VaultError> {
        match &self.node(ino).ok_or(VaultError::NotFound)?.kind {
            NodeKind::File {
                object: Some(object),
                ..
            } => Ok(Arc::clone(object)),
            NodeKind::File { object: None, .. } | NodeKind::Virtual(_) => Err(VaultError::NotFound),
            NodeKind::Dir { .. } => Err(VaultError::IsADirectory),
        }
    }

    /// Records the opened object of file `ino`.
    pub fn set_object(&mut self, ino: Ino, opened: Arc<SealedObject>) {
        if let Some(Node {
            kind:
                NodeKind::File {
                    object,
                    checked_size,
                    ..
                },
            ..
        }) = self.node_mut(ino)
        {
            *checked_size = Some(opened.size());
            object.get_or_insert(opened);
        }
    }

    /// The attributes file `ino` had when it was last opened, while its object is dropped
    /// (the mount is locked): the kernel may ask for them again, and they hold no key.
    pub fn last_checked_attr(&self, ino: Ino) -> Option<Attr> {
        match &self.node(ino)?.kind {
            NodeKind::File {
                checked_size: Some(size),
                ..
            } => Some(Attr {
                ino,
                is_dir: false,
                size: *size,
            }),
            _ => None,
        }
    }

    /// Removes file `ino` from its directory (it stays a tombstone in the table).
    pub fn hide(&mut self, ino: Ino) {
        let Some(Node { parent, name, .. }) = self.node(ino) else {
            return;
        };
        let (parent, name) = (*parent, name.clone());
        if let Some(Node {
            kind: NodeKind::Dir { children, .. },
            ..
        }) = self.node_mut(parent)
        {
            if children.get(&name) == Some(&ino) {
                children.remove(&name);
            }
        }
    }

    /// Marks directory `ino` as resolved.
    pub fn mark_resolved(&mut self, ino: Ino) {
        if let Some(Node {
            kind: NodeKind::Dir { resolved, .. },
            ..
        }) = self.node_mut(ino)
        {
            *resolved = true;
        }
    }

    /// Drops every opened object (and with it every file key), as at purge, and marks
    /// every directory unresolved so that files are checked again after an unlock; returns
    /// how many objects were dropped.
    pub fn drop_objects(&mut self) -> usize {
        let mut dropped = 0;
        for node in &mut self.nodes {
            match &mut node.kind {
                NodeKind::File { object, .. } => dropped += usize::from(object.take().is_some()),
                NodeKind::Dir { resolved, .. } => *resolved = false,
                NodeKind::Virtual(_) => {}
            }
        }
        dropped
    }

    /// Whether `ino` is a v1 file whose header has not been checked (yet, or since a
    /// purge). A v2 file's header is checked when it is opened.
    pub fn is_unresolved_file(&self, ino: Ino) -> bool {
        matches!(
            self.node(ino).map(|n| &n.kind),
            Some(NodeKind::File {
                object: None,
                bound: None,
                ..
            })
        )
    }

    /// The object key, object size and manifest entry of v2 file `ino`.
    pub fn bound(&self, ino: Ino) -> Option<(String, u64, Entry)> {
        match &self.node(ino)?.kind {
            NodeKind::File {
                key,
                size,
                bound: Some(entry),
                ..
            } => Some((key.clone(), *size, *entry)),
            _ => None,
        }
    }

    /// The path audit records name for file `ino`: a v1 file's key (its path), a v2
    /// file's path in the manifest, a volume's path.
    pub fn audit_path(&self, ino: Ino) -> Option<String> {
        match &self.node(ino)?.kind {
            NodeKind::File { bound: Some(_), .. } => Some(self.path_of(ino)),
            NodeKind::File { key, .. } => Some(key.clone()),
            NodeKind::Virtual(entry) => Some(entry.path().to_owned()),
            NodeKind::Dir { .. } => None,
        }
    }

    /// Adds an empty directory `name` to `parent`, unless the name is taken.
    pub fn add_dir(&mut self, parent: Ino, name: &str) -> Option<Ino> {
        if self.child(parent, name).is_some() {
            return None;
        }
        let kind = NodeKind::Dir {
            children: BTreeMap::new(),
            resolved: true,
        };
        Some(self.add(parent, name, kind))
    }

    /// Adds virtual file `name` to directory `parent` (replacing nothing: a taken name is
    /// skipped).
    pub fn add_virtual(&mut self, parent: Ino, name: &str, entry: Arc<Virtual>) {
        if self.child(parent, name).is_none() {
            self.add(parent, name, NodeKind::Virtual(entry));
        }
    }

    /// The virtual file `ino`, if it is one.
    pub fn virtual_file(&self, ino: Ino) -> Option<Arc<Virtual>> {
        match &self.node(ino)?.kind {
            NodeKind::Virtual(entry) => Some(Arc::clone(entry)),
            _ => None,
        }
    }

    /// Every directory still reachable from the root, but `except`.
    pub fn dirs(&self, except: Ino) -> Vec<Ino> {
        let mut dirs = vec![ROOT_INO];
        let mut next = 0;
        while let Some(&dir) = dirs.get(next) {
            next += 1;
            let children = self
                .children(dir)
                .map(|c| c.values().copied().collect::<Vec<_>>());
            for child in children.unwrap_or_default() {
                if child != except
                    && matches!(
                        self.node(child).map(|n| &n.kind),
                        Some(NodeKind::Dir { .. })
                    )
                {
                    dirs.push(child);
                }
            }
        }
        dirs
    }

    /// Every entry of every directory reachable from the root, with its kind.
    fn reachable(&self) -> impl Iterator<Item = (Ino, &NodeKind)> + '_ {
        self.dirs(0)
            .into_iter()
            .flat_map(|dir| {
                self.children(dir)
                    .map(|c| c.values().copied().collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .filter_map(|ino| Some((ino, &self.node(ino)?.kind)))
    }

    /// Bytes and count of the visible files: plaintext sizes where headers were checked,
    /// listed object sizes elsewhere.
    pub fn usage(&self) -> (u64, u64) {
        self.reachable()
            .filter_map(|(_, kind)| match kind {
                NodeKind::File {
                    object: Some(object),
                    ..
                } => Some(object.size()),
                NodeKind::File {
                    bound: Some(entry), ..
                } => Some(entry.size),
                NodeKind::File { size, .. } => Some(*size),
                _ => None,
            })
            .fold((0, 0), |(bytes, files), size| (bytes + size, files + 1))
    }

    /// Every visible file whose header was checked, with its opened object.
    pub fn opened_files(&self) -> Vec<(Ino, Arc<SealedObject>)> {
        self.reachable()
            .filter_map(|(ino, kind)| match kind {
                NodeKind::File {
                    object: Some(object),
                    ..
                } => Some((ino, Arc::clone(object))),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(files: &[(&str, u8)]) -> Manifest {
        let mut manifest = Manifest::default();
        for (path, n) in files {
            let entry = Entry {
                object_id: [*n; 16],
                file_id: [*n; 16],
                header_hash: [*n; 32],
                size: u64::from(*n),
                object_len: 200,
                mtime: (0, 0),
                padded: false,
                detached: None,
            };
            manifest.entries.insert((*path).to_owned(), entry);
        }
        manifest
    }

    fn names(tree: &Tree, dir: Ino) -> Vec<String> {
        tree.entries(dir, None, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect()
    }

    #[test]
    fn a_manifest_tree_shows_entries_without_opening_them() {
        let old = manifest(&[("a/1", 1), ("a/2", 2), ("b/c/3", 3)]);
        let tree = Tree::from_manifest(&old);
        assert_eq!(names(&tree, ROOT_INO), ["a", "b"]);
        let one = tree.find("a/1").unwrap();
        assert_eq!(tree.attr(one).unwrap().size, 1);
        assert!(!tree.is_unresolved_file(one));
        assert_eq!(tree.bound(one).unwrap().0, old.entries["a/1"].object_key());
        assert_eq!(tree.audit_path(one).unwrap(), "a/1");
    }

    #[test]
    fn applying_a_newer_manifest_adds_removes_and_replaces() {
        let old = manifest(&[("a/1", 1), ("a/2", 2), ("b/c/3", 3)]);
        let new = manifest(&[("a/1", 1), ("a/2", 9), ("d", 4)]);
        let mut tree = Tree::from_manifest(&old);
        let (one, two) = (tree.find("a/1").unwrap(), tree.find("a/2").unwrap());
        let mut changed = tree.apply(&old, &new);
        changed.sort();
        // b/c/3 went, and with it the directories it left empty; a/2 was replaced; d came.
        assert_eq!(names(&tree, ROOT_INO), ["a", "d"]);
        assert_eq!(
            tree.find("a/1"),
            Some(one),
            "an unchanged file keeps its inode"
        );
        let replaced = tree.find("a/2").unwrap();
        assert_ne!(replaced, two, "a replaced file gets a new inode");
        assert_eq!(tree.attr(replaced).unwrap().size, 9);
        assert!(tree.find("b").is_none() && tree.find("b/c").is_none());
        let changed_names: Vec<&str> = changed.iter().map(|(_, n)| n.as_str()).collect();
        for name in ["2", "3", "c", "b", "d"] {
            assert!(
                changed_names.contains(&name),
                "{name} not reported: {changed_names:?}"
            );
        }
        assert!(!changed_names.contains(&"1"));
    }
}
