//! An incremental decoder for a JSON array of records (`[{...}, {...}]`): feed it body
//! chunks as they arrive, get back each element as soon as it is complete, checked as a
//! record and kept as its own text.
//!
//! The array is never built as a `Value`: a scanner that follows strings and nesting
//! finds where each element ends, and only that element is parsed. So a body's memory is
//! one element at a time, not the ~50 bytes a `Value` costs per `{}` of three.

use super::decode::{self, CheckedRecord, DecodeError, RecordDecoder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `[`.
    Start,
    /// After `[`: an element or `]`.
    Open,
    /// After `,`: an element.
    Comma,
    /// Inside an element.
    Element,
    /// After the closing `]`: only white space.
    End,
}

#[derive(Debug)]
pub struct JsonArrayDecoder {
    state: State,
    /// The unfinished element's bytes from earlier chunks.
    buf: Vec<u8>,
    depth: usize,
    in_string: bool,
    escaped: bool,
    max_record: usize,
}

impl JsonArrayDecoder {
    /// A decoder that refuses any element over `max_record` bytes.
    pub fn new(max_record: usize) -> Self {
        Self {
            state: State::Start,
            buf: Vec::new(),
            depth: 0,
            in_string: false,
            escaped: false,
            max_record,
        }
    }

    /// Hands out the element made of `buf` and `tail`.
    fn element(
        &mut self,
        tail: &[u8],
        key: Option<&str>,
        out: &mut Vec<CheckedRecord>,
    ) -> Result<(), DecodeError> {
        let whole: &[u8] = if self.buf.is_empty() {
            tail
        } else {
            self.buf.extend_from_slice(tail);
            &self.buf
        };
        let trimmed = whole.trim_ascii_end();
        if trimmed.len() > self.max_record {
            return Err(DecodeError::too_large(None, self.max_record));
        }
        let checked = decode::check(trimmed, None, key);
        self.buf.clear();
        out.push(checked?);
        Ok(())
    }
}

impl Default for JsonArrayDecoder {
    fn default() -> Self {
        Self::new(decode::DEFAULT_MAX_RECORD_BYTES)
    }
}

