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
    bytes: Vec<u8>,
}

impl CopyTranscoder {
    pub fn new(encodings: Vec<ValueEncoding>) -> Self {
        Self {
            encodings,
            partial: Vec::new(),
            scratch: Vec::new(),
            bytes: Vec::new(),
        }
    }

    /// Encodes every complete line of `data` into `out`; returns rows written.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<u64> {
        let mut rows = 0;
        let mut rest = data;
        if !self.partial.is_empty() {
            match memchr::memchr(b'\n', rest) {
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
        while let Some(pos) = memchr::memchr(b'\n', rest) {
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
        // The rest of the line from the next field on; None once the last
        // field has been taken.
        let mut rest = Some(line);
        for (i, encoding) in self.encodings.iter().enumerate() {
            let fields =
                rest.ok_or_else(|| Error::internal("COPY row has fewer fields than columns"))?;
            if i > 0 {
                out.push(b',');
            }
            if fields.starts_with(b"\\N") && matches!(fields.get(2), None | Some(b'\t')) {
                out.extend_from_slice(b"null");
                rest = after_field(fields, 2);
                continue;
            }
            if *encoding == ValueEncoding::Text {
                // Finds the field's end in the same pass.
                let len = push_text_as_json_string(fields, out);
                rest = after_field(fields, len);
                continue;
            }
            let len = memchr::memchr(b'\t', fields).unwrap_or(fields.len());
            let field = &fields[..len];
            rest = after_field(fields, len);
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
                    push_text_as_json_string(field, out);
                }
                ValueEncoding::Json => {
                    if field.is_empty() {
                        return Err(Error::internal("empty jsonb value in COPY output"));
                    }
                    unescape_onto(field, out);
                }
                ValueEncoding::Base64 => {
                    self.scratch.clear();
                    unescape_onto(field, &mut self.scratch);
                    let hex = self
                        .scratch
                        .strip_prefix(b"\\x")
                        .ok_or_else(|| Error::internal("bytea not in hex output format"))?;
                    self.bytes.clear();
                    self.bytes.resize(hex.len() / 2, 0);
                    hex::decode_to_slice(hex, &mut self.bytes).map_err(|e| {
                        Error::internal(format!("bad bytea hex in COPY output: {e}"))
                    })?;
                    out.push(b'"');
                    let start = out.len();
                    let encoded_len = base64::encoded_len(self.bytes.len(), true).unwrap_or(0);
                    out.resize(start + encoded_len, 0);
                    let written = base64::engine::general_purpose::STANDARD
                        .encode_slice(&self.bytes, &mut out[start..])
                        .map_err(|e| Error::internal(format!("base64: {e}")))?;
                    out.truncate(start + written);
                    out.push(b'"');
                }
            }
        }
        if rest.is_some() {
            return Err(Error::internal("COPY row has more fields than columns"));
        }
        out.push(b']');
        Ok(())
    }
}

/// Bytes of a text field that cannot be copied through as they are: COPY's
/// escape character, and what JSON strings must escape (`"` and controls).
const TEXT_SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'\\' as usize] = true;
    table[b'"' as usize] = true;
    table
};

/// Index of the first byte at or after `from` that `TEXT_SPECIAL` marks, or
/// `field.len()`. Looks at eight bytes at a time while they are all plain.
#[inline]
fn next_text_special(field: &[u8], from: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    let mut i = from;
    while let Some(chunk) = field.get(i..).and_then(|rest| rest.first_chunk::<8>()) {
        let v = u64::from_ne_bytes(*chunk);
        // Classic SWAR tests: a byte's high bit is set when it is below 0x20,
        // or (after the xor) zero, i.e. equal to the quote or backslash.
        // They never miss a match; any false hits lie after a true one.
        let controls = v.wrapping_sub(ONES * 0x20) & !v;
        let q = v ^ QUOTES;
        let quotes = q.wrapping_sub(ONES) & !q;
        let s = v ^ BACKSLASHES;
        let backslashes = s.wrapping_sub(ONES) & !s;
        if (controls | quotes | backslashes) & HIGHS != 0 {
            break;
        }
        i += 8;
    }
    while i < field.len() && !TEXT_SPECIAL[field[i] as usize] {
        i += 1;
    }
    i
}

/// What follows a field of `len` bytes at the start of `fields`: the next
/// field after the tab, or None at the end of the line.
#[inline]
fn after_field(fields: &[u8], len: usize) -> Option<&[u8]> {
    fields.get(len + 1..)
}

