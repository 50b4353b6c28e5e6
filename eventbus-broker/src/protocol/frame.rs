//! Frames: checked decoding from a byte buffer and encoding into one.
//!
//! Decoding is done in three steps so that hostile input never reaches amq-protocol unchecked:
//! 1. the 7-byte header is read and its size compared with the negotiated `frame-max`
//!    *before* the payload is buffered ([`DecodeError::FrameTooLarge`]);
//! 2. the frame-end octet is checked;
//! 3. method and content-header payloads are scanned for field-table nesting depth
//!    ([`check_nesting`]) before amq-protocol's recursive parser sees them.

use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic::AMQPProperties, parse_class, AMQPClass};
use bytes::{Buf, Bytes, BytesMut};

use super::constants::*;

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A method frame.
    Method(u16, Box<AMQPClass>),
    /// A content header frame.
    Header(u16, Box<ContentHeader>),
    /// A content body frame.
    Body(u16, Bytes),
    /// A heartbeat frame (channel should be 0).
    Heartbeat(u16),
}

impl Frame {
    /// The channel the frame belongs to.
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method(c, _) | Frame::Header(c, _) | Frame::Body(c, _) | Frame::Heartbeat(c) => {
                *c
            }
        }
    }
}

/// A decoded content header, keeping the raw property bytes for cheap re-encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentHeader {
    /// Class id (60 for basic).
    pub class_id: u16,
    /// Total body size announced.
    pub body_size: u64,
    /// Decoded properties.
    pub properties: AMQPProperties,
    /// The encoded property flags and list, as received.
    pub raw_properties: Bytes,
}

/// Why a frame could not be decoded. Each maps to a connection-level reply code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame's size exceeds the negotiated frame-max.
    #[error("frame size {size} larger than negotiated maximum {max}")]
    FrameTooLarge {
        /// Announced frame size including overhead.
        size: u64,
        /// Negotiated maximum.
        max: u32,
    },
    /// The frame-end octet is not 0xCE.
    #[error("bad frame end octet {0:#04x}")]
    BadFrameEnd(u8),
    /// Unknown frame type octet.
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    /// Field tables nested too deeply.
    #[error("field table nesting deeper than {MAX_TABLE_DEPTH}")]
    TooDeep,
    /// Unknown class/method id.
    #[error("unknown method {class}/{method}")]
    UnknownMethod {
        /// Class id.
        class: u16,
        /// Method id.
        method: u16,
    },
    /// The method arguments could not be parsed.
    #[error("syntax error in method {class}/{method} on channel {channel}")]
    Syntax {
        /// Channel.
        channel: u16,
        /// Class id.
        class: u16,
        /// Method id.
        method: u16,
    },
    /// The content header could not be parsed.
    #[error("malformed content header on channel {0}")]
    BadHeader(u16),
    /// A valid method asks for something the broker does not implement.
    #[error("{0}")]
    NotImplemented(String),
    /// A protocol header arrived where a frame was expected.
    #[error("unexpected protocol header")]
    UnexpectedProtocolHeader,
}

