//! smpfs: a read-only FUSE filesystem over a bucket of client-side sealed files.
//!
//! The modules, in the order the data flows (arrows point one way):
//! `keys` → `format` → `backend` → `cache` → `gpu` → `vault` → `fs`; `seal` writes through
//! `format` and `backend`; `harden` runs first in every process that touches keys;
//! `options` parses mount options; `workers` runs blocking background jobs.

pub mod access;
pub mod audit;
pub mod backend;
pub mod bucket;
pub mod cache;
pub mod control;
pub mod custody;
pub mod dicom;
pub mod diskcache;
pub mod format;
pub mod fs;
pub mod gpu;
pub mod harden;
pub mod heap;
pub mod keys;
pub mod manifest;
pub mod options;
pub mod paths;
pub mod reseal;
pub mod seal;
pub mod shred;
pub mod vault;
pub mod verify;
mod workers;