/// Appends the text field at the start of `fields` (up to the first tab or
/// the end), COPY escapes undone, as a JSON string literal; returns the
/// field's length. Runs of bytes that need neither are copied in one piece.
#[inline]
fn push_text_as_json_string(fields: &[u8], out: &mut Vec<u8>) -> usize {
    out.push(b'"');
    let mut i = 0;
    let len = loop {
        // Tabs are control characters, so the scan stops at the field's end.
        let special = next_text_special(fields, i);
        out.extend_from_slice(&fields[i..special]);
        match fields.get(special) {
            None => break fields.len(),
            Some(b'\t') => break special,
            // A backslash ending the field stands for itself.
            Some(b'\\') if !matches!(fields.get(special + 1), None | Some(b'\t')) => {
                // Escapes never reach past the field: their digits are no tabs.
                let (decoded, next) = unescape_at(fields, special);
                push_json_escaped_byte(out, decoded);
                i = next;
            }
            Some(&b) => {
                push_json_escaped_byte(out, b);
                i = special + 1;
            }
        }
    };
    out.push(b'"');
    len
}

/// Appends `field` with COPY escapes undone; runs without a backslash are
/// copied in one piece.
#[inline]
fn unescape_onto(field: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while let Some(found) = memchr::memchr(b'\\', &field[i..]) {
        let escape = i + found;
        out.extend_from_slice(&field[i..escape]);
        let (decoded, next) = unescape_at(field, escape);
        out.push(decoded);
        i = next;
    }
    out.extend_from_slice(&field[i..]);
}

