//! De-identification of one DICOM file in memory: parse, apply a [`Profile`] to every
//! attribute (recursing into sequence items), fix the file meta group, add the "identity
//! removed" attributes, and write the result into a buffer that is zeroized on drop.
//!
//! Invariants: no attribute the profile removes, empties or replaces survives anywhere in
//! the output (top level or nested); UIDs and Patient IDs are replaced only through
//! [`PseudonymKeys`], so equal inputs map to equal outputs under one key; nothing is written
//! to disk and nothing read is logged.

use std::io::Read;

use dicom_core::dictionary::{DataDictionary, VirtualVr};
use dicom_core::header::Header;
use dicom_core::smallvec::smallvec;
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::{InMemDicomObject, StandardDataDictionary};
use serde::Serialize;
use zeroize::Zeroizing;

use super::parse::{parse_limit, read_file, ParseError};
use super::profile::{Action, Decision, Profile, Reason, TABLE_EDITION};
use super::pseudonym::PseudonymKeys;

type Object = InMemDicomObject<StandardDataDictionary>;
type Element = InMemElement<StandardDataDictionary>;
type ElementValue = Value<Object, Vec<u8>>;

/// Why a file was not de-identified.
#[derive(Debug, thiserror::Error)]
pub enum DeidError {
    /// Not a DICOM Part 10 file that dicom-object can parse (the parser's message).
    #[error("not a DICOM file: {0}")]
    NotDicom(String),
    /// Burned In Annotation (0028,0301) is YES: the pixels may show identifying text.
    #[error("Burned In Annotation (0028,0301) is YES: the pixels may show identifying text")]
    BurnedIn,
    /// The de-identified object could not be encoded.
    #[error("cannot encode the de-identified file: {0}")]
    Encode(String),
}

/// What was done to one attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// The attribute is gone.
    Removed,
    /// The attribute is present with a zero-length value (a sequence with no items).
    Emptied,
    /// The value was replaced by a fixed dummy value.
    Dummy,
    /// Every UID in the value was replaced by its keyed mapping.
    UidMapped,
    /// The value was replaced by the keyed patient pseudonym.
    Pseudonymized,
    /// The attribute was added (de-identification method and flags).
    Added,
}

/// One change to one attribute; never holds a value, old or new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Where: `(0010,0010)`, or `(0008,1140)[0](0008,1155)` inside sequence items.
    pub tag: String,
    /// The attribute's name (from Table E.1-1 or the data dictionary).
    pub name: String,
    /// What was done.
    pub action: ChangeKind,
    /// Why: `E.1-1 X/Z/D`, `private`, `group length`, `meta`, `PS3.15 E.1.1`.
    pub rule: String,
}

/// A de-identified file: the encoded bytes (zeroized on drop) and every change made.
pub struct Deidentified {
    /// The complete DICOM file (preamble, meta group, data set).
    pub data: Zeroizing<Vec<u8>>,
    /// Every attribute changed, removed or added, in tag order.
    pub changes: Vec<Change>,
}

/// Applies one profile under one key.
pub struct Deidentifier<'k> {
    profile: Profile,
    keys: &'k PseudonymKeys,
}

/// Code Value, Coding Scheme Designator and Code Meaning of the Basic Profile (CID 7050).
/// The Implementation Version Name written in place of one that is not a valid SH.
const IMPLEMENTATION_VERSION_NAME: &str = "SMPFS";

const BASIC_PROFILE_CODE: (&str, &str, &str) =
    ("113100", "DCM", "Basic Application Confidentiality Profile");

impl<'k> Deidentifier<'k> {
    /// A de-identifier for `profile` whose keyed mappings come from `keys`.
    pub fn new(profile: Profile, keys: &'k PseudonymKeys) -> Self {
        Deidentifier { profile, keys }
    }

