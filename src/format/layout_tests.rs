//! The `columns` layout written by `BackupFileWriter` and read back by
//! `BackupReader`: the same rows as the `rows` layout, every structural
//! fault refused.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::reader::{BackupReader, Event};
use super::writer::{BackupFileWriter, FileIdentity};
use super::{BLOCK_MAX_BYTES, BLOCK_MAX_ROWS, BLOCK_MAX_TEXT, DocumentsInfo, Layout};
use crate::schema::{DumpSink, SourceInfo, TableSchema};
use crate::storage::{ByteStream, MemoryWriter};

fn table(name: &str, columns: &[&str]) -> TableSchema {
    TableSchema::of_text("public", name, columns)
}

fn uuid(i: usize) -> String {
    format!(
        "\"{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}\"",
        i,
        i % 65_536,
        i % 4096,
        (i * 7) % 4096,
        i * 31
    )
}

/// Rows of each table as the sources hand them on: `,\n[...]` per row.
fn stream(rows: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for row in rows {
        out.extend_from_slice(b",\n");
        out.extend_from_slice(row.as_bytes());
    }
    out
}

/// Writes `tables` with their rows, handing the row stream on in pieces of
/// `piece` bytes, and returns the file.
async fn write(layout: Layout, tables: &[(TableSchema, Vec<String>)], piece: usize) -> Vec<u8> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let identity = FileIdentity {
        backup_id: "backup_2026-03-11T12-00-00-000Z".into(),
        created_at: "2026-03-11T12:00:00Z".into(),
        description: String::new(),
        include_documents: false,
        documents: DocumentsInfo {
            included: false,
            count: 0,
            note: String::new(),
        },
        layout,
    };
    let mut w = BackupFileWriter::new(
        Box::new(MemoryWriter(out.clone())),
        identity,
        Arc::new(Mutex::new(Default::default())),
    );
    let schemas: Vec<TableSchema> = tables.iter().map(|(t, _)| t.clone()).collect();
    let source = SourceInfo {
        engine: "postgresql".into(),
        server_version: "17".into(),
    };
    w.begin(&source, &schemas).await.unwrap();
    for (index, (_, rows)) in tables.iter().enumerate() {
        w.begin_table(index).await.unwrap();
        let bytes = stream(rows);
        let pieces: Vec<&[u8]> = bytes.chunks(piece).collect();
        let last = pieces.len().saturating_sub(1);
        for (i, p) in pieces.iter().enumerate() {
            // Row counts come with the last piece, as from a spill file.
            let count = if i == last { rows.len() as u64 } else { 0 };
            w.rows(Bytes::copy_from_slice(p), count).await.unwrap();
        }
        w.end_table().await.unwrap();
    }
    w.finish().await.unwrap();
    out.lock().map(|file| file.clone()).unwrap()
}

