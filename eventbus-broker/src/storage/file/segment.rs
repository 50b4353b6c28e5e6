//! Segment metadata and the write side of one segment: the message file (`N.seg`), its ack
//! file (`N.ack`) and, once sealed, its index (`N.idx`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::records::{self, MsgMeta, ACK_MAGIC, FILE_HEADER_LEN, SEG_MAGIC};
use crate::storage::QueueKey;

/// Path of segment `no`'s message file.
pub(crate) fn seg_path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:020}.seg"))
}
/// Path of segment `no`'s ack file.
pub(crate) fn ack_path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:020}.ack"))
}
/// Path of segment `no`'s index file.
pub(crate) fn idx_path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:020}.idx"))
}

/// Where one (queue, id) lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    /// Segment number.
    pub seg: u64,
    /// Offset of the record in the segment file.
    pub offset: u64,
    /// Total record length.
    pub len: u32,
    /// The record's enqueue time and TTL (kept so recovery needs no body reads).
    pub meta: PackedMeta,
}

/// [`MsgMeta`] in 16 bytes instead of 24 (`Option<u64>` needs a discriminant): there is one
/// per queued message in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackedMeta {
    enqueued_at_ms: u64,
    /// `u64::MAX`: no TTL.
    ttl_ms: u64,
}

impl From<MsgMeta> for PackedMeta {
    fn from(m: MsgMeta) -> Self {
        Self {
            enqueued_at_ms: m.enqueued_at_ms,
            ttl_ms: m.ttl_ms.unwrap_or(u64::MAX),
        }
    }
}

impl From<PackedMeta> for MsgMeta {
    fn from(p: PackedMeta) -> Self {
        Self {
            enqueued_at_ms: p.enqueued_at_ms,
            ttl_ms: (p.ttl_ms != u64::MAX).then_some(p.ttl_ms),
        }
    }
}

/// One message record in a [`SegIndex`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdxEntry {
    /// Offset of the record in the segment file.
    pub offset: u64,
    /// Total record length.
    pub len: u32,
    /// First of its pairs in [`SegIndex::pairs`].
    pub first: u32,
    /// Number of pairs.
    pub n: u16,
    /// Enqueue time and TTL.
    pub meta: MsgMeta,
}

/// Compact list of the message records of a segment: what its `.idx` file holds.
#[derive(Debug, Default, Clone)]
pub(crate) struct SegIndex {
    /// One entry per message record.
    pub entries: Vec<IdxEntry>,
    /// (queue ref, id) pairs, referenced by `entries`.
    pub pairs: Vec<(u32, u64)>,
}

impl SegIndex {
    /// Record one message.
    pub(crate) fn push(&mut self, offset: u64, len: u32, pairs: &[(u32, u64)], meta: MsgMeta) {
        let first = u32::try_from(self.pairs.len()).unwrap_or(u32::MAX);
        self.pairs.extend_from_slice(pairs);
        let n = u16::try_from(pairs.len()).unwrap_or(u16::MAX);
        self.entries.push(IdxEntry {
            offset,
            len,
            first,
            n,
            meta,
        });
    }
    /// Iterate `(entry, pairs)`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&IdxEntry, &[(u32, u64)])> + '_ {
        self.entries.iter().map(|e| {
            let s = e.first as usize;
            (e, &self.pairs[s..s + e.n as usize])
        })
    }
}

/// One segment as the store tracks it in memory.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Segment number (names the files; increases monotonically).
    pub no: u64,
    /// Bumped each time compaction rewrites the file.
    pub generation: u32,
    /// The message file.
    pub file: Arc<File>,
    /// Logical length, including `buf`.
    pub size: u64,
    /// Bytes appended but not yet written to the file; they start at `size - buf.len()`.
    pub buf: Vec<u8>,
    /// Written since the last fsync.
    pub dirty: bool,
    /// No longer the head: immutable (except by compaction).
    pub sealed: bool,
    /// Queue references by number.
    pub refs: Vec<QueueKey>,
    /// The reference new messages and acks of a queue use in this segment.
    pub current: HashMap<QueueKey, u32>,
    /// (queue, message) memberships stored.
    pub total: u64,
    /// Memberships not yet acked.
    pub live: u64,
    /// The ack file, created on first ack.
    pub ack_file: Option<Arc<File>>,
    /// Ack records not yet written.
    pub ack_buf: Vec<u8>,
    /// Logical length of the ack file, including `ack_buf`.
    pub ack_len: u64,
    /// Ack file written since the last fsync.
    pub ack_dirty: bool,
    /// Index of message records, kept while this is the head (written out on seal).
    pub index: SegIndex,
}

