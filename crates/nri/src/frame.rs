//! Wire formats, pure: the NRI multiplexer frame and the ttrpc message.
//!
//! One unix-socket connection carries several logical connections. A multiplexer frame is an
//! 8-byte header (connection ID, payload length; both u32 big-endian) and the payload. On each
//! logical connection, ttrpc messages are a 10-byte header (data length u32, stream ID u32,
//! type u8, flags u8; big-endian) and the data. Both decoders check a declared length against
//! its limit before buffering anything for it, so a hostile length cannot make us allocate.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Logical connection on which the runtime calls the plugin (the plugin serves `Plugin`).
pub const PLUGIN_SERVICE_CONN: u32 = 1;
/// Logical connection on which the plugin calls the runtime (the runtime serves `Runtime`).
pub const RUNTIME_SERVICE_CONN: u32 = 2;
/// Multiplexer frame header length.
pub const MUX_HEADER_LEN: usize = 8;
/// ttrpc message header length.
pub const TTRPC_HEADER_LEN: usize = 10;
/// Largest ttrpc message data: 4 MiB.
pub const MAX_MESSAGE_LEN: usize = 4 << 20;
/// Largest multiplexer payload: one whole ttrpc message with its header.
pub const MAX_FRAME_PAYLOAD: usize = TTRPC_HEADER_LEN + MAX_MESSAGE_LEN;

/// ttrpc message type: a request.
pub const MESSAGE_REQUEST: u8 = 1;
/// ttrpc message type: a response.
pub const MESSAGE_RESPONSE: u8 = 2;

/// Malformed input on the connection; it is closed with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A multiplexer frame declares a payload above [`MAX_FRAME_PAYLOAD`].
    #[error(
        "multiplexer frame for connection {conn_id} declares {len} bytes, above the {MAX_FRAME_PAYLOAD} byte limit"
    )]
    FrameTooLarge {
        /// Logical connection of the frame.
        conn_id: u32,
        /// Declared payload length.
        len: usize,
    },
    /// A ttrpc message declares data above [`MAX_MESSAGE_LEN`].
    #[error("ttrpc message on stream {stream_id} declares {len} bytes, above the {MAX_MESSAGE_LEN} byte limit")]
    MessageTooLarge {
        /// Stream of the message.
        stream_id: u32,
        /// Declared data length.
        len: usize,
    },
}

/// Appends one multiplexer frame.
pub fn encode_frame(conn_id: u32, payload: &[u8], out: &mut BytesMut) {
    let len = u32::try_from(payload.len()).expect("callers keep frames within MAX_FRAME_PAYLOAD");
    out.reserve(MUX_HEADER_LEN + payload.len());
    out.put_u32(conn_id);
    out.put_u32(len);
    out.put_slice(payload);
}

/// Splits a byte stream into multiplexer frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame (connection ID, payload), if any.
    pub fn next_frame(&mut self) -> Result<Option<(u32, Bytes)>, FrameError> {
        if self.buf.len() < MUX_HEADER_LEN {
            return Ok(None);
        }
        let conn_id = u32::from_be_bytes(self.buf[0..4].try_into().expect("4 bytes"));
        let len = u32::from_be_bytes(self.buf[4..8].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME_PAYLOAD {
            return Err(FrameError::FrameTooLarge { conn_id, len });
        }
        if self.buf.len() < MUX_HEADER_LEN + len {
            return Ok(None);
        }
        self.buf.advance(MUX_HEADER_LEN);
        Ok(Some((conn_id, self.buf.split_to(len).freeze())))
    }
}

/// A ttrpc message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader {
    /// Stream ID (odd for client-initiated streams).
    pub stream_id: u32,
    /// [`MESSAGE_REQUEST`], [`MESSAGE_RESPONSE`], or 3 for stream data (not used by NRI).
    pub message_type: u8,
    /// Flags (0 for unary calls).
    pub flags: u8,
}

/// A ttrpc message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its header.
    pub header: MessageHeader,
    /// Its data (an encoded `ttrpc.Request` or `ttrpc.Response`).
    pub data: Bytes,
}

/// Appends one ttrpc message (header and data).
pub fn encode_message(header: MessageHeader, data: &[u8], out: &mut BytesMut) {
    let len = u32::try_from(data.len()).expect("callers keep messages within MAX_MESSAGE_LEN");
    out.reserve(TTRPC_HEADER_LEN + data.len());
    out.put_u32(len);
    out.put_u32(header.stream_id);
    out.put_u8(header.message_type);
    out.put_u8(header.flags);
    out.put_slice(data);
}

/// Reassembles ttrpc messages from one logical connection's byte stream.
#[derive(Debug, Default)]
pub struct MessageDecoder {
    buf: BytesMut,
}

