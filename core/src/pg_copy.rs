//! `COPY … FROM STDIN` data, for every `COPY` Freight writes. Destination rows use the
//! text format (the destination's column types are the tenant's); Freight's own tables
//! (staged records, the log) use the binary format, which spares Postgres parsing every
//! uuid and integer back from text.

/// Appends `s` as one field: backslash, tab, newline and carriage return escaped (JSON
/// text may hold a tab or CR as whitespace between tokens, and strings any of them).
/// The escaped bytes are ASCII, so the runs between them stay whole UTF-8.
pub fn push_field(out: &mut String, s: &str) {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'\\' => "\\\\",
            b'\t' => "\\t",
            b'\n' => "\\n",
            b'\r' => "\\r",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(escaped);
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

/// A null field.
pub const NULL: &str = "\\N";

/// Rows in `COPY … FROM STDIN (FORMAT binary)` form, field by field in the statement's
/// column order. The data of one `COPY` is the [`HEADER`], the rows, then the
/// [`TRAILER`]: `PgTxn::copy_in_binary` adds them around a streamed `COPY`;
/// [`whole`](Self::whole) and [`finish`](Self::finish) add them to data sent in one
/// piece over a plain connection (the load test's baselines).
pub struct BinaryRows {
    buf: Vec<u8>,
}

/// Starts a binary `COPY`'s data: the signature, no flags, no header extension.
pub const HEADER: [u8; 19] = *b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Ends a binary `COPY`'s data.
pub const TRAILER: [u8; 2] = (-1i16).to_be_bytes();

impl BinaryRows {
    /// Rows to send as one part of a streamed `COPY`.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
        }
    }

    /// A `COPY`'s whole data: the header now, the trailer at [`finish`](Self::finish).
    pub fn whole(bytes: usize) -> Self {
        let mut rows = Self::with_capacity(bytes + HEADER.len() + TRAILER.len());
        rows.buf.extend_from_slice(&HEADER);
        rows
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&TRAILER);
        self.buf
    }

    /// Starts a row of `fields` fields.
    pub fn row(&mut self, fields: i16) -> &mut Self {
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf
            .extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn uuid(&mut self, v: impl Into<uuid::Uuid>) -> &mut Self {
        let v: uuid::Uuid = v.into();
        self.field(v.as_bytes())
    }

    pub fn int8(&mut self, v: i64) -> &mut Self {
        self.field(&v.to_be_bytes())
    }

    pub fn int4(&mut self, v: i32) -> &mut Self {
        self.field(&v.to_be_bytes())
    }

    /// A `text` or `json` field (a `json` value travels as its text). Postgres text
    /// cannot hold NUL: the caller strips it where it may occur.
    pub fn text(&mut self, v: &str) -> &mut Self {
        self.field(v.as_bytes())
    }

    pub fn null(&mut self) -> &mut Self {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
        self
    }

    pub fn opt_text(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_copy_would_misread() {
        let mut out = String::new();
        push_field(&mut out, "{\"a\":\t\"x\\\\y\\n\"}\ré");
        assert_eq!(out, "{\"a\":\\t\"x\\\\\\\\y\\\\n\"}\\ré");
    }
}
