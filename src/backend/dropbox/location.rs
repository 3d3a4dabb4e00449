//! `dropbox:///PATH` sources: a folder by its path from the top of the Dropbox the app
//! sees (the app folder for an "App folder" app, the whole Dropbox for "Full Dropbox").
//!
//! PATH components are folder names, percent-decoded (`%25` for `%`); empty components are
//! ignored, `.`, `..` and NUL are refused. `dropbox:///` is the top itself.

use std::fmt;
use std::str::FromStr;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use crate::backend::BackendError;

/// A Dropbox folder: the folder names from the top (each non-empty, not `.`/`..`, without
/// NUL or `/`). Dropbox matches names without regard to case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropboxLocation {
    /// Folder names below the top.
    pub path: Vec<String>,
}

/// What is percent-encoded when a location is shown, so the text parses back the same.
const COMPONENT: &AsciiSet = &CONTROLS.add(b'%');

impl DropboxLocation {
    /// The API path of the folder: `""` for the top, else `/A/B`.
    pub fn api_path(&self) -> String {
        self.path.iter().map(|c| format!("/{c}")).collect()
    }

    /// The API path of object `key` below the folder: `/A/B/KEY`.
    pub fn key_path(&self, key: &str) -> String {
        format!("{}/{key}", self.api_path())
    }
}

impl FromStr for DropboxLocation {
    type Err = BackendError;

    fn from_str(text: &str) -> Result<Self, BackendError> {
        let bad = |reason: &str| BackendError::BadSource {
            source_text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = text
            .strip_prefix("dropbox://")
            .ok_or_else(|| bad("not dropbox:///PATH"))?;
        let Some(rest) = rest.strip_prefix('/') else {
            return Err(bad(
                "a Dropbox source is dropbox:///PATH (three slashes: the path starts at the \
                 top of the Dropbox or the app folder)",
            ));
        };
        let mut path = Vec::new();
        for raw in rest.split('/').filter(|c| !c.is_empty()) {
            let name = percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| bad("a path component is not UTF-8 once percent-decoded"))?;
            if matches!(name.as_ref(), "." | "..") || name.contains('\0') || name.contains('/') {
                return Err(bad("path components may not be `.`, `..` or contain NUL"));
            }
            path.push(name.into_owned());
        }
        Ok(DropboxLocation { path })
    }
}

impl fmt::Display for DropboxLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dropbox://")?;
        if self.path.is_empty() {
            return write!(f, "/");
        }
        for c in &self.path {
            write!(f, "/{}", utf8_percent_encode(c, COMPONENT))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_show_back() {
        let l: DropboxLocation = "dropbox:///Scans/site a//2026/".parse().unwrap();
        assert_eq!(l.path, ["Scans", "site a", "2026"]);
        assert_eq!(l.api_path(), "/Scans/site a/2026");
        assert_eq!(l.key_path("x/1.dcm"), "/Scans/site a/2026/x/1.dcm");
        assert_eq!(l.to_string(), "dropbox:///Scans/site a/2026");
        let top: DropboxLocation = "dropbox:///".parse().unwrap();
        assert_eq!(
            (top.api_path(), top.to_string()),
            ("".into(), "dropbox:///".into())
        );
        let pct: DropboxLocation = "dropbox:///a%25b".parse().unwrap();
        assert_eq!(pct.path, ["a%b"]);
        assert_eq!(pct.to_string().parse::<DropboxLocation>().unwrap(), pct);
        for bad in [
            "dropbox://x/y",
            "dropbox:///a/../b",
            "dropbox:///a%00",
            "s3://x",
        ] {
            assert!(bad.parse::<DropboxLocation>().is_err(), "{bad}");
        }
    }
}