    /// Parses a DICOM file from `input` (`size_hint`: its length, to size the output) and
    /// returns it de-identified. Files with Burned In Annotation = YES are refused.
    pub fn deidentify(
        &self,
        input: impl Read,
        size_hint: usize,
    ) -> Result<Deidentified, DeidError> {
        let file = crate::heap::with_allocation_limit(parse_limit(size_hint), || {
            read_file(input, size_hint as u64)
        })
        .map_err(|ParseError::NotDicom(why)| DeidError::NotDicom(why))?;
        if file
            .get(tags::BURNED_IN_ANNOTATION)
            .and_then(|e| e.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("YES"))
        {
            return Err(DeidError::BurnedIn);
        }
        let root_pseudonym = file
            .get(tags::PATIENT_ID)
            .and_then(|e| first_string(e.value()))
            .map(|id| self.keys.pseudonym(&id))
            .unwrap_or_default();
        let mut meta = file.meta().clone();
        if let Some(sop) = file
            .get(tags::SOP_INSTANCE_UID)
            .and_then(|e| first_string(e.value()))
        {
            // The meta group must name the data set's instance, whatever the input said.
            meta.media_storage_sop_instance_uid = sop;
        }
        let mut changes = Vec::new();
        self.clean_meta(&mut meta, &mut changes);
        let mut object = self.clean(file.into_inner(), "", &root_pseudonym, &mut changes);
        self.mark_deidentified(&mut object, &mut changes);
        let output = object.with_exact_meta(meta);
        let mut data = Zeroizing::new(Vec::with_capacity(size_hint + 4096));
        output
            .write_all(&mut *data)
            .map_err(|e| DeidError::Encode(e.to_string()))?;
        Ok(Deidentified { data, changes })
    }

    /// Maps the Media Storage SOP Instance UID (already set to the data set's SOP Instance
    /// UID where there is one), and drops the AE titles and private information.
    fn clean_meta(&self, meta: &mut dicom_object::FileMetaTable, changes: &mut Vec<Change>) {
        let mut note = |tag: Tag, name: &str, action| {
            changes.push(Change {
                tag: tag_text(tag),
                name: name.to_owned(),
                action,
                rule: "meta".to_owned(),
            })
        };
        meta.media_storage_sop_instance_uid =
            self.keys.map_uid(&meta.media_storage_sop_instance_uid);
        note(
            tags::MEDIA_STORAGE_SOP_INSTANCE_UID,
            "Media Storage SOP Instance UID",
            ChangeKind::UidMapped,
        );
        let optional: [(&mut Option<String>, Tag, &str); 4] = [
            (
                &mut meta.source_application_entity_title,
                tags::SOURCE_APPLICATION_ENTITY_TITLE,
                "Source Application Entity Title",
            ),
            (
                &mut meta.sending_application_entity_title,
                tags::SENDING_APPLICATION_ENTITY_TITLE,
                "Sending Application Entity Title",
            ),
            (
                &mut meta.receiving_application_entity_title,
                tags::RECEIVING_APPLICATION_ENTITY_TITLE,
                "Receiving Application Entity Title",
            ),
            (
                &mut meta.private_information_creator_uid,
                tags::PRIVATE_INFORMATION_CREATOR_UID,
                "Private Information Creator UID",
            ),
        ];
        for (field, tag, name) in optional {
            if field.take().is_some() {
                note(tag, name, ChangeKind::Removed);
            }
        }
        if meta.private_information.take().is_some() {
            note(
                tags::PRIVATE_INFORMATION,
                "Private Information",
                ChangeKind::Removed,
            );
        }
        // A name that is not a valid SH (16 printable ASCII characters) would be written
        // with a wrong group length, and the output could not be read back: the file is
        // written by smpfs now, so it names smpfs.
        let valid =
            |name: &str| name.len() <= 16 && name.bytes().all(|b| (0x20..0x7F).contains(&b));
        if !meta
            .implementation_version_name
            .as_deref()
            .is_none_or(valid)
        {
            meta.implementation_version_name = Some(IMPLEMENTATION_VERSION_NAME.to_owned());
            note(
                tags::IMPLEMENTATION_VERSION_NAME,
                "Implementation Version Name",
                ChangeKind::Dummy,
            );
        }
        meta.update_information_group_length();
    }