impl MessageDecoder {
    /// Appends bytes received on the logical connection.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, if any.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        if self.buf.len() < TTRPC_HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.buf[0..4].try_into().expect("4 bytes")) as usize;
        let stream_id = u32::from_be_bytes(self.buf[4..8].try_into().expect("4 bytes"));
        if len > MAX_MESSAGE_LEN {
            return Err(FrameError::MessageTooLarge { stream_id, len });
        }
        if self.buf.len() < TTRPC_HEADER_LEN + len {
            return Ok(None);
        }
        let header = MessageHeader {
            stream_id,
            message_type: self.buf[8],
            flags: self.buf[9],
        };
        self.buf.advance(TTRPC_HEADER_LEN);
        Ok(Some(Message {
            header,
            data: self.buf.split_to(len).freeze(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_mux_frame() {
        let mut out = BytesMut::new();
        encode_frame(RUNTIME_SERVICE_CONN, b"abc", &mut out);
        assert_eq!(&out[..], &[0, 0, 0, 2, 0, 0, 0, 3, b'a', b'b', b'c']);
        let mut d = FrameDecoder::default();
        d.push(&out[..5]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&out[5..]);
        assert_eq!(d.next_frame(), Ok(Some((2, Bytes::from_static(b"abc")))));
        assert_eq!(d.next_frame(), Ok(None));
    }

    #[test]
    fn golden_ttrpc_message() {
        // A unary request on stream 1 with 2 data bytes: len=2, stream=1, type=1, flags=0.
        let mut out = BytesMut::new();
        let header = MessageHeader {
            stream_id: 1,
            message_type: MESSAGE_REQUEST,
            flags: 0,
        };
        encode_message(header, &[0x0a, 0x00], &mut out);
        assert_eq!(&out[..], &[0, 0, 0, 2, 0, 0, 0, 1, 1, 0, 0x0a, 0x00]);
        let mut d = MessageDecoder::default();
        d.push(&out);
        let m = d.next_message().unwrap().unwrap();
        assert_eq!(m.header, header);
        assert_eq!(&m.data[..], &[0x0a, 0x00]);
    }

    #[test]
    fn oversized_lengths_are_rejected_from_the_header_alone() {
        let mut d = FrameDecoder::default();
        d.push(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            d.next_frame(),
            Err(FrameError::FrameTooLarge { conn_id: 1, .. })
        ));
        let mut d = MessageDecoder::default();
        let too_big = (MAX_MESSAGE_LEN as u32 + 1).to_be_bytes();
        d.push(&too_big);
        d.push(&[0, 0, 0, 7, 1, 0]);
        assert_eq!(
            d.next_message(),
            Err(FrameError::MessageTooLarge {
                stream_id: 7,
                len: MAX_MESSAGE_LEN + 1
            })
        );
        // The limit itself is accepted (waiting for data, nothing allocated for it yet).
        let mut d = MessageDecoder::default();
        d.push(&(MAX_MESSAGE_LEN as u32).to_be_bytes());
        d.push(&[0, 0, 0, 1, 1, 0]);
        assert_eq!(d.next_message(), Ok(None));
        assert!(d.buf.capacity() < 1024);
    }

    proptest! {
        #[test]
        fn frames_round_trip(frames in proptest::collection::vec((any::<u32>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..8), split in 1usize..64) {
            let mut wire = BytesMut::new();
            for (c, p) in &frames {
                encode_frame(*c, p, &mut wire);
            }
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            for chunk in wire.chunks(split) {
                d.push(chunk);
                while let Some((c, p)) = d.next_frame().unwrap() {
                    got.push((c, p.to_vec()));
                }
            }
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn messages_round_trip(msgs in proptest::collection::vec((any::<u32>(), 1u8..4, any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..8)) {
            let mut wire = BytesMut::new();
            for (s, t, f, p) in &msgs {
                encode_message(MessageHeader { stream_id: *s, message_type: *t, flags: *f }, p, &mut wire);
            }
            let mut d = MessageDecoder::default();
            d.push(&wire);
            for (s, t, f, p) in &msgs {
                let m = d.next_message().unwrap().unwrap();
                prop_assert_eq!(m.header, MessageHeader { stream_id: *s, message_type: *t, flags: *f });
                prop_assert_eq!(&m.data[..], &p[..]);
            }
            prop_assert_eq!(d.next_message().unwrap(), None);
        }

        #[test]
        fn arbitrary_bytes_never_panic_or_overallocate(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut f = FrameDecoder::default();
            f.push(&bytes);
            while let Ok(Some(_)) = f.next_frame() {}
            let mut m = MessageDecoder::default();
            m.push(&bytes);
            while let Ok(Some(_)) = m.next_message() {}
            prop_assert!(f.buf.capacity() <= bytes.len().max(64) * 2);
            prop_assert!(m.buf.capacity() <= bytes.len().max(64) * 2);
        }
    }
}
