//! DICOM support: reading files with the dicom-object crates ([`parse`]), the PS3.15
//! Annex E confidentiality profile ([`profile`]), keyed pseudonyms ([`pseudonym`]),
//! de-identification of one file in memory ([`deid`]), de-identifying seal runs and their
//! sealed report ([`batch`]), and printing a sealed file's header ([`inspect`]), and series as NIfTI-1 volumes ([`volume`]).
//!
//! Plaintext read here lives in locked buffers or in heap memory that the `smpfs` binary
//! wipes on free and locks into RAM ([`crate::heap`]); nothing is written to disk but
//! sealed objects, and logs name files only.

pub mod batch;
pub mod deid;
pub mod inspect;
pub mod parse;
pub mod profile;
pub mod pseudonym;
pub mod volume;
