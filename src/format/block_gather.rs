//! Gathers one table's rows column by column into blocks for the `columns`
//! layout (format version 3). Values of one column sit next to each other,
//! which lets a compressor find their patterns and the foreign keys that
//! repeat a parent's ids far back in the file.

use crate::error::{Error, Result};
use crate::format::json_row::split_spans;

use super::{BLOCK_MAX_BYTES, BLOCK_MAX_ROWS};

/// A canonical uuid value as PostgreSQL writes it, quotes included:
/// `"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"`.
const UUID_VALUE_LEN: usize = 38;

/// True when `value` is a JSON string holding a canonical lowercase uuid,
/// the only text a packed uuid column gives back byte for byte.
fn is_canonical_uuid(value: &[u8]) -> bool {
    value.len() == UUID_VALUE_LEN
        && value[0] == b'"'
        && value[UUID_VALUE_LEN - 1] == b'"'
        && value[1..UUID_VALUE_LEN - 1]
            .iter()
            .enumerate()
            .all(|(i, &b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => matches!(b, b'0'..=b'9' | b'a'..=b'f'),
            })
}

/// One column of the block being gathered.
struct Column {
    /// The values' JSON text, comma-separated.
    values: Vec<u8>,
    /// Every value so far is `null` or a canonical uuid.
    uuids_only: bool,
    /// How many of them are uuids.
    uuid_count: usize,
}

/// Rows of one table, gathered into column blocks.
pub(super) struct BlockGather {
    columns: Vec<Column>,
    rows: usize,
    bytes: usize,
    /// The end of the last piece when it stopped inside a row.
    carry: Vec<u8>,
    /// Rows gathered over the whole table, checked against the count the
    /// source reported.
    table_rows: u64,
    blocks: u64,
    spans: Vec<(usize, usize)>,
    /// A row that did not fit the block; it starts the next one.
    pending: Option<Vec<u8>>,
}

impl BlockGather {
    pub(super) fn new(width: usize) -> Self {
        let columns = (0..width)
            .map(|_| Column {
                values: Vec::new(),
                uuids_only: true,
                uuid_count: 0,
            })
            .collect();
        Self {
            columns,
            rows: 0,
            bytes: 0,
            carry: Vec::new(),
            table_rows: 0,
            blocks: 0,
            spans: Vec::with_capacity(width),
            pending: None,
        }
    }

    pub(super) fn table_rows(&self) -> u64 {
        self.table_rows
    }

