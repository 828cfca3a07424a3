//! Normalising the HTTP/2 `:authority` that the kubelet sends, before `h2` sees it.
//!
//! # Why this exists
//!
//! The kubelet dials the registration socket (and, before Kubernetes 1.34, the DRA socket) with
//! the socket's *path* as target, so grpc-go sends `:authority` = `/var/lib/kubelet/...` or its
//! percent-encoded form `%2Fvar%2Flib%2F...`. Neither is an RFC 3986 authority, and the `h2`
//! crate under tonic answers such a request with `RST_STREAM(PROTOCOL_ERROR)` ("malformed
//! authority"), so a stock tonic server is never registered by a real kubelet. `h2` has no
//! option to relax this, and forking it would mean carrying a patched HTTP/2 stack.
//!
//! Instead, each accepted connection's client-to-server bytes pass through
//! [`AuthorityNormalizer`], which parses HTTP/2 frames, decodes every header block with HPACK
//! (tracking the client's dynamic table), replaces an `:authority` that is not a valid URI
//! authority with `localhost`, and re-encodes the block using only literal representations
//! without indexing. Because the re-encoded blocks never touch the dynamic table, `h2`'s
//! decoder stays consistent whatever the client's encoder did. Everything that is not a header
//! block is forwarded byte for byte; server-to-client traffic is not touched at all.

use bytes::{Buf, BufMut, BytesMut};
use loona_hpack::Decoder;

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Frames we emit stay within the default SETTINGS_MAX_FRAME_SIZE, which `h2` servers keep.
const MAX_EMITTED_FRAME: usize = 16_384;
/// The largest frame a client may send: `h2`'s SETTINGS_MAX_FRAME_SIZE, which the server
/// leaves at the protocol's default. A larger one is a FRAME_SIZE_ERROR for `h2` too, so it is
/// refused from its 9-byte header, before a byte of its payload is buffered.
const MAX_RECEIVED_FRAME: usize = 16_384;
/// A header block larger than this (across CONTINUATION frames) closes the connection.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// SETTINGS_HEADER_TABLE_SIZE as the `h2` server leaves it (the protocol default).
const HEADER_TABLE_SIZE: usize = 4096;
/// What an unusable authority is replaced with.
const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

/// Why a connection's byte stream could not be normalised; the connection is then closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NormalizeError {
    /// A HEADERS frame's padding or priority fields do not fit in the frame.
    #[error("malformed HEADERS frame on stream {stream_id}")]
    MalformedHeaders {
        /// The frame's stream.
        stream_id: u32,
    },
    /// A header block was interrupted by another frame, or a CONTINUATION came out of place.
    #[error("unexpected frame type {frame_type:#x} on stream {stream_id} while a header block was {state}")]
    UnexpectedFrame {
        /// The offending frame's type.
        frame_type: u8,
        /// The offending frame's stream.
        stream_id: u32,
        /// "open" or "not open".
        state: &'static str,
    },
    /// A frame announced a payload larger than `h2` accepts.
    #[error(
        "frame of type {frame_type:#x} on stream {stream_id} announces {length} bytes, more than {MAX_RECEIVED_FRAME}"
    )]
    FrameTooLarge {
        /// The frame's type.
        frame_type: u8,
        /// The frame's stream.
        stream_id: u32,
        /// The announced payload length.
        length: usize,
    },
    /// The header block grew beyond [`MAX_HEADER_BLOCK`].
    #[error("header block on stream {stream_id} exceeds {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge {
        /// The block's stream.
        stream_id: u32,
    },
    /// HPACK decoding failed.
    #[error("HPACK decoding failed on stream {stream_id}: {reason}")]
    Hpack {
        /// The block's stream.
        stream_id: u32,
        /// The decoder's message.
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the 24-byte client preface.
    Preface,
    /// Parsing frames.
    Frames,
    /// Not HTTP/2 with prior knowledge: forward untouched and let the server reject it.
    Passthrough,
}