    /// Applies the profile to every attribute of `object`; `at` locates it in the file.
    fn clean(
        &self,
        object: Object,
        at: &str,
        root_pseudonym: &str,
        changes: &mut Vec<Change>,
    ) -> Object {
        let mut kept: Vec<Element> = Vec::new();
        for element in object {
            let tag = element.tag();
            let decision = self.profile.decide(tag);
            let (header, value) = element.into_parts();
            let stored_vr = header.vr();
            let vr = effective_vr(stored_vr, tag);
            if stored_vr == VR::UN
                && is_sequence_in_dictionary(tag)
                && !matches!(decision.action, Action::Remove | Action::Empty)
            {
                // A sequence stored as UN cannot be cleaned item by item: drop it.
                let mut removed = change(at, tag, decision, ChangeKind::Removed);
                removed.rule = "sequence encoded as UN".to_owned();
                changes.push(removed);
                continue;
            }
            let mut note = |action| changes.push(change(at, tag, decision, action));
            let replaced: Option<PrimitiveValue> = match (decision.action, value) {
                (Action::Remove, _) => {
                    note(ChangeKind::Removed);
                    continue;
                }
                (Action::Empty, Value::Sequence(_)) => {
                    note(ChangeKind::Emptied);
                    kept.push(DataElement::new(
                        tag,
                        VR::SQ,
                        Value::Sequence(DataSetSequence::empty()),
                    ));
                    continue;
                }
                (Action::Empty, _) => {
                    note(ChangeKind::Emptied);
                    Some(PrimitiveValue::Empty)
                }
                (
                    Action::Dummy | Action::CleanItems | Action::Keep | Action::MapUid,
                    Value::Sequence(sequence),
                ) => {
                    let inside = format!("{at}{}", tag_text(tag));
                    let items: Vec<Object> = sequence
                        .into_items()
                        .into_iter()
                        .enumerate()
                        .map(|(i, item)| {
                            self.clean(item, &format!("{inside}[{i}]"), root_pseudonym, changes)
                        })
                        .collect();
                    kept.push(DataElement::new(
                        tag,
                        VR::SQ,
                        Value::Sequence(DataSetSequence::new(items, Length::UNDEFINED)),
                    ));
                    continue;
                }
                (Action::Keep, value) => {
                    kept.push(DataElement::new_with_len(tag, stored_vr, header.len, value));
                    continue;
                }
                (Action::MapUid, value) => {
                    let (mapped, kind) = self.map_uids(&value);
                    note(kind);
                    Some(mapped)
                }
                (Action::Dummy | Action::CleanItems, value) if vr == VR::UI => {
                    let (mapped, kind) = self.map_uids(&value);
                    note(kind);
                    Some(mapped)
                }
                (Action::CleanItems, _) => {
                    note(ChangeKind::Emptied);
                    Some(PrimitiveValue::Empty)
                }
                (Action::Dummy, _) => {
                    note(ChangeKind::Dummy);
                    Some(dummy(vr))
                }
                (Action::Pseudonym, value) => {
                    let pseudonym = if tag == tags::PATIENT_ID {
                        first_string(&value)
                            .map(|id| self.keys.pseudonym(&id))
                            .unwrap_or_default()
                    } else {
                        root_pseudonym.to_owned()
                    };
                    if pseudonym.is_empty() {
                        note(ChangeKind::Emptied);
                        Some(PrimitiveValue::Empty)
                    } else {
                        note(ChangeKind::Pseudonymized);
                        Some(PrimitiveValue::from(pseudonym))
                    }
                }
            };
            if let Some(value) = replaced {
                kept.push(DataElement::new(tag, vr, value));
            }
        }
        InMemDicomObject::from_element_iter(kept)
    }

