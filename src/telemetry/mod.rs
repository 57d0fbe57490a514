//! Logs and metrics (behaviour §9).
//!
//! - One JSON object per line on Lambda (CloudWatch reads them as structured
//!   logs), readable text locally; the level comes from `AWS_LAMBDA_LOG_LEVEL`
//!   (Lambda's advanced logging controls) or `RUST_LOG`, default `info`.
//! - Every line passes through [`RedactingWriter`] on its way out: personal
//!   data is masked in the formatted line itself, so no call site can bypass
//!   it (see [`redact`]).
//! - One CloudWatch Embedded Metric Format line per job ([`metrics`]).

pub mod metrics;
pub mod phases;
pub mod redact;

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Postgres NOTICEs ("relation already exists, skipping") are not news.
const DEFAULT_FILTER: &str = "info,tokio_postgres=warn";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

impl Format {
    /// JSON on Lambda (or when `AWS_LAMBDA_LOG_FORMAT=JSON`), text elsewhere.
    pub fn from_env() -> Self {
        let on_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some()
            || std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
        if on_lambda {
            Format::Json
        } else {
            Format::Text
        }
    }
}

fn filter_from_env() -> EnvFilter {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .map(|l| format!("{},tokio_postgres=warn", l.to_ascii_lowercase()))
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| DEFAULT_FILTER.to_owned());
    EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// Builds the subscriber every line of this function goes through, writing to
/// `writer` after redaction. `main` installs it globally on stderr; tests
/// install it on a buffer to read what would have been logged.
pub fn subscriber<W>(
    format: Format,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let writer = Redacting(writer);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    match format {
        Format::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_target(false)
                .finish(),
        ),
        Format::Text => Box::new(builder.finish()),
    }
}

/// Installs the process-wide subscriber (stderr, which Lambda ships like stdout,
/// so `invoke` output on stdout stays clean). A subscriber set already is kept.
pub fn init() {
    let _ = tracing::subscriber::set_global_default(subscriber(
        Format::from_env(),
        filter_from_env(),
        io::stderr,
    ));
}

/// A `MakeWriter` whose writers redact each line before passing it on.
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            inner: self.0.make_writer(),
            pending: Vec::new(),
        }
    }
}

/// Buffers what the formatter writes and emits it line by line, redacted.
pub struct RedactingWriter<W: Write> {
    inner: W,
    pending: Vec<u8>,
}

impl<W: Write> RedactingWriter<W> {
    fn emit(&mut self, line: &[u8]) -> io::Result<()> {
        let text = String::from_utf8_lossy(line);
        let mut out = redact::redact_line(&text);
        out.push('\n');
        self.inner.write_all(out.as_bytes())
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            self.emit(&line[..line.len() - 1])?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line)?;
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// A writer that keeps everything written to it, for tests and tools.
#[derive(Clone, Default)]
pub struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Capture {
    pub fn text(&self) -> String {
        self.0
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_owned).collect()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_redacts_whole_lines_even_when_written_in_pieces() {
        let capture = Capture::default();
        {
            let make = Redacting(capture.clone());
            let mut w = make.make_writer();
            w.write_all(b"{\"message\":\"mail john.doe@exa").unwrap();
            w.write_all(b"mple.com\"}\nsecond +8801234567890").unwrap();
        }
        assert_eq!(
            capture.lines(),
            [
                "{\"message\":\"mail joh***@example.com\"}",
                "second +880****90"
            ]
        );
    }

    #[test]
    fn log_events_pass_through_the_redaction() {
        let capture = Capture::default();
        let sub = subscriber(Format::Json, EnvFilter::new("info"), capture.clone());
        tracing::subscriber::with_default(sub, || {
            tracing::info!(
                buyer = "jane.roe@example.com",
                "placing for 550e8400-e29b-41d4-a716-446655440000"
            );
        });
        let text = capture.text();
        assert!(text.contains("jan***@example.com"), "{text}");
        assert!(text.contains("550e8400-****"), "{text}");
        assert!(
            !text.contains("jane.roe") && !text.contains("446655440000"),
            "{text}"
        );
    }
}