fn byte_stream(bytes: Vec<u8>) -> ByteStream {
    Box::pin(futures::stream::iter(
        bytes
            .chunks(1000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    ))
}

/// Every table's rows as the reader gives them.
async fn read(file: Vec<u8>) -> crate::error::Result<Vec<Vec<String>>> {
    let mut reader = BackupReader::open(byte_stream(file)).await?;
    let mut tables = vec![Vec::new(); reader.header().tables.len()];
    let mut current = 0;
    while let Some(event) = reader.next().await? {
        match event {
            Event::TableStart(index) => current = index,
            Event::Row(row) => tables[current].push(String::from_utf8(row.to_vec()).unwrap()),
            Event::TableEnd(_) | Event::Document(_) => {}
        }
    }
    Ok(tables)
}

fn sample() -> Vec<(TableSchema, Vec<String>)> {
    let loans: Vec<String> = (0..BLOCK_MAX_ROWS + 1234)
        .map(|i| {
            let parent = if i % 5 == 0 { "null".to_string() } else { uuid(i / 3) };
            // A column that is a uuid in most rows but not all stays an array.
            let mixed = if i == 65_600 { "\"not-a-uuid\"".to_string() } else { uuid(i + 9) };
            format!(
                "[{},{parent},{mixed},\"a, \\\"quoted\\\" ]value\\n{i}\",{i},{{\"blob\":\"AAE=\"}},null]",
                uuid(i)
            )
        })
        .collect();
    vec![
        (table("Empty", &["id"]), vec![]),
        (
            table(
                "Loan",
                &["id", "parentId", "mixed", "note", "n", "tagged", "nothing"],
            ),
            loans,
        ),
        (
            table("Small", &["id", "upper"]),
            vec![
                // Uppercase hex is not canonical: kept as an array, byte for byte.
                "[1,\"8F14E45F-CEEA-167A-5A36-DEDD4BEA2543\"]".into(),
                "[2,null]".into(),
            ],
        ),
    ]
}

#[tokio::test]
async fn columns_layout_gives_back_the_rows_of_the_rows_layout() {
    let tables = sample();
    let rows_file = write(Layout::Rows, &tables, 1 << 20).await;
    for piece in [7, 4096, 1 << 20] {
        let columns_file = write(Layout::Columns, &tables, piece).await;
        let text = String::from_utf8(columns_file.clone()).unwrap();
        assert!(text.contains("\"formatVersion\":3"), "{}", &text[..200]);
        assert!(text.contains("\"layout\":\"columns\""));
        assert!(text.contains("{\"uuid\":\""), "uuid columns are packed");
        assert_eq!(
            text.matches("{\"rows\":").count(),
            3,
            "Loan spans two blocks, Small one"
        );
        // Not assert_eq: a diff of 66,000 rows helps nobody.
        assert!(read(columns_file).await.unwrap() == read(rows_file.clone()).await.unwrap());
    }
    let expected: Vec<Vec<String>> = tables.into_iter().map(|(_, rows)| rows).collect();
    assert!(read(rows_file).await.unwrap() == expected);
}

#[tokio::test]
async fn rows_layout_files_are_unchanged() {
    let file = write(Layout::Rows, &sample()[2..], 1 << 20).await;
    let text = String::from_utf8(file).unwrap();
    assert!(text.contains("\"formatVersion\":1"));
    assert!(!text.contains("layout"));
    assert!(text.contains(",\"rows\":[\n[1,"));
}

/// The file with one block line replaced; the structure is checked before
/// the trailer's hash, so each fault is named.
async fn refused(edit: impl Fn(&str) -> String) -> String {
    let tables = vec![(
        table("T", &["id", "ref", "n"]),
        vec![
            format!("[{},null,1]", uuid(1)),
            format!("[{},{},2]", uuid(2), uuid(1)),
        ],
    )];
    let file = String::from_utf8(write(Layout::Columns, &tables, 1 << 20).await).unwrap();
    let edited = edit(&file);
    assert_ne!(edited, file, "the edit must change the file");
    match read(edited.into_bytes()).await {
        Ok(_) => panic!("an edited file was accepted"),
        Err(e) => e.to_string(),
    }
}

type Edit<'a> = Box<dyn Fn(&str) -> String + 'a>;

#[tokio::test]
async fn structural_faults_in_blocks_are_refused() {
    let u1 = &uuid(1)[1..37].replace('-', "");
    let u2 = &uuid(2)[1..37].replace('-', "");
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|f: &str| f.replace("\n[1,2]\n", "\n[1,2,3]\n")),
            "more values",
        ),
        (
            Box::new(|f: &str| f.replace("\n[1,2]\n", "\n[1]\n")),
            "fewer values",
        ),
        (
            Box::new(|f: &str| f.replace("\n[1,2]\n", "\n[1,2,]\n")),
            "after a comma",
        ),
        (
            Box::new(|f: &str| f.replace("{\"rows\":2,", "{\"rows\":3,")),
            "one uuid per row",
        ),
        (
            Box::new(|f: &str| f.replace("{\"rows\":2,", "{\"rows\":0,")),
            "malformed block start",
        ),
        (
            Box::new(move |f: &str| {
                f.replace(
                    &format!("\"{u1}{u2}\""),
                    &format!("\"{}\"", u1.to_uppercase() + u2),
                )
            }),
            "one uuid per row",
        ),
        (
            Box::new(|f: &str| f.replace("\"nulls\":[0]", "\"nulls\":[2]")),
            "out of order",
        ),
        (
            Box::new(|f: &str| f.replace("\"nulls\":[0]", "\"nulls\":[x]")),
            "malformed packed uuid",
        ),
        (
            Box::new(|f: &str| f.replace("\n[1,2]\n", "\n[1,2],\n[3,4]\n")),
            "columns and commas",
        ),
        (
            Box::new(|f: &str| f.replace("\n[1,2]\n", "\n")),
            "malformed",
        ),
        (
            Box::new(|f: &str| f.replace("\n[1,2]\n", "\n[1,2]\n[3,4]\n")),
            "more columns",
        ),
    ];
    for (edit, expected) in cases {
        let error = refused(edit).await;
        assert!(
            error.contains(expected),
            "expected {expected:?}, got {error}"
        );
    }
}