/// Decodes the COPY text escape at `field[i]` (a backslash): `\\`, `\n`,
/// `\t`, `\r`, `\b`, `\f`, `\v`, octal and `\x` hex; any other character
/// stands for itself, and a trailing backslash for a backslash. Returns the
/// byte and the index after the escape.
fn unescape_at(field: &[u8], i: usize) -> (u8, usize) {
    let Some(&c) = field.get(i + 1) else {
        return (b'\\', i + 1);
    };
    let mut i = i + 2;
    let decoded = match c {
        b'n' => b'\n',
        b't' => b'\t',
        b'r' => b'\r',
        b'b' => 0x08,
        b'f' => 0x0c,
        b'v' => 0x0b,
        b'0'..=b'7' => {
            let mut v = u32::from(c - b'0');
            let mut n = 1;
            while n < 3 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                v = v * 8 + u32::from(field[i] - b'0');
                i += 1;
                n += 1;
            }
            (v & 0xff) as u8
        }
        b'x' if i < field.len() && field[i].is_ascii_hexdigit() => {
            let mut v = 0u32;
            let mut n = 0;
            while n < 2 && i < field.len() && field[i].is_ascii_hexdigit() {
                v = v * 16 + (field[i] as char).to_digit(16).unwrap_or(0);
                i += 1;
                n += 1;
            }
            v as u8
        }
        other => other,
    };
    (decoded, i)
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

    /// The straightforward encoder the fast paths replace: split on tabs,
    /// undo escapes byte by byte, JSON-escape byte by byte.
    fn reference_line(encodings: &[ValueEncoding], line: &[u8]) -> Option<Vec<u8>> {
        fn unescape(field: &[u8], mut emit: impl FnMut(u8)) {
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
                            v = v * 16 + (field[i] as char).to_digit(16).unwrap();
                            i += 1;
                            n += 1;
                        }
                        emit(v as u8);
                    }
                    other => emit(other),
                }
            }
        }
        let mut out = b",\n[".to_vec();
        let fields: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
        if fields.len() != encodings.len() {
            return None;
        }
        for (i, (field, encoding)) in fields.iter().zip(encodings).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if *field == b"\\N" {
                out.extend_from_slice(b"null");
                continue;
            }
            match encoding {
                Text => {
                    out.push(b'"');
                    unescape(field, |b| push_json_escaped_byte(&mut out, b));
                    out.push(b'"');
                }
                Json => {
                    let start = out.len();
                    unescape(field, |b| out.push(b));
                    if out.len() == start {
                        return None;
                    }
                }
                Base64 => {
                    let mut raw = Vec::new();
                    unescape(field, |b| raw.push(b));
                    let bytes = hex::decode(raw.strip_prefix(b"\\x")?).ok()?;
                    out.push(b'"');
                    out.extend_from_slice(
                        base64::engine::general_purpose::STANDARD
                            .encode(bytes)
                            .as_bytes(),
                    );
                    out.push(b'"');
                }
                _ => unreachable!("only string-like encodings are compared"),
            }
        }
        out.push(b']');
        Some(out)
    }

    fn assert_same_as_reference(encodings: &[ValueEncoding], line: &[u8]) {
        let expected = reference_line(encodings, line);
        let mut t = CopyTranscoder::new(encodings.to_vec());
        let mut out = Vec::new();
        let mut input = line.to_vec();
        input.push(b'\n');
        let got = t.feed(&input, &mut out).ok().map(|_| out);
        assert_eq!(
            got.as_deref().map(String::from_utf8_lossy),
            expected.as_deref().map(String::from_utf8_lossy),
            "input {:?}",
            String::from_utf8_lossy(line)
        );
    }

    #[test]
    fn fast_paths_match_the_reference_on_tricky_fields() {
        let tricky: &[&[u8]] = &[
            b"",
            b"\\N",
            b"\\\\N",
            b"plain ascii text that is longer than sixteen bytes",
            b"\\b\\f\\n\\r\\t\\v\\\\",
            b"x\\by\\fz\\nw\\rv\\tu\\vs\\\\r",
            b"\\0\\1\\7\\10\\101\\177\\200\\377\\400\\777\\1234\\8\\9",
            b"\\x\\x4\\x41\\x414\\xg\\xFf\\x0",
            b"\\q\\\"\\'\\ trailing\\",
            b"\\",
            b"\\\\",
            b"\"quoted\" \"\"",
            b"\x01\x02\x07\x08\x0b\x0c\x0e\x1b\x1f\x7f ctl",
            "ünïcødé ✓ 日本語 😀 \"mixed\"\\n".as_bytes(),
            b"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xc3",
            b"1234567\"",
            b"12345678\\n",
            b"abcdefgh\x1fabcdefgh",
            b"abcdefghijklmno\"",
            b"abcdefghijklmnop\\",
            b"\xff\xfe\xa0\x80 high bytes \x9f",
            b"{\"k\": \"a\\\\\"b\", \"n\": [1, 2.5e10], \"u\": \"\\\\u00e9\"}",
            b"\\\\x00ff",
            b"\\\\x",
            b"\\\\xABcd",
            b"\\\\x0",
            b"\\\\xzz",
            b"\\x00",
        ];
        for field in tricky {
            for encoding in [Text, Json, Base64] {
                assert_same_as_reference(&[encoding], field);
            }
        }
        // Several fields per line, including empty and NULL neighbours.
        for a in tricky {
            for b in tricky.iter().step_by(3) {
                let line = [*a, b"\t", b, b"\t", b"\\N", b"\t", b""].concat();
                assert_same_as_reference(&[Text, Text, Text, Text], &line);
                assert_same_as_reference(&[Text, Json, Text, Text], &line);
            }
        }
    }

    #[test]
    fn fast_paths_match_the_reference_on_random_fields() {
        // Fields drawn mostly from bytes that need attention, at every length
        // and alignment the eight-byte scan can meet.
        const ALPHABET: &[u8] = b"ab\\\\\\nrtbfvx0178AfG\"\x01\x1f\x7f\x80\xc3\xa9 ";
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let field: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 4 == 0 {
                        ALPHABET[(r >> 8) as usize % ALPHABET.len()]
                    } else {
                        b'a' + (r >> 8) as u8 % 26
                    }
                })
                .collect();
            assert_same_as_reference(&[Text], &field);
            assert_same_as_reference(&[Json], &field);
        }
    }

    #[test]
    fn fast_paths_match_the_reference_on_random_lines() {
        // Whole lines with tabs anywhere, so fields end after backslashes,
        // inside would-be escapes, and lines have too few or too many fields.
        const ALPHABET: &[u8] = b"\t\t\\\\N0178x\"\x01a\xc3\xa9";
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let line: Vec<u8> = (0..len)
                .map(|_| ALPHABET[(next() >> 8) as usize % ALPHABET.len()])
                .collect();
            assert_same_as_reference(&[Text, Text, Text], &line);
            assert_same_as_reference(&[Text, Json, Text], &line);
            assert_same_as_reference(&[Json, Text], &line);
        }
    }

    #[test]
    fn text_special_scan_finds_the_first_special_byte() {
        for len in 0..40 {
            for pos in 0..=len {
                for special in [b'\\', b'"', 0x00, 0x1f, b'\n'] {
                    let mut field = vec![b'a'; len];
                    // Bytes that look special to a careless scan.
                    for (i, b) in field.iter_mut().enumerate() {
                        *b = [b'a', 0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xff][i % 8];
                    }
                    if pos < len {
                        field[pos] = special;
                    }
                    for from in 0..=pos {
                        assert_eq!(
                            next_text_special(&field, from),
                            pos,
                            "{field:?} from {from}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn field_count_mismatch_is_an_error() {
        let mut t = CopyTranscoder::new(vec![Number, Number]);
        assert!(t.feed(b"1\n", &mut Vec::new()).is_err());
        let mut t = CopyTranscoder::new(vec![Number]);
        assert!(t.feed(b"1\t2\n", &mut Vec::new()).is_err());
    }
}
