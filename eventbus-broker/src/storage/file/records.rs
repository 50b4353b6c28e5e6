//! On-disk record codec.
//!
//! Every file starts with a 24-byte header: 4 magic bytes, a version byte, a kind byte, two
//! reserved bytes, the segment number (u64 LE) and the segment generation (u32 LE, bumped by
//! compaction), then 4 reserved bytes.
//!
//! Versions: segment files are written as version 2 and versions 1 and 2 are read (a version 1
//! segment holds `MSG` records only; both record types may appear in a version 2 segment, e.g.
//! after compacting an old one). Ack files are version 1. Index files are version 2 (they carry
//! the message metadata); an index of another version is ignored and its segment rescanned,
//! which rewrites it. A binary that knows only version 1 refuses version 2 files instead of
//! misreading them.
//!
//! Segment records are `len: u32 | crc32: u32 | type: u8 | payload`, where `len` counts the
//! type byte and the payload and the CRC covers the same bytes. The types:
//! - `QDEF`: `ref: u32 | vhost: u16-len str | queue: u16-len str` — binds a segment-local queue
//!   reference to a queue name;
//! - `MSG2` (written): `n: u16 | n × (ref: u32, id: u64) | enqueued_at: u64 | ttl: u64 |
//!   exchange: u16-len str | routing key: u16-len str | properties: u32-len bytes | body
//!   (rest)` — a message stored once for all its queues. `enqueued_at` is when it was
//!   enqueued (ms since the Unix epoch), `ttl` its own per-message TTL in ms (the `expiration`
//!   property; `u64::MAX` = none), so expiry can be re-applied after a restart without
//!   reading bodies;
//! - `MSG` (format 1, read only): as `MSG2` without `enqueued_at` and `ttl`.
//!
//! Ack files hold fixed 17-byte records `crc32: u32 | type: u8 | ref: u32 | id: u64` (`ACK`
//! settles one (queue, id); `DROP` settles every message of a queue reference).

use bytes::Bytes;

pub(crate) use crate::storage::MsgMeta;

/// Magic of segment files.
pub(crate) const SEG_MAGIC: [u8; 4] = *b"EBMS";
/// Magic of ack files.
pub(crate) const ACK_MAGIC: [u8; 4] = *b"EBAK";
/// Magic of index files.
pub(crate) const IDX_MAGIC: [u8; 4] = *b"EBIX";
/// Version written in segment file headers (1 and 2 are read).
pub(crate) const SEG_VERSION: u8 = 2;
/// Version written in (and required of) index file headers.
pub(crate) const IDX_VERSION: u8 = 2;
/// Version written in (and required of) ack file headers.
pub(crate) const ACK_VERSION: u8 = 1;
/// Length of every file header.
pub(crate) const FILE_HEADER_LEN: usize = 24;
/// Length of a record's `len | crc` prefix.
pub(crate) const REC_PREFIX_LEN: usize = 8;
/// Record type: queue reference definition.
pub(crate) const REC_QDEF: u8 = 1;
/// Record type: message without metadata (format 1; read only).
pub(crate) const REC_MSG: u8 = 2;
/// Record type: message with its enqueue time and TTL.
pub(crate) const REC_MSG2: u8 = 3;
/// On-disk encoding of "no per-message TTL".
const NO_TTL: u64 = u64::MAX;
/// Ack record: one message settled.
pub(crate) const ACK_ONE: u8 = 1;
/// Ack record: a whole queue reference dropped.
pub(crate) const ACK_DROP: u8 = 2;
/// Size of an ack record.
pub(crate) const ACK_REC_LEN: usize = 17;
/// Largest record accepted (anything bigger is treated as corruption).
pub(crate) const MAX_RECORD: u32 = 1 << 30;

/// The version written for files with `magic`, and the oldest one read.
fn versions(magic: [u8; 4]) -> (u8, u8) {
    match magic {
        SEG_MAGIC => (SEG_VERSION, 1),
        IDX_MAGIC => (IDX_VERSION, IDX_VERSION),
        _ => (ACK_VERSION, ACK_VERSION),
    }
}

/// Encode a file header.
pub(crate) fn file_header(magic: [u8; 4], seg: u64, generation: u32) -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[..4].copy_from_slice(&magic);
    h[4] = versions(magic).0;
    h[8..16].copy_from_slice(&seg.to_le_bytes());
    h[16..20].copy_from_slice(&generation.to_le_bytes());
    h
}

