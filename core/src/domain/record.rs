//! A tenant's record as staged for delivery: a JSON object that Postgres can store.
//! The record's `record_key` is extracted by the insert statement itself (`payload ->> key`).

use serde_json::Value;

/// Largest accepted nesting depth. serde_json already stops at 128 while parsing; this
/// keeps records well inside what jsonb and destinations handle.
pub const MAX_DEPTH: usize = 64;

/// Checks one record. The error says what is wrong with it, to be reported under the
/// record's position.
pub fn check(payload: &Value) -> Result<(), String> {
    if !payload.is_object() {
        return Err(format!("must be a JSON object, not {}", kind(payload)));
    }
    check_value(payload, 1)
}

fn check_value(v: &Value, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("is nested deeper than {MAX_DEPTH} levels"));
    }
    match v {
        // Postgres jsonb cannot hold U+0000.
        Value::String(s) if s.contains('\0') => {
            Err("contains a NUL character (\\u0000), which cannot be stored".into())
        }
        Value::Array(items) => items.iter().try_for_each(|i| check_value(i, depth + 1)),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            if k.contains('\0') {
                return Err("has a field name containing a NUL character (\\u0000)".into());
            }
            check_value(v, depth + 1)
        }),
        _ => Ok(()),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
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
    }
}
