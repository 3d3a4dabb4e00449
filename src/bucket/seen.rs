//! The newest manifest generation this workstation has seen of each bucket, so that an
//! older manifest served later (a rollback) is refused. One small file of
//! `ID GENERATION` lines; an id is a hash of the bucket's location and the identity's
//! public key, so the file names no bucket, path or person.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Environment variable naming the state directory (tests, several users of one account).
pub const STATE_DIR_ENV: &str = "SMPFS_STATE_DIR";
/// The file in the state directory.
const FILE_NAME: &str = "seen-generations";

/// Errors reading or updating the state file.
#[derive(Debug, thiserror::Error)]
#[error("manifest state file {path}: {source}")]
pub struct SeenError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The state file. Updates only ever raise a generation, under an exclusive lock, and
/// replace the file atomically (written beside it, fsynced, renamed).
#[derive(Debug, Clone)]
pub struct SeenGenerations {
    path: PathBuf,
}

impl SeenGenerations {
    /// The state file in `$SMPFS_STATE_DIR`, else `/var/lib/smpfs` for root, else `smpfs`
    /// in the user's state directory ([`crate::paths::user_state_dir`]); `None` without one.
    pub fn default_location() -> Option<SeenGenerations> {
        let dir = if let Some(dir) = std::env::var_os(STATE_DIR_ENV) {
            PathBuf::from(dir)
        } else if nix::unistd::geteuid().is_root() {
            PathBuf::from("/var/lib/smpfs")
        } else {
            crate::paths::user_state_dir()?.join("smpfs")
        };
        Some(SeenGenerations::at(dir.join(FILE_NAME)))
    }

    /// The state file at `path`.
    pub fn at(path: PathBuf) -> SeenGenerations {
        SeenGenerations { path }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, source: std::io::Error) -> SeenError {
        SeenError {
            path: self.path.clone(),
            source,
        }
    }

    fn read_all(&self) -> Result<BTreeMap<String, u64>, SeenError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(self.error(e)),
        };
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let parsed = line
                    .split_once(' ')
                    .and_then(|(id, generation)| Some((id.to_owned(), generation.parse().ok()?)));
                parsed.ok_or_else(|| {
                    self.error(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("malformed line {line:?}"),
                    ))
                })
            })
            .collect()
    }

    /// The newest generation seen of bucket `id`.
    pub fn get(&self, id: &str) -> Result<Option<u64>, SeenError> {
        Ok(self.read_all()?.get(id).copied())
    }

    /// Records that generation `generation` of bucket `id` was seen (a lower one than
    /// recorded changes nothing).
    pub fn record(&self, id: &str, generation: u64) -> Result<(), SeenError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| self.error(e))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(format!(".{FILE_NAME}.lock")))
            .map_err(|e| self.error(e))?;
        let _locked = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| self.error(e.into()))?;
        let mut all = self.read_all()?;
        let current = all.entry(id.to_owned()).or_insert(0);
        if *current >= generation {
            return Ok(());
        }
        *current = generation;
        let mut partial = tempfile::Builder::new()
            .prefix(&format!(".{FILE_NAME}."))
            .tempfile_in(dir)
            .map_err(|e| self.error(e))?;
        for (id, generation) in &all {
            writeln!(partial, "{id} {generation}").map_err(|e| self.error(e))?;
        }
        partial.as_file().sync_all().map_err(|e| self.error(e))?;
        partial
            .persist(&self.path)
            .map_err(|e| self.error(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_only_rise_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let seen = SeenGenerations::at(dir.path().join("state/seen"));
        assert_eq!(seen.get("a").unwrap(), None);
        seen.record("a", 5).unwrap();
        seen.record("b", 2).unwrap();
        seen.record("a", 3).unwrap();
        let again = SeenGenerations::at(dir.path().join("state/seen"));
        assert_eq!(again.get("a").unwrap(), Some(5));
        assert_eq!(again.get("b").unwrap(), Some(2));
        let mode = std::fs::metadata(dir.path().join("state")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o700
        );
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen");
        std::fs::write(&path, "abc 7\ngarbage\n").unwrap();
        let seen = SeenGenerations::at(path);
        assert!(seen.get("abc").is_err());
        assert!(seen.record("abc", 9).is_err());
    }
}