/// Decode a file header: `(segment, generation)`.
pub(crate) fn parse_file_header(buf: &[u8], magic: [u8; 4]) -> Result<(u64, u32), String> {
    if buf.len() < FILE_HEADER_LEN {
        return Err("short file header".into());
    }
    if buf[..4] != magic {
        return Err(format!("bad magic {:?}", &buf[..4]));
    }
    let (newest, oldest) = versions(magic);
    if !(oldest..=newest).contains(&buf[4]) {
        return Err(format!("unsupported version {}", buf[4]));
    }
    Ok((le_u64(&buf[8..16]), le_u32(&buf[16..20])))
}

pub(crate) fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}
pub(crate) fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
pub(crate) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Append a record of type `ty` to `buf`, its payload written by `payload`. Returns the
/// record's total length.
fn push_record(buf: &mut Vec<u8>, ty: u8, payload: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; REC_PREFIX_LEN]);
    buf.push(ty);
    payload(buf);
    let body = &buf[start + REC_PREFIX_LEN..];
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(body);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    buf.len() - start
}

fn put_str16(buf: &mut Vec<u8>, s: &[u8]) {
    let n = s.len().min(u16::MAX as usize);
    buf.extend_from_slice(&(n as u16).to_le_bytes());
    buf.extend_from_slice(&s[..n]);
}

/// Append a `QDEF` record.
pub(crate) fn push_qdef(buf: &mut Vec<u8>, qref: u32, vhost: &str, queue: &str) -> usize {
    push_record(buf, REC_QDEF, |b| {
        b.extend_from_slice(&qref.to_le_bytes());
        put_str16(b, vhost.as_bytes());
        put_str16(b, queue.as_bytes());
    })
}

/// Append a `MSG2` record for `pairs` of (queue ref, id).
pub(crate) fn push_msg(
    buf: &mut Vec<u8>,
    pairs: &[(u32, u64)],
    meta: MsgMeta,
    exchange: &str,
    routing_key: &str,
    props: &[u8],
    body: &[u8],
) -> usize {
    let need =
        REC_PREFIX_LEN + 1 + 2 + pairs.len() * 12 + 16 + 8 + exchange.len() + routing_key.len();
    buf.reserve(need + props.len() + body.len());
    push_record(buf, REC_MSG2, |b| {
        let n = u16::try_from(pairs.len()).unwrap_or(u16::MAX);
        b.extend_from_slice(&n.to_le_bytes());
        for (r, id) in &pairs[..n as usize] {
            b.extend_from_slice(&r.to_le_bytes());
            b.extend_from_slice(&id.to_le_bytes());
        }
        b.extend_from_slice(&meta.enqueued_at_ms.to_le_bytes());
        b.extend_from_slice(&meta.ttl_ms.unwrap_or(NO_TTL).to_le_bytes());
        put_str16(b, exchange.as_bytes());
        put_str16(b, routing_key.as_bytes());
        b.extend_from_slice(&u32::try_from(props.len()).unwrap_or(0).to_le_bytes());
        b.extend_from_slice(props);
        b.extend_from_slice(body);
    })
}

/// Result of parsing one record from the front of a buffer.
#[derive(Debug)]
pub(crate) enum Parsed<'a> {
    /// A valid record: type, payload (after the type byte), total length.
    Record(u8, &'a [u8], usize),
    /// The buffer ends inside the record (torn tail, or need more bytes).
    Incomplete,
    /// Checksum or framing failure.
    Corrupt(String),
}

/// Parse the record at the front of `buf`, verifying its checksum.
pub(crate) fn parse_record(buf: &[u8]) -> Parsed<'_> {
    if buf.len() < REC_PREFIX_LEN + 1 {
        return Parsed::Incomplete;
    }
    let len = le_u32(&buf[..4]);
    if len == 0 || len > MAX_RECORD {
        return Parsed::Corrupt(format!("bad record length {len}"));
    }
    let total = REC_PREFIX_LEN + len as usize;
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    let body = &buf[REC_PREFIX_LEN..total];
    if crc32fast::hash(body) != le_u32(&buf[4..8]) {
        return Parsed::Corrupt("checksum mismatch".into());
    }
    Parsed::Record(body[0], &body[1..], total)
}

