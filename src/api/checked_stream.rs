//! Storage -> client byte streams that cannot lie: they never send a byte
//! past the recorded size, and, when they read the whole file, they hash it
//! as it passes and hold back the last chunk until the digest and the
//! length are known to match. A client of a tampered file therefore never
//! sees a clean end: it gets a fault where the last chunk would have been.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::storage::ByteStream;

/// Why a checked stream stopped early.
#[derive(Debug)]
pub enum Fault {
    /// The storage could not be read.
    Storage(Error),
    /// The stored bytes are not the ones the record describes.
    DataLoss(String),
}

/// What the record says about the whole file.
#[derive(Debug, Clone)]
pub struct Expected {
    pub size: u64,
    pub sha256: String,
}

/// Which part of the file to send, and whether to verify the whole of it.
#[derive(Debug, Clone)]
pub struct Window {
    /// File position of the first byte the storage stream yields.
    pub stream_start: u64,
    /// First file position to send.
    pub send_start: u64,
    /// One past the last file position to send.
    pub send_end: u64,
    /// `Some` when the stream starts at byte 0 and the window ends at the
    /// recorded size: then the whole file is hashed and checked.
    pub verify: Option<Expected>,
}

impl Window {
    /// Send `[send_start, size)` and verify the whole file (the stream must
    /// start at 0: the prefix is read and hashed but not sent).
    pub fn verified_tail(send_start: u64, expected: Expected) -> Self {
        Self {
            stream_start: 0,
            send_start,
            send_end: expected.size,
            verify: Some(expected),
        }
    }

    /// Send `[start, end)` of a stream that starts at `start`, unverified
    /// (only a read of the whole file can be checked against its digest).
    pub fn capped(start: u64, end: u64) -> Self {
        Self {
            stream_start: start,
            send_start: start,
            send_end: end,
            verify: None,
        }
    }
}

struct State {
    inner: ByteStream,
    window: Window,
    /// File position of the next byte from `inner`.
    pos: u64,
    hasher: Sha256,
    /// The latest sendable slice, held back until verification ends.
    held: Option<Bytes>,
    done: bool,
}

/// Wraps `inner` (which yields the file from `window.stream_start`).
pub fn checked(
    inner: ByteStream,
    window: Window,
) -> impl Stream<Item = Result<Bytes, Fault>> + Send + 'static {
    let state = State {
        inner,
        pos: window.stream_start,
        window,
        hasher: Sha256::new(),
        held: None,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        let item = s.next_item().await?;
        Some((item, s))
    })
}