/// A header block being collected across HEADERS + CONTINUATION frames.
struct PendingBlock {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// Rewrites the client-to-server half of an HTTP/2 connection so that every `:authority` is
/// one `h2` accepts. Feed bytes with [`push`](Self::push), take the result with
/// [`take_output`](Self::take_output).
pub struct AuthorityNormalizer {
    phase: Phase,
    input: BytesMut,
    output: BytesMut,
    decoder: Decoder<'static>,
    pending: Option<PendingBlock>,
    rewritten: u64,
}

impl Default for AuthorityNormalizer {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthorityNormalizer {
    /// A normaliser for a fresh connection.
    pub fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Self {
            phase: Phase::Preface,
            input: BytesMut::new(),
            output: BytesMut::new(),
            decoder,
            pending: None,
            rewritten: 0,
        }
    }

    /// How many `:authority` values were replaced so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Bytes ready to be handed to the HTTP/2 server.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Takes the bytes ready for the HTTP/2 server.
    #[cfg(test)]
    pub fn take_output(&mut self) -> BytesMut {
        self.output.split()
    }

    /// Moves up to `dst.len()` ready bytes into `dst`; returns how many.
    pub fn read_output(&mut self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.output.len());
        dst[..n].copy_from_slice(&self.output[..n]);
        self.output.advance(n);
        n
    }

    /// Feeds bytes received from the client.
    pub fn push(&mut self, data: &[u8]) -> Result<(), NormalizeError> {
        if self.phase == Phase::Passthrough {
            self.output.extend_from_slice(data);
            return Ok(());
        }
        self.input.extend_from_slice(data);
        if self.phase == Phase::Preface {
            let n = self.input.len().min(PREFACE.len());
            if self.input[..n] != PREFACE[..n] {
                self.phase = Phase::Passthrough;
                self.output.unsplit(self.input.split());
                return Ok(());
            }
            if n < PREFACE.len() {
                return Ok(());
            }
            self.output.unsplit(self.input.split_to(PREFACE.len()));
            self.phase = Phase::Frames;
        }
        while self.input.len() >= FRAME_HEADER_LEN {
            let len = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]]) as usize;
            if len > MAX_RECEIVED_FRAME {
                return Err(NormalizeError::FrameTooLarge {
                    frame_type: self.input[3],
                    stream_id: u32::from_be_bytes([self.input[5], self.input[6], self.input[7], self.input[8]])
                        & 0x7fff_ffff,
                    length: len,
                });
            }
            if self.input.len() < FRAME_HEADER_LEN + len {
                break;
            }
            let frame = self.input.split_to(FRAME_HEADER_LEN + len);
            self.process_frame(frame)?;
        }
        Ok(())
    }

    fn process_frame(&mut self, frame: BytesMut) -> Result<(), NormalizeError> {
        let frame_type = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER_LEN..];
        if let Some(pending) = self.pending.as_mut() {
            if frame_type != FRAME_CONTINUATION || stream_id != pending.stream_id {
                return Err(NormalizeError::UnexpectedFrame {
                    frame_type,
                    stream_id,
                    state: "open",
                });
            }
            if pending.fragment.len() + payload.len() > MAX_HEADER_BLOCK {
                return Err(NormalizeError::HeaderBlockTooLarge { stream_id });
            }
            pending.fragment.extend_from_slice(payload);
            if flags & FLAG_END_HEADERS != 0 {
                let block = self.pending.take().expect("checked above");
                self.emit_block(block)?;
            }
            return Ok(());
        }
        match frame_type {
            FRAME_HEADERS => {
                let malformed = || NormalizeError::MalformedHeaders { stream_id };
                let mut rest = payload;
                let mut pad_len = 0usize;
                if flags & FLAG_PADDED != 0 {
                    let (&p, tail) = rest.split_first().ok_or_else(malformed)?;
                    pad_len = usize::from(p);
                    rest = tail;
                }
                let mut priority = None;
                if flags & FLAG_PRIORITY != 0 {
                    let (head, tail) = rest.split_at_checked(5).ok_or_else(malformed)?;
                    priority = Some(<[u8; 5]>::try_from(head).map_err(|_| malformed())?);
                    rest = tail;
                }
                let fragment_len = rest.len().checked_sub(pad_len).ok_or_else(malformed)?;
                let block = PendingBlock {
                    stream_id,
                    end_stream: flags & FLAG_END_STREAM != 0,
                    priority,
                    fragment: rest[..fragment_len].to_vec(),
                };
                if flags & FLAG_END_HEADERS != 0 {
                    self.emit_block(block)
                } else {
                    self.pending = Some(block);
                    Ok(())
                }
            }
            FRAME_CONTINUATION => Err(NormalizeError::UnexpectedFrame {
                frame_type,
                stream_id,
                state: "not open",
            }),
            _ => {
                self.output.unsplit(frame);
                Ok(())
            }
        }
    }

    fn emit_block(&mut self, block: PendingBlock) -> Result<(), NormalizeError> {
        let stream_id = block.stream_id;
        let mut encoded = Vec::with_capacity(block.fragment.len() + 32);
        let mut rewritten = 0;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                let value: &[u8] = if name.as_ref() == b":authority" && !is_valid_authority(&value) {
                    rewritten += 1;
                    REPLACEMENT_AUTHORITY
                } else {
                    &value
                };
                encode_literal(&mut encoded, &name, value);
            })
            .map_err(|e| NormalizeError::Hpack {
                stream_id,
                reason: e.to_string(),
            })?;
        self.rewritten += rewritten;

        let priority_len = block.priority.map_or(0, |_| 5);
        let first_len = encoded.len().min(MAX_EMITTED_FRAME - priority_len);
        let (first, mut rest) = encoded.split_at(first_len);
        let mut flags = 0;
        if block.end_stream {
            flags |= FLAG_END_STREAM;
        }
        if block.priority.is_some() {
            flags |= FLAG_PRIORITY;
        }
        if rest.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        put_frame_header(
            &mut self.output,
            priority_len + first.len(),
            FRAME_HEADERS,
            flags,
            stream_id,
        );
        if let Some(p) = block.priority {
            self.output.put_slice(&p);
        }
        self.output.put_slice(first);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(MAX_EMITTED_FRAME));
            let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
            put_frame_header(&mut self.output, chunk.len(), FRAME_CONTINUATION, flags, stream_id);
            self.output.put_slice(chunk);
            rest = tail;
        }
        Ok(())
    }
}

