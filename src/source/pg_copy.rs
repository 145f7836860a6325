//! Turns PostgreSQL's text `COPY ... TO STDOUT` output into backup rows
//! (`,\n[v1,v2,...]`) in one pass, without allocating per field.

use base64::Engine;

use super::{ValueEncoding, push_json_escaped_byte};
use crate::error::{Error, Result};

/// Encodes COPY text lines of one table. Input may arrive split anywhere;
/// complete lines are encoded as soon as they are seen.
pub struct CopyTranscoder {
    encodings: Vec<ValueEncoding>,
    partial: Vec<u8>,
    scratch: Vec<u8>,
}

impl CopyTranscoder {
    pub fn new(encodings: Vec<ValueEncoding>) -> Self {
        Self {
            encodings,
            partial: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Encodes every complete line of `data` into `out`; returns rows written.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<u64> {
        let mut rows = 0;
        let mut rest = data;
        if !self.partial.is_empty() {
            match memchr(b'\n', rest) {
                Some(pos) => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&rest[..pos]);
                    self.encode_line(&line, out)?;
                    rows += 1;
                    rest = &rest[pos + 1..];
                }
                None => {
                    self.partial.extend_from_slice(rest);
                    return Ok(0);
                }
            }
        }
        while let Some(pos) = memchr(b'\n', rest) {
            self.encode_line(&rest[..pos], out)?;
            rows += 1;
            rest = &rest[pos + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(rows)
    }

    /// Fails if the stream ended in the middle of a line.
    pub fn finish(&self) -> Result<()> {
        if self.partial.is_empty() {
            Ok(())
        } else {
            Err(Error::internal("COPY output ended in the middle of a row"))
        }
    }

    fn encode_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(b",\n[");
        let mut fields = line.split(|&b| b == b'\t');
        for (i, encoding) in self.encodings.iter().enumerate() {
            let field = fields
                .next()
                .ok_or_else(|| Error::internal("COPY row has fewer fields than columns"))?;
            if i > 0 {
                out.push(b',');
            }
            if field == b"\\N" {
                out.extend_from_slice(b"null");
                continue;
            }
            match encoding {
                ValueEncoding::Number => out.extend_from_slice(field),
                ValueEncoding::Float => match field {
                    b"NaN" | b"Infinity" | b"-Infinity" => {
                        out.push(b'"');
                        out.extend_from_slice(field);
                        out.push(b'"');
                    }
                    _ => out.extend_from_slice(field),
                },
                ValueEncoding::Bool => match field {
                    b"t" => out.extend_from_slice(b"true"),
                    b"f" => out.extend_from_slice(b"false"),
                    _ => return Err(Error::internal("unexpected boolean text in COPY output")),
                },
                ValueEncoding::Text => {
                    out.push(b'"');
                    unescape_into(field, |b| push_json_escaped_byte(out, b));
                    out.push(b'"');
                }
                ValueEncoding::Json => {
                    let start = out.len();
                    unescape_into(field, |b| out.push(b));
                    if out.len() == start {
                        return Err(Error::internal("empty jsonb value in COPY output"));
                    }
                }
                ValueEncoding::Base64 => {
                    self.scratch.clear();
                    let scratch = &mut self.scratch;
                    unescape_into(field, |b| scratch.push(b));
                    let hex = scratch
                        .strip_prefix(b"\\x")
                        .ok_or_else(|| Error::internal("bytea not in hex output format"))?;
                    let bytes = hex::decode(hex).map_err(|e| {
                        Error::internal(format!("bad bytea hex in COPY output: {e}"))
                    })?;
                    out.push(b'"');
                    let start = out.len();
                    let encoded_len = base64::encoded_len(bytes.len(), true).unwrap_or(0);
                    out.resize(start + encoded_len, 0);
                    let written = base64::engine::general_purpose::STANDARD
                        .encode_slice(&bytes, &mut out[start..])
                        .map_err(|e| Error::internal(format!("base64: {e}")))?;
                    out.truncate(start + written);
                    out.push(b'"');
                }
            }
        }
        if fields.next().is_some() {
            return Err(Error::internal("COPY row has more fields than columns"));
        }
        out.push(b']');
        Ok(())
    }
}

/// Undoes COPY text escaping (`\\`, `\n`, `\t`, `\r`, `\b`, `\f`, `\v`, octal
/// and `\x` hex), handing each decoded byte to `emit`.
#[inline]
fn unescape_into(field: &[u8], mut emit: impl FnMut(u8)) {
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' || i + 1 == field.len() {
            emit(b);
            i += 1;
            continue;
        }
        let c = field[i + 1];
        i += 2;
        match c {
            b'n' => emit(b'\n'),
            b't' => emit(b'\t'),
            b'r' => emit(b'\r'),
            b'b' => emit(0x08),
            b'f' => emit(0x0c),
            b'v' => emit(0x0b),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                    v = v * 8 + u32::from(field[i] - b'0');
                    i += 1;
                    n += 1;
                }
                emit((v & 0xff) as u8);
            }
            b'x' if i < field.len() && field[i].is_ascii_hexdigit() => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && i < field.len() && field[i].is_ascii_hexdigit() {
                    v = v * 16 + (field[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                emit(v as u8);
            }
            other => emit(other),
        }
    }
}

#[inline]
fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ValueEncoding::*;

    fn encode(encodings: Vec<ValueEncoding>, input: &[u8]) -> String {
        let mut t = CopyTranscoder::new(encodings);
        let mut out = Vec::new();
        t.feed(input, &mut out).unwrap();
        t.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn encodes_each_kind() {
        let line = b"42\tNaN\t1.5e-05\tt\ta\\tb\\\\c\\n\"q\"\t{\"k\": [1, 2]}\t\\\\x00ff\t\\N\n";
        let got = encode(
            vec![Number, Float, Float, Bool, Text, Json, Base64, Text],
            line,
        );
        assert_eq!(
            got,
            ",\n[42,\"NaN\",1.5e-05,true,\"a\\tb\\\\c\\n\\\"q\\\"\",{\"k\": [1, 2]},\"AP8=\",null]"
        );
        let parsed: serde_json::Value = serde_json::from_str(&got[2..]).unwrap();
        assert_eq!(parsed[4], "a\tb\\c\n\"q\"");
    }

    #[test]
    fn rows_split_across_messages() {
        let mut t = CopyTranscoder::new(vec![Number, Text]);
        let mut out = Vec::new();
        assert_eq!(t.feed(b"1\tab", &mut out).unwrap(), 0);
        assert_eq!(t.feed(b"c\n2\t", &mut out).unwrap(), 1);
        assert!(t.finish().is_err());
        assert_eq!(t.feed(b"d\n", &mut out).unwrap(), 1);
        t.finish().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            ",\n[1,\"abc\"],\n[2,\"d\"]"
        );
    }

    #[test]
    fn field_count_mismatch_is_an_error() {
        let mut t = CopyTranscoder::new(vec![Number, Number]);
        assert!(t.feed(b"1\n", &mut Vec::new()).is_err());
        let mut t = CopyTranscoder::new(vec![Number]);
        assert!(t.feed(b"1\t2\n", &mut Vec::new()).is_err());
    }
}
