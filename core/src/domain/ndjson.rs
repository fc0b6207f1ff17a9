//! An incremental NDJSON decoder: feed it body chunks as they arrive, get back the
//! complete lines parsed, each with its 1-based line number. Blank lines are skipped;
//! a final line without a trailing newline counts.

use super::record;

#[derive(Debug, Clone, PartialEq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// Receives one raw line and its 1-based number.
type LineSink<'a> = dyn FnMut(&[u8], usize) -> Result<(), LineError> + 'a;

#[derive(Debug, Default)]
pub struct NdjsonDecoder {
    buf: Vec<u8>,
    line: usize,
}

impl NdjsonDecoder {
    /// Takes every complete line in `chunk` (plus what was left over), appending them to
    /// `out`; stops at the first line that is not JSON. Records are stored as sent: each
    /// line is checked as a record ([`record::check_text`]) without being built, and
    /// comes back as its own text with the rule it breaks, if any, and its `record_key`
    /// when `key` names the field.
    pub fn push(
        &mut self,
        chunk: &[u8],
        key: Option<&str>,
        out: &mut Vec<CheckedLine>,
    ) -> Result<(), LineError> {
        self.lines(chunk, &mut |raw, line| {
            out.extend(check_line(raw, line, key)?);
            Ok(())
        })
    }

    /// Takes what is left once the body has ended (a last line without a newline).
    pub fn finish(
        &mut self,
        key: Option<&str>,
        out: &mut Vec<CheckedLine>,
    ) -> Result<(), LineError> {
        self.rest(&mut |raw, line| {
            out.extend(check_line(raw, line, key)?);
            Ok(())
        })
    }

    /// Hands every complete line of the buffer, with its number, to `each`.
    fn lines(&mut self, chunk: &[u8], each: &mut LineSink<'_>) -> Result<(), LineError> {
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            self.line += 1;
            each(&self.buf[start..end], self.line)?;
            start = end + 1;
        }
        self.buf.drain(..start);
        Ok(())
    }

    /// Hands the last line, if the body did not end with a newline, to `each`.
    fn rest(&mut self, each: &mut LineSink<'_>) -> Result<(), LineError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.line += 1;
        let rest = std::mem::take(&mut self.buf);
        each(&rest, self.line)
    }
}

/// One line of JSON as a record to stage (its text as sent, its key), with the record
/// rule it breaks, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedLine {
    pub record: record::Staged,
    pub verdict: record::Verdict,
}

/// The line without its `\r`, or `None` for a blank line (no record).
fn content(raw: &[u8]) -> Option<&[u8]> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    (!raw.iter().all(u8::is_ascii_whitespace)).then_some(raw)
}

fn check_line(
    raw: &[u8],
    line: usize,
    key: Option<&str>,
) -> Result<Option<CheckedLine>, LineError> {
    let Some(raw) = content(raw) else {
        return Ok(None);
    };
    let (verdict, key) = record::check_text(raw, key).map_err(|e| LineError::at(line, e))?;
    // Valid UTF-8 once it parsed; checked again rather than trusted.
    let text = std::str::from_utf8(raw).map_err(|e| LineError::at(line, e))?;
    Ok(Some(CheckedLine {
        record: record::Staged {
            text: text.to_owned(),
            key,
        },
        verdict,
    }))
}

impl LineError {
    fn at(line: usize, e: impl std::fmt::Display) -> Self {
        Self {
            line,
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The records' texts.
    fn texts(out: &[CheckedLine]) -> Vec<&str> {
        out.iter().map(|l| l.record.text.as_str()).collect()
    }

    #[test]
    fn lines_split_across_chunks_and_a_missing_final_newline() {
        let mut d = NdjsonDecoder::default();
        let mut out = Vec::new();
        d.push(b"{\"a\":1}\n{\"a\"", None, &mut out).unwrap();
        d.push(b":2}\r\n\n  \n{\"a\":3}", None, &mut out).unwrap();
        d.finish(None, &mut out).unwrap();
        assert_eq!(texts(&out), ["{\"a\":1}", "{\"a\":2}", "{\"a\":3}"]);
    }

    #[test]
    fn each_record_keeps_the_text_it_was_sent_as() {
        let mut d = NdjsonDecoder::default();
        let mut out = Vec::new();
        d.push(
            b"{\"a\": 1.50, \"n\": 12345678901234567890123}\r\n\n{\"b\"",
            Some("a"),
            &mut out,
        )
        .unwrap();
        d.push(b":\"\xc3\xa9\"}\n[1]", Some("a"), &mut out).unwrap();
        d.finish(Some("a"), &mut out).unwrap();
        assert_eq!(
            texts(&out),
            [
                "{\"a\": 1.50, \"n\": 12345678901234567890123}",
                "{\"b\":\"é\"}",
                "[1]"
            ]
        );
        assert_eq!(out[0].record.key.as_deref(), Some("1.50"));
        assert_eq!(out[1].verdict, Ok(()));
        assert_eq!(out[1].record.key, None);
        assert!(out[2].verdict.as_ref().unwrap_err().contains("object"));
        let err = d.push(b"{\"c\":\n", None, &mut out).unwrap_err();
        assert_eq!(err.line, 5, "blank lines count");
    }

    #[test]
    fn a_bad_line_is_named() {
        let mut d = NdjsonDecoder::default();
        let err = d
            .push(b"{}\n\n{oops}\n", None, &mut Vec::new())
            .unwrap_err();
        assert_eq!(err.line, 3);
        let err = d.push(&[0xff, 0xfe, b'\n'], None, &mut Vec::new());
        assert!(err.is_err(), "non-UTF-8 must be refused");
    }

    proptest! {
        /// However the body is cut into chunks, the decoder yields the same records.
        #[test]
        fn chunking_never_changes_the_result(values in prop::collection::vec(any::<i64>(), 0..40), cuts in prop::collection::vec(0usize..400, 0..10)) {
            let body: String = values.iter().map(|v| format!("{{\"n\":{v}}}\n")).collect();
            let bytes = body.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort();
            let mut d = NdjsonDecoder::default();
            let mut out = Vec::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                d.push(&bytes[prev..c], None, &mut out).unwrap();
                prev = c;
            }
            d.finish(None, &mut out).unwrap();
            let expected: Vec<String> = values.iter().map(|v| format!("{{\"n\":{v}}}")).collect();
            prop_assert_eq!(texts(&out), expected);
        }
    }
}
