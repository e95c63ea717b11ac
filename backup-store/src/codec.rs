//! Streaming zstd compression and decompression of backup files, chunk by
//! chunk, with bounded memory.
//!
//! # Why the `zstd` crate in blocking tasks (and not `async-compression`)
//!
//! Compression is CPU work: zstd at level 3 spends a few milliseconds per MiB.
//! `async-compression` would do that work inside `poll_read` on the tokio
//! worker threads, which on a small machine (2 cores) are the ones running the
//! partition actors, so every uploaded MiB would stall request processing. The
//! raw streaming API of the `zstd` crate lets us run each step in
//! `spawn_blocking` instead, moving the (de)compression context into the
//! blocking task and back: the async side only reads files, feeds parts to the
//! store and writes files. Each step is bounded: compression gets at most one
//! read chunk (1 MiB) of input, decompression produces at most
//! [`DECODED_BYTES_PER_STEP_MAX`] bytes of output before it returns, so a
//! decompression bomb cannot make a step allocate more than that.
//!
//! Frames are written with the content size (the pledged source size), and
//! never need a window larger than `2^ZSTD_WINDOW_LOG` bytes; the decoder
//! refuses frames that ask for more than `2^ZSTD_WINDOW_LOG_MAX`, which bounds
//! its memory too.

use bytes::Bytes;
use zstd::stream::raw::{CParameter, DParameter, Decoder, Encoder, InBuffer, Operation, OutBuffer};

/// The zstd compression level (zstd's default: fast, good ratio on logs).
pub(crate) const ZSTD_LEVEL: i32 = 3;

/// The window size of written frames, as a power of two (2 MiB).
pub(crate) const ZSTD_WINDOW_LOG: u32 = 21;

/// The largest window the decoder accepts, as a power of two (8 MiB).
pub(crate) const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// The size of the scratch buffer each step writes into.
pub(crate) const SCRATCH_BYTES: usize = 1024 * 1024;

/// The most bytes one decompression step produces before it returns.
pub(crate) const DECODED_BYTES_PER_STEP_MAX: usize = 8 * 1024 * 1024;

/// A streaming zstd compressor of one file.
pub(crate) struct Compressor {
    state: Option<(Encoder<'static>, Vec<u8>)>,
}

impl Compressor {
    /// A compressor for a file of exactly `length` bytes (recorded in the frame).
    pub(crate) fn new(length: u64) -> std::io::Result<Self> {
        let mut encoder = Encoder::new(ZSTD_LEVEL)?;
        encoder.set_parameter(CParameter::WindowLog(ZSTD_WINDOW_LOG))?;
        encoder.set_pledged_src_size(Some(length))?;
        Ok(Self {
            state: Some((encoder, Vec::with_capacity(SCRATCH_BYTES))),
        })
    }

    /// Compresses the next chunk of the file; returns the compressed bytes
    /// produced so far (possibly none: zstd buffers up to a block).
    pub(crate) async fn compress(&mut self, input: Bytes) -> std::io::Result<Vec<Bytes>> {
        self.step(move |encoder, scratch| {
            let mut pieces = Vec::new();
            let mut input = InBuffer::around(&input);
            while input.pos < input.src.len() {
                scratch.clear();
                let mut output = OutBuffer::around(scratch);
                encoder.run(&mut input, &mut output)?;
                if output.pos() > 0 {
                    pieces.push(Bytes::copy_from_slice(output.as_slice()));
                }
            }
            Ok(pieces)
        })
        .await
    }

    /// Ends the frame; returns the last compressed bytes.
    pub(crate) async fn finish(&mut self) -> std::io::Result<Vec<Bytes>> {
        self.step(|encoder, scratch| {
            let mut pieces = Vec::new();
            loop {
                scratch.clear();
                let mut output = OutBuffer::around(scratch);
                let remaining = encoder.finish(&mut output, true)?;
                if output.pos() > 0 {
                    pieces.push(Bytes::copy_from_slice(output.as_slice()));
                }
                if remaining == 0 {
                    return Ok(pieces);
                }
            }
        })
        .await
    }

    async fn step<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut Encoder<'static>, &mut Vec<u8>) -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let (mut encoder, mut scratch) = self.state.take().ok_or_else(|| {
            std::io::Error::other("the compressor failed before and cannot be used again")
        })?;
        let (result, encoder, scratch) = tokio::task::spawn_blocking(move || {
            let result = work(&mut encoder, &mut scratch);
            (result, encoder, scratch)
        })
        .await
        .map_err(|e| std::io::Error::other(format!("compression task failed: {e}")))?;
        if result.is_ok() {
            self.state = Some((encoder, scratch));
        }
        result
    }
}

/// The outcome of one decompression step.
pub(crate) struct Decoded {
    /// Decompressed bytes, at most about [`DECODED_BYTES_PER_STEP_MAX`] in total.
    pub(crate) pieces: Vec<Bytes>,
    /// How much of the input was consumed.
    pub(crate) consumed: usize,
    /// Whether the step stopped early: call again with the rest of the input
    /// (possibly empty) before feeding the next chunk.
    pub(crate) more: bool,
    /// Whether the decoder is at the end of a frame.
    pub(crate) frame_complete: bool,
}