#[tokio::test]
async fn a_columns_file_claiming_another_version_is_refused() {
    let tables = vec![(table("T", &["id"]), vec!["[1]".to_string()])];
    let file = String::from_utf8(write(Layout::Columns, &tables, 1 << 20).await).unwrap();
    let edited = file.replace("\"formatVersion\":3", "\"formatVersion\":2");
    let error = read(edited.into_bytes()).await.unwrap_err().to_string();
    assert!(
        error.contains("columns layout is format version 3"),
        "{error}"
    );
}

/// Each block's `rows`, per table, from the file's text.
fn block_rows(file: &[u8]) -> Vec<Vec<u64>> {
    let text = std::str::from_utf8(file).unwrap();
    let mut tables = Vec::new();
    for line in text.lines() {
        if line.starts_with("{\"schema\":") {
            tables.push(Vec::new());
        } else if let Some(rest) = line.strip_prefix("{\"rows\":") {
            let n = rest.split(',').next().unwrap().parse().unwrap();
            tables.last_mut().unwrap().push(n);
        }
    }
    tables
}

#[tokio::test]
async fn blocks_end_at_the_row_limit_and_before_the_byte_limit() {
    let narrow = |n: usize| (0..n).map(|i| format!("[{i}]")).collect::<Vec<_>>();
    // Three rows of 3 MiB: the third would pass 8 MiB, so it starts the next
    // block. A row of 9 MiB is a block of its own, before and after.
    let big = |c: char, mib: usize| format!("[\"{}\"]", c.to_string().repeat(mib << 20));
    let tables = vec![
        (table("Exact", &["n"]), narrow(BLOCK_MAX_ROWS)),
        (table("Twice", &["n"]), narrow(2 * BLOCK_MAX_ROWS)),
        (table("NoColumns", &[]), vec!["[]".to_string(); 3]),
        (
            table("Wide", &["v"]),
            vec![big('a', 3), big('b', 3), big('c', 3)],
        ),
        (
            table("Huge", &["v"]),
            vec!["[\"x\"]".into(), big('d', 9), "[\"y\"]".into()],
        ),
    ];
    const { assert!(9 << 20 > BLOCK_MAX_BYTES) };
    let file = write(Layout::Columns, &tables, 1 << 16).await;
    assert_eq!(
        block_rows(&file),
        vec![
            vec![BLOCK_MAX_ROWS as u64],
            vec![BLOCK_MAX_ROWS as u64, BLOCK_MAX_ROWS as u64],
            vec![3],
            vec![2, 1],
            vec![1, 1, 1],
        ]
    );
    let expected: Vec<Vec<String>> = tables.into_iter().map(|(_, rows)| rows).collect();
    assert!(read(file).await.unwrap() == expected);
}

#[tokio::test]
async fn a_block_of_many_rows_longer_than_the_limit_is_refused_before_it_is_read_whole() {
    let tables = vec![(
        table("T", &["v"]),
        vec!["[\"a\"]".to_string(), "[\"b\"]".to_string()],
    )];
    let file = String::from_utf8(write(Layout::Columns, &tables, 1 << 20).await).unwrap();
    let long = format!("[\"{}\",\"b\"]", "a".repeat(BLOCK_MAX_TEXT + (1 << 20)));
    let edited = file.replace("[\"a\",\"b\"]", &long);
    let error = read(edited.into_bytes()).await.unwrap_err().to_string();
    assert!(error.contains("a line is longer than"), "{error}");
}
