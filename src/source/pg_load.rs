//! Turns backup rows back into PostgreSQL text `COPY ... FROM STDIN` lines:
//! the mirror of `pg_copy`.

use base64::Engine;

use super::ValueEncoding;
use crate::error::Result;
use crate::format::json_row::{decode_string, split_values};
use crate::schema::corrupt;

/// Reusable buffers for encoding rows of one table.
pub struct CopyEncoder {
    encodings: Vec<ValueEncoding>,
    scratch: Vec<u8>,
}

impl CopyEncoder {
    pub fn new(encodings: Vec<ValueEncoding>) -> Self {
        Self {
            encodings,
            scratch: Vec::new(),
        }
    }

    /// Appends one COPY text line (with its newline) for `row`.
    pub fn encode(&mut self, row: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let mut values = Vec::with_capacity(self.encodings.len());
        split_values(row, &mut values)?;
        if values.len() != self.encodings.len() {
            return Err(corrupt("row width differs from the table's columns"));
        }
        for (i, (raw, encoding)) in values.iter().zip(&self.encodings).enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            if *raw == b"null" {
                out.extend_from_slice(b"\\N");
                continue;
            }
            match encoding {
                ValueEncoding::Number => out.extend_from_slice(raw),
                ValueEncoding::Float => match raw.first() {
                    Some(b'"') => {
                        self.scratch.clear();
                        decode_string(raw, &mut self.scratch)?;
                        out.extend_from_slice(&self.scratch);
                    }
                    _ => out.extend_from_slice(raw),
                },
                ValueEncoding::Bool => match *raw {
                    b"true" => out.push(b't'),
                    b"false" => out.push(b'f'),
                    _ => return Err(corrupt("boolean value is neither true nor false")),
                },
                ValueEncoding::Text => {
                    self.scratch.clear();
                    decode_string(raw, &mut self.scratch)?;
                    escape_into(&self.scratch, out);
                }
                ValueEncoding::Json => escape_into(raw, out),
                ValueEncoding::Base64 => {
                    self.scratch.clear();
                    decode_string(raw, &mut self.scratch)?;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(&self.scratch)
                        .map_err(|e| corrupt(format!("bad base64 value: {e}")))?;
                    out.extend_from_slice(b"\\\\x");
                    out.extend_from_slice(hex::encode(bytes).as_bytes());
                }
            }
        }
        out.push(b'\n');
        Ok(())
    }
}

/// COPY text escaping: backslash, newline, carriage return and tab.
fn escape_into(text: &[u8], out: &mut Vec<u8>) {
    for &b in text {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::pg_copy::CopyTranscoder;
    use ValueEncoding::*;

    #[test]
    fn mirrors_the_dump_transcoder() {
        let encodings = vec![Number, Float, Float, Bool, Text, Json, Base64, Text];
        let line =
            b"42\tNaN\t1.5e-05\tt\ta\\tb\\\\c\\n\"q\"\t{\"k\": \"x\\\\ny\"}\t\\\\x00ff\t\\N\n";
        let mut dumped = Vec::new();
        CopyTranscoder::new(encodings.clone())
            .feed(line, &mut dumped)
            .unwrap();
        let row = &dumped[2..];
        let mut back = Vec::new();
        CopyEncoder::new(encodings).encode(row, &mut back).unwrap();
        assert_eq!(
            String::from_utf8(back).unwrap(),
            String::from_utf8(line.to_vec()).unwrap()
        );
    }

    #[test]
    fn refuses_wrong_widths_and_values() {
        let mut out = Vec::new();
        assert!(
            CopyEncoder::new(vec![Number])
                .encode(b"[1,2]", &mut out)
                .is_err()
        );
        assert!(
            CopyEncoder::new(vec![Bool])
                .encode(b"[1]", &mut out)
                .is_err()
        );
        assert!(
            CopyEncoder::new(vec![Base64])
                .encode(b"[\"!!\"]", &mut out)
                .is_err()
        );
    }
}
