//! Cursor pagination: `limit` 1–1000 (default 100) and an opaque `cursor`, answered as
//! `{"data": [...], "next_cursor": ...}`. Lists are ordered by UUID v7 id, newest first,
//! so their cursor is the last id seen, base64url-encoded; other lists use their own sort
//! key ([`CursorKey`]).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, Result};

pub const DEFAULT_LIMIT: u64 = 100;
pub const MAX_LIMIT: u64 = 1000;

/// A sort key that can travel as an opaque cursor.
pub trait CursorKey: Sized {
    fn to_bytes(&self) -> Vec<u8>;
    fn from_bytes(bytes: &[u8]) -> Option<Self>;
}

/// An id (jobs, tenants): its 16 bytes.
impl CursorKey for Uuid {
    fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Uuid::from_slice(bytes).ok()
    }
}

/// A batch `seq` or a log `id`: eight big-endian bytes.
impl CursorKey for i64 {
    fn to_bytes(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(i64::from_be_bytes(bytes.try_into().ok()?))
    }
}

pub fn encode_cursor<K: CursorKey>(key: &K) -> String {
    URL_SAFE_NO_PAD.encode(key.to_bytes())
}

fn decode_cursor<K: CursorKey>(raw: &str) -> Result<K> {
    URL_SAFE_NO_PAD
        .decode(raw)
        .ok()
        .and_then(|b| K::from_bytes(&b))
        .ok_or_else(|| Error::Malformed("cursor: not a cursor returned by this API".into()))
}

/// A validated page request: `limit` and the sort key of the last row already seen
/// (`after`, in the list's own order).
#[derive(Debug, Clone, Copy)]
pub struct Keyset<K> {
    pub limit: u64,
    pub after: Option<K>,
}

/// Lists ordered by UUID v7 id, newest first: `after` is the last id seen.
pub type PageRequest = Keyset<Uuid>;

impl<K: CursorKey> Keyset<K> {
    /// A bad `limit` is a validation error (422, field `limit`); a cursor this API did not
    /// hand out is malformed input (400). An empty cursor means the first page.
    pub fn parse(limit: Option<i64>, cursor: Option<&str>) -> Result<Self> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(l) if (1..=MAX_LIMIT as i64).contains(&l) => l as u64,
            Some(_) => {
                return Err(Error::field(
                    "limit",
                    format!("must be between 1 and {MAX_LIMIT}"),
                ));
            }
        };
        let after = cursor
            .filter(|c| !c.is_empty())
            .map(decode_cursor)
            .transpose()?;
        Ok(Self { limit, after })
    }

    /// Turns `limit + 1` fetched rows into a page: the extra row, if any, only says that
    /// there is a next page.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> K) -> Page<T> {
        let more = rows.len() as u64 > self.limit;
        rows.truncate(self.limit as usize);
        let next_cursor = if more {
            rows.last().map(|r| encode_cursor(&key(r)))
        } else {
            None
        };
        Page {
            data: rows,
            next_cursor,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            data: self.data.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_limits_are_checked() {
        let id = Uuid::now_v7();
        let page = PageRequest::parse(Some(2), Some(&encode_cursor(&id))).unwrap();
        assert_eq!(page.after, Some(id));
        assert!(PageRequest::parse(Some(0), None).is_err());
        assert!(PageRequest::parse(Some(1001), None).is_err());
        assert!(PageRequest::parse(None, Some("not-a-cursor")).is_err());
        let p = PageRequest::parse(Some(2), None)
            .unwrap()
            .finish(vec![1, 2, 3], |_| id);
        assert_eq!(p.data, [1, 2]);
        assert!(p.next_cursor.is_some());
    }
}
