//! Per-segment index files (`N.idx`), written when a segment is sealed.
//!
//! Layout after the common 24-byte header (magic `EBIX`, segment number, generation): the
//! segment file length it describes (u64), the queue references (`count: u32`, then `ref: u32 |
//! vhost: u16-len | queue: u16-len` each), the message entries (`count: u32`, then `offset: u64
//! | len: u32 | enqueued_at: u64 | ttl: u64 | n: u16 | n × (ref: u32, id: u64)` each; `ttl`
//! `u64::MAX` = none) and a trailing CRC32 of everything before it. This is index format 2;
//! an index of format 1 (no `enqueued_at`/`ttl`) is ignored, and its segment rescanned. Recovery trusts an index only if its checksum, generation and segment length all
//! match; otherwise it rescans the segment. Bodies are never read to load an index.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use super::records::{self, le_u16, le_u32, le_u64, MsgMeta, FILE_HEADER_LEN, IDX_MAGIC};
use super::segment::{idx_path, SegIndex};
use crate::storage::QueueKey;

/// A loaded index file.
#[derive(Debug)]
pub(crate) struct LoadedIndex {
    /// Generation of the segment it describes.
    pub generation: u32,
    /// Length of the segment file it describes.
    pub seg_len: u64,
    /// Queue references (by number).
    pub refs: Vec<QueueKey>,
    /// Message records.
    pub index: SegIndex,
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = crate::error::prefix_len(s, u16::MAX as usize);
    buf.extend_from_slice(&(n as u16).to_le_bytes());
    buf.extend_from_slice(&b[..n]);
}

/// Write segment `no`'s index atomically (temp file, fsync, rename). The caller fsyncs the
/// directory (or accepts that a crash may lose the index, which only costs a rescan).
pub(crate) fn write_index(
    dir: &Path,
    no: u64,
    generation: u32,
    seg_len: u64,
    refs: &[QueueKey],
    index: &SegIndex,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(64 + index.entries.len() * 30 + index.pairs.len() * 12);
    buf.extend_from_slice(&records::file_header(IDX_MAGIC, no, generation));
    buf.extend_from_slice(&seg_len.to_le_bytes());
    buf.extend_from_slice(&u32::try_from(refs.len()).unwrap_or(0).to_le_bytes());
    for (i, q) in refs.iter().enumerate() {
        buf.extend_from_slice(&u32::try_from(i).unwrap_or(0).to_le_bytes());
        put_str(&mut buf, &q.vhost);
        put_str(&mut buf, &q.queue);
    }
    buf.extend_from_slice(
        &u32::try_from(index.entries.len())
            .unwrap_or(0)
            .to_le_bytes(),
    );
    for (e, pairs) in index.iter() {
        buf.extend_from_slice(&e.offset.to_le_bytes());
        buf.extend_from_slice(&e.len.to_le_bytes());
        buf.extend_from_slice(&e.meta.enqueued_at_ms.to_le_bytes());
        buf.extend_from_slice(&e.meta.ttl_ms.unwrap_or(u64::MAX).to_le_bytes());
        buf.extend_from_slice(&u16::try_from(pairs.len()).unwrap_or(0).to_le_bytes());
        for (r, id) in pairs {
            buf.extend_from_slice(&r.to_le_bytes());
            buf.extend_from_slice(&id.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let path = idx_path(dir, no);
    let tmp = path.with_extension("idx.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_data()?;
    }
    fs::rename(&tmp, &path)
}

/// Load segment `no`'s index, `None` if missing or invalid.
pub(crate) fn read_index(dir: &Path, no: u64) -> Option<LoadedIndex> {
    let mut f = File::open(idx_path(dir, no)).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    parse_index(&buf, no)
}

fn parse_index(buf: &[u8], no: u64) -> Option<LoadedIndex> {
    if buf.len() < FILE_HEADER_LEN + 16 {
        return None;
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    if crc32fast::hash(body) != le_u32(crc) {
        return None;
    }
    let (seg, generation) = records::parse_file_header(body, IDX_MAGIC).ok()?;
    if seg != no {
        return None;
    }
    let mut p = &body[FILE_HEADER_LEN..];
    let seg_len = le_u64(take(&mut p, 8)?);
    let nrefs = le_u32(take(&mut p, 4)?);
    let mut refs = Vec::with_capacity(nrefs as usize);
    for i in 0..nrefs {
        let r = le_u32(take(&mut p, 4)?);
        if r != i {
            return None;
        }
        let vhost = take_str(&mut p)?;
        let queue = take_str(&mut p)?;
        refs.push(QueueKey { vhost, queue });
    }
    let n = le_u32(take(&mut p, 4)?) as usize;
    let mut index = SegIndex::default();
    index.entries.reserve(n);
    index.pairs.reserve(n);
    let mut pairs = Vec::new();
    for _ in 0..n {
        let off = le_u64(take(&mut p, 8)?);
        let len = le_u32(take(&mut p, 4)?);
        let enqueued_at_ms = le_u64(take(&mut p, 8)?);
        let ttl = le_u64(take(&mut p, 8)?);
        let meta = MsgMeta {
            enqueued_at_ms,
            ttl_ms: (ttl != u64::MAX).then_some(ttl),
        };
        let k = le_u16(take(&mut p, 2)?) as usize;
        pairs.clear();
        for c in take(&mut p, k * 12)?.chunks_exact(12) {
            pairs.push((le_u32(&c[..4]), le_u64(&c[4..])));
        }
        index.push(off, len, &pairs, meta);
    }
    Some(LoadedIndex {
        generation,
        seg_len,
        refs,
        index,
    })
}

fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if p.len() < n {
        return None;
    }
    let (a, b) = p.split_at(n);
    *p = b;
    Some(a)
}

fn take_str(p: &mut &[u8]) -> Option<String> {
    let n = le_u16(take(p, 2)?) as usize;
    Some(String::from_utf8_lossy(take(p, n)?).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_roundtrip_and_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let refs = vec![QueueKey {
            vhost: "/".into(),
            queue: "q".into(),
        }];
        let mut idx = SegIndex::default();
        let m1 = MsgMeta {
            enqueued_at_ms: 77,
            ttl_ms: Some(1000),
        };
        let m2 = MsgMeta {
            enqueued_at_ms: 78,
            ttl_ms: None,
        };
        idx.push(24, 100, &[(0, 1)], m1);
        idx.push(124, 50, &[(0, 2), (0, 3)], m2);
        write_index(dir.path(), 3, 1, 174, &refs, &idx).unwrap();
        let l = read_index(dir.path(), 3).unwrap();
        assert_eq!((l.generation, l.seg_len, l.refs.len()), (1, 174, 1));
        let got: Vec<_> = l
            .index
            .iter()
            .map(|(e, p)| (e.offset, e.len, e.meta, p.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (24, 100, m1, vec![(0, 1)]),
                (124, 50, m2, vec![(0, 2), (0, 3)])
            ]
        );
        // Corrupt one byte: the index is rejected.
        let path = idx_path(dir.path(), 3);
        let mut bytes = fs::read(&path).unwrap();
        bytes[30] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(read_index(dir.path(), 3).is_none());
        assert!(read_index(dir.path(), 4).is_none());
    }
}