/// Whether `h2` would accept this `:authority` (it parses it as an `http::uri::Authority`).
fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

fn put_frame_header(out: &mut BytesMut, len: usize, frame_type: u8, flags: u8, stream_id: u32) {
    let len = u32::try_from(len).expect("emitted frames are at most 16 KiB");
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_u8(frame_type);
    out.put_u8(flags);
    out.put_u32(stream_id);
}

/// HPACK "literal header field without indexing, new name" (RFC 7541 §6.2.2), no Huffman.
pub(crate) fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    encode_string(out, name);
    encode_string(out, value);
}

fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_integer(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// HPACK integer with an N-bit prefix (RFC 7541 §5.1); `high` holds the bits above the prefix.
fn encode_integer(out: &mut Vec<u8>, high: u8, prefix_bits: u32, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(frame_type: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_frame_header(&mut out, payload.len(), frame_type, flags, stream_id);
        out.put_slice(payload);
        out.to_vec()
    }

    fn decode_headers(bytes: &[u8]) -> Vec<(u32, Vec<(String, String)>)> {
        // Re-parses the normaliser's output the way h2 would: frames, then HPACK.
        let mut decoder = Decoder::new();
        let mut rest = bytes.strip_prefix(PREFACE).unwrap_or(bytes);
        let mut out = Vec::new();
        let mut block = Vec::new();
        while rest.len() >= FRAME_HEADER_LEN {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let (f, tail) = rest.split_at(FRAME_HEADER_LEN + len);
            let (t, flags) = (f[3], f[4]);
            let sid = u32::from_be_bytes([f[5], f[6], f[7], f[8]]);
            if t == FRAME_HEADERS || t == FRAME_CONTINUATION {
                let skip = if t == FRAME_HEADERS && flags & FLAG_PRIORITY != 0 {
                    5
                } else {
                    0
                };
                block.extend_from_slice(&f[FRAME_HEADER_LEN + skip..]);
                if flags & FLAG_END_HEADERS != 0 {
                    let h = decoder.decode(&block).unwrap();
                    let h = h
                        .into_iter()
                        .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
                        .collect();
                    out.push((sid, h));
                    block.clear();
                }
            }
            rest = tail;
        }
        out
    }

    fn literal_block(headers: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (n, v) in headers {
            encode_literal(&mut b, n.as_bytes(), v.as_bytes());
        }
        b
    }

    #[test]
    fn golden_literal_encoding() {
        // RFC 7541 C.2.2-style literal without indexing, new name: 0x00, len, name, len, value.
        let mut b = Vec::new();
        encode_literal(&mut b, b":authority", b"localhost");
        let mut expected = vec![0x00, 0x0a];
        expected.extend_from_slice(b":authority");
        expected.push(0x09);
        expected.extend_from_slice(b"localhost");
        assert_eq!(b, expected);
        // Integers at and beyond the 7-bit prefix (RFC 7541 C.1.2 uses a 5-bit prefix for 1337).
        let mut i = Vec::new();
        encode_integer(&mut i, 0, 5, 1337);
        assert_eq!(i, vec![0x1f, 0x9a, 0x0a]);
        let mut i = Vec::new();
        encode_integer(&mut i, 0, 7, 127);
        assert_eq!(i, vec![0x7f, 0x00]);
    }

    #[test]
    fn rfc7541_huffman_request_passes_with_valid_authority() {
        // RFC 7541 C.4.1: GET http://www.example.com/ with Huffman-coded literals.
        let block = [
            0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        let mut n = AuthorityNormalizer::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &block));
        n.push(&input).unwrap();
        let out = n.take_output();
        assert!(out.starts_with(PREFACE));
        assert_eq!(out[PREFACE.len() + 4], FLAG_END_HEADERS | FLAG_END_STREAM);
        let headers = decode_headers(&out);
        assert_eq!(
            headers[0].1,
            vec![
                (":method".into(), "GET".into()),
                (":scheme".into(), "http".into()),
                (":path".into(), "/".into()),
                (":authority".into(), "www.example.com".into()),
            ]
        );
        assert_eq!(n.rewritten(), 0);
    }

    #[test]
    fn rewrites_path_authorities_and_tracks_dynamic_table() {
        let path = "/var/lib/kubelet/plugins_registry/net.example.com-reg.sock";
        // Stream 1: ":authority" (static index 1) with incremental indexing → dynamic entry 62.
        let mut block1 = vec![0x82, 0x86, 0x41, path.len() as u8];
        block1.extend_from_slice(path.as_bytes());
        block1.extend(literal_block(&[(":path", "/pluginregistration.Registration/GetInfo")]));
        // Stream 3 refers to the dynamic entry only by index 62 (0xbe).
        let mut block3 = vec![0x82, 0x86, 0xbe];
        block3.extend(literal_block(&[(":path", "/x")]));
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS, forwarded untouched
        input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block1));
        input.extend(frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0")); // DATA
        input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &block3));
        let mut n = AuthorityNormalizer::new();
        n.push(&input).unwrap();
        let out = n.take_output();
        let headers = decode_headers(&out);
        assert_eq!(headers.len(), 2);
        for (_, h) in &headers {
            assert!(h.contains(&(":authority".into(), "localhost".into())), "{h:?}");
        }
        assert_eq!(n.rewritten(), 2);
        // SETTINGS and DATA frames are forwarded byte for byte.
        let settings = frame(0x4, 0, 0, &[]);
        assert_eq!(&out[PREFACE.len()..PREFACE.len() + settings.len()], settings.as_slice());
        assert!(
            out.windows(14)
                .any(|w| w == frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0").as_slice())
        );
    }

    #[test]
    fn rewrites_percent_encoded_keeps_localhost_and_absent() {
        for (authority, expected) in [
            (
                Some("%2Fvar%2Flib%2Fkubelet%2Fplugins_registry%2Fx-reg.sock"),
                Some("localhost"),
            ),
            (Some("localhost"), Some("localhost")),
            (Some("10.0.0.1:8080"), Some("10.0.0.1:8080")),
            (None, None),
        ] {
            let mut h = vec![(":method", "POST"), (":scheme", "http"), (":path", "/a/b")];
            if let Some(a) = authority {
                h.push((":authority", a));
            }
            let mut input = PREFACE.to_vec();
            input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &literal_block(&h)));
            let mut n = AuthorityNormalizer::new();
            n.push(&input).unwrap();
            let got = decode_headers(&n.take_output());
            let got = got[0]
                .1
                .iter()
                .find(|(k, _)| k == ":authority")
                .map(|(_, v)| v.as_str());
            assert_eq!(got, expected, "authority {authority:?}");
        }
    }

    #[test]
    fn handles_padding_priority_and_continuation() {
        let block = literal_block(&[(":method", "POST"), (":authority", "/tmp/a.sock"), (":path", "/p")]);
        let (a, b) = block.split_at(7);
        let mut headers_payload = vec![3u8]; // pad length
        headers_payload.extend_from_slice(&[0x80, 0, 0, 0, 16]); // priority: exclusive dep 0, weight 16
        headers_payload.extend_from_slice(a);
        headers_payload.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
            5,
            &headers_payload,
        ));
        input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 5, b));
        let mut n = AuthorityNormalizer::new();
        // Byte-at-a-time delivery must give the same result.
        for byte in &input {
            n.push(std::slice::from_ref(byte)).unwrap();
        }
        let out = n.take_output();
        let f = &out[PREFACE.len()..];
        assert_eq!(f[3], FRAME_HEADERS);
        assert_eq!(f[4], FLAG_PRIORITY | FLAG_END_STREAM | FLAG_END_HEADERS);
        assert_eq!(&f[9..14], &[0x80, 0, 0, 0, 16]);
        let headers = decode_headers(&out);
        assert_eq!(headers[0].0, 5);
        assert!(headers[0].1.contains(&(":authority".into(), "localhost".into())));
    }

    #[test]
    fn large_blocks_are_split_into_continuations() {
        let big = "x".repeat(40_000);
        let block = literal_block(&[(":authority", "/a"), ("x-big", &big)]);
        let mut input = PREFACE.to_vec();
        let (a, b) = block.split_at(16_000);
        input.extend(frame(FRAME_HEADERS, 0, 1, a));
        let (b1, b2) = b.split_at(16_000);
        input.extend(frame(FRAME_CONTINUATION, 0, 1, b1));
        input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, b2));
        let mut n = AuthorityNormalizer::new();
        n.push(&input).unwrap();
        let out = n.take_output();
        let headers = decode_headers(&out);
        assert_eq!(headers[0].1[1].1.len(), 40_000);
        // Every emitted frame respects the default max frame size.
        let mut rest = &out[PREFACE.len()..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            assert!(len <= MAX_EMITTED_FRAME);
            rest = &rest[FRAME_HEADER_LEN + len..];
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header_before_its_payload() {
        let mut n = AuthorityNormalizer::new();
        n.push(PREFACE).expect("preface");
        // Only the 9-byte header of a 16 MiB DATA frame: refused at once, nothing buffered.
        let mut header = BytesMut::new();
        put_frame_header(&mut header, (1 << 24) - 1, 0x0, 0, 1);
        assert_eq!(
            n.push(&header),
            Err(NormalizeError::FrameTooLarge {
                frame_type: 0,
                stream_id: 1,
                length: (1 << 24) - 1
            })
        );
        // The largest frame h2 accepts passes.
        let mut n = AuthorityNormalizer::new();
        n.push(PREFACE).expect("preface");
        n.push(&frame(0x0, 0, 1, &vec![0; MAX_RECEIVED_FRAME]))
            .expect("a 16 KiB DATA frame");
        let mut n = AuthorityNormalizer::new();
        n.push(PREFACE).expect("preface");
        assert!(matches!(
            n.push(&frame(0x0, 0, 1, &vec![0; MAX_RECEIVED_FRAME + 1])),
            Err(NormalizeError::FrameTooLarge { length: 16_385, .. })
        ));
    }

    #[test]
    fn a_header_block_is_refused_once_it_would_grow_past_the_limit() {
        let mut n = AuthorityNormalizer::new();
        n.push(PREFACE).expect("preface");
        // HEADERS without END_HEADERS, then CONTINUATIONs: 64 frames of 16 KiB are exactly the
        // 1 MiB limit (h2's own default is 16 MiB); the next one is refused before it is kept.
        let chunk = vec![0u8; MAX_RECEIVED_FRAME];
        n.push(&frame(FRAME_HEADERS, 0, 1, &chunk)).expect("first fragment");
        for _ in 1..MAX_HEADER_BLOCK / MAX_RECEIVED_FRAME {
            n.push(&frame(FRAME_CONTINUATION, 0, 1, &chunk))
                .expect("within the limit");
        }
        assert_eq!(
            n.push(&frame(FRAME_CONTINUATION, 0, 1, &chunk)),
            Err(NormalizeError::HeaderBlockTooLarge { stream_id: 1 })
        );
    }

    #[test]
    fn rejects_interleaved_and_stray_frames() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(FRAME_HEADERS, 0, 1, &literal_block(&[(":path", "/")])));
        input.extend(frame(0x0, 0, 1, b"x"));
        let mut n = AuthorityNormalizer::new();
        assert!(matches!(n.push(&input), Err(NormalizeError::UnexpectedFrame { .. })));
        let mut input = PREFACE.to_vec();
        input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, b"x"));
        assert!(AuthorityNormalizer::new().push(&input).is_err());
        let mut input = PREFACE.to_vec();
        input.extend(frame(FRAME_HEADERS, FLAG_PADDED | FLAG_END_HEADERS, 1, &[9, 0, 0]));
        assert_eq!(
            AuthorityNormalizer::new().push(&input),
            Err(NormalizeError::MalformedHeaders { stream_id: 1 })
        );
    }

    #[test]
    fn non_http2_traffic_passes_through() {
        let mut n = AuthorityNormalizer::new();
        n.push(b"GET / HTTP/1.1\r\nHost: /weird\r\n\r\n").unwrap();
        assert_eq!(&n.take_output()[..], b"GET / HTTP/1.1\r\nHost: /weird\r\n\r\n");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16), preface in any::<bool>()) {
            let mut n = AuthorityNormalizer::new();
            if preface {
                n.push(PREFACE).unwrap();
            }
            for c in chunks {
                if n.push(&c).is_err() {
                    break;
                }
            }
        }

        #[test]
        fn headers_survive_and_authority_is_valid(
            authority in "[ -~]{0,40}",
            extra in proptest::collection::vec(("[a-z][a-z0-9-]{0,12}", "[ -~]{0,30}"), 0..6),
            split in 1usize..50,
        ) {
            let mut h: Vec<(String, String)> = vec![(":method".into(), "POST".into()), (":authority".into(), authority.clone())];
            h.extend(extra);
            let mut block = Vec::new();
            for (k, v) in &h {
                encode_literal(&mut block, k.as_bytes(), v.as_bytes());
            }
            let mut input = PREFACE.to_vec();
            input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block));
            let mut n = AuthorityNormalizer::new();
            for c in input.chunks(split) {
                n.push(c).unwrap();
            }
            let got = decode_headers(&n.take_output());
            let got = &got[0].1;
            prop_assert_eq!(got.len(), h.len());
            for ((gk, gv), (k, v)) in got.iter().zip(&h) {
                prop_assert_eq!(gk, k);
                if k == ":authority" {
                    prop_assert!(is_valid_authority(gv.as_bytes()));
                    if is_valid_authority(v.as_bytes()) { prop_assert_eq!(gv, v); }
                } else {
                    prop_assert_eq!(gv, v);
                }
            }
        }
    }
}