impl Segment {
    /// Create a new, empty head segment file.
    pub(crate) fn create(dir: &Path, no: u64) -> io::Result<Self> {
        let path = seg_path(dir, no);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let header = records::file_header(SEG_MAGIC, no, 0);
        Ok(Self {
            no,
            generation: 0,
            file: Arc::new(file),
            size: FILE_HEADER_LEN as u64,
            buf: header.to_vec(),
            dirty: true,
            sealed: false,
            refs: Vec::new(),
            current: HashMap::new(),
            total: 0,
            live: 0,
            ack_file: None,
            ack_buf: Vec::new(),
            ack_len: 0,
            ack_dirty: false,
            index: SegIndex::default(),
        })
    }

    /// The reference of `queue` in this segment, defining it (a `QDEF` record) if needed.
    pub(crate) fn queue_ref(&mut self, queue: &QueueKey) -> u32 {
        if let Some(r) = self.current.get(queue) {
            return *r;
        }
        let r = u32::try_from(self.refs.len()).unwrap_or(u32::MAX);
        let n = records::push_qdef(&mut self.buf, r, &queue.vhost, &queue.queue);
        self.size += n as u64;
        self.refs.push(queue.clone());
        self.current.insert(queue.clone(), r);
        r
    }

    /// Append an ack-file record, creating the ack file if needed. Returns whether a file
    /// was created (the directory then needs an fsync).
    pub(crate) fn push_ack(&mut self, dir: &Path, rec: &[u8]) -> io::Result<bool> {
        let mut created = false;
        if self.ack_file.is_none() {
            let path = ack_path(dir, self.no);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            let len = file.metadata()?.len();
            if len < FILE_HEADER_LEN as u64 {
                file.set_len(0)?;
                self.ack_buf
                    .extend_from_slice(&records::file_header(ACK_MAGIC, self.no, 0));
                self.ack_len = FILE_HEADER_LEN as u64;
            } else {
                self.ack_len = len;
            }
            self.ack_file = Some(Arc::new(file));
            created = true;
        }
        self.ack_buf.extend_from_slice(rec);
        self.ack_len += rec.len() as u64;
        Ok(created)
    }

    /// Write buffered bytes (message and ack files) to the OS; no fsync.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let at = self.size - self.buf.len() as u64;
            self.file.write_all_at(&self.buf, at)?;
            self.buf.clear();
            self.dirty = true;
        }
        if !self.ack_buf.is_empty() {
            if let Some(f) = &self.ack_file {
                let at = self.ack_len - self.ack_buf.len() as u64;
                f.write_all_at(&self.ack_buf, at)?;
                self.ack_buf.clear();
                self.ack_dirty = true;
            }
        }
        Ok(())
    }

    /// Read `len` bytes at `offset`, from the write buffer if they are still there.
    pub(crate) fn read_at(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
        let buf_start = self.size - self.buf.len() as u64;
        if offset >= buf_start {
            let s = usize::try_from(offset - buf_start).ok()?;
            return self.buf.get(s..s + len).map(<[u8]>::to_vec);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entries_stay_small() {
        // one Loc per queued persistent message is kept in memory
        assert_eq!(std::mem::size_of::<Loc>(), 40);
        let m = MsgMeta {
            enqueued_at_ms: 5,
            ttl_ms: Some(0),
        };
        assert_eq!(MsgMeta::from(PackedMeta::from(m)), m);
        assert_eq!(
            MsgMeta::from(PackedMeta::from(MsgMeta::default())),
            MsgMeta::default()
        );
    }

    #[test]
    fn buffered_bytes_are_readable_until_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 1).unwrap();
        let q = QueueKey {
            vhost: "/".into(),
            queue: "q".into(),
        };
        let r = seg.queue_ref(&q);
        assert_eq!(seg.queue_ref(&q), r);
        let off = seg.size;
        let n = records::push_msg(
            &mut seg.buf,
            &[(r, 1)],
            MsgMeta::default(),
            "",
            "k",
            b"",
            b"body",
        );
        seg.size += n as u64;
        assert!(seg.read_at(off, n).is_some());
        seg.flush().unwrap();
        assert!(seg.read_at(off, n).is_none());
        let mut back = vec![0u8; n];
        seg.file.read_exact_at(&mut back, off).unwrap();
        assert!(matches!(
            records::parse_record(&back),
            records::Parsed::Record(records::REC_MSG2, _, _)
        ));
        assert_eq!(
            std::fs::metadata(seg_path(dir.path(), 1)).unwrap().len(),
            seg.size
        );
    }
}
