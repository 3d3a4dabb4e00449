//! PS3.15 Annex E, Table E.1-1 (edition 2026c): the attributes the Basic Application Level
//! Confidentiality Profile acts on, with the action its "Basic Prof." column gives each, and
//! the profiles `smpfs seal --deidentify=PROFILE` offers on top of it.
//!
//! Invariants: every row of the table resolves to exactly one [`Action`]; private tags
//! (odd groups) and group lengths are always removed; attributes not in the table are kept
//! (sequences among them are cleaned item by item).

use std::collections::HashMap;
use std::sync::LazyLock;

use dicom_core::Tag;

/// The edition of PS3.15 the table below was taken from.
pub const TABLE_EDITION: &str = "PS3.15 2026c Table E.1-1";

/// Errors in choosing a profile.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error("unknown de-identification profile {0:?} (known: basic, basic+keep-technical)")]
    Unknown(String),
}

/// An action code of the table's "Basic Prof." column, as the standard writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Replace with a non-zero length dummy value.
    D,
    /// Replace with a zero-length value (or a dummy).
    Z,
    /// Remove.
    X,
    /// Replace the UID with a non-zero length UID, consistently within the set of instances.
    U,
    /// Z unless D is required to keep the IOD conformant.
    ZD,
    /// X unless Z is required.
    XZ,
    /// X unless D is required.
    XD,
    /// X unless Z or D is required.
    XZD,
    /// X unless Z or U (applied to the UIDs inside the sequence) is required.
    XZUStar,
}

impl Code {
    /// The code as written in the standard ("X/Z/D").
    pub fn as_str(self) -> &'static str {
        match self {
            Code::D => "D",
            Code::Z => "Z",
            Code::X => "X",
            Code::U => "U",
            Code::ZD => "Z/D",
            Code::XZ => "X/Z",
            Code::XD => "X/D",
            Code::XZD => "X/Z/D",
            Code::XZUStar => "X/Z/U*",
        }
    }
}

/// What smpfs does to one attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Remove the attribute (X).
    Remove,
    /// Keep the attribute with a zero-length value; a sequence keeps no items (Z, X/Z).
    Empty,
    /// Replace with a dummy value conformant to the VR (D, Z/D, X/D, X/Z/D); a sequence is
    /// kept and each of its items cleaned by the profile.
    Dummy,
    /// Replace every UID in the value with its keyed mapping (U).
    MapUid,
    /// Keep a sequence and clean its items: the UIDs inside are mapped by their own rows
    /// (X/Z/U*).
    CleanItems,
    /// Replace with the keyed patient pseudonym (Patient ID; Patient's Name gets the same).
    Pseudonym,
    /// Keep the value (not in the table, or kept by `keep-technical`); a sequence's items
    /// are still cleaned.
    Keep,
}

impl Action {
    /// The action a table code resolves to. Where the standard leaves a choice, the
    /// attribute is kept present with a conformant value whenever the code allows it, so a
    /// Type 1 or Type 2 attribute never disappears: D wins over Z and X, Z over X.
    pub fn for_code(code: Code) -> Action {
        match code {
            Code::X => Action::Remove,
            Code::Z | Code::XZ => Action::Empty,
            Code::D | Code::ZD | Code::XD | Code::XZD => Action::Dummy,
            Code::U => Action::MapUid,
            Code::XZUStar => Action::CleanItems,
        }
    }
}

/// One row of Table E.1-1: a tag (or a repeating-group pattern), its code and its name.
#[derive(Debug)]
pub struct Row {
    group: u16,
    element: u16,
    group_mask: u16,
    element_mask: u16,
    /// The "Basic Prof." action code.
    pub code: Code,
    /// The attribute name as the standard gives it.
    pub name: &'static str,
}

impl Row {
    /// Whether `tag` is this row's attribute (repeating groups such as 60xx match by mask).
    pub fn matches(&self, tag: Tag) -> bool {
        tag.group() & self.group_mask == self.group
            && tag.element() & self.element_mask == self.element
    }

    /// Group, element, group mask, element mask: `tag` matches when
    /// `tag.group & group_mask == group` and `tag.element & element_mask == element`.
    pub fn pattern(&self) -> (u16, u16, u16, u16) {
        (self.group, self.element, self.group_mask, self.element_mask)
    }

    /// The tag as the standard prints it, e.g. `(0010,0010)` or `(60xx,3000)`.
    pub fn tag_text(&self) -> String {
        let part = |value: u16, mask: u16| {
            format!("{value:04X}")
                .chars()
                .zip(format!("{mask:04X}").chars())
                .map(|(v, m)| if m == '0' { 'x' } else { v })
                .collect::<String>()
        };
        format!(
            "({},{})",
            part(self.group, self.group_mask),
            part(self.element, self.element_mask)
        )
    }
}

/// The de-identification profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// The Basic Application Level Confidentiality Profile, Table E.1-1 as resolved by
    /// [`Action::for_code`], plus: private attributes removed, UIDs and Patient ID mapped
    /// under a key.
    Basic,
    /// [`Profile::Basic`], but keeping [`KEEP_TECHNICAL`]: patient body characteristics
    /// (sex, age, size, weight) and acquisition times of day, which image analysis needs
    /// (SUV, dose, timing). Dates stay removed.
    BasicKeepTechnical,
}

/// Attributes of Table E.1-1 that `basic+keep-technical` keeps unchanged.
pub const KEEP_TECHNICAL: &[(u16, u16)] = &[
    (0x0008, 0x0031), // Series Time
    (0x0008, 0x0032), // Acquisition Time
    (0x0008, 0x0033), // Content Time
    (0x0010, 0x0040), // Patient's Sex
    (0x0010, 0x1010), // Patient's Age
    (0x0010, 0x1020), // Patient's Size
    (0x0010, 0x1030), // Patient's Weight
    (0x0018, 0x1042), // Contrast/Bolus Start Time
    (0x0018, 0x1043), // Contrast/Bolus Stop Time
    (0x0018, 0x1072), // Radiopharmaceutical Start Time
    (0x0018, 0x1073), // Radiopharmaceutical Stop Time
];

/// Patient ID: replaced by the keyed pseudonym.
const PATIENT_ID: Tag = Tag(0x0010, 0x0020);
/// Patient's Name: replaced by the same pseudonym as the Patient ID.
const PATIENT_NAME: Tag = Tag(0x0010, 0x0010);

/// Why an attribute gets its action.
#[derive(Debug, Clone, Copy)]
pub enum Reason {
    /// A row of Table E.1-1.
    Table(&'static Row),
    /// A row of Table E.1-1 that `keep-technical` keeps.
    KeptTechnical(&'static Row),
    /// A private attribute (odd group): always removed.
    Private,
    /// A group length (gggg,0000): removed, since values around it change.
    GroupLength,
    /// Not in the table: kept.
    NotListed,
}

/// The action for one attribute and why.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// Why.
    pub reason: Reason,
}

impl std::str::FromStr for Profile {
    type Err = ProfileError;
    fn from_str(name: &str) -> Result<Self, ProfileError> {
        match name {
            "basic" => Ok(Profile::Basic),
            "basic+keep-technical" => Ok(Profile::BasicKeepTechnical),
            other => Err(ProfileError::Unknown(other.to_owned())),
        }
    }
}

impl Profile {
    /// The profile's name as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Basic => "basic",
            Profile::BasicKeepTechnical => "basic+keep-technical",
        }
    }

    /// What to do with the attribute `tag`, wherever it occurs (top level or in an item).
    pub fn decide(self, tag: Tag) -> Decision {
        let decision = |action, reason| Decision { action, reason };
        if tag.group() % 2 == 1 {
            return decision(Action::Remove, Reason::Private);
        }
        if tag.element() == 0 {
            return decision(Action::Remove, Reason::GroupLength);
        }
        let Some(row) = row_for(tag) else {
            return decision(Action::Keep, Reason::NotListed);
        };
        if self == Profile::BasicKeepTechnical
            && KEEP_TECHNICAL.contains(&(tag.group(), tag.element()))
        {
            return decision(Action::Keep, Reason::KeptTechnical(row));
        }
        let action = if tag == PATIENT_ID || tag == PATIENT_NAME {
            Action::Pseudonym
        } else {
            Action::for_code(row.code)
        };
        decision(action, Reason::Table(row))
    }
}

