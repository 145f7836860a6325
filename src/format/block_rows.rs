//! Turns one column block of the `columns` layout back into rows, written
//! exactly as the `rows` layout would hold them (`[v1,v2,...]`), so every
//! consumer of the reader sees one shape. Memory is the block itself: the
//! reader's line buffers are taken over, not copied.

use crate::error::Result;
use crate::format::json_row::{skip_value, skip_ws};

use super::UUID_HEX_LEN;
use crate::schema::corrupt;

const PACKED_UUID_START: &[u8] = b"{\"uuid\":\"";
const PACKED_UUID_MIDDLE: &[u8] = b"\",\"nulls\":[";
const PACKED_UUID_END: &[u8] = b"]}";

/// Where the next value of a column is, in that column's line.
enum Cursor {
    /// A JSON array: the next value's offset and the closing bracket's.
    Values { pos: usize, end: usize },
    /// Packed uuids: the next hex digits' offset, the rows that are null
    /// (ascending) and how many of them have been passed.
    Uuids {
        pos: usize,
        nulls: Vec<usize>,
        passed: usize,
    },
}

pub(super) struct BlockRows {
    /// One line per column (buffers kept for the next block).
    lines: Vec<Vec<u8>>,
    cursors: Vec<Cursor>,
    /// Bytes of the block's column lines so far.
    bytes: usize,
    rows: usize,
    next: usize,
    row: Vec<u8>,
}

impl BlockRows {
    pub(super) fn new() -> Self {
        Self {
            lines: Vec::new(),
            cursors: Vec::new(),
            bytes: 0,
            rows: 0,
            next: 0,
            row: Vec::new(),
        }
    }

    /// Starts a block of `rows` rows.
    pub(super) fn begin(&mut self, rows: usize) {
        self.bytes = 0;
        self.cursors.clear();
        self.rows = rows;
        self.next = 0;
    }

    /// Frees the line buffers kept for the next block.
    pub(super) fn release(&mut self) {
        self.lines = Vec::new();
        self.cursors.clear();
        self.row = Vec::new();
    }

    /// Bytes of the block's column lines so far.
    pub(super) fn len(&self) -> usize {
        self.bytes
    }

    /// Takes the next column line from `line` (leaving it an empty buffer);
    /// its first `len` bytes are the column, without the separating comma.
    pub(super) fn add_column(&mut self, line: &mut Vec<u8>, len: usize) -> Result<()> {
        let index = self.cursors.len();
        if self.lines.len() == index {
            self.lines.push(Vec::new());
        }
        std::mem::swap(&mut self.lines[index], line);
        line.clear();
        self.bytes += len;
        let column = self.lines[index]
            .get(..len)
            .ok_or_else(|| corrupt("malformed column"))?;
        let cursor = if column.first() == Some(&b'[') {
            if column.last() != Some(&b']') || column.len() < 2 {
                return Err(corrupt("malformed column"));
            }
            Cursor::Values {
                pos: skip_ws(column, 1),
                end: column.len() - 1,
            }
        } else {
            packed_uuids(self.rows, column)?
        };
        self.cursors.push(cursor);
        Ok(())
    }
}

/// Checks a packed uuid column: `{"uuid":"<hex>","nulls":[rows]}` with 32
/// lowercase hex digits for every one of `rows` rows not listed in `nulls`.
fn packed_uuids(rows: usize, line: &[u8]) -> Result<Cursor> {
    let bad = || corrupt("malformed packed uuid column");
    let body = line
        .strip_prefix(PACKED_UUID_START)
        .and_then(|l| l.strip_suffix(PACKED_UUID_END))
        .ok_or_else(bad)?;
    let hex_len = memchr::memchr(b'"', body).ok_or_else(bad)?;
    let (hex, rest) = body.split_at(hex_len);
    let list = rest.strip_prefix(PACKED_UUID_MIDDLE).ok_or_else(bad)?;
    let mut nulls = Vec::new();
    if !list.is_empty() {
        for item in list.split(|&b| b == b',') {
            let row: usize = std::str::from_utf8(item)
                .ok()
                .filter(|s| is_canonical_count(s))
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad)?;
            if row >= rows || nulls.last().is_some_and(|&last| last >= row) {
                return Err(corrupt("packed uuid column lists a null row out of order"));
            }
            nulls.push(row);
        }
    }
    let uuids = rows - nulls.len();
    if hex.len() != uuids * UUID_HEX_LEN
        || !hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(corrupt("packed uuid column does not hold one uuid per row"));
    }
    Ok(Cursor::Uuids {
        pos: PACKED_UUID_START.len(),
        nulls,
        passed: 0,
    })
}

impl BlockRows {
    /// The row `advance` made.
    pub(super) fn row(&self) -> &[u8] {
        &self.row
    }

    /// Makes the next row; false once every row has been given and every
    /// column has been used up exactly.
    pub(super) fn advance(&mut self) -> Result<bool> {
        if self.next == self.rows {
            for cursor in &self.cursors {
                if let Cursor::Values { pos, end } = cursor
                    && pos != end
                {
                    return Err(corrupt(
                        "a column holds more values than its block has rows",
                    ));
                }
            }
            return Ok(false);
        }
        let row_index = self.next;
        self.row.clear();
        self.row.push(b'[');
        for (i, (cursor, line)) in self.cursors.iter_mut().zip(&self.lines).enumerate() {
            if i > 0 {
                self.row.push(b',');
            }
            match cursor {
                Cursor::Values { pos, end } => {
                    if *pos >= *end {
                        return Err(corrupt(
                            "a column holds fewer values than its block has rows",
                        ));
                    }
                    let column = &line[..*end];
                    let value_end = skip_value(column, *pos)?;
                    self.row.extend_from_slice(&column[*pos..value_end]);
                    let after = skip_ws(column, value_end);
                    *pos = match column.get(after) {
                        Some(b',') => skip_ws(column, after + 1),
                        None => after,
                        Some(_) => return Err(corrupt("malformed column")),
                    };
                    if *pos == *end && after != *end {
                        return Err(corrupt("a column ends after a comma"));
                    }
                }
                Cursor::Uuids { pos, nulls, passed } => {
                    if nulls.get(*passed) == Some(&row_index) {
                        *passed += 1;
                        self.row.extend_from_slice(b"null");
                        continue;
                    }
                    let hex = line
                        .get(*pos..*pos + UUID_HEX_LEN)
                        .ok_or_else(|| corrupt("packed uuid column ends early"))?;
                    self.row.push(b'"');
                    for (at, part) in [(0, 8), (8, 12), (12, 16), (16, 20), (20, 32)] {
                        if at > 0 {
                            self.row.push(b'-');
                        }
                        self.row.extend_from_slice(&hex[at..part]);
                    }
                    self.row.push(b'"');
                    *pos += UUID_HEX_LEN;
                }
            }
        }
        self.row.push(b']');
        self.next += 1;
        Ok(true)
    }
}

/// A decimal count as the writer writes it: digits, no leading zero.
pub(super) fn is_canonical_count(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}