/// Decoded `QDEF` payload: (ref, vhost, queue).
pub(crate) fn parse_qdef(p: &[u8]) -> Option<(u32, String, String)> {
    let r = le_u32(p.get(..4)?);
    let (vhost, rest) = take_str16(&p[4..])?;
    let (queue, _) = take_str16(rest)?;
    Some((
        r,
        String::from_utf8_lossy(vhost).into_owned(),
        String::from_utf8_lossy(queue).into_owned(),
    ))
}

fn take_str16(p: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = le_u16(p.get(..2)?) as usize;
    let s = p.get(2..2 + n)?;
    Some((s, &p[2 + n..]))
}

/// Is `ty` a message record type?
pub(crate) fn is_msg(ty: u8) -> bool {
    ty == REC_MSG || ty == REC_MSG2
}

/// Length of the metadata after the pairs of a message record of type `ty`.
fn meta_len(ty: u8) -> usize {
    if ty == REC_MSG2 {
        16
    } else {
        0
    }
}

/// The (ref, id) pairs and the metadata of a message record's payload (`ty` is `MSG` or
/// `MSG2`; a `MSG` record has no metadata: [`MsgMeta::default`]).
pub(crate) fn parse_msg_head(ty: u8, p: &[u8]) -> Option<(Vec<(u32, u64)>, MsgMeta)> {
    let n = le_u16(p.get(..2)?) as usize;
    let pairs = p.get(2..2 + n * 12)?;
    let meta = match ty {
        REC_MSG2 => {
            let m = p.get(2 + n * 12..2 + n * 12 + 16)?;
            let ttl = le_u64(&m[8..]);
            MsgMeta {
                enqueued_at_ms: le_u64(&m[..8]),
                ttl_ms: (ttl != NO_TTL).then_some(ttl),
            }
        }
        REC_MSG => MsgMeta::default(),
        _ => return None,
    };
    let pairs = pairs
        .chunks_exact(12)
        .map(|c| (le_u32(&c[..4]), le_u64(&c[4..12])))
        .collect();
    Some((pairs, meta))
}

/// A decoded `MSG` payload (without its pairs).
#[derive(Debug)]
pub(crate) struct MsgFields {
    pub exchange: String,
    pub routing_key: String,
    pub props: Bytes,
    pub body: Bytes,
}

/// Decode the fields of a `MSG`/`MSG2` payload (record type `ty`). `whole` is the record as a
/// shared buffer and `payload_at` where the payload starts in it, so body and properties are
/// zero-copy slices.
pub(crate) fn parse_msg_fields(whole: &Bytes, payload_at: usize, ty: u8) -> Option<MsgFields> {
    let p = whole.get(payload_at..)?;
    let n = le_u16(p.get(..2)?) as usize;
    let rest = p.get(2 + n * 12 + meta_len(ty)..)?;
    let (ex, rest) = take_str16(rest)?;
    let (rk, rest) = take_str16(rest)?;
    let plen = le_u32(rest.get(..4)?) as usize;
    rest.get(4..4 + plen)?;
    let props_at = payload_at + (p.len() - rest.len()) + 4;
    let body_at = props_at + plen;
    Some(MsgFields {
        exchange: String::from_utf8_lossy(ex).into_owned(),
        routing_key: String::from_utf8_lossy(rk).into_owned(),
        props: whole.slice(props_at..body_at),
        body: whole.slice(body_at..),
    })
}

/// Encode an ack-file record.
pub(crate) fn ack_record(ty: u8, qref: u32, id: u64) -> [u8; ACK_REC_LEN] {
    let mut r = [0u8; ACK_REC_LEN];
    r[4] = ty;
    r[5..9].copy_from_slice(&qref.to_le_bytes());
    r[9..17].copy_from_slice(&id.to_le_bytes());
    let crc = crc32fast::hash(&r[4..]);
    r[..4].copy_from_slice(&crc.to_le_bytes());
    r
}

