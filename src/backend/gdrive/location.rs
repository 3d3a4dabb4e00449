//! `gdrive://…` sources: which Drive folder a bucket is.
//!
//! - `gdrive://FOLDER_ID[/PATH]`: a folder by id (`root` is My Drive), then PATH below it;
//! - `gdrive:///My Drive[/PATH]`: a folder by path from the root of My Drive;
//! - `gdrive:///Shared drives/NAME[/PATH]`: a folder by path in the shared drive NAME.
//!
//! PATH components are folder names, percent-decoded (`%2F` for a `/` inside a name,
//! `%25` for `%`); empty components are ignored, `.`, `..` and NUL are refused.

use std::fmt;
use std::str::FromStr;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use crate::backend::BackendError;

/// Where the path of a [`GDriveLocation`] starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriveRoot {
    /// A folder (or `root`, My Drive) by its Drive id.
    Folder(String),
    /// The root of My Drive.
    MyDrive,
    /// The root of the shared drive with this name.
    SharedDrive(String),
}

/// A Drive folder: a root and the folder names below it (each non-empty, not `.`/`..`,
/// without NUL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GDriveLocation {
    /// Where the path starts.
    pub root: DriveRoot,
    /// Folder names below the root.
    pub path: Vec<String>,
}

/// What is percent-encoded when a location is shown: controls, `%` and `/`, so the text
/// parses back to the same location.
const COMPONENT: &AsciiSet = &CONTROLS.add(b'%').add(b'/');

impl FromStr for GDriveLocation {
    type Err = BackendError;

    fn from_str(text: &str) -> Result<Self, BackendError> {
        let bad = |reason: &str| BackendError::BadSource {
            source_text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = text.strip_prefix("gdrive://").ok_or_else(|| {
            bad("not gdrive://FOLDER_ID[/PATH], gdrive:///My Drive/PATH or gdrive:///Shared drives/NAME/PATH")
        })?;
        let mut components = Vec::new();
        for raw in rest.split('/').skip(1).filter(|c| !c.is_empty()) {
            let name = percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| bad("a path component is not UTF-8 once percent-decoded"))?;
            if matches!(name.as_ref(), "." | "..") || name.contains('\0') {
                return Err(bad("path components may not be `.`, `..` or contain NUL"));
            }
            components.push(name.into_owned());
        }
        let first = rest.split('/').next().unwrap_or_default();
        let (root, path) = if first.is_empty() {
            let mut names = components.into_iter();
            match names.next().as_deref() {
                Some("My Drive") => (DriveRoot::MyDrive, names.collect()),
                Some("Shared drives") => {
                    let name = names
                        .next()
                        .ok_or_else(|| bad("gdrive:///Shared drives/ needs a drive name"))?;
                    (DriveRoot::SharedDrive(name), names.collect())
                }
                _ => {
                    return Err(bad(
                        "an absolute path starts with /My Drive or /Shared drives/NAME",
                    ))
                }
            }
        } else {
            if !first
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(bad("a folder id is letters, digits, `-` and `_`"));
            }
            (DriveRoot::Folder(first.to_owned()), components)
        };
        Ok(GDriveLocation { root, path })
    }
}

impl fmt::Display for GDriveLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.root {
            DriveRoot::Folder(id) => write!(f, "gdrive://{id}")?,
            DriveRoot::MyDrive => write!(f, "gdrive:///My Drive")?,
            DriveRoot::SharedDrive(name) => write!(
                f,
                "gdrive:///Shared drives/{}",
                utf8_percent_encode(name, COMPONENT)
            )?,
        }
        for name in &self.path {
            write!(f, "/{}", utf8_percent_encode(name, COMPONENT))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> GDriveLocation {
        text.parse().unwrap()
    }

    #[test]
    fn the_three_forms_parse_and_print_back() {
        let by_id = parse("gdrive://1AbC-d_9/site a/2026");
        assert_eq!(by_id.root, DriveRoot::Folder("1AbC-d_9".into()));
        assert_eq!(by_id.path, ["site a", "2026"]);
        let mine = parse("gdrive:///My Drive/scans//study%2F1/");
        assert_eq!(mine.root, DriveRoot::MyDrive);
        assert_eq!(mine.path, ["scans", "study/1"]);
        let shared = parse("gdrive:///Shared drives/Radiology%20Lab/CT");
        assert_eq!(shared.root, DriveRoot::SharedDrive("Radiology Lab".into()));
        assert_eq!(shared.path, ["CT"]);
        for text in [
            "gdrive://1AbC-d_9/site a/2026",
            "gdrive:///My Drive/scans/study%2F1",
            "gdrive:///Shared drives/Radiology Lab/50%25",
            "gdrive://root",
        ] {
            assert_eq!(parse(text).to_string(), text);
        }
    }

    #[test]
    fn hostile_or_unknown_forms_are_refused() {
        for text in [
            "s3://bucket",
            "gdrive://",
            "gdrive:///",
            "gdrive:///Other/x",
            "gdrive:///Shared drives/",
            "gdrive://id/../x",
            "gdrive://id/a/%2E%2E",
            "gdrive://id/%00",
            "gdrive://bad id",
            "gdrive://id%2F",
            "gdrive://id/%FF",
        ] {
            assert!(text.parse::<GDriveLocation>().is_err(), "{text:?} accepted");
        }
    }
}