    /// Every UID of a string value replaced by its mapping; a value holding no strings is
    /// emptied instead.
    fn map_uids(&self, value: &ElementValue) -> (PrimitiveValue, ChangeKind) {
        match strings(value) {
            Some(uids) => (
                PrimitiveValue::Strs(uids.iter().map(|uid| self.keys.map_uid(uid)).collect()),
                ChangeKind::UidMapped,
            ),
            None => (PrimitiveValue::Empty, ChangeKind::Emptied),
        }
    }

    /// Adds Patient Identity Removed, De-identification Method (and its code sequence) and
    /// Longitudinal Temporal Information Modified, as PS3.15 E.1.1 asks.
    fn mark_deidentified(&self, object: &mut Object, changes: &mut Vec<Change>) {
        let method = format!("smpfs {} ({TABLE_EDITION})", self.profile.name());
        let (code, scheme, meaning) = BASIC_PROFILE_CODE;
        let code_item = InMemDicomObject::from_element_iter([
            DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(code)),
            DataElement::new(
                tags::CODING_SCHEME_DESIGNATOR,
                VR::SH,
                PrimitiveValue::from(scheme),
            ),
            DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
        ]);
        let added: [(Tag, &str, Element); 4] = [
            (
                tags::PATIENT_IDENTITY_REMOVED,
                "Patient Identity Removed",
                DataElement::new(
                    tags::PATIENT_IDENTITY_REMOVED,
                    VR::CS,
                    PrimitiveValue::from("YES"),
                ),
            ),
            (
                tags::DEIDENTIFICATION_METHOD,
                "De-identification Method",
                DataElement::new(
                    tags::DEIDENTIFICATION_METHOD,
                    VR::LO,
                    PrimitiveValue::from(method),
                ),
            ),
            (
                tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
                "De-identification Method Code Sequence",
                DataElement::new(
                    tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
                    VR::SQ,
                    Value::Sequence(DataSetSequence::new(vec![code_item], Length::UNDEFINED)),
                ),
            ),
            (
                tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
                "Longitudinal Temporal Information Modified",
                DataElement::new(
                    tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
                    VR::CS,
                    PrimitiveValue::from("REMOVED"),
                ),
            ),
        ];
        for (tag, name, element) in added {
            object.put(element);
            changes.push(Change {
                tag: tag_text(tag),
                name: name.to_owned(),
                action: ChangeKind::Added,
                rule: "PS3.15 E.1.1".to_owned(),
            });
        }
    }
}

/// The change record for `tag` under `decision`.
fn change(at: &str, tag: Tag, decision: Decision, action: ChangeKind) -> Change {
    let (name, rule) = match decision.reason {
        Reason::Table(row) | Reason::KeptTechnical(row) => {
            (row.name.to_owned(), format!("E.1-1 {}", row.code.as_str()))
        }
        Reason::Private => ("private attribute".to_owned(), "private".to_owned()),
        Reason::GroupLength => ("group length".to_owned(), "group length".to_owned()),
        Reason::NotListed => (
            StandardDataDictionary
                .by_tag(tag)
                .map(|entry| entry.alias.to_owned())
                .unwrap_or_default(),
            "not listed".to_owned(),
        ),
    };
    Change {
        tag: format!("{at}{}", tag_text(tag)),
        name,
        action,
        rule,
    }
}

/// The VR to write a replaced value with: the dictionary's for an element stored as UN
/// (unknown), else the stored one.
fn effective_vr(stored: VR, tag: Tag) -> VR {
    match StandardDataDictionary.by_tag(tag).map(|entry| entry.vr) {
        Some(VirtualVr::Exact(vr)) if stored == VR::UN => vr,
        _ => stored,
    }
}