/// Decode an ack-file record: `(type, ref, id)`, `None` on checksum failure.
pub(crate) fn parse_ack_record(r: &[u8]) -> Option<(u8, u32, u64)> {
    if r.len() < ACK_REC_LEN || crc32fast::hash(&r[4..ACK_REC_LEN]) != le_u32(&r[..4]) {
        return None;
    }
    Some((r[4], le_u32(&r[5..9]), le_u64(&r[9..17])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_roundtrip() {
        let mut buf = Vec::new();
        let meta = MsgMeta {
            enqueued_at_ms: 1_700_000_000_123,
            ttl_ms: Some(5000),
        };
        let n = push_msg(
            &mut buf,
            &[(1, 7), (3, 9)],
            meta,
            "ex",
            "rk",
            b"pp",
            b"hello",
        );
        assert_eq!(n, buf.len());
        let Parsed::Record(ty, payload, total) = parse_record(&buf) else {
            panic!("parse")
        };
        assert_eq!((ty, total), (REC_MSG2, n));
        let (pairs, got) = parse_msg_head(ty, payload).unwrap();
        assert_eq!((pairs, got), (vec![(1, 7), (3, 9)], meta));
        let whole = Bytes::from(buf.clone());
        let f = parse_msg_fields(&whole, REC_PREFIX_LEN + 1, ty).unwrap();
        assert_eq!((f.exchange.as_str(), f.routing_key.as_str()), ("ex", "rk"));
        assert_eq!((&f.props[..], &f.body[..]), (&b"pp"[..], &b"hello"[..]));
        // no TTL round-trips as None
        let mut buf = Vec::new();
        let none = MsgMeta {
            enqueued_at_ms: 1,
            ttl_ms: None,
        };
        push_msg(&mut buf, &[(0, 1)], none, "", "", b"", b"");
        let Parsed::Record(ty, payload, _) = parse_record(&buf) else {
            panic!("parse")
        };
        assert_eq!(parse_msg_head(ty, payload).unwrap().1, none);
    }

    #[test]
    fn format_1_msg_record_is_read_without_metadata() {
        let mut buf = Vec::new();
        push_record(&mut buf, REC_MSG, |b| {
            b.extend_from_slice(&1u16.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&42u64.to_le_bytes());
            put_str16(b, b"ex");
            put_str16(b, b"rk");
            b.extend_from_slice(&2u32.to_le_bytes());
            b.extend_from_slice(b"pp");
            b.extend_from_slice(b"old body");
        });
        let Parsed::Record(ty, payload, _) = parse_record(&buf) else {
            panic!("parse")
        };
        assert_eq!(ty, REC_MSG);
        let (pairs, meta) = parse_msg_head(ty, payload).unwrap();
        assert_eq!((pairs, meta), (vec![(0, 42)], MsgMeta::default()));
        let f = parse_msg_fields(&Bytes::from(buf.clone()), REC_PREFIX_LEN + 1, ty).unwrap();
        assert_eq!((&f.props[..], &f.body[..]), (&b"pp"[..], &b"old body"[..]));
        // version 1 segment headers are still accepted, version 1 indexes are not
        let mut h = file_header(SEG_MAGIC, 3, 0);
        h[4] = 1;
        assert_eq!(parse_file_header(&h, SEG_MAGIC), Ok((3, 0)));
        let mut h = file_header(IDX_MAGIC, 3, 0);
        h[4] = 1;
        assert!(parse_file_header(&h, IDX_MAGIC).is_err());
        h[4] = 3;
        assert!(parse_file_header(&h, IDX_MAGIC).is_err());
    }

    #[test]
    fn torn_and_corrupt_records_are_detected() {
        let mut buf = Vec::new();
        push_qdef(&mut buf, 4, "/", "q");
        assert!(matches!(
            parse_record(&buf[..buf.len() - 1]),
            Parsed::Incomplete
        ));
        let last = buf.len() - 1;
        buf[last] ^= 0xff;
        assert!(matches!(parse_record(&buf), Parsed::Corrupt(_)));
    }

    #[test]
    fn ack_roundtrip_and_header() {
        let r = ack_record(ACK_ONE, 5, 42);
        assert_eq!(parse_ack_record(&r), Some((ACK_ONE, 5, 42)));
        let mut bad = r;
        bad[10] ^= 1;
        assert_eq!(parse_ack_record(&bad), None);
        let h = file_header(SEG_MAGIC, 9, 2);
        assert_eq!(parse_file_header(&h, SEG_MAGIC), Ok((9, 2)));
        assert!(parse_file_header(&h, ACK_MAGIC).is_err());
    }
}
