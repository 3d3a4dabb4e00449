//! What the command line writes: messages that survive a closed pipe, and log lines that
//! stay one line whatever an object name holds.

use std::borrow::Cow;

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::FormatFields;

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

/// How log events show their fields: values with control characters escaped (see
/// [`escape_controls`]), so that every event stays one line, whatever names it carries.
/// The message is written bare, other fields as `name=value` (strings quoted).
pub fn escaped_fields() -> impl for<'writer> FormatFields<'writer> + Send + Sync + 'static {
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        let text = escape_controls(&text);
        if field.name() == "message" {
            write!(writer, "{text}")
        } else {
            write!(writer, "{field}={text}")
        }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_kept() {
        assert!(matches!(escape_controls("CT/1.dcm"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\nWARN forged\r\u{1b}[2J"),
            "a\\nWARN forged\\r\\u{1b}[2J"
        );
    }

    #[test]
    fn an_event_with_a_newline_in_a_name_is_logged_as_one_line() {
        #[derive(Clone, Default)]
        struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(escaped_fields())
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let name = "x\n2026-12-04T00:00:00Z  INFO forged";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(key = name, "hiding object: {name}");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("hiding object: x\\n2026"), "{text}");
        assert!(text.contains("key=\"x\\n2026"), "{text}");
    }
}
