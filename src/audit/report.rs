//! Reading an audit log for a compliance office: a summary of who read what and how much,
//! per user, path and day, and records as RFC 5424 syslog lines for a SIEM. Both work on
//! records as parsed JSON and do not verify them (`audit verify` does).

use std::collections::BTreeMap;

use serde_json::Value;

/// Private enterprise number in the structured-data ID (`smpfs@32473`: 32473 is the
/// number RFC 5612 reserves for documentation examples; no number is registered for smpfs).
pub const SD_ID: &str = "smpfs@32473";

/// Record fields carried as structured-data parameters, in this order.
const SD_FIELDS: [&str; 14] = [
    "seq", "log_id", "segment", "uid", "gid", "user", "process", "path", "file_id", "offset",
    "length", "result", "prev", "tag",
];

/// What one user did with one path on one day.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// `open` records.
    pub opens: u64,
    /// `read` and `gpu_load` records.
    pub reads: u64,
    /// Bytes those reads covered.
    pub bytes: u64,
    /// `denied` and `integrity_failure` records.
    pub refused: u64,
}

/// Counts by (day `YYYY-MM-DD`, user, path), in that order.
#[derive(Debug, Default)]
pub struct Summary {
    rows: BTreeMap<(String, String, String), Counts>,
}

impl Summary {
    /// Adds one record; records about no path (mount, purge, refresh …) are not counted.
    pub fn add(&mut self, record: &Value) {
        let Some(path) = record["path"].as_str() else {
            return;
        };
        let day = record["time"]
            .as_str()
            .unwrap_or("")
            .get(..10)
            .unwrap_or("?");
        let user = match (record["user"].as_str(), record["uid"].as_u64()) {
            (Some(user), Some(uid)) if user != "?" => format!("{user} ({uid})"),
            (_, Some(uid)) => format!("uid {uid}"),
            (Some(user), None) => user.to_owned(),
            (None, None) => "?".to_owned(),
        };
        let counts = self
            .rows
            .entry((day.to_owned(), user, path.to_owned()))
            .or_default();
        match record["event"].as_str() {
            Some("open") => counts.opens += 1,
            Some("read" | "gpu_load") => {
                counts.reads += 1;
                counts.bytes += record["length"].as_u64().unwrap_or(0);
            }
            Some("denied" | "integrity_failure") => counts.refused += 1,
            _ => {}
        }
    }

    /// The rows: (day, user, path) and their counts, sorted.
    pub fn rows(&self) -> impl Iterator<Item = (&str, &str, &str, Counts)> {
        self.rows.iter().map(|((day, user, path), counts)| {
            (day.as_str(), user.as_str(), path.as_str(), *counts)
        })
    }
}

/// `record` (whose log line is `line`) as one RFC 5424 message: facility authpriv, severity
/// info, or warning for refusals and integrity failures; the record's time, host, `smpfs`,
/// its pid, the event as MSGID, its fields as structured data, and the log line itself as
/// the message, so a SIEM keeps the chained record as written.
pub fn syslog_line(record: &Value, line: &str) -> String {
    const AUTHPRIV: u32 = 10;
    let header_field = |field: &str, max: usize| {
        let text = match &record[field] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        let printable: String = text
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(max)
            .collect();
        if printable.is_empty() {
            "-".to_owned()
        } else {
            printable
        }
    };
    let mut data = format!("[{SD_ID}");
    for field in SD_FIELDS {
        let value = match &record[field] {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        data.push_str(&format!(" {field}=\"{}\"", sd_escape(&value)));
    }
    data.push(']');
    format!(
        "<{}>1 {} {} smpfs {} {} {data} {line}",
        AUTHPRIV * 8 + u32::from(severity(record)),
        header_field("time", 128),
        header_field("host", 255),
        header_field("pid", 128),
        header_field("event", 32),
    )
}

/// Syslog severity of a record: warning (4) for refusals and integrity failures, info (6)
/// for the rest.
pub fn severity(record: &Value) -> u8 {
    match record["event"].as_str() {
        Some("denied" | "integrity_failure") => 4,
        _ => 6,
    }
}

/// A structured-data parameter value with `"`, `\` and `]` escaped (RFC 5424 §6.3.3), and
/// control characters written as escapes (`\n`, `\u{1b}`), so a message is always one
/// line (a path may hold a newline).
fn sd_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
            out.push(c);
        } else if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_summary_counts_by_day_user_and_path() {
        let mut summary = Summary::default();
        let at = |day: &str| format!("{day}T10:00:00.000000000Z");
        let records = [
            json!({"event": "mount", "time": at("2026-12-01")}),
            json!({"event": "open", "time": at("2026-12-01"), "uid": 0, "user": "root", "path": "CT/1.dcm"}),
            json!({"event": "read", "time": at("2026-12-01"), "uid": 0, "user": "root", "path": "CT/1.dcm", "offset": 0, "length": 4096}),
            json!({"event": "read", "time": at("2026-12-01"), "uid": 0, "user": "root", "path": "CT/1.dcm", "offset": 4096, "length": 100}),
            json!({"event": "denied", "time": at("2026-12-02"), "uid": 1234, "user": "?", "path": "CT/1.dcm"}),
            json!({"event": "read", "time": at("2026-12-02"), "uid": 1000, "path": "MR/2.dcm", "length": 7}),
        ];
        for record in &records {
            summary.add(record);
        }
        let rows: Vec<_> = summary.rows().collect();
        assert_eq!(
            rows,
            [
                (
                    "2026-12-01",
                    "root (0)",
                    "CT/1.dcm",
                    Counts {
                        opens: 1,
                        reads: 2,
                        bytes: 4196,
                        refused: 0
                    }
                ),
                (
                    "2026-12-02",
                    "uid 1000",
                    "MR/2.dcm",
                    Counts {
                        opens: 0,
                        reads: 1,
                        bytes: 7,
                        refused: 0
                    }
                ),
                (
                    "2026-12-02",
                    "uid 1234",
                    "CT/1.dcm",
                    Counts {
                        opens: 0,
                        reads: 0,
                        bytes: 0,
                        refused: 1
                    }
                ),
            ]
        );
    }

    #[test]
    fn syslog_lines_follow_rfc_5424_and_escape_structured_data() {
        let record = json!({
            "seq": 7, "time": "2026-12-04T15:00:00.123456789Z", "log_id": "ab", "segment": 1,
            "event": "integrity_failure", "uid": 0, "pid": 42, "process": "cat",
            "user": "root", "host": "ws 1", "path": "a\"b]c\\d", "result": "EIO", "prev": "00",
            "tag": "ff"
        });
        let line = syslog_line(&record, "{\"seq\":7}");
        assert_eq!(
            line,
            "<84>1 2026-12-04T15:00:00.123456789Z ws1 smpfs 42 integrity_failure \
             [smpfs@32473 seq=\"7\" log_id=\"ab\" segment=\"1\" uid=\"0\" user=\"root\" \
             process=\"cat\" path=\"a\\\"b\\]c\\\\d\" result=\"EIO\" prev=\"00\" tag=\"ff\"] \
             {\"seq\":7}"
        );
        let newline = syslog_line(&json!({"event": "read", "path": "a\nb"}), "{}");
        assert!(
            !newline.contains('\n') && newline.contains("path=\"a\\nb\""),
            "{newline}"
        );
        let quiet = syslog_line(&json!({"event": "read"}), "{}");
        assert!(
            quiet.starts_with("<86>1 - - smpfs - read [smpfs@32473] {}"),
            "{quiet}"
        );
    }
}