impl State {
    async fn next_item(&mut self) -> Option<Result<Bytes, Fault>> {
        loop {
            if self.done {
                return None;
            }
            let Some(chunk) = self.inner.next().await else {
                self.done = true;
                return self.at_end();
            };
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => return self.fail(Fault::Storage(e)),
            };
            let start = self.pos;
            let end = start + chunk.len() as u64;
            self.pos = end;
            if let Some(expected) = &self.window.verify {
                if end > expected.size {
                    return self.fail(Fault::DataLoss(format!(
                        "the stored file is longer than the recorded {} bytes",
                        expected.size
                    )));
                }
                self.hasher.update(&chunk);
            }
            let sendable = self.slice_to_send(&chunk, start, end);
            if self.window.verify.is_some() {
                if let Some(part) = sendable {
                    // Send the previous chunk; keep this one until the end.
                    if let Some(previous) = self.held.replace(part) {
                        return Some(Ok(previous));
                    }
                }
                continue;
            }
            if end >= self.window.send_end {
                // Unverified: stop reading at the window's end.
                self.done = true;
            }
            match sendable {
                Some(part) => return Some(Ok(part)),
                None if self.done => return None,
                None => continue,
            }
        }
    }

    /// The part of `chunk` (file positions `[start, end)`) inside the window.
    fn slice_to_send(&self, chunk: &Bytes, start: u64, end: u64) -> Option<Bytes> {
        let from = start.max(self.window.send_start);
        let to = end.min(self.window.send_end);
        if from >= to {
            return None;
        }
        let a = (from - start) as usize;
        let b = (to - start) as usize;
        Some(chunk.slice(a..b))
    }

    fn at_end(&mut self) -> Option<Result<Bytes, Fault>> {
        let Some(expected) = self.window.verify.clone() else {
            if self.pos < self.window.send_end {
                return self.fail(self.short(self.window.send_end));
            }
            return None;
        };
        if self.pos != expected.size {
            return self.fail(self.short(expected.size));
        }
        let actual = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if !actual.eq_ignore_ascii_case(&expected.sha256) {
            return self.fail(Fault::DataLoss(format!(
                "the stored file does not match its recorded sha256 (recorded {}, read {actual})",
                expected.sha256
            )));
        }
        self.held.take().map(Ok)
    }

    fn short(&self, wanted: u64) -> Fault {
        Fault::DataLoss(format!(
            "the stored file ended at {} bytes; the record says {wanted}",
            self.pos
        ))
    }

    fn fail(&mut self, fault: Fault) -> Option<Result<Bytes, Fault>> {
        self.done = true;
        self.held = None;
        if let Fault::DataLoss(message) = &fault {
            tracing::error!(%message, "download stopped: stored file does not match its record");
        }
        Some(Err(fault))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(chunks: &[&[u8]]) -> ByteStream {
        let items: Vec<crate::error::Result<Bytes>> = chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(items))
    }

    fn expected(data: &[u8]) -> Expected {
        Expected {
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
        }
    }

    /// Bytes received before the end, and whether it ended in a fault.
    async fn collect(stream: impl Stream<Item = Result<Bytes, Fault>>) -> (Vec<u8>, Option<Fault>) {
        let mut out = Vec::new();
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(f) => return (out, Some(f)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn whole_file_that_matches_is_sent_in_full() {
        let data = b"hello, world";
        let window = Window::verified_tail(0, expected(data));
        let (out, fault) = collect(checked(source(&[b"hello", b", ", b"world"]), window)).await;
        assert_eq!(out, data);
        assert!(fault.is_none());
    }

    #[tokio::test]
    async fn flipped_byte_withholds_the_last_chunk_and_faults() {
        let data = b"hello, world";
        let window = Window::verified_tail(0, expected(data));
        let (out, fault) = collect(checked(source(&[b"hello", b", ", b"worle"]), window)).await;
        assert_eq!(out, b"hello, ");
        assert!(matches!(fault, Some(Fault::DataLoss(_))), "{fault:?}");
    }

    #[tokio::test]
    async fn longer_file_never_sends_past_the_recorded_size() {
        let data = b"hello";
        let window = Window::verified_tail(0, expected(data));
        let (out, fault) = collect(checked(source(&[b"hel", b"loEXTRA"]), window)).await;
        assert_eq!(out, b"");
        assert!(matches!(fault, Some(Fault::DataLoss(_))), "{fault:?}");
    }

    #[tokio::test]
    async fn shorter_file_faults() {
        let data = b"hello";
        let window = Window::verified_tail(0, expected(data));
        let (_, fault) = collect(checked(source(&[b"hel"]), window)).await;
        assert!(matches!(fault, Some(Fault::DataLoss(_))), "{fault:?}");
    }

    #[tokio::test]
    async fn verified_tail_hashes_the_prefix_but_sends_only_the_tail() {
        let data = b"0123456789";
        let window = Window::verified_tail(4, expected(data));
        let (out, fault) = collect(checked(source(&[b"012", b"3456", b"789"]), window)).await;
        assert_eq!(out, b"456789");
        assert!(fault.is_none());
        let window = Window::verified_tail(4, expected(data));
        let (out, fault) = collect(checked(source(&[b"X12", b"3456", b"789"]), window)).await;
        assert_eq!(out, b"456");
        assert!(matches!(fault, Some(Fault::DataLoss(_))), "{fault:?}");
    }

    #[tokio::test]
    async fn capped_window_stops_at_its_end() {
        // The stream starts at 2 (the storage seeked there).
        let window = Window::capped(2, 5);
        let (out, fault) = collect(checked(source(&[b"23", b"456789"]), window)).await;
        assert_eq!(out, b"234");
        assert!(fault.is_none());
        let window = Window::capped(2, 5);
        let (_, fault) = collect(checked(source(&[b"2"]), window)).await;
        assert!(matches!(fault, Some(Fault::DataLoss(_))), "{fault:?}");
    }
}
