//! `COPY … FROM STDIN` text format, for every `COPY` Freight writes: staged records,
//! destination rows (and the load test's baselines).

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
