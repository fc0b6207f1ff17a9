//! A record's top-level fields, read from its JSON text without building a tree: each
//! field's value stays a borrowed slice of that text. The Postgres connector needs no
//! more than that to write a row, and building a `serde_json::Value` per record (a map
//! and a string per field) was most of the worker's CPU in a delivery.

use std::{borrow::Cow, fmt};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The fields in the order the text has them, duplicates included (the last one wins,
/// as in `jsonb`).
#[derive(Debug)]
pub struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// One field's value, as a `COPY` text field or a reason it cannot be one.
#[derive(Debug, PartialEq, Eq)]
pub enum Scalar<'a> {
    Null,
    /// A string's content, unescaped.
    Text(Cow<'a, str>),
    /// A number or boolean whose JSON text is what `jsonb` would hand a column's input
    /// function.
    Literal(&'a str),
    /// An object or array, or a number `jsonb` would print differently (`1e3` becomes
    /// `1000`, `-0` becomes `0`): only the statement path writes it as Postgres would.
    NotCopyable,
}

impl<'a> Fields<'a> {
    /// Reads a record's text. An error when it is not a JSON object.
    pub fn parse(text: &'a str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| {
            if e.is_data() {
                "record is not a JSON object".to_owned()
            } else {
                format!("record is not valid JSON: {e}")
            }
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(name, _)| name.as_ref())
    }

    /// The value of field `name` (its last occurrence), if present.
    pub fn get(&self, name: &str) -> Option<Scalar<'a>> {
        let (_, raw) = self.0.iter().rev().find(|(n, _)| n == name)?;
        Some(scalar(raw))
    }

    /// Whether every field can be a `COPY` text field (strings are not unescaped to
    /// tell: [`get`](Self::get) does that once, when the field is written).
    pub fn copyable(&self) -> bool {
        self.0.iter().all(|(_, raw)| copyable(raw.get()))
    }
}

/// Whether a value's JSON text can be a `COPY` text field: anything but an object, an
/// array, or a number `jsonb` would print differently.
fn copyable(text: &str) -> bool {
    match text.as_bytes().first() {
        Some(b'n' | b'"' | b't' | b'f') => true,
        Some(b'-' | b'0'..=b'9') => plain_number(text),
        _ => false,
    }
}

fn scalar(raw: &RawValue) -> Scalar<'_> {
    let text = raw.get();
    if !copyable(text) {
        return Scalar::NotCopyable;
    }
    match text.as_bytes().first() {
        Some(b'n') => Scalar::Null,
        Some(b'"') => match serde_json::from_str::<&str>(text) {
            Ok(s) => Scalar::Text(Cow::Borrowed(s)),
            // Escapes inside: the unescaped text is a new string.
            Err(_) => serde_json::from_str::<String>(text)
                .map(|s| Scalar::Text(Cow::Owned(s)))
                .unwrap_or(Scalar::NotCopyable),
        },
        _ => Scalar::Literal(text),
    }
}

/// A number `numeric` prints back as written: no exponent, and not a negative zero.
fn plain_number(text: &str) -> bool {
    let exponent = text.bytes().any(|b| b == b'e' || b == b'E');
    let negative_zero = text.starts_with('-') && text[1..].bytes().all(|b| b == b'0' || b == b'.');
    !exponent && !negative_zero
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Object<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Fields<'a>, M::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Name(name)) = map.next_key()? {
                    fields.push((name, map.next_value::<&RawValue>()?));
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Object(std::marker::PhantomData))
    }
}

/// A field name, borrowed from the text unless it holds escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Str<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Str<'a> {
            type Value = Name<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(Str(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_kind_of_field() {
        let text = r#"{"s":"plain","e":"tab\there \u00e9","n":null,"i":-12,"d":1.50,
                       "b":true,"x":1e3,"z":-0.0,"o":{"a":1},"a":[1],"s":"last"}"#;
        let fields = Fields::parse(text).unwrap();
        assert_eq!(fields.get("s"), Some(Scalar::Text(Cow::Borrowed("last"))));
        assert_eq!(
            fields.get("e"),
            Some(Scalar::Text(Cow::Owned("tab\there é".into())))
        );
        assert_eq!(fields.get("n"), Some(Scalar::Null));
        assert_eq!(fields.get("i"), Some(Scalar::Literal("-12")));
        assert_eq!(fields.get("d"), Some(Scalar::Literal("1.50")));
        assert_eq!(fields.get("b"), Some(Scalar::Literal("true")));
        for not_copyable in ["x", "z", "o", "a"] {
            assert_eq!(fields.get(not_copyable), Some(Scalar::NotCopyable));
        }
        assert_eq!(fields.get("missing"), None);
        assert!(!fields.copyable());
        assert_eq!(fields.names().count(), 11);
        assert!(
            Fields::parse(r#"{"a":"x","b":-0.5,"c":0}"#)
                .unwrap()
                .copyable()
        );
    }

    #[test]
    fn escaped_names_are_unescaped() {
        let fields = Fields::parse(r#"{"na\u006de":"x"}"#).unwrap();
        assert_eq!(fields.names().collect::<Vec<_>>(), ["name"]);
    }

    #[test]
    fn only_objects_are_records() {
        assert_eq!(
            Fields::parse("[1,2]").unwrap_err(),
            "record is not a JSON object"
        );
        assert_eq!(
            Fields::parse("\"x\"").unwrap_err(),
            "record is not a JSON object"
        );
        assert!(Fields::parse("{}").unwrap().is_empty());
    }
}
