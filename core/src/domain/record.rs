//! A tenant's record as staged for delivery: a JSON object that Postgres can store, and
//! its `record_key`: the text of the top-level field the job names, as Postgres'
//! `payload ->> key` would give it (a string unescaped, `null` none, anything else its
//! JSON text; the last of duplicate fields wins).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, value::RawValue};

/// Largest accepted nesting depth. serde_json already stops at 128 while parsing; this
/// keeps records well inside what jsonb and destinations handle.
pub const MAX_DEPTH: usize = 64;

/// A broken rule, said of the record (reported under the record's position).
pub type Verdict = Result<(), String>;

/// Checks one record. The error says what is wrong with it, to be reported under the
/// record's position.
pub fn check(payload: &Value) -> Verdict {
    // `&Value` is a serde Deserializer, so the rules live in one place: [`Check`].
    Check::record(None)
        .deserialize(payload)
        .map_or_else(|e| Err(e.to_string()), |(verdict, _)| verdict)
}

/// One record as it is staged: its JSON text (already checked) and its `record_key`.
#[derive(Debug, Clone, PartialEq)]
pub struct Staged {
    pub text: String,
    pub key: Option<String>,
}

/// Parses `text` as one JSON value and checks it as a record, without building it:
/// an upload's records are stored as the text they were sent as, so building a
/// `Value` for each (an allocation per field) would only be thrown away. Returns the
/// verdict and the record's `record_key` when `key` names its field. The outer error
/// is the text not being JSON; the inner one a rule the record breaks.
pub fn check_text(
    text: &[u8],
    key: Option<&str>,
) -> Result<(Verdict, Option<String>), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let checked = Check::record(key).deserialize(&mut de)?;
    de.end()?;
    Ok(checked)
}

/// The text of a field's value as `->>` gives it.
fn key_text(raw: &RawValue) -> Result<Option<String>, serde_json::Error> {
    Ok(match raw.get() {
        "null" => None,
        s if s.starts_with('"') => Some(serde_json::from_str(s)?),
        s => Some(s.to_owned()),
    })
}

/// Checks the value it deserializes, at `depth` (the record itself is 1), reading all of
/// it even after the first broken rule, which it returns; at the top, also takes the
/// text of the field named `key`.
#[derive(Clone, Copy)]
struct Check<'k> {
    depth: usize,
    key: Option<&'k str>,
}

/// A verdict, and the record key when the checked value was a record with one.
type Checked = (Verdict, Option<String>);

impl<'k> Check<'k> {
    fn record(key: Option<&'k str>) -> Self {
        Self { depth: 1, key }
    }

    fn inner(self) -> Self {
        Self {
            depth: self.depth + 1,
            key: None,
        }
    }

    fn is_record(self) -> bool {
        self.depth == 1
    }

    fn not_an_object(self, kind: &str) -> Verdict {
        if self.is_record() {
            Err(format!("must be a JSON object, not {kind}"))
        } else {
            Ok(())
        }
    }
}