impl RecordDecoder for JsonArrayDecoder {
    fn push(
        &mut self,
        chunk: &[u8],
        key: Option<&str>,
        out: &mut Vec<CheckedRecord>,
    ) -> Result<(), DecodeError> {
        let mut start = (self.state == State::Element).then_some(0);
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            match self.state {
                State::Start | State::End if b.is_ascii_whitespace() => {}
                State::Start if b == b'[' => self.state = State::Open,
                State::Start => {
                    return Err(DecodeError::syntax(
                        None,
                        "the body must be a JSON array of records",
                    ));
                }
                State::End => {
                    return Err(DecodeError::syntax(
                        None,
                        "trailing characters after the array",
                    ));
                }
                State::Open | State::Comma if b.is_ascii_whitespace() => {}
                State::Open if b == b']' => self.state = State::End,
                State::Open | State::Comma if b == b',' || b == b']' => {
                    return Err(DecodeError::syntax(None, "expected a record"));
                }
                State::Open | State::Comma => {
                    self.state = State::Element;
                    start = Some(i);
                    continue;
                }
                State::Element if self.in_string => {
                    if self.escaped {
                        self.escaped = false;
                    } else if b == b'\\' {
                        self.escaped = true;
                    } else if b == b'"' {
                        self.in_string = false;
                    }
                }
                State::Element => match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' if self.depth > 0 => self.depth -= 1,
                    b',' | b']' if self.depth == 0 => {
                        let from = start.take().expect("an element has a start");
                        self.element(&chunk[from..i], key, out)?;
                        self.state = if b == b',' { State::Comma } else { State::End };
                    }
                    _ => {}
                },
            }
            i += 1;
        }
        if let Some(from) = start {
            if self.buf.len() + (chunk.len() - from) > self.max_record {
                return Err(DecodeError::too_large(None, self.max_record));
            }
            self.buf.extend_from_slice(&chunk[from..]);
        }
        Ok(())
    }

    fn finish(&mut self, _: Option<&str>, _: &mut Vec<CheckedRecord>) -> Result<(), DecodeError> {
        match self.state {
            State::End => Ok(()),
            State::Start => Err(DecodeError::syntax(
                None,
                "the body is empty: expected a JSON array of records",
            )),
            _ => Err(DecodeError::syntax(
                None,
                "the body ends before the array does",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::decode::DecodeErrorKind;

    fn decode(chunks: &[&[u8]], max: usize) -> Result<Vec<CheckedRecord>, DecodeError> {
        let mut d = JsonArrayDecoder::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            d.push(chunk, Some("id"), &mut out)?;
        }
        d.finish(Some("id"), &mut out)?;
        Ok(out)
    }

    fn texts(out: &[CheckedRecord]) -> Vec<&str> {
        out.iter().map(|r| r.record.text.as_str()).collect()
    }

    #[test]
    fn elements_come_out_as_sent_with_their_keys() {
        let body = br#" [ {"id": 1, "s": "a,]\"}"} , {"id":"x","n":[1,{"b":[]}]},{} ] "#;
        let out = decode(&[body], 1 << 20).unwrap();
        assert_eq!(
            texts(&out),
            [
                r#"{"id": 1, "s": "a,]\"}"}"#,
                r#"{"id":"x","n":[1,{"b":[]}]}"#,
                "{}"
            ]
        );
        assert_eq!(out[0].record.key.as_deref(), Some("1"));
        assert_eq!(out[1].record.key.as_deref(), Some("x"));
        assert!(out.iter().all(|r| r.verdict.is_ok()));
        assert!(decode(&[b"[]"], 10).unwrap().is_empty());
        assert!(decode(&[b" [ ] "], 10).unwrap().is_empty());
    }

    #[test]
    fn what_is_not_an_array_of_json_values_is_refused() {
        for body in [
            &b""[..],
            b"{}",
            b"[",
            b"[{}",
            b"[{},]",
            b"[,{}]",
            b"[{} {}]",
            b"[{}]]",
            b"[{}] x",
            b"[{\"a\":}]",
            b"[\"unterminated]",
        ] {
            let err = decode(&[body], 100).unwrap_err();
            assert!(
                matches!(err.kind, DecodeErrorKind::Syntax(_)),
                "{}: {err:?}",
                String::from_utf8_lossy(body)
            );
        }
        // A well-formed element that is not an object breaks a record rule instead.
        let out = decode(&[b"[1, [2]]"], 100).unwrap();
        assert!(out.iter().all(|r| r.verdict.is_err()));
    }

    #[test]
    fn an_element_over_the_limit_is_refused_before_it_ends() {
        let mut d = JsonArrayDecoder::new(16);
        let mut out = Vec::new();
        d.push(b"[{\"a\":1},{\"blob\":\"", None, &mut out).unwrap();
        let err = d.push(b"xxxxxxxxxxxxxxx", None, &mut out).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::TooLarge { limit: 16 });
        assert_eq!(texts(&out), ["{\"a\":1}"]);
        assert_eq!(decode(&[b"[{\"a\":12}]"], 8).unwrap().len(), 1);
        assert!(decode(&[b"[{\"a\":123}]"], 8).is_err());
    }

    proptest! {
        /// However the body is cut, the same records come out, and they are what
        /// serde_json reads from the whole array.
        #[test]
        fn chunking_never_changes_the_result(
            values in prop::collection::vec(any::<(i64, String)>(), 0..30),
            cuts in prop::collection::vec(0usize..2000, 0..12),
        ) {
            let records: Vec<serde_json::Value> = values
                .iter()
                .map(|(n, s)| serde_json::json!({"id": n, "s": s, "nested": [s, {"k": n}]}))
                .collect();
            let body = serde_json::to_vec_pretty(&records).unwrap();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(body.len())).collect();
            cuts.sort();
            let mut chunks = Vec::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain([body.len()]) {
                chunks.push(&body[prev..c]);
                prev = c;
            }
            let out = decode(&chunks, 1 << 20).unwrap();
            let parsed: Vec<serde_json::Value> = out
                .iter()
                .map(|r| serde_json::from_str(&r.record.text).unwrap())
                .collect();
            prop_assert_eq!(parsed, records);
        }
    }
}
