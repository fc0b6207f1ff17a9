//! Cursor pagination: `limit` 1–1000 (default 100) and an opaque `cursor`, answered as
//! `{"data": [...], "next_cursor": ...}`. Lists are ordered by UUID v7 id, newest first,
//! so the cursor is simply the last id seen, base64url-encoded.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, Result};

pub const DEFAULT_LIMIT: u64 = 100;
pub const MAX_LIMIT: u64 = 1000;

/// A validated page request.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: u64,
    /// Return rows strictly older than this id.
    pub before: Option<Uuid>,
}

impl PageRequest {
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
        let before = cursor
            .filter(|c| !c.is_empty())
            .map(decode_cursor)
            .transpose()?;
        Ok(Self { limit, before })
    }

    /// Turns `limit + 1` fetched rows into a page: the extra row, if any, only says that
    /// there is a next page.
    pub fn finish<T>(&self, mut rows: Vec<T>, id: impl Fn(&T) -> Uuid) -> Page<T> {
        let more = rows.len() as u64 > self.limit;
        rows.truncate(self.limit as usize);
        let next_cursor = if more {
            rows.last().map(|r| encode_cursor(id(r)))
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

pub fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn decode_cursor(raw: &str) -> Result<Uuid> {
    URL_SAFE_NO_PAD
        .decode(raw)
        .ok()
        .and_then(|b| Uuid::from_slice(&b).ok())
        .ok_or_else(|| Error::Malformed("cursor: not a cursor returned by this API".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_limits_are_checked() {
        let id = Uuid::now_v7();
        let page = PageRequest::parse(Some(2), Some(&encode_cursor(id))).unwrap();
        assert_eq!(page.before, Some(id));
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