    pub(super) fn is_full(&self) -> bool {
        self.pending.is_some() || self.rows >= BLOCK_MAX_ROWS || self.bytes >= BLOCK_MAX_BYTES
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Takes the next piece of the table's row stream (`,\n[...]` per row,
    /// split anywhere) and returns how much of it was used: it stops after
    /// the row that fills the block, which must be written before more is fed.
    pub(super) fn feed(&mut self, data: &[u8]) -> Result<usize> {
        let mut used = 0;
        while let Some(pos) = memchr::memchr(b'\n', &data[used..]) {
            let segment = &data[used..used + pos];
            used += pos + 1;
            if self.carry.is_empty() {
                self.add_line(segment)?;
            } else {
                let mut carried = std::mem::take(&mut self.carry);
                carried.extend_from_slice(segment);
                let added = self.add_line(&carried);
                carried.clear();
                self.carry = carried;
                added?;
            }
            if self.is_full() {
                return Ok(used);
            }
        }
        self.carry.extend_from_slice(&data[used..]);
        Ok(data.len())
    }

    /// The table ended: the carried bytes are its last row.
    pub(super) fn finish_table(&mut self) -> Result<()> {
        let carried = std::mem::take(&mut self.carry);
        self.add_line(&carried)
    }

    /// Takes one line of the row stream: `[...]` with an optional trailing
    /// comma; the empty piece before a table's first row is skipped. A row
    /// that would take the block past `BLOCK_MAX_BYTES` is kept for the
    /// next block, so a block of more than one row stays within it (which
    /// is what readers rely on).
    fn add_line(&mut self, line: &[u8]) -> Result<()> {
        let row = line.strip_suffix(b",").unwrap_or(line);
        if row.is_empty() {
            return Ok(());
        }
        if self.rows > 0 && self.bytes + row.len() > BLOCK_MAX_BYTES {
            self.pending = Some(row.to_vec());
            return Ok(());
        }
        self.add_row(row)
    }

    fn add_row(&mut self, row: &[u8]) -> Result<()> {
        split_spans(row, &mut self.spans).map_err(|e| {
            Error::internal(format!("a source row could not be split into values: {e}"))
        })?;
        if self.spans.len() != self.columns.len() {
            return Err(Error::internal(format!(
                "a row has {} values for {} columns",
                self.spans.len(),
                self.columns.len()
            )));
        }
        for (column, &(start, end)) in self.columns.iter_mut().zip(&self.spans) {
            let value = &row[start..end];
            if self.rows > 0 {
                column.values.push(b',');
            }
            column.values.extend_from_slice(value);
            if column.uuids_only {
                if is_canonical_uuid(value) {
                    column.uuid_count += 1;
                } else if value != b"null" {
                    column.uuids_only = false;
                }
            }
            self.bytes += value.len() + 1;
        }
        self.rows += 1;
        self.table_rows += 1;
        Ok(())
    }

    pub(super) fn width(&self) -> usize {
        self.columns.len()
    }

    /// The block's first line, after the separator from what came before.
    pub(super) fn write_block_start(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.blocks == 0 { b"\n" } else { b",\n" });
        out.extend_from_slice(format!("{{\"rows\":{},\"columns\":[", self.rows).as_bytes());
        self.blocks += 1;
    }

    /// Column `i`'s line, and frees its values.
    pub(super) fn write_column(&mut self, i: usize, out: &mut Vec<u8>) -> Result<()> {
        let last = i + 1 == self.columns.len();
        let column = self
            .columns
            .get_mut(i)
            .ok_or_else(|| Error::internal("no such column"))?;
        out.push(b'\n');
        if column.uuids_only && column.uuid_count > 0 {
            write_packed_uuids(&column.values, out)?;
        } else {
            out.push(b'[');
            out.extend_from_slice(&column.values);
            out.push(b']');
        }
        if !last {
            out.push(b',');
        }
        column.values.clear();
        column.uuids_only = true;
        column.uuid_count = 0;
        Ok(())
    }

    /// Closes the block; the next rows start a new one, beginning with the
    /// row that did not fit.
    pub(super) fn write_block_end(&mut self, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(b"\n]}");
        self.rows = 0;
        self.bytes = 0;
        match self.pending.take() {
            Some(row) => self.add_row(&row),
            None => Ok(()),
        }
    }

    /// The table's end, after its last block.
    pub(super) fn write_table_end(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.blocks == 0 { b"]}" } else { b"\n]}" });
    }
}

/// Writes a column of uuids and nulls (comma-separated JSON text) in the
/// packed form: `{"uuid":"<32 hex digits per uuid>","nulls":[row,...]}`.
fn write_packed_uuids(values: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let mut nulls = Vec::new();
    out.extend_from_slice(b"{\"uuid\":\"");
    for (row, value) in values.split(|&b| b == b',').enumerate() {
        if value == b"null" {
            nulls.push(row);
            continue;
        }
        if !is_canonical_uuid(value) {
            return Err(Error::internal("a packed uuid column holds another value"));
        }
        for part in value[1..UUID_VALUE_LEN - 1].split(|&b| b == b'-') {
            out.extend_from_slice(part);
        }
    }
    out.extend_from_slice(b"\",\"nulls\":[");
    for (i, row) in nulls.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(row.to_string().as_bytes());
    }
    out.extend_from_slice(b"]}");
    Ok(())
}