const NUL_IN_STRING: &str = "contains a NUL character (\\u0000), which cannot be stored";
const NUL_IN_NAME: &str = "has a field name containing a NUL character (\\u0000)";

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = Checked;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Checked, D::Error> {
        // Read on past the limit, rather than skipped: serde_json's own recursion limit
        // (128) then makes a body nested deeper than it can read unreadable (a 400),
        // as it is when parsed whole.
        let checked = d.deserialize_any(self)?;
        if self.depth == MAX_DEPTH + 1 {
            return Ok((
                Err(format!("is nested deeper than {MAX_DEPTH} levels")),
                None,
            ));
        }
        Ok(checked)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok((self.not_an_object("a boolean"), None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok((self.not_an_object("a number"), None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok((self.not_an_object("a number"), None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok((self.not_an_object("a number"), None))
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok((self.not_an_object("null"), None))
    }

    fn visit_str<E>(self, s: &str) -> Result<Checked, E> {
        // Postgres cannot store U+0000 in json text it is asked to read as jsonb.
        let nul = if s.contains('\0') {
            Err(NUL_IN_STRING.into())
        } else {
            Ok(())
        };
        Ok((self.not_an_object("a string").and(nul), None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        let mut verdict = self.not_an_object("an array");
        while let Some((v, _)) = seq.next_element_seed(self.inner())? {
            verdict = verdict.and(v);
        }
        Ok((verdict, None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let mut verdict = Ok(());
        let mut key = None;
        while let Some((name, is_key)) = map.next_key_seed(FieldName { key: self.key })? {
            verdict = verdict.and(name);
            if is_key {
                // Taken raw, for its text as sent, then checked like any field.
                let raw: &RawValue = map.next_value()?;
                let mut de = serde_json::Deserializer::from_str(raw.get());
                let (v, _) = self
                    .inner()
                    .deserialize(&mut de)
                    .map_err(de::Error::custom)?;
                verdict = verdict.and(v);
                key = key_text(raw).map_err(de::Error::custom)?;
            } else {
                verdict = verdict.and(map.next_value_seed(self.inner())?.0);
            }
        }
        Ok((verdict, key))
    }
}

/// Checks a field name, and says whether it is `key`.
struct FieldName<'k> {
    key: Option<&'k str>,
}

impl<'de> DeserializeSeed<'de> for FieldName<'_> {
    type Value = (Verdict, bool);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(Verdict, bool), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldName<'_> {
    type Value = (Verdict, bool);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(Verdict, bool), E> {
        let verdict = if s.contains('\0') {
            Err(NUL_IN_NAME.into())
        } else {
            Ok(())
        };
        Ok((verdict, self.key == Some(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The record's `record_key` when it is held as a built value (and stored as that
    /// value's serialisation).
    fn key_of(payload: &Value, key: &str) -> Option<String> {
        match payload.get(key)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    #[test]
    fn record_keys_are_what_postgres_gives_for_payload_arrow_key() {
        // `'...'::json ->> 'id'` on Postgres 15 for each of these.
        let cases: [(&[u8], Option<&str>); 7] = [
            (br#"{"id": "a\tb\u00e9"}"#, Some("a\tbé")),
            (br#"{"id": 1.50}"#, Some("1.50")),
            (br#"{"id": 1e2}"#, Some("1e2")),
            (br#"{"id": {"b" : 1}}"#, Some(r#"{"b" : 1}"#)),
            (br#"{"id": null}"#, None),
            (br#"{"id": 1, "id": 2}"#, Some("2")),
            (br#"{"other": 1}"#, None),
        ];
        for (text, want) in cases {
            let (verdict, key) = check_text(text, Some("id")).unwrap();
            assert_eq!(verdict, Ok(()));
            assert_eq!(key.as_deref(), want, "{}", String::from_utf8_lossy(text));
        }
        assert_eq!(key_of(&json!({"id": 7}), "id").as_deref(), Some("7"));
        assert_eq!(key_of(&json!({"id": "x"}), "id").as_deref(), Some("x"));
    }

    #[test]
    fn pathological_records_get_a_reason() {
        assert!(check(&json!([1])).unwrap_err().contains("object"));
        assert!(check(&json!({"a": "x\u{0}y"})).unwrap_err().contains("NUL"));
        assert!(check(&json!({"a\u{0}": 1})).unwrap_err().contains("NUL"));
        let mut deep = json!(1);
        for _ in 0..70 {
            deep = json!({ "n": deep });
        }
        assert!(check(&deep).unwrap_err().contains("nested"));
        let big = "x".repeat(1 << 20);
        assert!(check(&json!({ "blob": big })).is_ok());
        let rule = |text: &[u8], key| check_text(text, key).unwrap().0.unwrap_err();
        assert!(rule(deep.to_string().as_bytes(), None).contains("nested"));
        assert!(rule(br#"{"a": "x\u0000"}"#, Some("a")).contains("NUL"));
        assert!(rule(br#"{"a\u0000": 1}"#, None).contains("NUL"));
        assert!(rule(b"null", Some("a")).contains("not null"));
        assert!(check_text(b"{} {}", None).is_err(), "one value per record");
        assert!(
            check_text(b"{\"a\": 1e999}", None).is_err(),
            "a number out of range is not JSON we can store"
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn staging_accepts_exactly_nul_free_objects(v in arb_json()) {
            let has_nul = v.to_string().contains("\\u0000");
            prop_assert_eq!(check(&v).is_ok(), v.is_object() && !has_nul);
        }

        /// Checking the text, unbuilt, says what checking the built value says.
        #[test]
        fn checking_text_agrees_with_checking_the_value(v in arb_json()) {
            let (verdict, key) = check_text(v.to_string().as_bytes(), Some("k")).unwrap();
            prop_assert_eq!(verdict.is_ok(), check(&v).is_ok());
            prop_assert_eq!(key, key_of(&v, "k"));
        }
    }
}
