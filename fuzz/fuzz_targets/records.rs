//! Fuzzes record intake as `POST /api/v1/jobs/{id}/records` runs it: the NDJSON and JSON
//! array decoders (`core/src/domain/ndjson.rs`, `json_array.rs`), which check each record
//! without building it, fed in two chunks split at an arbitrary point.
//!
//! Properties, beyond "never panics, never hangs":
//! - chunking does not matter: one chunk or two give the same records, or fail on the
//!   same line;
//! - the line numbers of errors are 1-based and within the input;
//! - every record that passes the record rules is a JSON object;
//! - the array decoder yields what serde_json reads from the same array.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run records` (docs/security.md).

#![no_main]

use freight_core::domain::{
    decode::RecordDecoder, json_array::JsonArrayDecoder, ndjson::NdjsonDecoder,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The records' texts and whether each keeps the record rules, or the line that failed.
fn decode(chunks: &[&[u8]]) -> (Vec<(String, bool)>, Result<(), usize>) {
    let mut decoder = NdjsonDecoder::default();
    let mut out = Vec::new();
    let mut done = Ok(());
    for chunk in chunks {
        if let Err(e) = decoder.push(chunk, None, &mut out) {
            done = Err(e.line.expect("NDJSON errors have a line"));
            break;
        }
    }
    if done.is_ok() {
        done = decoder
            .finish(None, &mut out)
            .map_err(|e| e.line.expect("NDJSON errors have a line"));
    }
    let records = out
        .into_iter()
        .map(|l| (l.record.text, l.verdict.is_ok()))
        .collect();
    (records, done)
}

fuzz_target!(|data: &[u8]| {
    // NDJSON, whole and split in two.
    let split = data.first().map_or(0, |&b| usize::from(b)) % (data.len() + 1);
    let (whole, whole_result) = decode(&[data]);
    let (parts, parts_result) = decode(&[&data[..split], &data[split..]]);
    assert_eq!(whole_result, parts_result, "chunking changed the outcome");
    assert_eq!(whole, parts, "chunking changed the records");
    if let Err(line) = whole_result {
        let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
        assert!(line >= 1 && line <= lines, "line {line} of {lines}");
    }
    for (text, keeps_the_rules) in &whole {
        if *keeps_the_rules {
            let r: Value = serde_json::from_str(text).expect("a checked line is JSON");
            assert!(r.is_object(), "a record that passes is an object: {r}");
        }
    }

    // The JSON array form, whole and split in two: the same records, which are what
    // serde_json reads from the whole array.
    let array = |chunks: &[&[u8]]| {
        let mut decoder = JsonArrayDecoder::default();
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.push(chunk, None, &mut out).ok()?;
        }
        decoder.finish(None, &mut out).ok()?;
        Some(out.into_iter().map(|r| r.record.text).collect::<Vec<_>>())
    };
    let whole = array(&[data]);
    assert_eq!(whole, array(&[&data[..split], &data[split..]]), "chunking changed the array");
    if let (Some(texts), Ok(values)) = (&whole, serde_json::from_slice::<Vec<Value>>(data)) {
        let decoded: Vec<Value> = texts.iter().map(|t| serde_json::from_str(t).unwrap()).collect();
        assert_eq!(decoded, values, "the array decoder disagrees with serde_json");
    }
});
