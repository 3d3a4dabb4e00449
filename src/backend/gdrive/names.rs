//! Local names for the entries of one Drive folder. Drive allows several entries with the
//! same name in a folder and names that are not path components (`/`, NUL, `.`, `..`,
//! empty, over 255 bytes); a mounted directory needs unique, safe names.
//!
//! Rules (stable across mounts, since they depend only on the entries themselves):
//! - a safe name used once in the folder is kept as it is;
//! - among entries sharing a safe name, the oldest (by creation time, then file id) keeps it;
//! - every other entry is named `STEM~FILEID.EXT`: the name with `/` replaced by `∕`
//!   (U+2215), NUL by `␀` (U+2400), an empty, `.` or `..` name by `_`, `__` and `___`, the
//!   stem shortened so the whole fits in 255 bytes, and the Drive file id appended;
//! - an entry whose derived name is still taken (a real entry already has that name) is
//!   left out.
//!
//! A sealed object authenticates its path, so an object shown under a derived name fails
//! that check and stays hidden: of several copies of a sealed file, only the one under the
//! name it was sealed as can be read.

use std::collections::{HashMap, HashSet};

use crate::backend::MAX_COMPONENT_LEN;

/// One entry of a Drive folder, as far as naming goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a, T: Ord> {
    /// The Drive file id (unique).
    pub id: &'a str,
    /// The name on Drive (anything).
    pub name: &'a str,
    /// When it was created; `None` sorts first.
    pub created: Option<T>,
}

/// Whether `name` can be used as a local path component as it is.
pub fn is_safe(name: &str) -> bool {
    !matches!(name, "" | "." | "..")
        && name.len() <= MAX_COMPONENT_LEN
        && !name.contains(['/', '\0'])
}

/// The local name of each entry, in the same order; `None` for entries left out.
pub fn local_names<T: Ord + Copy>(entries: &[Entry<'_, T>]) -> Vec<Option<String>> {
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        by_name.entry(entry.name).or_default().push(i);
    }
    let mut names: Vec<Option<String>> = vec![None; entries.len()];
    let mut taken: HashSet<String> = HashSet::new();
    let mut derived = Vec::new();
    for (name, mut group) in by_name {
        group.sort_by(|&a, &b| {
            let key = |i: usize| (entries[i].created, entries[i].id);
            key(a).cmp(&key(b))
        });
        let mut rest = group.as_slice();
        if is_safe(name) {
            names[group[0]] = Some(name.to_owned());
            taken.insert(name.to_owned());
            rest = &group[1..];
        }
        derived.extend_from_slice(rest);
    }
    // Derived names in a fixed order, so a clash always leaves out the same entry.
    derived.sort_by_key(|&i| entries[i].id);
    for i in derived {
        let name = derive(entries[i].name, entries[i].id);
        if taken.insert(name.clone()) {
            names[i] = Some(name);
        } else {
            tracing::warn!(
                id = entries[i].id,
                "leaving out a Drive entry: its derived name {name:?} is taken"
            );
        }
    }
    names
}

/// `STEM~ID.EXT` from any name (see the module docs).
fn derive(name: &str, id: &str) -> String {
    let cleaned: String = match name {
        "" => "_".into(),
        "." => "__".into(),
        ".." => "___".into(),
        _ => name
            .chars()
            .map(|c| match c {
                '/' => '\u{2215}',
                '\0' => '\u{2400}',
                c => c,
            })
            .collect(),
    };
    // Keep a short extension (".dcm") where tools look for it.
    let (stem, ext) = match cleaned.rfind('.') {
        Some(dot) if dot > 0 && cleaned.len() - dot <= 16 => cleaned.split_at(dot),
        _ => (cleaned.as_str(), ""),
    };
    let id: String = id.chars().take(100).collect();
    let room = MAX_COMPONENT_LEN.saturating_sub(1 + id.len() + ext.len());
    let mut cut = room.min(stem.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{id}{ext}", &stem[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(id: &'a str, name: &'a str, created: u32) -> Entry<'a, u32> {
        Entry {
            id,
            name,
            created: Some(created),
        }
    }

    #[test]
    fn unique_safe_names_are_kept() {
        let entries = [entry("a1", "CT.dcm", 1), entry("b2", "MR 1.dcm", 2)];
        assert_eq!(
            local_names(&entries),
            [Some("CT.dcm".to_owned()), Some("MR 1.dcm".to_owned())]
        );
    }

    #[test]
    fn the_oldest_duplicate_keeps_the_name_whatever_the_order() {
        let newer = entry("zz9", "scan.dcm", 5);
        let older = entry("yy8", "scan.dcm", 3);
        let expected_newer = Some("scan~zz9.dcm".to_owned());
        assert_eq!(
            local_names(&[newer, older]),
            [expected_newer.clone(), Some("scan.dcm".to_owned())]
        );
        assert_eq!(
            local_names(&[older, newer]),
            [Some("scan.dcm".to_owned()), expected_newer]
        );
        // Same creation time: the smaller id wins.
        let twin = entry("aa1", "scan.dcm", 3);
        assert_eq!(local_names(&[older, twin])[1], Some("scan.dcm".to_owned()));
    }

    #[test]
    fn hostile_names_get_safe_derived_names() {
        let long = "é".repeat(200);
        let entries = [
            entry("i1", "a/b.dcm", 1),
            entry("i2", "..", 1),
            entry("i3", ".", 1),
            entry("i4", "", 1),
            entry("i5", "nul\0byte", 1),
            entry("i6", &long, 1),
        ];
        let names: Vec<String> = local_names(&entries).into_iter().flatten().collect();
        assert_eq!(
            names[..5],
            [
                "a\u{2215}b~i1.dcm",
                "___~i2",
                "__~i3",
                "_~i4",
                "nul\u{2400}byte~i5"
            ]
        );
        assert!(names[5].len() <= 255 && names[5].ends_with("~i6"));
        for name in &names {
            assert!(is_safe(name), "{name:?}");
            crate::backend::validate_key(name).unwrap();
        }
    }

    #[test]
    fn a_derived_name_that_is_taken_is_left_out() {
        let entries = [
            entry("x1", "a.dcm", 1),
            entry("x2", "a.dcm", 2),
            entry("x3", "a~x2.dcm", 3),
        ];
        assert_eq!(
            local_names(&entries),
            [Some("a.dcm".to_owned()), None, Some("a~x2.dcm".to_owned())]
        );
    }
}
