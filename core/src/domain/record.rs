//! A tenant's record as staged for delivery: a JSON object that Postgres can store.
//! The record's `record_key` is extracted by the insert statement itself (`payload ->> key`).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Largest accepted nesting depth. serde_json already stops at 128 while parsing; this
/// keeps records well inside what jsonb and destinations handle.
pub const MAX_DEPTH: usize = 64;

/// A broken rule, said of the record (reported under the record's position).
pub type Verdict = Result<(), String>;

/// Checks one record. The error says what is wrong with it, to be reported under the
/// record's position.
pub fn check(payload: &Value) -> Verdict {
    // `&Value` is a serde Deserializer, so the rules live in one place: [`Check`].
    Check::record()
        .deserialize(payload)
        .unwrap_or_else(|e| Err(e.to_string()))
}

/// Parses `text` as one JSON value and checks it as a record, without building it:
/// an upload's records are stored as the text they were sent as, so building a
/// `Value` for each (an allocation per field) would only be thrown away. The outer
/// error is the text not being JSON; the inner one a rule the record breaks.
pub fn check_text(text: &[u8]) -> Result<Verdict, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let verdict = Check::record().deserialize(&mut de)?;
    de.end()?;
    Ok(verdict)
}

/// Checks the value it deserializes, at `depth` (the record itself is 1), reading all of
/// it even after the first broken rule, which it returns.
#[derive(Clone, Copy)]
struct Check {
    depth: usize,
}

impl Check {
    fn record() -> Self {
        Self { depth: 1 }
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

impl<'de> DeserializeSeed<'de> for Check {
    type Value = Verdict;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Verdict, D::Error> {
        if self.depth > MAX_DEPTH {
            <IgnoredAny as de::Deserialize>::deserialize(d)?;
            return Ok(Err(format!("is nested deeper than {MAX_DEPTH} levels")));
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = Verdict;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Verdict, E> {
        Ok(self.not_an_object("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Verdict, E> {
        Ok(self.not_an_object("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Verdict, E> {
        Ok(self.not_an_object("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Verdict, E> {
        Ok(self.not_an_object("a number"))
    }

    fn visit_unit<E>(self) -> Result<Verdict, E> {
        Ok(self.not_an_object("null"))
    }

    fn visit_str<E>(self, s: &str) -> Result<Verdict, E> {
        // Postgres cannot store U+0000 in json text it is asked to read as jsonb.
        Ok(self.not_an_object("a string").and(if s.contains('\0') {
            Err(NUL_IN_STRING.into())
        } else {
            Ok(())
        }))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Verdict, A::Error> {
        let mut verdict = self.not_an_object("an array");
        let inner = Check {
            depth: self.depth + 1,
        };
        while let Some(v) = seq.next_element_seed(inner)? {
            verdict = verdict.and(v);
        }
        Ok(verdict)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Verdict, A::Error> {
        let mut verdict = Ok(());
        let inner = Check {
            depth: self.depth + 1,
        };
        while let Some(name) = map.next_key_seed(FieldName)? {
            verdict = verdict.and(name);
            verdict = verdict.and(map.next_value_seed(inner)?);
        }
        Ok(verdict)
    }
}

/// Checks a field name.
struct FieldName;

impl<'de> DeserializeSeed<'de> for FieldName {
    type Value = Verdict;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Verdict, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldName {
    type Value = Verdict;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Verdict, E> {
        Ok(if s.contains('\0') {
            Err(NUL_IN_NAME.into())
        } else {
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

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
        assert!(
            check_text(deep.to_string().as_bytes())
                .unwrap()
                .unwrap_err()
                .contains("nested")
        );
        assert!(
            check_text(br#"{"a": "x\u0000"}"#)
                .unwrap()
                .unwrap_err()
                .contains("NUL")
        );
        assert!(
            check_text(br#"{"a\u0000": 1}"#)
                .unwrap()
                .unwrap_err()
                .contains("NUL")
        );
        assert!(
            check_text(b"null")
                .unwrap()
                .unwrap_err()
                .contains("not null")
        );
        assert!(check_text(b"{} {}").is_err(), "one value per record");
        assert!(
            check_text(b"{\"a\": 1e999}").is_err(),
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
            let verdict = check_text(v.to_string().as_bytes()).unwrap();
            prop_assert_eq!(verdict.is_ok(), check(&v).is_ok());
        }
    }
}