/// Try to decode one frame from the front of `buf`.
///
/// Returns `Ok(None)` if more bytes are needed (nothing is consumed).
///
/// # Errors
/// Returns [`DecodeError`] for malformed or oversized frames.
pub fn decode(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, DecodeError> {
    if buf.len() < FRAME_HEADER_SIZE {
        if buf.len() >= 4 && &buf[..4] == b"AMQP" {
            return Err(DecodeError::UnexpectedProtocolHeader);
        }
        return Ok(None);
    }
    let ftype = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
    if ftype == b'A' {
        return Err(DecodeError::UnexpectedProtocolHeader);
    }
    if !matches!(
        ftype,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Err(DecodeError::UnknownFrameType(ftype));
    }
    let total = size as u64 + FRAME_OVERHEAD as u64;
    if frame_max != 0 && total > frame_max as u64 {
        return Err(DecodeError::FrameTooLarge {
            size: total,
            max: frame_max,
        });
    }
    let total = total as usize;
    if buf.len() < total {
        // never trust the header for an allocation: grow gradually as bytes arrive
        buf.reserve((total - buf.len()).min(64 * 1024));
        return Ok(None);
    }
    let end = buf[total - 1];
    if end != FRAME_END {
        return Err(DecodeError::BadFrameEnd(end));
    }
    buf.advance(FRAME_HEADER_SIZE);
    let payload = buf.split_to(size as usize).freeze();
    buf.advance(1);
    decode_payload(ftype, channel, payload).map(Some)
}

fn decode_payload(ftype: u8, channel: u16, payload: Bytes) -> Result<Frame, DecodeError> {
    match ftype {
        FRAME_METHOD => {
            if payload.len() < 4 {
                return Err(DecodeError::Syntax {
                    channel,
                    class: 0,
                    method: 0,
                });
            }
            let class = u16::from_be_bytes([payload[0], payload[1]]);
            let method = u16::from_be_bytes([payload[2], payload[3]]);
            if !is_known_method(class, method) {
                return Err(DecodeError::UnknownMethod { class, method });
            }
            check_nesting(method_table_offset(class, method, &payload), &payload)?;
            if (class, method) == (60, 10) {
                // amq-protocol drops prefetch-size; RabbitMQ refuses a non-zero one
                if let Some(b) = payload.get(4..8) {
                    let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                    if size != 0 {
                        return Err(DecodeError::NotImplemented(format!(
                            "prefetch_size!=0 ({size})"
                        )));
                    }
                }
            }
            match parse_class(&payload[..]) {
                Ok(([], m)) => Ok(Frame::Method(channel, Box::new(m))),
                _ => Err(DecodeError::Syntax {
                    channel,
                    class,
                    method,
                }),
            }
        }
        FRAME_HEADER => {
            check_nesting(header_table_offset(&payload), &payload)?;
            if payload.len() < 14 {
                return Err(DecodeError::BadHeader(channel));
            }
            let class_id = u16::from_be_bytes([payload[0], payload[1]]);
            let body_size = u64::from_be_bytes(payload[4..12].try_into().unwrap_or([0; 8]));
            match amq_protocol::protocol::basic::parse_properties(&payload[12..]) {
                Ok(([], properties)) => Ok(Frame::Header(
                    channel,
                    Box::new(ContentHeader {
                        class_id,
                        body_size,
                        properties,
                        raw_properties: payload.slice(12..),
                    }),
                )),
                _ => Err(DecodeError::BadHeader(channel)),
            }
        }
        FRAME_BODY => Ok(Frame::Body(channel, payload)),
        _ => Ok(Frame::Heartbeat(channel)),
    }
}

/// Whether `(class, method)` is a method of AMQP 0-9-1 (as RabbitMQ extends it).
pub fn is_known_method(class: u16, method: u16) -> bool {
    match class {
        10 => matches!(
            method,
            10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51 | 60 | 61 | 70 | 71
        ),
        20 => matches!(method, 10 | 11 | 20 | 21 | 40 | 41),
        30 => matches!(method, 10 | 11),
        40 => matches!(method, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 51),
        50 => matches!(method, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51),
        60 => matches!(
            method,
            10 | 11
                | 20
                | 21
                | 30
                | 31
                | 40
                | 50
                | 60
                | 70
                | 71
                | 72
                | 80
                | 90
                | 100
                | 110
                | 111
                | 120
        ),
        85 => matches!(method, 10 | 11),
        90 => matches!(method, 10 | 11 | 20 | 21 | 30 | 31),
        _ => false,
    }
}

#[derive(Clone, Copy)]
enum F {
    U8,
    U16,
    Ss,
}

/// Offset of the (single) field table in a method payload, if the method has one.
fn method_table_offset(class: u16, method: u16, p: &[u8]) -> Option<usize> {
    use F::*;
    let layout: &[F] = match (class, method) {
        (10, 10) => &[U8, U8],
        (10, 11) => &[],
        (40, 10) => &[U16, Ss, Ss, U8],
        (40, 30) | (40, 40) => &[U16, Ss, Ss, Ss, U8],
        (50, 10) => &[U16, Ss, U8],
        (50, 20) => &[U16, Ss, Ss, Ss, U8],
        (50, 50) => &[U16, Ss, Ss, Ss],
        (60, 20) => &[U16, Ss, Ss, U8],
        _ => return None,
    };
    let mut pos = 4;
    for f in layout {
        pos += match f {
            U8 => 1,
            U16 => 2,
            Ss => 1 + *p.get(pos)? as usize,
        };
    }
    Some(pos)
}

/// Offset of the `headers` table in a content-header payload, if present.
fn header_table_offset(p: &[u8]) -> Option<usize> {
    let flags = u16::from_be_bytes([*p.get(12)?, *p.get(13)?]);
    let mut pos = 14;
    let mut f = flags;
    while f & 1 == 1 {
        f = u16::from_be_bytes([*p.get(pos)?, *p.get(pos + 1)?]);
        pos += 2;
    }
    if flags & 0x2000 == 0 {
        return None;
    }
    if flags & 0x8000 != 0 {
        pos += 1 + *p.get(pos)? as usize;
    }
    if flags & 0x4000 != 0 {
        pos += 1 + *p.get(pos)? as usize;
    }
    Some(pos)
}

/// Scan the field table starting at `offset` in `p` (iteratively) and reject nesting deeper than
/// [`MAX_TABLE_DEPTH`]. Malformed tables are left for the real parser to reject.
///
/// # Errors
/// [`DecodeError::TooDeep`] when the nesting bound is exceeded.
pub fn check_nesting(offset: Option<usize>, p: &[u8]) -> Result<(), DecodeError> {
    let Some(mut pos) = offset else { return Ok(()) };
    let rd32 = |pos: usize| -> Option<usize> {
        Some(u32::from_be_bytes(p.get(pos..pos + 4)?.try_into().ok()?) as usize)
    };
    let Some(len) = rd32(pos) else { return Ok(()) };
    pos += 4;
    // (end offset, is_table)
    let mut stack: Vec<(usize, bool)> = vec![(pos.saturating_add(len), true)];
    while let Some(&(end, is_table)) = stack.last() {
        if pos >= end || pos >= p.len() {
            stack.pop();
            pos = pos.max(end.min(p.len()));
            continue;
        }
        if is_table {
            let Some(&kl) = p.get(pos) else { return Ok(()) };
            pos += 1 + kl as usize;
        }
        let Some(&t) = p.get(pos) else { return Ok(()) };
        pos += 1;
        match t {
            b't' | b'b' | b'B' => pos += 1,
            b's' | b'U' | b'u' => pos += 2,
            b'I' | b'i' | b'f' => pos += 4,
            b'l' | b'L' | b'd' | b'T' => pos += 8,
            b'D' => pos += 5,
            b'V' => {}
            b'S' | b'x' => {
                let Some(l) = rd32(pos) else { return Ok(()) };
                pos += 4 + l;
            }
            b'F' | b'A' => {
                let Some(l) = rd32(pos) else { return Ok(()) };
                pos += 4;
                stack.push((pos.saturating_add(l), t == b'F'));
                if stack.len() > MAX_TABLE_DEPTH {
                    return Err(DecodeError::TooDeep);
                }
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}

// ===== encoding =====

/// Append an encoded method frame to `out`.
pub fn encode_method(out: &mut Vec<u8>, channel: u16, method: &AMQPClass) {
    let frame = AMQPFrame::Method(channel, method.clone());
    let res = gen_frame(&frame)(WriteContext::from(Vec::with_capacity(64)));
    match res {
        Ok(ctx) => out.extend_from_slice(&ctx.into_inner().0),
        Err(e) => {
            // Only possible for values that cannot be represented; never for server-built methods.
            tracing::error!(error = %e, "failed to encode method frame");
        }
    }
}

/// Encode properties to their wire form (flags + list).
pub fn encode_properties(props: &AMQPProperties) -> Bytes {
    match amq_protocol::protocol::basic::gen_properties(props)(WriteContext::from(Vec::new())) {
        Ok(ctx) => Bytes::from(ctx.into_inner().0),
        Err(_) => Bytes::from_static(&[0, 0]),
    }
}

fn put_short_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = crate::error::prefix_len(s, 255);
    out.push(n as u8);
    out.extend_from_slice(&b[..n]);
}

fn begin_frame(out: &mut Vec<u8>, ftype: u8, channel: u16) -> usize {
    out.push(ftype);
    out.extend_from_slice(&channel.to_be_bytes());
    let at = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    at
}

fn end_frame(out: &mut Vec<u8>, at: usize) {
    let size = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
    out.push(FRAME_END);
}

/// Append a `basic.deliver` method frame (hand-encoded: it is the hot path).
pub fn encode_deliver(
    out: &mut Vec<u8>,
    channel: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
) {
    let at = begin_frame(out, FRAME_METHOD, channel);
    out.extend_from_slice(&60u16.to_be_bytes());
    out.extend_from_slice(&60u16.to_be_bytes());
    put_short_str(out, consumer_tag);
    out.extend_from_slice(&delivery_tag.to_be_bytes());
    out.push(redelivered as u8);
    put_short_str(out, exchange);
    put_short_str(out, routing_key);
    end_frame(out, at);
}

/// Append a content header frame and the body frames, split so no frame exceeds `frame_max`.
pub fn encode_content(
    out: &mut Vec<u8>,
    channel: u16,
    raw_properties: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    let at = begin_frame(out, FRAME_HEADER, channel);
    out.extend_from_slice(&60u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(raw_properties);
    end_frame(out, at);
    let max_payload = if frame_max == 0 {
        usize::MAX
    } else {
        frame_max as usize - FRAME_OVERHEAD
    };
    for chunk in body.chunks(max_payload.max(1)) {
        out.push(FRAME_BODY);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
        out.push(FRAME_END);
    }
}

/// Append a heartbeat frame.
pub fn encode_heartbeat(out: &mut Vec<u8>) {
    out.extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_table_frame(depth: usize) -> Vec<u8> {
        // queue.declare with arguments nested `depth` deep
        let mut table: Vec<u8> = vec![0, 0, 0, 0];
        for _ in 0..depth {
            let mut t = Vec::new();
            t.push(1);
            t.push(b'k');
            t.push(b'F');
            t.extend_from_slice(&table);
            let mut outer = (t.len() as u32).to_be_bytes().to_vec();
            outer.extend_from_slice(&t);
            table = outer;
        }
        let mut payload = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
        payload.extend_from_slice(&table);
        let mut f = vec![1, 0, 1];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(&payload);
        f.push(FRAME_END);
        f
    }

    #[test]
    fn deep_nesting_is_rejected_without_recursion() {
        let mut buf = BytesMut::from(&nested_table_frame(1500)[..]);
        assert_eq!(decode(&mut buf, 0).unwrap_err(), DecodeError::TooDeep);
    }

    #[test]
    fn shallow_nesting_is_parsed() {
        let mut buf = BytesMut::from(&nested_table_frame(5)[..]);
        assert!(matches!(decode(&mut buf, 0), Ok(Some(Frame::Method(1, _)))));
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_frame_rejected_before_payload() {
        let mut buf = BytesMut::from(&[1u8, 0, 1, 0, 0x10, 0, 0][..]);
        assert!(matches!(
            decode(&mut buf, 4096),
            Err(DecodeError::FrameTooLarge { .. })
        ));
    }

    /// Regression (cargo-fuzz `frame_decode`): a header announcing ~4 GiB made `decode`
    /// reserve it all up front when frame-max was 0.
    #[test]
    fn announced_size_does_not_drive_allocation() {
        let mut buf = BytesMut::from(&[0x08u8, 0x00, 0xff, 0xff, 0x02, 0xff, 0x00, 0x00][..]);
        assert!(matches!(decode(&mut buf, 0), Ok(None)));
        assert!(buf.capacity() < 1024 * 1024);
    }

    #[test]
    fn bad_frame_end() {
        let mut buf = BytesMut::from(&[8u8, 0, 0, 0, 0, 0, 0, 0xAB][..]);
        assert_eq!(
            decode(&mut buf, 4096).unwrap_err(),
            DecodeError::BadFrameEnd(0xAB)
        );
    }

    #[test]
    fn content_roundtrip_splits_body() {
        let mut out = Vec::new();
        let props = encode_properties(&AMQPProperties::default().with_delivery_mode(2));
        encode_content(&mut out, 3, &props, &[7u8; 10_000], 4096);
        let mut buf = BytesMut::from(&out[..]);
        let mut frames = Vec::new();
        while let Some(f) = decode(&mut buf, 4096).unwrap() {
            frames.push(f);
        }
        assert_eq!(frames.len(), 4);
        match &frames[0] {
            Frame::Header(3, h) => {
                assert_eq!(h.body_size, 10_000);
                assert_eq!(*h.properties.delivery_mode(), Some(2));
            }
            f => panic!("{f:?}"),
        }
    }
}
