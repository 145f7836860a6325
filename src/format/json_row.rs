//! Splits one backup row (`[v1,v2,...]`, as the writer produced it) into its
//! raw JSON values without building a DOM, and decodes JSON strings.

use crate::error::{Error, Result};

fn bad(what: &str) -> Error {
    crate::schema::corrupt(format!("malformed row: {what}"))
}

/// The raw JSON text of each value of a row, in order.
pub fn split_values<'a>(row: &'a [u8], out: &mut Vec<&'a [u8]>) -> Result<()> {
    out.clear();
    for_each_value(row, |start, end| out.push(&row[start..end]))
}

/// Where each value of a row starts and ends, in order.
pub fn split_spans(row: &[u8], out: &mut Vec<(usize, usize)>) -> Result<()> {
    out.clear();
    for_each_value(row, |start, end| out.push((start, end)))
}

fn for_each_value(row: &[u8], mut each: impl FnMut(usize, usize)) -> Result<()> {
    let mut i = skip_ws(row, 0);
    if row.get(i) != Some(&b'[') {
        return Err(bad("not an array"));
    }
    i = skip_ws(row, i + 1);
    if row.get(i) == Some(&b']') {
        return trailing(row, i + 1);
    }
    loop {
        let start = i;
        i = skip_value(row, i)?;
        each(start, i);
        i = skip_ws(row, i);
        match row.get(i) {
            Some(b',') => i = skip_ws(row, i + 1),
            Some(b']') => return trailing(row, i + 1),
            _ => return Err(bad("expected , or ]")),
        }
    }
}

fn trailing(row: &[u8], i: usize) -> Result<()> {
    if skip_ws(row, i) == row.len() {
        Ok(())
    } else {
        Err(bad("data after the row"))
    }
}

pub(crate) fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// Index just past the JSON value starting at `i`.
pub(crate) fn skip_value(s: &[u8], i: usize) -> Result<usize> {
    match s.get(i) {
        Some(b'"') => skip_string(s, i),
        Some(b'{') | Some(b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while j < s.len() {
                match s[j] {
                    b'"' => {
                        j = skip_string(s, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            Err(bad("unterminated nested value"))
        }
        Some(_) => {
            let mut j = i;
            while j < s.len() && !matches!(s[j], b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n')
            {
                j += 1;
            }
            if j == i {
                Err(bad("empty value"))
            } else {
                Ok(j)
            }
        }
        None => Err(bad("row ends early")),
    }
}

fn skip_string(s: &[u8], i: usize) -> Result<usize> {
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b'\\' => j += 2,
            b'"' => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Err(bad("unterminated string"))
}

/// Decodes a JSON string literal (quotes included) into UTF-8 bytes.
pub fn decode_string(raw: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let body = raw
        .strip_prefix(b"\"")
        .and_then(|r| r.strip_suffix(b"\""))
        .ok_or_else(|| bad("expected a string"))?;
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let c = *body.get(i + 1).ok_or_else(|| bad("dangling escape"))?;
        i += 2;
        match c {
            b'"' => out.push(b'"'),
            b'\\' => out.push(b'\\'),
            b'/' => out.push(b'/'),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'u' => {
                let mut code = hex4(body, i)?;
                i += 4;
                if (0xD800..0xDC00).contains(&code) {
                    if body.get(i) != Some(&b'\\') || body.get(i + 1) != Some(&b'u') {
                        return Err(bad("lone surrogate"));
                    }
                    let low = hex4(body, i + 2)?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(bad("bad surrogate pair"));
                    }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                    i += 6;
                }
                let ch = char::from_u32(code).ok_or_else(|| bad("bad \\u escape"))?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            _ => return Err(bad("unknown escape")),
        }
    }
    Ok(())
}

fn hex4(s: &[u8], i: usize) -> Result<u32> {
    let digits = s.get(i..i + 4).ok_or_else(|| bad("short \\u escape"))?;
    let text = std::str::from_utf8(digits).map_err(|_| bad("bad \\u escape"))?;
    u32::from_str_radix(text, 16).map_err(|_| bad("bad \\u escape"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_scalars_and_nested_values() {
        let mut v = Vec::new();
        split_values(br#"[1,"a,]b",null,{"k":[1,"]"]},-2.5e3,true]"#, &mut v).unwrap();
        let v: Vec<&str> = v.iter().map(|b| std::str::from_utf8(b).unwrap()).collect();
        assert_eq!(
            v,
            [
                "1",
                r#""a,]b""#,
                "null",
                r#"{"k":[1,"]"]}"#,
                "-2.5e3",
                "true"
            ]
        );
        split_values(b"[]", &mut Vec::new()).unwrap();
        assert!(split_values(b"[1,", &mut Vec::new()).is_err());
        assert!(split_values(b"[1]x", &mut Vec::new()).is_err());
        assert!(split_values(br#"["abc]"#, &mut Vec::new()).is_err());
    }

    #[test]
    fn decodes_escapes() {
        let mut out = Vec::new();
        decode_string(br#""a\"\\\n\t\u00e9\ud83d\ude00""#, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a\"\\\n\té😀");
        assert!(decode_string(br#""\ud83d""#, &mut Vec::new()).is_err());
    }
}