/// The strings of a text value. A value read as raw bytes (an element stored as UN) is
/// decoded as backslash-separated text. `None` for numbers, sequences and pixel data.
pub(crate) fn strings(value: &ElementValue) -> Option<Vec<String>> {
    match value {
        Value::Primitive(PrimitiveValue::Str(text)) => Some(vec![text.clone()]),
        Value::Primitive(PrimitiveValue::Strs(texts)) => Some(texts.to_vec()),
        Value::Primitive(PrimitiveValue::U8(bytes)) => Some(
            String::from_utf8_lossy(bytes)
                .trim_end_matches(['\0', ' '])
                .split('\\')
                .map(str::to_owned)
                .collect(),
        ),
        Value::Primitive(PrimitiveValue::Empty) => Some(Vec::new()),
        _ => None,
    }
}

/// The first string of a text value (see [`strings`]).
fn first_string(value: &ElementValue) -> Option<String> {
    strings(value)?.into_iter().next()
}

/// Whether the data dictionary says `tag` is a sequence (SQ).
fn is_sequence_in_dictionary(tag: Tag) -> bool {
    StandardDataDictionary
        .by_tag(tag)
        .is_some_and(|entry| entry.vr == VirtualVr::Exact(VR::SQ))
}

/// `(GGGG,EEEE)` in upper-case hex.
pub fn tag_text(tag: Tag) -> String {
    format!("({:04X},{:04X})", tag.group(), tag.element())
}

/// A fixed, VR-conformant, non-empty dummy value (D). (A UID under D is mapped instead.)
pub fn dummy(vr: VR) -> PrimitiveValue {
    match vr {
        VR::DA => PrimitiveValue::from("19000101"),
        VR::TM => PrimitiveValue::from("000000"),
        VR::DT => PrimitiveValue::from("19000101000000"),
        VR::AS => PrimitiveValue::from("000D"),
        VR::DS | VR::IS => PrimitiveValue::from("0"),
        VR::AE | VR::CS | VR::LO | VR::LT | VR::PN | VR::SH | VR::ST | VR::UC | VR::UT => {
            PrimitiveValue::from("ANONYMIZED")
        }
        VR::UI => PrimitiveValue::from("2.25.0"),
        VR::UR => PrimitiveValue::from("urn:smpfs:anonymized"),
        VR::US | VR::OW => PrimitiveValue::U16(smallvec![0]),
        VR::SS => PrimitiveValue::I16(smallvec![0]),
        VR::UL | VR::OL => PrimitiveValue::U32(smallvec![0]),
        VR::SL => PrimitiveValue::I32(smallvec![0]),
        VR::UV | VR::OV => PrimitiveValue::U64(smallvec![0]),
        VR::SV => PrimitiveValue::I64(smallvec![0]),
        VR::FL | VR::OF => PrimitiveValue::F32(smallvec![0.0]),
        VR::FD | VR::OD => PrimitiveValue::F64(smallvec![0.0]),
        VR::AT => PrimitiveValue::Tags(smallvec![Tag(0, 0)]),
        VR::OB | VR::UN | VR::SQ => PrimitiveValue::U8(smallvec![0, 0]),
    }
}

#[cfg(test)]
mod tests {
    use dicom_object::meta::FileMetaTableBuilder;

    use super::*;
    use crate::dicom::parse::{read_file, DicomFile};

    const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
    const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

    fn element(tag: Tag, vr: VR, value: &str) -> Element {
        DataElement::new(tag, vr, PrimitiveValue::from(value))
    }

