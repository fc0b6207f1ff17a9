//! An incremental NDJSON decoder: feed it body chunks as they arrive, get back the
//! complete lines checked as records, each with its 1-based line number. Blank lines are
//! skipped; a final line without a trailing newline counts.
//!
//! Each byte is scanned for a newline once, however small the chunks: the decoder
//! remembers how much of the unfinished line it has already looked at. A line longer than
//! the record limit is refused as soon as that many bytes have arrived, without waiting
//! for its end.

use super::decode::{self, CheckedRecord, DecodeError, RecordDecoder};

#[derive(Debug)]
pub struct NdjsonDecoder {
    /// The unfinished line (every complete line is handed out at once).
    buf: Vec<u8>,
    /// Lines completed so far.
    line: usize,
    max_record: usize,
}

impl NdjsonDecoder {
    /// A decoder that refuses any line over `max_record` bytes.
    pub fn new(max_record: usize) -> Self {
        Self {
            buf: Vec::new(),
            line: 0,
            max_record,
        }
    }

    fn take(
        &mut self,
        raw: &[u8],
        key: Option<&str>,
        out: &mut Vec<CheckedRecord>,
    ) -> Result<(), DecodeError> {
        self.line += 1;
        let line = Some(self.line);
        if raw.len() > self.max_record {
            return Err(DecodeError::too_large(line, self.max_record));
        }
        if let Some(content) = content(raw) {
            out.push(decode::check(content, line, key)?);
        }
        Ok(())
    }
}

impl Default for NdjsonDecoder {
    fn default() -> Self {
        Self::new(decode::DEFAULT_MAX_RECORD_BYTES)
    }
}

impl RecordDecoder for NdjsonDecoder {
    fn push(
        &mut self,
        chunk: &[u8],
        key: Option<&str>,
        out: &mut Vec<CheckedRecord>,
    ) -> Result<(), DecodeError> {
        let mut rest = chunk;
        while let Some(pos) = memchr::memchr(b'\n', rest) {
            let (head, tail) = (&rest[..pos], &rest[pos + 1..]);
            if self.buf.is_empty() {
                self.take(head, key, out)?;
            } else {
                let mut line = std::mem::take(&mut self.buf);
                line.extend_from_slice(head);
                self.take(&line, key, out)?;
                line.clear();
                self.buf = line;
            }
            rest = tail;
        }
        if self.buf.len() + rest.len() > self.max_record {
            return Err(DecodeError::too_large(Some(self.line + 1), self.max_record));
        }
        self.buf.extend_from_slice(rest);
        Ok(())
    }

    fn finish(
        &mut self,
        key: Option<&str>,
        out: &mut Vec<CheckedRecord>,
    ) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let rest = std::mem::take(&mut self.buf);
        self.take(&rest, key, out)
    }
}

/// The line without its `\r`, or `None` for a blank line (no record).
fn content(raw: &[u8]) -> Option<&[u8]> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    (!raw.iter().all(u8::is_ascii_whitespace)).then_some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::decode::DecodeErrorKind;
    use proptest::prelude::*;

    /// The records' texts.
    fn texts(out: &[CheckedRecord]) -> Vec<&str> {
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
        assert_eq!(err.line, Some(5), "blank lines count");
    }

    #[test]
    fn a_bad_line_is_named() {
        let mut d = NdjsonDecoder::default();
        let err = d
            .push(b"{}\n\n{oops}\n", None, &mut Vec::new())
            .unwrap_err();
        assert_eq!(err.line, Some(3));
        let err = d.push(&[0xff, 0xfe, b'\n'], None, &mut Vec::new());
        assert!(err.is_err(), "non-UTF-8 must be refused");
    }

    #[test]
    fn a_line_over_the_limit_is_refused_before_it_ends() {
        let mut d = NdjsonDecoder::new(16);
        let mut out = Vec::new();
        d.push(b"{\"a\":1}\n{\"blob\":\"", None, &mut out).unwrap();
        let err = d.push(b"xxxxxxxxxxxxxxxx", None, &mut out).unwrap_err();
        assert_eq!(err.line, Some(2));
        assert_eq!(err.kind, DecodeErrorKind::TooLarge { limit: 16 });
        assert_eq!(texts(&out), ["{\"a\":1}"]);
        // A line of exactly the limit passes.
        let mut d = NdjsonDecoder::new(8);
        d.push(b"{\"a\":12}\n", None, &mut out).unwrap();
        assert!(
            NdjsonDecoder::new(8)
                .push(b"{\"a\":123}\n", None, &mut out)
                .is_err()
        );
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