/// A streaming zstd decompressor of one object.
pub(crate) struct Decompressor {
    state: Option<(Decoder<'static>, Vec<u8>)>,
    frame_complete: bool,
}

impl Decompressor {
    pub(crate) fn new() -> std::io::Result<Self> {
        let mut decoder = Decoder::new()?;
        decoder.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))?;
        Ok(Self {
            state: Some((decoder, Vec::with_capacity(SCRATCH_BYTES))),
            frame_complete: false,
        })
    }

    /// Whether the input so far ended exactly at the end of a frame.
    pub(crate) fn frame_complete(&self) -> bool {
        self.frame_complete
    }

    /// Decompresses `input[start..]`, producing at most about
    /// [`DECODED_BYTES_PER_STEP_MAX`] bytes.
    pub(crate) async fn step(&mut self, input: Bytes, start: usize) -> std::io::Result<Decoded> {
        let (mut decoder, mut scratch) = self.state.take().ok_or_else(|| {
            std::io::Error::other("the decompressor failed before and cannot be used again")
        })?;
        let frame_complete = self.frame_complete;
        let (result, decoder, scratch) = tokio::task::spawn_blocking(move || {
            let result = decode_step(&mut decoder, &mut scratch, &input, start, frame_complete);
            (result, decoder, scratch)
        })
        .await
        .map_err(|e| std::io::Error::other(format!("decompression task failed: {e}")))?;
        let decoded = result?;
        self.state = Some((decoder, scratch));
        self.frame_complete = decoded.frame_complete;
        Ok(decoded)
    }
}

/// One bounded step; `frame_complete` is whether the input before `start`
/// ended a frame.
fn decode_step(
    decoder: &mut Decoder<'static>,
    scratch: &mut Vec<u8>,
    input: &[u8],
    start: usize,
    mut frame_complete: bool,
) -> std::io::Result<Decoded> {
    let mut pieces = Vec::new();
    let mut produced = 0;
    let mut input = InBuffer {
        src: input,
        pos: start,
    };
    loop {
        scratch.clear();
        let mut output = OutBuffer::around(scratch);
        let before = input.pos;
        let hint = decoder.run(&mut input, &mut output)?;
        // A full output buffer means the decoder may hold more output.
        let full = output.pos() == output.capacity();
        // zstd answers 0 once a frame is decoded and flushed; input after
        // that starts another frame.
        if hint == 0 {
            frame_complete = true;
        } else if input.pos > before || full {
            frame_complete = false;
        }
        if output.pos() > 0 {
            produced += output.pos();
            pieces.push(Bytes::copy_from_slice(output.as_slice()));
        }
        let input_done = input.pos == input.src.len();
        if input_done && !full {
            return Ok(Decoded {
                pieces,
                consumed: input.pos,
                more: false,
                frame_complete,
            });
        }
        if produced >= DECODED_BYTES_PER_STEP_MAX {
            return Ok(Decoded {
                pieces,
                consumed: input.pos,
                more: true,
                frame_complete,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn round_trip(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut compressor = Compressor::new(data.len() as u64).unwrap();
        let mut compressed = Vec::new();
        for part in data.chunks(chunk.max(1)) {
            for piece in compressor
                .compress(Bytes::copy_from_slice(part))
                .await
                .unwrap()
            {
                compressed.extend_from_slice(&piece);
            }
        }
        for piece in compressor.finish().await.unwrap() {
            compressed.extend_from_slice(&piece);
        }
        let mut decompressor = Decompressor::new().unwrap();
        let mut out = Vec::new();
        for part in compressed.chunks(7919) {
            let part = Bytes::copy_from_slice(part);
            let mut start = 0;
            loop {
                let decoded = decompressor.step(part.clone(), start).await.unwrap();
                for piece in decoded.pieces {
                    out.extend_from_slice(&piece);
                }
                start = decoded.consumed;
                if !decoded.more {
                    break;
                }
            }
        }
        assert!(decompressor.frame_complete());
        out
    }

    #[tokio::test]
    async fn round_trips_in_chunks() {
        let text: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .take(5 * 1024 * 1024 + 17)
            .collect();
        assert_eq!(round_trip(&text, 1024 * 1024).await, text);
        assert_eq!(round_trip(b"", 1024).await, b"");
        assert_eq!(round_trip(b"x", 1024).await, b"x");
    }

    #[tokio::test]
    async fn a_bomb_is_decoded_in_bounded_steps() {
        // 64 MiB of zeros compress to a few KiB; no step produces more than the bound.
        let zeros = vec![0u8; 64 * 1024 * 1024];
        let compressed = zstd::bulk::compress(&zeros, ZSTD_LEVEL).unwrap();
        assert!(compressed.len() < 64 * 1024);
        let mut decompressor = Decompressor::new().unwrap();
        let input = Bytes::from(compressed);
        let (mut start, mut total, mut steps) = (0, 0usize, 0);
        loop {
            let decoded = decompressor.step(input.clone(), start).await.unwrap();
            let produced: usize = decoded.pieces.iter().map(Bytes::len).sum();
            assert!(produced <= DECODED_BYTES_PER_STEP_MAX + SCRATCH_BYTES);
            total += produced;
            steps += 1;
            start = decoded.consumed;
            if !decoded.more {
                break;
            }
        }
        assert_eq!(total, zeros.len());
        assert!(steps >= 8, "{steps} steps");
        assert!(decompressor.frame_complete());
    }

    #[tokio::test]
    async fn garbage_and_truncation_are_errors_or_incomplete() {
        let mut decompressor = Decompressor::new().unwrap();
        assert!(decompressor
            .step(Bytes::from_static(b"definitely not zstd"), 0)
            .await
            .is_err());

        let compressed = zstd::bulk::compress(&vec![7u8; 100_000], ZSTD_LEVEL).unwrap();
        let mut decompressor = Decompressor::new().unwrap();
        let half = Bytes::copy_from_slice(&compressed[..compressed.len() / 2]);
        let decoded = decompressor.step(half, 0).await.unwrap();
        assert!(!decoded.more);
        assert!(!decompressor.frame_complete());
    }
}