/// The table row for `tag`, if any.
pub fn row_for(tag: Tag) -> Option<&'static Row> {
    static EXACT: LazyLock<HashMap<(u16, u16), &'static Row>> = LazyLock::new(|| {
        TABLE
            .iter()
            .filter(|r| r.group_mask == 0xFFFF && r.element_mask == 0xFFFF)
            .map(|r| ((r.group, r.element), r))
            .collect()
    });
    EXACT
        .get(&(tag.group(), tag.element()))
        .copied()
        .or_else(|| {
            TABLE
                .iter()
                .find(|r| r.group_mask != 0xFFFF && r.matches(tag))
        })
}

/// Every row of the table, in tag order.
pub fn rows() -> &'static [Row] {
    TABLE
}

const fn exact(group: u16, element: u16, code: Code, name: &'static str) -> Row {
    masked(group, element, 0xFFFF, 0xFFFF, code, name)
}

const fn masked(
    group: u16,
    element: u16,
    group_mask: u16,
    element_mask: u16,
    code: Code,
    name: &'static str,
) -> Row {
    Row {
        group,
        element,
        group_mask,
        element_mask,
        code,
        name,
    }
}

use Code::{XZUStar, D, U, X, XD, XZ, XZD, Z, ZD};

/// Table E.1-1, "Basic Prof." column.
static TABLE: &[Row] = &[
    exact(0x0000, 0x1000, X, "Affected SOP Instance UID"),
    exact(0x0000, 0x1001, U, "Requested SOP Instance UID"),
    exact(0x0002, 0x0003, U, "Media Storage SOP Instance UID"),
    exact(0x0004, 0x1511, U, "Referenced SOP Instance UID in File"),
    exact(0x0008, 0x0012, XD, "Instance Creation Date"),
    exact(0x0008, 0x0013, XZD, "Instance Creation Time"),
    exact(0x0008, 0x0014, U, "Instance Creator UID"),
    exact(0x0008, 0x0015, X, "Instance Coercion DateTime"),
    exact(0x0008, 0x0017, U, "Acquisition UID"),
    exact(0x0008, 0x0018, U, "SOP Instance UID"),
    exact(0x0008, 0x0019, U, "Pyramid UID"),
    exact(0x0008, 0x0020, Z, "Study Date"),
    exact(0x0008, 0x0021, XD, "Series Date"),
    exact(0x0008, 0x0022, XZ, "Acquisition Date"),
    exact(0x0008, 0x0023, ZD, "Content Date"),
    exact(0x0008, 0x0024, X, "Overlay Date"),
    exact(0x0008, 0x0025, X, "Curve Date"),
    exact(0x0008, 0x002A, XZD, "Acquisition DateTime"),
    exact(0x0008, 0x0030, Z, "Study Time"),
    exact(0x0008, 0x0031, XD, "Series Time"),
    exact(0x0008, 0x0032, XZ, "Acquisition Time"),
    exact(0x0008, 0x0033, ZD, "Content Time"),
    exact(0x0008, 0x0034, X, "Overlay Time"),
    exact(0x0008, 0x0035, X, "Curve Time"),
    exact(0x0008, 0x0050, Z, "Accession Number"),
    exact(0x0008, 0x0054, X, "Retrieve AE Title"),
    exact(0x0008, 0x0055, X, "Station AE Title"),
    exact(0x0008, 0x0058, U, "Failed SOP Instance UID List"),
    exact(0x0008, 0x0080, XZD, "Institution Name"),
    exact(0x0008, 0x0081, X, "Institution Address"),
    exact(0x0008, 0x0082, XZD, "Institution Code Sequence"),
    exact(0x0008, 0x0090, Z, "Referring Physician's Name"),
    exact(0x0008, 0x0092, X, "Referring Physician's Address"),
    exact(0x0008, 0x0094, X, "Referring Physician's Telephone Numbers"),
    exact(
        0x0008,
        0x0096,
        X,
        "Referring Physician Identification Sequence",
    ),
    exact(0x0008, 0x009C, Z, "Consulting Physician's Name"),
    exact(
        0x0008,
        0x009D,
        X,
        "Consulting Physician Identification Sequence",
    ),
    exact(0x0008, 0x0106, D, "Context Group Version"),
    exact(0x0008, 0x0107, D, "Context Group Local Version"),
    exact(0x0008, 0x0201, X, "Timezone Offset From UTC"),
    exact(0x0008, 0x1000, X, "Network ID"),
    exact(0x0008, 0x1010, XZD, "Station Name"),
    exact(0x0008, 0x1030, X, "Study Description"),
    exact(0x0008, 0x103E, X, "Series Description"),
    exact(0x0008, 0x1040, X, "Institutional Department Name"),
    exact(
        0x0008,
        0x1041,
        X,
        "Institutional Department Type Code Sequence",
    ),
    exact(0x0008, 0x1048, X, "Physician(s) of Record"),
    exact(
        0x0008,
        0x1049,
        X,
        "Physician(s) of Record Identification Sequence",
    ),
    exact(0x0008, 0x1050, X, "Performing Physician's Name"),
    exact(
        0x0008,
        0x1052,
        X,
        "Performing Physician Identification Sequence",
    ),
    exact(0x0008, 0x1060, X, "Name of Physician(s) Reading Study"),
    exact(
        0x0008,
        0x1062,
        X,
        "Physician(s) Reading Study Identification Sequence",
    ),
    exact(0x0008, 0x1070, XZD, "Operators' Name"),
    exact(0x0008, 0x1072, XD, "Operator Identification Sequence"),
    exact(0x0008, 0x1080, X, "Admitting Diagnoses Description"),
    exact(0x0008, 0x1084, X, "Admitting Diagnoses Code Sequence"),
    exact(0x0008, 0x1088, X, "Pyramid Description"),
    exact(0x0008, 0x1110, XZ, "Referenced Study Sequence"),
    exact(
        0x0008,
        0x1111,
        XZD,
        "Referenced Performed Procedure Step Sequence",
    ),
    exact(0x0008, 0x1120, X, "Referenced Patient Sequence"),
    exact(0x0008, 0x1140, XZUStar, "Referenced Image Sequence"),
    exact(0x0008, 0x1155, U, "Referenced SOP Instance UID"),
    exact(0x0008, 0x1195, U, "Transaction UID"),
    exact(0x0008, 0x1301, X, "Principal Diagnosis Code Sequence"),
    exact(0x0008, 0x1302, X, "Primary Diagnosis Code Sequence"),
    exact(0x0008, 0x1303, X, "Secondary Diagnoses Code Sequence"),
    exact(0x0008, 0x1304, X, "Histological Diagnoses Code Sequence"),
    exact(0x0008, 0x2111, X, "Derivation Description"),
    exact(0x0008, 0x2112, XZUStar, "Source Image Sequence"),
    exact(0x0008, 0x3010, U, "Irradiation Event UID"),
    exact(0x0008, 0x4000, X, "Identifying Comments"),
    exact(0x0010, 0x0010, Z, "Patient's Name"),
    exact(0x0010, 0x0011, X, "Person Names to Use Sequence"),
    exact(0x0010, 0x0012, X, "Name to Use"),
    exact(0x0010, 0x0013, X, "Name to Use Comment"),
    exact(0x0010, 0x0014, X, "Third Person Pronouns Sequence"),
    exact(0x0010, 0x0015, X, "Pronoun Code Sequence"),
    exact(0x0010, 0x0016, X, "Pronoun Comment"),
    exact(0x0010, 0x0020, ZD, "Patient ID"),
    exact(0x0010, 0x0021, X, "Issuer of Patient ID"),
    exact(0x0010, 0x0030, Z, "Patient's Birth Date"),
    exact(0x0010, 0x0032, X, "Patient's Birth Time"),
    exact(0x0010, 0x0040, Z, "Patient's Sex"),
    exact(0x0010, 0x0041, X, "Gender Identity Sequence"),
    exact(
        0x0010,
        0x0042,
        X,
        "Sex Parameters for Clinical Use Category Comment",
    ),
    exact(
        0x0010,
        0x0043,
        X,
        "Sex Parameters for Clinical Use Category Sequence",
    ),
    exact(0x0010, 0x0044, X, "Gender Identity Code Sequence"),
    exact(0x0010, 0x0045, X, "Gender Identity Comment"),
    exact(
        0x0010,
        0x0046,
        X,
        "Sex Parameters for Clinical Use Category Code Sequence",
    ),
    exact(
        0x0010,
        0x0047,
        X,
        "Sex Parameters for Clinical Use Category Reference",
    ),
    exact(0x0010, 0x0050, X, "Patient's Insurance Plan Code Sequence"),
    exact(
        0x0010,
        0x0101,
        X,
        "Patient's Primary Language Code Sequence",
    ),
    exact(
        0x0010,
        0x0102,
        X,
        "Patient's Primary Language Modifier Code Sequence",
    ),
    exact(0x0010, 0x1000, X, "Other Patient IDs"),
    exact(0x0010, 0x1001, X, "Other Patient Names"),
    exact(0x0010, 0x1002, X, "Other Patient IDs Sequence"),
    exact(0x0010, 0x1005, X, "Patient's Birth Name"),
    exact(0x0010, 0x1010, X, "Patient's Age"),
    exact(0x0010, 0x1020, X, "Patient's Size"),
    exact(0x0010, 0x1030, X, "Patient's Weight"),
    exact(0x0010, 0x1040, X, "Patient's Address"),
    exact(0x0010, 0x1050, X, "Insurance Plan Identification"),
    exact(0x0010, 0x1060, X, "Patient's Mother's Birth Name"),
    exact(0x0010, 0x1080, X, "Military Rank"),
    exact(0x0010, 0x1081, X, "Branch of Service"),
    exact(0x0010, 0x1090, X, "Medical Record Locator"),
    exact(0x0010, 0x1100, X, "Referenced Patient Photo Sequence"),
    exact(0x0010, 0x2000, X, "Medical Alerts"),
    exact(0x0010, 0x2110, X, "Allergies"),
    exact(0x0010, 0x2150, X, "Country of Residence"),
    exact(0x0010, 0x2152, X, "Region of Residence"),
    exact(0x0010, 0x2154, X, "Patient's Telephone Numbers"),
    exact(0x0010, 0x2155, X, "Patient's Telecom Information"),
    exact(0x0010, 0x2160, X, "Ethnic Group"),
    exact(0x0010, 0x2161, X, "Ethnic Group Code Sequence"),
    exact(0x0010, 0x2162, X, "Ethnic Groups"),
    exact(0x0010, 0x2180, X, "Occupation"),
    exact(0x0010, 0x21A0, X, "Smoking Status"),
    exact(0x0010, 0x21B0, X, "Additional Patient History"),
    exact(0x0010, 0x21C0, X, "Pregnancy Status"),
    exact(0x0010, 0x21D0, X, "Last Menstrual Date"),
    exact(0x0010, 0x21F0, X, "Patient's Religious Preference"),
    exact(0x0010, 0x2203, XZ, "Patient's Sex Neutered"),
    exact(0x0010, 0x2297, X, "Responsible Person"),
    exact(0x0010, 0x2299, X, "Responsible Organization"),
    exact(0x0010, 0x4000, X, "Patient Comments"),
    exact(0x0012, 0x0010, D, "Clinical Trial Sponsor Name"),
    exact(0x0012, 0x0020, D, "Clinical Trial Protocol ID"),
    exact(0x0012, 0x0021, Z, "Clinical Trial Protocol Name"),
    exact(0x0012, 0x0022, X, "Issuer of Clinical Trial Protocol ID"),
    exact(
        0x0012,
        0x0023,
        X,
        "Other Clinical Trial Protocol IDs Sequence",
    ),
    exact(0x0012, 0x0030, Z, "Clinical Trial Site ID"),
    exact(0x0012, 0x0031, Z, "Clinical Trial Site Name"),
    exact(0x0012, 0x0032, X, "Issuer of Clinical Trial Site ID"),
    exact(0x0012, 0x0040, D, "Clinical Trial Subject ID"),
    exact(0x0012, 0x0041, X, "Issuer of Clinical Trial Subject ID"),
    exact(0x0012, 0x0042, D, "Clinical Trial Subject Reading ID"),
    exact(
        0x0012,
        0x0043,
        X,
        "Issuer of Clinical Trial Subject Reading ID",
    ),
    exact(0x0012, 0x0050, Z, "Clinical Trial Time Point ID"),
    exact(0x0012, 0x0051, X, "Clinical Trial Time Point Description"),
    exact(0x0012, 0x0055, X, "Issuer of Clinical Trial Time Point ID"),
    exact(0x0012, 0x0060, Z, "Clinical Trial Coordinating Center Name"),
    exact(0x0012, 0x0071, X, "Clinical Trial Series ID"),
    exact(0x0012, 0x0072, X, "Clinical Trial Series Description"),
    exact(0x0012, 0x0073, X, "Issuer of Clinical Trial Series ID"),
    exact(
        0x0012,
        0x0081,
        D,
        "Clinical Trial Protocol Ethics Committee Name",
    ),
    exact(
        0x0012,
        0x0082,
        X,
        "Clinical Trial Protocol Ethics Committee Approval Number",
    ),
    exact(
        0x0012,
        0x0086,
        X,
        "Ethics Committee Approval Effectiveness Start Date",
    ),
    exact(
        0x0012,
        0x0087,
        X,
        "Ethics Committee Approval Effectiveness End Date",
    ),
    exact(0x0014, 0x407C, X, "Calibration Time"),
    exact(0x0014, 0x407E, X, "Calibration Date"),
    exact(0x0016, 0x002B, X, "Maker Note"),
    exact(0x0016, 0x004B, X, "Device Setting Description"),
    exact(0x0016, 0x004D, X, "Camera Owner Name"),
    exact(0x0016, 0x004E, X, "Lens Specification"),
    exact(0x0016, 0x004F, X, "Lens Make"),
    exact(0x0016, 0x0050, X, "Lens Model"),
    exact(0x0016, 0x0051, X, "Lens Serial Number"),
    exact(0x0016, 0x0070, X, "GPS Version ID"),
    exact(0x0016, 0x0071, X, "GPS Latitude Ref"),
    exact(0x0016, 0x0072, X, "GPS Latitude"),
    exact(0x0016, 0x0073, X, "GPS Longitude Ref"),
    exact(0x0016, 0x0074, X, "GPS Longitude"),
    exact(0x0016, 0x0075, X, "GPS Altitude Ref"),
    exact(0x0016, 0x0076, X, "GPS Altitude"),
    exact(0x0016, 0x0077, X, "GPS Time Stamp"),
    exact(0x0016, 0x0078, X, "GPS Satellites"),
    exact(0x0016, 0x0079, X, "GPS Status"),
    exact(0x0016, 0x007A, X, "GPS Measure Mode"),
    exact(0x0016, 0x007B, X, "GPS DOP"),
    exact(0x0016, 0x007C, X, "GPS Speed Ref"),
    exact(0x0016, 0x007D, X, "GPS Speed"),
    exact(0x0016, 0x007E, X, "GPS Track Ref"),
    exact(0x0016, 0x007F, X, "GPS Track"),
    exact(0x0016, 0x0080, X, "GPS Img Direction Ref"),
    exact(0x0016, 0x0081, X, "GPS Img Direction"),
    exact(0x0016, 0x0082, X, "GPS Map Datum"),
    exact(0x0016, 0x0083, X, "GPS Dest Latitude Ref"),
    exact(0x0016, 0x0084, X, "GPS Dest Latitude"),
    exact(0x0016, 0x0085, X, "GPS Dest Longitude Ref"),
    exact(0x0016, 0x0086, X, "GPS Dest Longitude"),
    exact(0x0016, 0x0087, X, "GPS Dest Bearing Ref"),
    exact(0x0016, 0x0088, X, "GPS Dest Bearing"),
    exact(0x0016, 0x0089, X, "GPS Dest Distance Ref"),
    exact(0x0016, 0x008A, X, "GPS Dest Distance"),
    exact(0x0016, 0x008B, X, "GPS Processing Method"),
    exact(0x0016, 0x008C, X, "GPS Area Information"),
    exact(0x0016, 0x008D, X, "GPS Date Stamp"),
    exact(0x0016, 0x008E, X, "GPS Differential"),
    exact(0x0018, 0x0010, ZD, "Contrast/Bolus Agent"),
    exact(0x0018, 0x0027, X, "Intervention Drug Stop Time"),
    exact(0x0018, 0x0035, X, "Intervention Drug Start Time"),
    exact(0x0018, 0x1000, XZD, "Device Serial Number"),
    exact(0x0018, 0x1002, U, "Device UID"),
    exact(0x0018, 0x1004, X, "Plate ID"),
    exact(0x0018, 0x1005, X, "Generator ID"),
    exact(0x0018, 0x1007, X, "Cassette ID"),
    exact(0x0018, 0x1008, X, "Gantry ID"),
    exact(0x0018, 0x1009, X, "Unique Device Identifier"),
    exact(0x0018, 0x100A, X, "UDI Sequence"),
    exact(0x0018, 0x100B, U, "Manufacturer's Device Class UID"),
    exact(0x0018, 0x1010, X, "Secondary Capture Device ID"),
    exact(0x0018, 0x1011, X, "Hardcopy Creation Device ID"),
    exact(0x0018, 0x1012, X, "Date of Secondary Capture"),
    exact(0x0018, 0x1014, X, "Time of Secondary Capture"),
    exact(0x0018, 0x1030, XD, "Protocol Name"),
    exact(0x0018, 0x1042, X, "Contrast/Bolus Start Time"),
    exact(0x0018, 0x1043, X, "Contrast/Bolus Stop Time"),
    exact(0x0018, 0x1072, X, "Radiopharmaceutical Start Time"),
    exact(0x0018, 0x1073, X, "Radiopharmaceutical Stop Time"),
    exact(0x0018, 0x1078, X, "Radiopharmaceutical Start DateTime"),
    exact(0x0018, 0x1079, X, "Radiopharmaceutical Stop DateTime"),
    exact(0x0018, 0x11BB, D, "Acquisition Field Of View Label"),
    exact(0x0018, 0x1200, X, "Date of Last Calibration"),
    exact(0x0018, 0x1201, X, "Time of Last Calibration"),
    exact(0x0018, 0x1202, X, "DateTime of Last Calibration"),
    exact(0x0018, 0x1203, Z, "Calibration DateTime"),
    exact(0x0018, 0x1204, X, "Date of Manufacture"),
    exact(0x0018, 0x1205, X, "Date of Installation"),
    exact(
        0x0018,
        0x1400,
        XD,
        "Acquisition Device Processing Description",
    ),
    exact(0x0018, 0x2042, U, "Target UID"),
    exact(0x0018, 0x4000, X, "Acquisition Comments"),
    exact(0x0018, 0x5011, X, "Transducer Identification Sequence"),
    exact(0x0018, 0x700A, XD, "Detector ID"),
    exact(0x0018, 0x700C, XD, "Date of Last Detector Calibration"),
    exact(0x0018, 0x700E, XD, "Time of Last Detector Calibration"),
    exact(0x0018, 0x9074, D, "Frame Acquisition DateTime"),
    exact(0x0018, 0x9151, D, "Frame Reference DateTime"),
    exact(
        0x0018,
        0x9185,
        X,
        "Respiratory Motion Compensation Technique Description",
    ),
    exact(0x0018, 0x9367, D, "X-Ray Source ID"),
    exact(0x0018, 0x9369, D, "Source Start DateTime"),
    exact(0x0018, 0x936A, D, "Source End DateTime"),
    exact(0x0018, 0x9371, D, "X-Ray Detector ID"),
    exact(0x0018, 0x9373, X, "X-Ray Detector Label"),
    exact(0x0018, 0x937B, X, "Multi-energy Acquisition Description"),
    exact(0x0018, 0x937F, X, "Decomposition Description"),
    exact(0x0018, 0x9424, X, "Acquisition Protocol Description"),
    exact(0x0018, 0x9516, XD, "Start Acquisition DateTime"),
    exact(0x0018, 0x9517, XD, "End Acquisition DateTime"),
    exact(0x0018, 0x9623, D, "Functional Sync Pulse"),
    exact(0x0018, 0x9701, D, "Decay Correction DateTime"),
    exact(0x0018, 0x9804, D, "Exclusion Start DateTime"),
    exact(0x0018, 0x9919, ZD, "Instruction Performed DateTime"),
    exact(0x0018, 0x9937, X, "Requested Series Description"),
    exact(0x0018, 0xA002, X, "Contribution DateTime"),
    exact(0x0018, 0xA003, X, "Contribution Description"),
    exact(0x0020, 0x000D, U, "Study Instance UID"),
    exact(0x0020, 0x000E, U, "Series Instance UID"),
    exact(0x0020, 0x0010, Z, "Study ID"),
    exact(0x0020, 0x0027, X, "Pyramid Label"),
    exact(0x0020, 0x0052, U, "Frame of Reference UID"),
    exact(0x0020, 0x0200, U, "Synchronization Frame of Reference UID"),
    exact(0x0020, 0x3401, X, "Modifying Device ID"),
    exact(0x0020, 0x3403, X, "Modified Image Date"),
    exact(0x0020, 0x3405, X, "Modified Image Time"),
    exact(0x0020, 0x3406, X, "Modified Image Description"),
    exact(0x0020, 0x4000, X, "Image Comments"),
    exact(0x0020, 0x9158, X, "Frame Comments"),
    exact(0x0020, 0x9161, U, "Concatenation UID"),
    exact(0x0020, 0x9164, U, "Dimension Organization UID"),
    exact(0x0028, 0x1199, U, "Palette Color Lookup Table UID"),
    exact(0x0028, 0x1214, U, "Large Palette Color Lookup Table UID"),
    exact(0x0028, 0x4000, X, "Image Presentation Comments"),
    exact(0x0032, 0x0012, X, "Study ID Issuer"),
    exact(0x0032, 0x0032, X, "Study Verified Date"),
    exact(0x0032, 0x0033, X, "Study Verified Time"),
    exact(0x0032, 0x0034, X, "Study Read Date"),
    exact(0x0032, 0x0035, X, "Study Read Time"),
    exact(0x0032, 0x1000, X, "Scheduled Study Start Date"),
    exact(0x0032, 0x1001, X, "Scheduled Study Start Time"),
    exact(0x0032, 0x1010, X, "Scheduled Study Stop Date"),
    exact(0x0032, 0x1011, X, "Scheduled Study Stop Time"),
    exact(0x0032, 0x1020, X, "Scheduled Study Location"),
    exact(0x0032, 0x1021, X, "Scheduled Study Location AE Title"),
    exact(0x0032, 0x1030, X, "Reason for Study"),
    exact(0x0032, 0x1032, X, "Requesting Physician"),
    exact(0x0032, 0x1033, X, "Requesting Service"),
    exact(0x0032, 0x1040, X, "Study Arrival Date"),
    exact(0x0032, 0x1041, X, "Study Arrival Time"),
    exact(0x0032, 0x1050, X, "Study Completion Date"),
    exact(0x0032, 0x1051, X, "Study Completion Time"),
    exact(0x0032, 0x1060, XZ, "Requested Procedure Description"),
    exact(0x0032, 0x1066, X, "Reason for Visit"),
    exact(0x0032, 0x1067, X, "Reason for Visit Code Sequence"),
    exact(0x0032, 0x1070, X, "Requested Contrast Agent"),
    exact(0x0032, 0x4000, X, "Study Comments"),
    exact(0x0034, 0x0001, D, "Flow Identifier Sequence"),
    exact(0x0034, 0x0002, D, "Flow Identifier"),
    exact(0x0034, 0x0005, D, "Source Identifier"),
    exact(0x0034, 0x0007, D, "Frame Origin Timestamp"),
    exact(0x0038, 0x0004, X, "Referenced Patient Alias Sequence"),
    exact(0x0038, 0x0010, X, "Admission ID"),
    exact(0x0038, 0x0011, X, "Issuer of Admission ID"),
    exact(0x0038, 0x0014, X, "Issuer of Admission ID Sequence"),
    exact(0x0038, 0x001A, X, "Scheduled Admission Date"),
    exact(0x0038, 0x001B, X, "Scheduled Admission Time"),
    exact(0x0038, 0x001C, X, "Scheduled Discharge Date"),
    exact(0x0038, 0x001D, X, "Scheduled Discharge Time"),
    exact(0x0038, 0x001E, X, "Scheduled Patient Institution Residence"),
    exact(0x0038, 0x0020, X, "Admitting Date"),
    exact(0x0038, 0x0021, X, "Admitting Time"),
    exact(0x0038, 0x0030, X, "Discharge Date"),
    exact(0x0038, 0x0032, X, "Discharge Time"),
    exact(0x0038, 0x0040, X, "Discharge Diagnosis Description"),
    exact(0x0038, 0x0050, X, "Special Needs"),
    exact(0x0038, 0x0060, X, "Service Episode ID"),
    exact(0x0038, 0x0061, X, "Issuer of Service Episode ID"),
    exact(0x0038, 0x0062, X, "Service Episode Description"),
    exact(0x0038, 0x0064, X, "Issuer of Service Episode ID Sequence"),
    exact(0x0038, 0x0300, X, "Current Patient Location"),
    exact(0x0038, 0x0400, X, "Patient's Institution Residence"),
    exact(0x0038, 0x0500, X, "Patient State"),
    exact(0x0038, 0x4000, X, "Visit Comments"),
    exact(0x003A, 0x0020, X, "Multiplex Group Label"),
    exact(0x003A, 0x0203, X, "Channel Label"),
    exact(0x003A, 0x020C, X, "Channel Derivation Description"),
    exact(0x003A, 0x0310, U, "Multiplex Group UID"),
    exact(0x003A, 0x0314, D, "Impedance Measurement DateTime"),
    exact(0x003A, 0x0329, X, "Waveform Filter Description"),
    exact(0x003A, 0x032B, X, "Filter Lookup Table Description"),
    exact(0x0040, 0x0001, X, "Scheduled Station AE Title"),
    exact(0x0040, 0x0002, X, "Scheduled Procedure Step Start Date"),
    exact(0x0040, 0x0003, X, "Scheduled Procedure Step Start Time"),
    exact(0x0040, 0x0004, X, "Scheduled Procedure Step End Date"),
    exact(0x0040, 0x0005, X, "Scheduled Procedure Step End Time"),
    exact(0x0040, 0x0006, X, "Scheduled Performing Physician's Name"),
    exact(0x0040, 0x0007, X, "Scheduled Procedure Step Description"),
    exact(0x0040, 0x0009, X, "Scheduled Procedure Step ID"),
    exact(
        0x0040,
        0x000B,
        X,
        "Scheduled Performing Physician Identification Sequence",
    ),
    exact(0x0040, 0x0010, X, "Scheduled Station Name"),
    exact(0x0040, 0x0011, X, "Scheduled Procedure Step Location"),
    exact(0x0040, 0x0012, X, "Pre-Medication"),
    exact(0x0040, 0x0241, X, "Performed Station AE Title"),
    exact(0x0040, 0x0242, X, "Performed Station Name"),
    exact(0x0040, 0x0243, X, "Performed Location"),
    exact(0x0040, 0x0244, X, "Performed Procedure Step Start Date"),
    exact(0x0040, 0x0245, X, "Performed Procedure Step Start Time"),
    exact(0x0040, 0x0250, X, "Performed Procedure Step End Date"),
    exact(0x0040, 0x0251, X, "Performed Procedure Step End Time"),
    exact(0x0040, 0x0253, X, "Performed Procedure Step ID"),
    exact(0x0040, 0x0254, X, "Performed Procedure Step Description"),
    exact(0x0040, 0x0275, X, "Request Attributes Sequence"),
    exact(
        0x0040,
        0x0280,
        X,
        "Comments on the Performed Procedure Step",
    ),
    exact(0x0040, 0x0310, X, "Comments on Radiation Dose"),
    exact(0x0040, 0x050A, X, "Specimen Accession Number"),
    exact(0x0040, 0x0512, D, "Container Identifier"),
    exact(
        0x0040,
        0x0513,
        Z,
        "Issuer of the Container Identifier Sequence",
    ),
    exact(0x0040, 0x051A, X, "Container Description"),
    exact(0x0040, 0x0551, D, "Specimen Identifier"),
    exact(0x0040, 0x0554, U, "Specimen UID"),
    exact(0x0040, 0x0555, XZ, "Acquisition Context Sequence"),
    exact(0x0040, 0x0556, X, "Acquisition Context Description"),
    exact(
        0x0040,
        0x0562,
        Z,
        "Issuer of the Specimen Identifier Sequence",
    ),
    exact(0x0040, 0x0600, X, "Specimen Short Description"),
    exact(0x0040, 0x0602, X, "Specimen Detailed Description"),
    exact(0x0040, 0x0610, Z, "Specimen Preparation Sequence"),
    exact(0x0040, 0x06FA, X, "Slide Identifier"),
    exact(0x0040, 0x1001, X, "Requested Procedure ID"),
    exact(0x0040, 0x1002, X, "Reason for the Requested Procedure"),
    exact(0x0040, 0x1004, X, "Patient Transport Arrangements"),
    exact(0x0040, 0x1005, X, "Requested Procedure Location"),
    exact(
        0x0040,
        0x100A,
        X,
        "Reason for Requested Procedure Code Sequence",
    ),
    exact(0x0040, 0x1010, X, "Names of Intended Recipients of Results"),
    exact(
        0x0040,
        0x1011,
        X,
        "Intended Recipients of Results Identification Sequence",
    ),
    exact(0x0040, 0x1101, D, "Person Identification Code Sequence"),
    exact(0x0040, 0x1102, X, "Person's Address"),
    exact(0x0040, 0x1103, X, "Person's Telephone Numbers"),
    exact(0x0040, 0x1104, X, "Person's Telecom Information"),
    exact(0x0040, 0x1400, X, "Requested Procedure Comments"),
    exact(0x0040, 0x2001, X, "Reason for the Imaging Service Request"),
    exact(0x0040, 0x2004, X, "Issue Date of Imaging Service Request"),
    exact(0x0040, 0x2005, X, "Issue Time of Imaging Service Request"),
    exact(0x0040, 0x2008, X, "Order Entered By"),
    exact(0x0040, 0x2009, X, "Order Enterer's Location"),
    exact(0x0040, 0x2010, X, "Order Callback Phone Number"),
    exact(0x0040, 0x2011, X, "Order Callback Telecom Information"),
    exact(
        0x0040,
        0x2016,
        Z,
        "Placer Order Number / Imaging Service Request",
    ),
    exact(
        0x0040,
        0x2017,
        Z,
        "Filler Order Number / Imaging Service Request",
    ),
    exact(0x0040, 0x2400, X, "Imaging Service Request Comments"),
    exact(
        0x0040,
        0x3001,
        X,
        "Confidentiality Constraint on Patient Data Description",
    ),
    exact(0x0040, 0x4005, X, "Scheduled Procedure Step Start DateTime"),
    exact(
        0x0040,
        0x4008,
        X,
        "Scheduled Procedure Step Expiration DateTime",
    ),
    exact(
        0x0040,
        0x4010,
        X,
        "Scheduled Procedure Step Modification DateTime",
    ),
    exact(0x0040, 0x4011, X, "Expected Completion DateTime"),
    exact(0x0040, 0x4025, X, "Scheduled Station Name Code Sequence"),
    exact(
        0x0040,
        0x4027,
        X,
        "Scheduled Station Geographic Location Code Sequence",
    ),
    exact(0x0040, 0x4028, X, "Performed Station Name Code Sequence"),
    exact(
        0x0040,
        0x4030,
        X,
        "Performed Station Geographic Location Code Sequence",
    ),
    exact(0x0040, 0x4034, X, "Scheduled Human Performers Sequence"),
    exact(0x0040, 0x4035, X, "Actual Human Performers Sequence"),
    exact(0x0040, 0x4036, X, "Human Performer's Organization"),
    exact(0x0040, 0x4037, X, "Human Performer's Name"),
    exact(0x0040, 0x4050, X, "Performed Procedure Step Start DateTime"),
    exact(0x0040, 0x4051, X, "Performed Procedure Step End DateTime"),
    exact(0x0040, 0x4052, X, "Procedure Step Cancellation DateTime"),
    exact(0x0040, 0xA023, X, "Findings Group Recording Date (Trial)"),
    exact(0x0040, 0xA024, X, "Findings Group Recording Time (Trial)"),
    exact(0x0040, 0xA027, D, "Verifying Organization"),
    exact(0x0040, 0xA030, D, "Verification DateTime"),
    exact(0x0040, 0xA032, XD, "Observation DateTime"),
    exact(0x0040, 0xA033, X, "Observation Start DateTime"),
    exact(0x0040, 0xA034, X, "Effective Start DateTime"),
    exact(0x0040, 0xA035, X, "Effective Stop DateTime"),
    exact(0x0040, 0xA073, D, "Verifying Observer Sequence"),
    exact(0x0040, 0xA075, D, "Verifying Observer Name"),
    exact(0x0040, 0xA078, X, "Author Observer Sequence"),
    exact(0x0040, 0xA07A, X, "Participant Sequence"),
    exact(0x0040, 0xA07C, X, "Custodial Organization Sequence"),
    exact(0x0040, 0xA082, Z, "Participation DateTime"),
    exact(
        0x0040,
        0xA088,
        Z,
        "Verifying Observer Identification Code Sequence",
    ),
    exact(
        0x0040,
        0xA110,
        X,
        "Date of Document or Verbal Transaction (Trial)",
    ),
    exact(
        0x0040,
        0xA112,
        X,
        "Time of Document Creation or Verbal Transaction (Trial)",
    ),
    exact(0x0040, 0xA120, D, "DateTime"),
    exact(0x0040, 0xA121, D, "Date"),
    exact(0x0040, 0xA122, D, "Time"),
    exact(0x0040, 0xA123, D, "Person Name"),
    exact(0x0040, 0xA124, U, "UID"),
    exact(0x0040, 0xA13A, D, "Referenced DateTime"),
    exact(0x0040, 0xA171, U, "Observation UID"),
    exact(0x0040, 0xA172, U, "Referenced Observation UID (Trial)"),
    exact(0x0040, 0xA192, X, "Observation Date (Trial)"),
    exact(0x0040, 0xA193, X, "Observation Time (Trial)"),
    exact(0x0040, 0xA307, X, "Current Observer (Trial)"),
    exact(0x0040, 0xA352, X, "Verbal Source (Trial)"),
    exact(0x0040, 0xA353, X, "Address (Trial)"),
    exact(0x0040, 0xA354, X, "Telephone Number (Trial)"),
    exact(
        0x0040,
        0xA358,
        X,
        "Verbal Source Identifier Code Sequence (Trial)",
    ),
    exact(0x0040, 0xA402, U, "Observation Subject UID (Trial)"),
    exact(0x0040, 0xA730, D, "Content Sequence"),
    exact(0x0040, 0xB020, XD, "Waveform Annotation Sequence"),
    exact(0x0040, 0xB034, X, "Annotation DateTime"),
    exact(0x0040, 0xB036, X, "Segment Definition DateTime"),
    exact(0x0040, 0xB03B, X, "Montage Name"),
    exact(0x0040, 0xB03F, X, "Montage Channel Label"),
    exact(0x0040, 0xDB06, X, "Template Version"),
    exact(0x0040, 0xDB07, X, "Template Local Version"),
    exact(0x0040, 0xDB0C, U, "Template Extension Organization UID"),
    exact(0x0040, 0xDB0D, U, "Template Extension Creator UID"),
    exact(0x0040, 0xE004, X, "HL7 Document Effective Time"),
    exact(0x0040, 0xE012, X, "Display URI"),
    exact(0x0042, 0x0011, D, "Encapsulated Document"),
    exact(0x0044, 0x0004, X, "Approval Status DateTime"),
    exact(0x0044, 0x000B, X, "Product Expiration DateTime"),
    exact(0x0044, 0x0010, X, "Substance Administration DateTime"),
    exact(0x0044, 0x0104, D, "Assertion DateTime"),
    exact(0x0044, 0x0105, X, "Assertion Expiration DateTime"),
    exact(0x0050, 0x001B, X, "Container Component ID"),
    exact(0x0050, 0x0020, X, "Device Description"),
    exact(0x0050, 0x0021, X, "Long Device Description"),
    exact(0x0062, 0x0021, U, "Tracking UID"),
    exact(0x0064, 0x0003, U, "Source Frame of Reference UID"),
    exact(0x0068, 0x6226, D, "Effective DateTime"),
    exact(0x0068, 0x6270, D, "Information Issue DateTime"),
    exact(0x006A, 0x0003, D, "Annotation Group UID"),
    exact(0x006A, 0x0005, D, "Annotation Group Label"),
    exact(0x006A, 0x0006, X, "Annotation Group Description"),
    exact(0x0070, 0x0001, D, "Graphic Annotation Sequence"),
    exact(0x0070, 0x0006, D, "Unformatted Text Value"),
    exact(0x0070, 0x0082, X, "Presentation Creation Date"),
    exact(0x0070, 0x0083, X, "Presentation Creation Time"),
    exact(0x0070, 0x0084, ZD, "Content Creator's Name"),
    exact(
        0x0070,
        0x0086,
        X,
        "Content Creator's Identification Code Sequence",
    ),
    exact(0x0070, 0x031A, U, "Fiducial UID"),
    exact(0x0070, 0x1101, U, "Presentation Display Collection UID"),
    exact(0x0070, 0x1102, U, "Presentation Sequence Collection UID"),
    exact(0x0072, 0x000A, D, "Hanging Protocol Creation DateTime"),
    exact(0x0072, 0x005E, D, "Selector AE Value"),
    exact(0x0072, 0x005F, D, "Selector AS Value"),
    exact(0x0072, 0x0061, D, "Selector DA Value"),
    exact(0x0072, 0x0063, D, "Selector DT Value"),
    exact(0x0072, 0x0065, D, "Selector OB Value"),
    exact(0x0072, 0x0066, D, "Selector LO Value"),
    exact(0x0072, 0x0068, D, "Selector LT Value"),
    exact(0x0072, 0x006A, D, "Selector PN Value"),
    exact(0x0072, 0x006B, D, "Selector TM Value"),
    exact(0x0072, 0x006C, D, "Selector SH Value"),
    exact(0x0072, 0x006D, D, "Selector UN Value"),
    exact(0x0072, 0x006E, D, "Selector ST Value"),
    exact(0x0072, 0x0070, D, "Selector UT Value"),
    exact(0x0072, 0x0071, D, "Selector UR Value"),
    exact(0x0074, 0x1234, X, "Receiving AE"),
    exact(0x0074, 0x1236, X, "Requesting AE"),
    exact(0x0088, 0x0140, U, "Storage Media File-set UID"),
    exact(0x0088, 0x0200, X, "Icon Image Sequence(see Note 11)"),
    exact(0x0088, 0x0904, X, "Topic Title"),
    exact(0x0088, 0x0906, X, "Topic Subject"),
    exact(0x0088, 0x0910, X, "Topic Author"),
    exact(0x0088, 0x0912, X, "Topic Keywords"),
    exact(0x0100, 0x0420, X, "SOP Authorization DateTime"),
    exact(0x0400, 0x0100, U, "Digital Signature UID"),
    exact(0x0400, 0x0105, D, "Digital Signature DateTime"),
    exact(0x0400, 0x0115, D, "Certificate of Signer"),
    exact(0x0400, 0x0310, X, "Certified Timestamp"),
    exact(0x0400, 0x0402, X, "Referenced Digital Signature Sequence"),
    exact(0x0400, 0x0403, X, "Referenced SOP Instance MAC Sequence"),
    exact(0x0400, 0x0404, X, "MAC"),
    exact(0x0400, 0x0550, X, "Modified Attributes Sequence"),
    exact(
        0x0400,
        0x0551,
        X,
        "Nonconforming Modified Attributes Sequence",
    ),
    exact(0x0400, 0x0552, X, "Nonconforming Data Element Value"),
    exact(0x0400, 0x0561, X, "Original Attributes Sequence"),
    exact(0x0400, 0x0562, D, "Attribute Modification DateTime"),
    exact(0x0400, 0x0563, D, "Modifying System"),
    exact(0x0400, 0x0564, Z, "Source of Previous Values"),
    exact(0x0400, 0x0565, D, "Reason for the Attribute Modification"),
    exact(0x0400, 0x0600, X, "Instance Origin Status"),
    exact(0x2030, 0x0020, X, "Text String"),
    exact(0x2100, 0x0040, X, "Creation Date"),
    exact(0x2100, 0x0050, X, "Creation Time"),
    exact(0x2100, 0x0070, X, "Originator"),
    exact(0x2100, 0x0140, D, "Destination AE"),
    exact(0x2200, 0x0002, XZ, "Label Text"),
    exact(0x2200, 0x0005, XZ, "Barcode Value"),
    exact(0x3002, 0x0121, X, "Position Acquisition Template Name"),
    exact(
        0x3002,
        0x0123,
        X,
        "Position Acquisition Template Description",
    ),
    exact(0x3006, 0x0002, D, "Structure Set Label"),
    exact(0x3006, 0x0004, X, "Structure Set Name"),
    exact(0x3006, 0x0006, X, "Structure Set Description"),
    exact(0x3006, 0x0008, Z, "Structure Set Date"),
    exact(0x3006, 0x0009, Z, "Structure Set Time"),
    exact(0x3006, 0x0024, U, "Referenced Frame of Reference UID"),
    exact(0x3006, 0x0026, Z, "ROI Name"),
    exact(0x3006, 0x0028, X, "ROI Description"),
    exact(0x3006, 0x002D, X, "ROI DateTime"),
    exact(0x3006, 0x002E, X, "ROI Observation DateTime"),
    exact(0x3006, 0x0038, X, "ROI Generation Description"),
    exact(0x3006, 0x004D, X, "ROI Creator Sequence"),
    exact(0x3006, 0x004E, X, "ROI Interpreter Sequence"),
    exact(0x3006, 0x0085, X, "ROI Observation Label"),
    exact(0x3006, 0x0088, X, "ROI Observation Description"),
    exact(0x3006, 0x00A6, Z, "ROI Interpreter"),
    exact(0x3006, 0x00C2, U, "Related Frame of Reference UID"),
    exact(0x3008, 0x0024, D, "Treatment Control Point Date"),
    exact(0x3008, 0x0025, D, "Treatment Control Point Time"),
    exact(0x3008, 0x0054, XD, "First Treatment Date"),
    exact(0x3008, 0x0056, XD, "Most Recent Treatment Date"),
    exact(0x3008, 0x0105, XZ, "Source Serial Number"),
    exact(0x3008, 0x0162, D, "Safe Position Exit Date"),
    exact(0x3008, 0x0164, D, "Safe Position Exit Time"),
    exact(0x3008, 0x0166, D, "Safe Position Return Date"),
    exact(0x3008, 0x0168, D, "Safe Position Return Time"),
    exact(0x3008, 0x0250, XD, "Treatment Date"),
    exact(0x3008, 0x0251, XD, "Treatment Time"),
    exact(0x300A, 0x0002, D, "RT Plan Label"),
    exact(0x300A, 0x0003, X, "RT Plan Name"),
    exact(0x300A, 0x0004, X, "RT Plan Description"),
    exact(0x300A, 0x0006, XD, "RT Plan Date"),
    exact(0x300A, 0x0007, XD, "RT Plan Time"),
    exact(0x300A, 0x000B, X, "Treatment Sites"),
    exact(0x300A, 0x000E, X, "Prescription Description"),
    exact(0x300A, 0x0013, U, "Dose Reference UID"),
    exact(0x300A, 0x0016, X, "Dose Reference Description"),
    exact(0x300A, 0x0054, U, "Table Top Position Alignment UID"),
    exact(0x300A, 0x0072, X, "Fraction Group Description"),
    exact(0x300A, 0x0083, U, "Referenced Dose Reference UID"),
    exact(0x300A, 0x00B2, XZ, "Treatment Machine Name"),
    exact(0x300A, 0x00C3, X, "Beam Description"),
    exact(0x300A, 0x00DD, X, "Bolus Description"),
    exact(0x300A, 0x0196, X, "Fixation Device Description"),
    exact(0x300A, 0x01A6, X, "Shielding Device Description"),
    exact(0x300A, 0x01B2, X, "Setup Technique Description"),
    exact(0x300A, 0x0216, X, "Source Manufacturer"),
    exact(0x300A, 0x022C, D, "Source Strength Reference Date"),
    exact(0x300A, 0x022E, D, "Source Strength Reference Time"),
    exact(0x300A, 0x02EB, X, "Compensator Description"),
    exact(0x300A, 0x0608, D, "Treatment Position Group Label"),
    exact(0x300A, 0x0609, U, "Treatment Position Group UID"),
    exact(0x300A, 0x0611, Z, "RT Accessory Holder Slot ID"),
    exact(0x300A, 0x0615, Z, "RT Accessory Device Slot ID"),
    exact(0x300A, 0x0619, D, "Radiation Dose Identification Label"),
    exact(
        0x300A,
        0x0623,
        D,
        "Radiation Dose In-Vivo Measurement Label",
    ),
    exact(0x300A, 0x062A, D, "RT Tolerance Set Label"),
    exact(0x300A, 0x0650, U, "Patient Setup UID"),
    exact(
        0x300A,
        0x0676,
        X,
        "Equipment Frame of Reference Description",
    ),
    exact(0x300A, 0x067C, D, "Radiation Generation Mode Label"),
    exact(0x300A, 0x067D, Z, "Radiation Generation Mode Description"),
    exact(0x300A, 0x0700, U, "Treatment Session UID"),
    exact(
        0x300A,
        0x0734,
        D,
        "Treatment Tolerance Violation Description",
    ),
    exact(0x300A, 0x0736, D, "Treatment Tolerance Violation DateTime"),
    exact(0x300A, 0x073A, D, "Recorded RT Control Point DateTime"),
    exact(0x300A, 0x0741, D, "Interlock DateTime"),
    exact(0x300A, 0x0742, D, "Interlock Description"),
    exact(0x300A, 0x0760, D, "Override DateTime"),
    exact(0x300A, 0x0783, D, "Interlock Origin Description"),
    exact(0x300A, 0x0785, U, "Referenced Treatment Position Group UID"),
    exact(
        0x300A,
        0x078E,
        X,
        "Patient Treatment Preparation Procedure Parameter Description",
    ),
    exact(
        0x300A,
        0x0792,
        X,
        "Patient Treatment Preparation Method Description",
    ),
    exact(0x300A, 0x0794, X, "Patient Setup Photo Description"),
    exact(0x300A, 0x079A, X, "Displacement Reference Label"),
    exact(0x300C, 0x0113, X, "Reason for Omission Description"),
    exact(0x300C, 0x0127, D, "Beam Hold Transition DateTime"),
    exact(0x300E, 0x0004, Z, "Review Date"),
    exact(0x300E, 0x0005, Z, "Review Time"),
    exact(0x300E, 0x0008, XZ, "Reviewer Name"),
    exact(0x3010, 0x0006, U, "Conceptual Volume UID"),
    exact(0x3010, 0x000B, U, "Referenced Conceptual Volume UID"),
    exact(
        0x3010,
        0x000F,
        Z,
        "Conceptual Volume Combination Description",
    ),
    exact(0x3010, 0x0013, U, "Constituent Conceptual Volume UID"),
    exact(0x3010, 0x0015, U, "Source Conceptual Volume UID"),
    exact(0x3010, 0x0017, Z, "Conceptual Volume Description"),
    exact(0x3010, 0x001B, Z, "Device Alternate Identifier"),
    exact(0x3010, 0x002D, D, "Device Label"),
    exact(0x3010, 0x0031, U, "Referenced Fiducials UID"),
    exact(0x3010, 0x0033, D, "User Content Label"),
    exact(0x3010, 0x0034, D, "User Content Long Label"),
    exact(0x3010, 0x0035, D, "Entity Label"),
    exact(0x3010, 0x0036, X, "Entity Name"),
    exact(0x3010, 0x0037, X, "Entity Description"),
    exact(0x3010, 0x0038, D, "Entity Long Label"),
    exact(0x3010, 0x003B, U, "RT Treatment Phase UID"),
    exact(0x3010, 0x0043, Z, "Manufacturer's Device Identifier"),
    exact(0x3010, 0x004C, XD, "Intended Phase Start Date"),
    exact(0x3010, 0x004D, XD, "Intended Phase End Date"),
    exact(0x3010, 0x0054, D, "RT Prescription Label"),
    exact(0x3010, 0x0056, XD, "RT Treatment Approach Label"),
    exact(0x3010, 0x005A, Z, "RT Physician Intent Narrative"),
    exact(0x3010, 0x005C, Z, "Reason for Superseding"),
    exact(0x3010, 0x0061, X, "Prior Treatment Dose Description"),
    exact(0x3010, 0x006E, U, "Dosimetric Objective UID"),
    exact(0x3010, 0x006F, U, "Referenced Dosimetric Objective UID"),
    exact(0x3010, 0x0077, XD, "Treatment Site"),
    exact(0x3010, 0x007A, Z, "Treatment Technique Notes"),
    exact(0x3010, 0x007B, Z, "Prescription Notes"),
    exact(0x3010, 0x007F, Z, "Fractionation Notes"),
    exact(0x3010, 0x0081, Z, "Prescription Notes Sequence"),
    exact(0x3010, 0x0085, X, "Intended Fraction Start Time"),
    exact(0x4000, 0x0010, X, "Arbitrary"),
    exact(0x4000, 0x4000, X, "Text Comments"),
    exact(0x4008, 0x0040, X, "Results ID"),
    exact(0x4008, 0x0042, X, "Results ID Issuer"),
    exact(0x4008, 0x0100, X, "Interpretation Recorded Date"),
    exact(0x4008, 0x0101, X, "Interpretation Recorded Time"),
    exact(0x4008, 0x0102, X, "Interpretation Recorder"),
    exact(0x4008, 0x0108, X, "Interpretation Transcription Date"),
    exact(0x4008, 0x0109, X, "Interpretation Transcription Time"),
    exact(0x4008, 0x010A, X, "Interpretation Transcriber"),
    exact(0x4008, 0x010B, X, "Interpretation Text"),
    exact(0x4008, 0x010C, X, "Interpretation Author"),
    exact(0x4008, 0x0111, X, "Interpretation Approver Sequence"),
    exact(0x4008, 0x0112, X, "Interpretation Approval Date"),
    exact(0x4008, 0x0113, X, "Interpretation Approval Time"),
    exact(0x4008, 0x0114, X, "Physician Approving Interpretation"),
    exact(0x4008, 0x0115, X, "Interpretation Diagnosis Description"),
    exact(0x4008, 0x0118, X, "Results Distribution List Sequence"),
    exact(0x4008, 0x0119, X, "Distribution Name"),
    exact(0x4008, 0x011A, X, "Distribution Address"),
    exact(0x4008, 0x0200, X, "Interpretation ID"),
    exact(0x4008, 0x0202, X, "Interpretation ID Issuer"),
    exact(0x4008, 0x0300, X, "Impressions"),
    exact(0x4008, 0x4000, X, "Results Comments"),
    masked(0x5000, 0x0000, 0xFF00, 0x0000, X, "Curve Data"),
    masked(0x6000, 0x3000, 0xFF00, 0xFFFF, X, "Overlay Data"),
    masked(0x6000, 0x4000, 0xFF00, 0xFFFF, X, "Overlay Comments"),
    exact(0xFFFA, 0xFFFA, X, "Digital Signatures Sequence"),
    exact(0xFFFC, 0xFFFC, X, "Data Set Trailing Padding"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_the_2026c_edition() {
        assert_eq!(rows().len(), 654);
        let count = |code| rows().iter().filter(|r| r.code == code).count();
        assert_eq!(count(X), 415);
        assert_eq!(count(D), 93);
        assert_eq!(count(U), 54);
        assert_eq!(count(Z), 42);
        assert_eq!(
            count(XD) + count(XZ) + count(XZD) + count(ZD) + count(XZUStar),
            50
        );
        let mut tags: Vec<_> = rows().iter().map(|r| (r.group, r.element)).collect();
        tags.dedup();
        assert_eq!(tags.len(), rows().len(), "rows are unique and sorted");
    }

    #[test]
    fn well_known_rows_resolve_as_documented() {
        let basic = |g, e| Profile::Basic.decide(Tag(g, e)).action;
        assert_eq!(basic(0x0010, 0x0010), Action::Pseudonym); // Patient's Name
        assert_eq!(basic(0x0010, 0x0020), Action::Pseudonym); // Patient ID
        assert_eq!(basic(0x0010, 0x0030), Action::Empty); // Patient's Birth Date (Z)
        assert_eq!(basic(0x0008, 0x0020), Action::Empty); // Study Date (Z)
        assert_eq!(basic(0x0008, 0x0080), Action::Dummy); // Institution Name (X/Z/D)
        assert_eq!(basic(0x0008, 0x0022), Action::Empty); // Acquisition Date (X/Z)
        assert_eq!(basic(0x0008, 0x0023), Action::Dummy); // Content Date (Z/D)
        assert_eq!(basic(0x0008, 0x0090), Action::Empty); // Referring Physician's Name (Z)
        assert_eq!(basic(0x0010, 0x1010), Action::Remove); // Patient's Age (X)
        assert_eq!(basic(0x0020, 0x000D), Action::MapUid); // Study Instance UID
        assert_eq!(basic(0x0020, 0x000E), Action::MapUid); // Series Instance UID
        assert_eq!(basic(0x0008, 0x0018), Action::MapUid); // SOP Instance UID
        assert_eq!(basic(0x0020, 0x0052), Action::MapUid); // Frame of Reference UID
        assert_eq!(basic(0x0008, 0x1140), Action::CleanItems); // Referenced Image Sequence
        assert_eq!(basic(0x0040, 0xA730), Action::Dummy); // Content Sequence (D)
    }

    #[test]
    fn spatial_and_class_attributes_are_not_listed_so_kept() {
        for (g, e) in [
            (0x0028, 0x0030), // Pixel Spacing
            (0x0020, 0x0032), // Image Position (Patient)
            (0x0020, 0x0037), // Image Orientation (Patient)
            (0x0018, 0x0050), // Slice Thickness
            (0x0008, 0x0016), // SOP Class UID
            (0x0008, 0x0060), // Modality
            (0x7FE0, 0x0010), // Pixel Data
        ] {
            for profile in [Profile::Basic, Profile::BasicKeepTechnical] {
                let d = profile.decide(Tag(g, e));
                assert_eq!(d.action, Action::Keep, "({g:04X},{e:04X})");
                assert!(matches!(d.reason, Reason::NotListed));
            }
        }
    }

    #[test]
    fn private_groups_lengths_and_repeating_groups() {
        for tag in [
            Tag(0x0009, 0x0010),
            Tag(0x0029, 0x1010),
            Tag(0x7FE1, 0x0001),
        ] {
            let d = Profile::Basic.decide(tag);
            assert_eq!(d.action, Action::Remove);
            assert!(matches!(d.reason, Reason::Private));
        }
        assert!(matches!(
            Profile::Basic.decide(Tag(0x0008, 0x0000)).reason,
            Reason::GroupLength
        ));
        assert_eq!(
            Profile::Basic.decide(Tag(0x6002, 0x3000)).action,
            Action::Remove
        );
        assert_eq!(
            Profile::Basic.decide(Tag(0x6000, 0x4000)).action,
            Action::Remove
        );
        assert_eq!(
            Profile::Basic.decide(Tag(0x6000, 0x0010)).action,
            Action::Keep
        ); // Overlay Rows
        assert_eq!(
            Profile::Basic.decide(Tag(0x501E, 0x1234)).action,
            Action::Remove
        );
        assert_eq!(
            row_for(Tag(0x6000, 0x3000)).unwrap().tag_text(),
            "(60xx,3000)"
        );
        assert_eq!(
            row_for(Tag(0x5010, 0x0005)).unwrap().tag_text(),
            "(50xx,xxxx)"
        );
    }

    #[test]
    fn keep_technical_keeps_only_its_list() {
        for &(g, e) in KEEP_TECHNICAL {
            assert!(
                row_for(Tag(g, e)).is_some(),
                "({g:04X},{e:04X}) is a table row"
            );
            assert_ne!(Profile::Basic.decide(Tag(g, e)).action, Action::Keep);
            let d = Profile::BasicKeepTechnical.decide(Tag(g, e));
            assert_eq!(d.action, Action::Keep);
            assert!(matches!(d.reason, Reason::KeptTechnical(_)));
        }
        // Dates and identities are untouched by the option.
        for (g, e) in [
            (0x0008, 0x0020),
            (0x0008, 0x0022),
            (0x0010, 0x0030),
            (0x0010, 0x0020),
        ] {
            assert_eq!(
                Profile::Basic.decide(Tag(g, e)).action,
                Profile::BasicKeepTechnical.decide(Tag(g, e)).action
            );
        }
    }

    #[test]
    fn profile_names_round_trip() {
        for p in [Profile::Basic, Profile::BasicKeepTechnical] {
            assert_eq!(p.name().parse::<Profile>().unwrap(), p);
        }
        assert_eq!(
            "strict".parse::<Profile>(),
            Err(ProfileError::Unknown("strict".into()))
        );
    }
}
