//! What the command line writes: messages that survive a closed pipe, and log lines that
//! stay one line whatever an object name holds.

use std::borrow::Cow;
use std::io::Write;

/// Writes one line to standard error; a closed or full stderr is ignored (the message has
/// nowhere to go), where `eprintln!` would panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// Writes one line to standard output, returning the `io::Result` so a closed pipe ends
/// the command quietly (see `is_broken_pipe`) instead of panicking as `println!` does.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

pub(crate) use {out, say};

/// `text` with every control character (newline, carriage return, escape, …) written as
/// a Rust escape, so a hostile name cannot start a forged line or move the cursor.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

/// Whether an error chain ends in a closed pipe (the reader, e.g. `head`, went away).
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<csv::Error>()
                .is_some_and(|e| matches!(e.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe))
    })
}

/// A `tracing` writer for one event: it collects the formatted event and writes it as
/// exactly one line, with control characters inside it escaped. Write errors are dropped.
pub struct OneLine<W: Write> {
    inner: W,
    event: Vec<u8>,
}

impl<W: Write> OneLine<W> {
    /// Collects one event for `inner`.
    pub fn new(inner: W) -> Self {
        OneLine {
            inner,
            event: Vec::with_capacity(256),
        }
    }
}

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.event.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for OneLine<W> {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.event);
        let body = text.strip_suffix('\n').unwrap_or(&text);
        let line = format!("{}\n", escape_controls(body));
        let _ = self.inner.write_all(line.as_bytes());
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_kept() {
        assert!(matches!(escape_controls("CT/1.dcm"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\nWARN forged\r\u{1b}[2J"),
            "a\\nWARN forged\\r\\u{1b}[2J"
        );
    }

    #[test]
    fn an_event_with_a_newline_in_a_name_is_written_as_one_line() {
        let mut sink = Vec::new();
        {
            let mut writer = OneLine::new(&mut sink);
            writer.write_all(b"WARN hiding object: ").unwrap();
            writer
                .write_all(b"x\n2026-12-04T00:00:00Z  INFO forged\n")
                .unwrap();
        }
        let text = String::from_utf8(sink).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.ends_with("forged\n"));
        assert!(text.contains("x\\n2026"));
    }
}