    /// A small CT-like file with identity, dates, UIDs, a private block and a reference.
    fn sample(burned_in: &str) -> Vec<u8> {
        let reference = InMemDicomObject::from_element_iter([
            element(tags::REFERENCED_SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE),
            element(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, "1.2.3.4.5.99"),
            element(Tag(0x0011, 0x0010), VR::LO, "ACME private"),
        ]);
        let object = InMemDicomObject::from_element_iter([
            element(tags::SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE),
            element(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.4.5.1"),
            element(tags::STUDY_DATE, VR::DA, "20240131"),
            element(tags::CONTENT_DATE, VR::DA, "20240131"),
            element(tags::INSTITUTION_NAME, VR::LO, "General Hospital"),
            element(tags::PATIENT_NAME, VR::PN, "Doe^Jane"),
            element(tags::PATIENT_ID, VR::LO, "MRN-12345"),
            element(tags::PATIENT_BIRTH_DATE, VR::DA, "19700101"),
            element(tags::PATIENT_AGE, VR::AS, "054Y"),
            element(tags::PATIENT_WEIGHT, VR::DS, "70"),
            element(tags::SLICE_THICKNESS, VR::DS, "1.25"),
            element(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3.4"),
            element(tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.4.5"),
            element(tags::BURNED_IN_ANNOTATION, VR::CS, burned_in),
            element(Tag(0x0029, 0x0010), VR::LO, "ACME"),
            element(Tag(0x0029, 0x1001), VR::LO, "Doe^Jane"),
            DataElement::new(
                tags::REFERENCED_IMAGE_SEQUENCE,
                VR::SQ,
                Value::Sequence(DataSetSequence::new(vec![reference], Length::UNDEFINED)),
            ),
        ]);
        let file = object
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(EXPLICIT_VR_LE)
                    .source_application_entity_title("SCANNER1"),
            )
            .unwrap();
        let mut bytes = Vec::new();
        file.write_all(&mut bytes).unwrap();
        bytes
    }

    fn text(file: &DicomFile, tag: Tag) -> Option<String> {
        file.get(tag).map(|e| e.to_str().unwrap().into_owned())
    }

    fn run(profile: Profile, secret: u8, input: &[u8]) -> (DicomFile, Vec<Change>) {
        let keys = PseudonymKeys::from_secret(&[secret; 32]);
        let done = Deidentifier::new(profile, &keys)
            .deidentify(input, input.len())
            .unwrap();
        (
            read_file(&done.data[..], done.data.len() as u64).unwrap(),
            done.changes,
        )
    }

    #[test]
    fn an_implementation_version_name_that_is_not_a_valid_sh_is_replaced() {
        let keys = PseudonymKeys::from_secret(&[1; 32]);
        let deid = Deidentifier::new(Profile::Basic, &keys);
        for (given, kept) in [
            ("ÄRZTE-PACS 2.0", false),
            ("A NAME LONGER THAN 16", false),
            ("PACS_2", true),
        ] {
            let mut meta = FileMetaTableBuilder::new()
                .transfer_syntax(EXPLICIT_VR_LE)
                .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
                .media_storage_sop_instance_uid("1.2.3")
                .build()
                .unwrap();
            meta.implementation_version_name = Some(given.to_owned());
            let mut changes = Vec::new();
            deid.clean_meta(&mut meta, &mut changes);
            let name = meta.implementation_version_name.as_deref().unwrap();
            assert_eq!(name == given, kept, "{given:?} became {name:?}");
            assert!(name.is_ascii() && name.len() <= 16);
        }
    }

    #[test]
    fn basic_profile_replaces_identity_and_keeps_geometry() {
        let keys = PseudonymKeys::from_secret(&[1; 32]);
        let (out, changes) = run(Profile::Basic, 1, &sample("NO"));
        let pseudonym = keys.pseudonym("MRN-12345");
        assert_eq!(text(&out, tags::PATIENT_ID).unwrap(), pseudonym);
        assert_eq!(text(&out, tags::PATIENT_NAME).unwrap(), pseudonym);
        assert_eq!(text(&out, tags::STUDY_DATE).unwrap(), "");
        assert_eq!(text(&out, tags::PATIENT_BIRTH_DATE).unwrap(), "");
        assert_eq!(text(&out, tags::CONTENT_DATE).unwrap(), "19000101");
        assert_eq!(text(&out, tags::INSTITUTION_NAME).unwrap(), "ANONYMIZED");
        assert!(out.get(tags::PATIENT_AGE).is_none());
        assert!(out.get(tags::PATIENT_WEIGHT).is_none());
        assert_eq!(text(&out, tags::SLICE_THICKNESS).unwrap(), "1.25");
        assert_eq!(text(&out, tags::SOP_CLASS_UID).unwrap(), CT_IMAGE_STORAGE);
        let sop = keys.map_uid("1.2.3.4.5.1");
        assert_eq!(text(&out, tags::SOP_INSTANCE_UID).unwrap(), sop);
        assert_eq!(out.meta().media_storage_sop_instance_uid(), sop);
        assert!(out.meta().source_application_entity_title().is_none());
        assert_eq!(
            text(&out, tags::STUDY_INSTANCE_UID).unwrap(),
            keys.map_uid("1.2.3.4")
        );
        assert!(out.iter().all(|e| e.tag().group() % 2 == 0), "private gone");
        let item = &out
            .get(tags::REFERENCED_IMAGE_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        assert_eq!(
            item.get(tags::REFERENCED_SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap(),
            keys.map_uid("1.2.3.4.5.99")
        );
        assert!(item.get(Tag(0x0011, 0x0010)).is_none());
        assert_eq!(text(&out, tags::PATIENT_IDENTITY_REMOVED).unwrap(), "YES");
        assert!(changes.contains(&Change {
            tag: "(0008,1140)[0](0008,1155)".into(),
            name: "Referenced SOP Instance UID".into(),
            action: ChangeKind::UidMapped,
            rule: "E.1-1 U".into(),
        }));
        assert!(changes
            .iter()
            .any(|c| c.tag == "(0029,1001)" && c.action == ChangeKind::Removed));
    }

    #[test]
    fn keep_technical_keeps_body_characteristics_only() {
        let (out, _) = run(Profile::BasicKeepTechnical, 1, &sample("NO"));
        assert_eq!(text(&out, tags::PATIENT_AGE).unwrap(), "054Y");
        assert_eq!(text(&out, tags::PATIENT_WEIGHT).unwrap(), "70");
        assert_eq!(text(&out, tags::STUDY_DATE).unwrap(), "");
        assert_ne!(text(&out, tags::PATIENT_ID).unwrap(), "MRN-12345");
    }

    #[test]
    fn another_key_gives_other_pseudonyms_and_uids() {
        let (a, _) = run(Profile::Basic, 1, &sample("NO"));
        let (b, _) = run(Profile::Basic, 2, &sample("NO"));
        for tag in [
            tags::PATIENT_ID,
            tags::SOP_INSTANCE_UID,
            tags::STUDY_INSTANCE_UID,
        ] {
            assert_ne!(text(&a, tag), text(&b, tag));
        }
    }

    #[test]
    fn burned_in_annotation_and_non_dicom_are_refused() {
        let keys = PseudonymKeys::from_secret(&[1; 32]);
        let deid = Deidentifier::new(Profile::Basic, &keys);
        let input = sample("YES ");
        assert!(matches!(
            deid.deidentify(&input[..], input.len()),
            Err(DeidError::BurnedIn)
        ));
        let text = b"just some notes, not DICOM at all\n".repeat(10);
        assert!(matches!(
            deid.deidentify(&text[..], text.len()),
            Err(DeidError::NotDicom(_))
        ));
    }

    #[test]
    fn dummies_fit_their_vr() {
        for vr in [VR::DA, VR::TM, VR::DT, VR::AS, VR::CS, VR::SH, VR::AE] {
            let value = dummy(vr).to_str().into_owned();
            assert!(!value.is_empty());
            let max = match vr {
                VR::DA => 8,
                VR::AS => 4,
                VR::CS | VR::SH | VR::AE => 16,
                _ => 26,
            };
            assert!(value.len() <= max, "{vr:?}: {value}");
        }
    }
}
