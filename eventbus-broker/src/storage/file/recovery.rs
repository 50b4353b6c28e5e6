//! Start-up recovery: rebuild the in-memory index from the segment, index and ack files.
//!
//! For each segment (ascending): a valid `.idx` (checksum, generation and length match) is
//! loaded without touching message bodies; otherwise the segment is scanned record by record,
//! verifying checksums. A damaged record with intact records after it is skipped alone (the
//! scan resynchronises on the next offset where a chain of records with valid lengths, types
//! and CRCs starts), so corruption in the middle never costs a confirmed neighbour; a torn or
//! corrupt tail with nothing intact after it (a crash mid-write) is truncated. The ack file
//! (fixed-size records) is read the same way. Every (queue, id) neither acked
//! nor dropped becomes live; segments with nothing live are deleted, scanned ones get an index.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use super::index::{read_index, write_index};
use super::records::{
    self, Parsed, ACK_DROP, ACK_MAGIC, ACK_ONE, ACK_REC_LEN, FILE_HEADER_LEN, REC_QDEF, SEG_MAGIC,
};
use super::segment::{ack_path, idx_path, seg_path, Loc, SegIndex, Segment};
use crate::storage::{QueueKey, StoreError};

/// What recovery hands to the store.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Sealed segments with live messages.
    pub segments: BTreeMap<u64, Segment>,
    /// Live messages per queue.
    pub queues: HashMap<QueueKey, BTreeMap<u64, Loc>>,
    /// Highest segment number seen (live or not).
    pub max_no: u64,
    /// Torn or corrupt tails truncated (segment and ack files).
    pub truncated: u64,
    /// Damaged records skipped in the middle of a file (segment and ack files).
    pub skipped: u64,
}

/// Result of scanning a segment file.
struct Scan {
    generation: u32,
    refs: Vec<QueueKey>,
    index: SegIndex,
    valid_len: u64,
    /// Damaged records skipped before intact ones.
    skipped: u64,
}

fn corrupt(msg: String) -> StoreError {
    StoreError::Corrupt(msg)
}

/// Scan a segment file from the start. `None` if the header itself is torn (empty segment).
fn scan_segment(file: &File, no: u64) -> Result<Option<Scan>, StoreError> {
    let mut data = Vec::new();
    (&*file).read_to_end(&mut data)?;
    if data.len() < FILE_HEADER_LEN {
        return Ok(None);
    }
    let (seg, generation) = records::parse_file_header(&data, SEG_MAGIC)
        .map_err(|e| corrupt(format!("segment {no}: {e}")))?;
    if seg != no {
        return Err(corrupt(format!("segment {no}: header says {seg}")));
    }
    let mut refs = Vec::new();
    let mut index = SegIndex::default();
    let mut skipped = 0;
    let mut pos = FILE_HEADER_LEN;
    while pos < data.len() {
        let why = match records::parse_record(&data[pos..]) {
            Parsed::Record(REC_QDEF, payload, total) => match records::parse_qdef(payload) {
                // A reference defined after a lost one: the lost ones stay unknown (their
                // messages cannot be placed and are skipped below).
                Some((r, vhost, queue)) if r as usize >= refs.len() => {
                    while refs.len() < r as usize {
                        refs.push(lost_ref(refs.len()));
                    }
                    refs.push(QueueKey { vhost, queue });
                    pos += total;
                    continue;
                }
                _ => "malformed queue reference".to_owned(),
            },
            Parsed::Record(ty, payload, total) if records::is_msg(ty) => {
                match records::parse_msg_head(ty, payload) {
                    Some((pairs, meta)) => {
                        let known: Vec<(u32, u64)> = pairs
                            .iter()
                            .copied()
                            .filter(|(r, _)| refs.get(*r as usize).is_some_and(|k| !is_lost(k)))
                            .collect();
                        if known.len() < pairs.len() {
                            tracing::warn!(
                                segment = no,
                                offset = pos,
                                "message of a lost queue reference skipped"
                            );
                        }
                        if !known.is_empty() {
                            let len = u32::try_from(total).unwrap_or(u32::MAX);
                            index.push(pos as u64, len, &known, meta);
                        }
                        pos += total;
                        continue;
                    }
                    None => "malformed message".to_owned(),
                }
            }
            Parsed::Record(ty, _, _) => format!("unknown record type {ty}"),
            Parsed::Incomplete => "incomplete record".to_owned(),
            Parsed::Corrupt(why) => why,
        };
        // A torn tail (a crash mid-write) or a damaged record with intact records after it:
        // skip only the damaged bytes, never the confirmed records behind them.
        match resync(&data, pos) {
            Some(next) => {
                tracing::warn!(segment = no, offset = pos, next, %why, "skipping corrupt record");
                skipped += 1;
                pos = next;
            }
            None => break,
        }
    }
    Ok(Some(Scan {
        generation,
        refs,
        index,
        valid_len: pos as u64,
        skipped,
    }))
}

/// How many records must follow a resynchronisation point intact (unless the file ends
/// first) before it is believed: a false match needs a length, a known type and a CRC-32
/// that all fit by chance, this many times in a row.
const RESYNC_CHAIN: usize = 3;

/// The offset of the first record after the damaged one at `pos` from which intact records
/// run on ([`RESYNC_CHAIN`] of them, or to the end of the file); `None` when nothing intact
/// follows (a torn tail, truncated by the caller).
///
/// The record's own length is tried first (a flipped bit in a body leaves it intact), then
/// every later offset.
fn resync(data: &[u8], pos: usize) -> Option<usize> {
    let by_len = data.get(pos..pos + 4).map(|b| {
        pos + records::REC_PREFIX_LEN
            + u32::from_le_bytes(b.try_into().unwrap_or_default()) as usize
    });
    if let Some(next) = by_len.filter(|n| *n < data.len() && *n > pos) {
        if chain_holds(data, next) {
            return Some(next);
        }
    }
    (pos + 1..data.len()).find(|&p| chain_holds(data, p))
}

/// Whether intact records start at `p`: [`RESYNC_CHAIN`] of them, or all up to the end.
fn chain_holds(data: &[u8], mut p: usize) -> bool {
    for _ in 0..RESYNC_CHAIN {
        if p == data.len() {
            return true;
        }
        // Cheap checks first: most offsets fail on the length or the type byte.
        let Some(head) = data.get(p..p + records::REC_PREFIX_LEN + 1) else {
            return false;
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let ty = head[records::REC_PREFIX_LEN];
        if len == 0 || p + records::REC_PREFIX_LEN + len > data.len() {
            return false;
        }
        if ty != REC_QDEF && !records::is_msg(ty) {
            return false;
        }
        match records::parse_record(&data[p..]) {
            Parsed::Record(_, _, total) => p += total,
            _ => return false,
        }
    }
    true
}

/// Stands in for a queue reference whose definition record was lost to corruption.
fn lost_ref(r: usize) -> QueueKey {
    QueueKey {
        vhost: String::new(),
        queue: format!("\0lost-ref-{r}"),
    }
}

fn is_lost(k: &QueueKey) -> bool {
    k.vhost.is_empty() && k.queue.starts_with("\0lost-ref-")
}

/// Acks and drops of one segment, plus the ack file (if any) and its valid length.
struct Acks {
    acked: HashSet<(u32, u64)>,
    dropped: HashSet<u32>,
    file: Option<(File, u64)>,
    truncated: bool,
    skipped: u64,
}

fn read_acks(dir: &Path, no: u64) -> Result<Acks, StoreError> {
    let mut acks = Acks {
        acked: HashSet::new(),
        dropped: HashSet::new(),
        file: None,
        truncated: false,
        skipped: 0,
    };
    let path = ack_path(dir, no);
    let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
        return Ok(acks);
    };
    let mut data = Vec::new();
    (&file).read_to_end(&mut data)?;
    if data.len() < FILE_HEADER_LEN
        || records::parse_file_header(&data, ACK_MAGIC).map_or(true, |(s, _)| s != no)
    {
        drop(file);
        fs::remove_file(&path)?;
        acks.truncated = !data.is_empty();
        return Ok(acks);
    }
    let mut pos = FILE_HEADER_LEN;
    while pos + ACK_REC_LEN <= data.len() {
        match records::parse_ack_record(&data[pos..pos + ACK_REC_LEN]) {
            Some((ACK_ONE, r, id)) => {
                acks.acked.insert((r, id));
            }
            Some((ACK_DROP, r, _)) => {
                acks.dropped.insert(r);
            }
            // A damaged record with whole records after it: skip it alone (its ack is lost,
            // so that message comes back — never a neighbour's).
            _ if pos + 2 * ACK_REC_LEN <= data.len() => {
                tracing::warn!(segment = no, at = pos, "skipping corrupt ack record");
                acks.skipped += 1;
            }
            _ => break,
        }
        pos += ACK_REC_LEN;
    }
    if pos < data.len() {
        tracing::warn!(segment = no, at = pos, "truncating torn ack file tail");
        file.set_len(pos as u64)?;
        file.sync_all()?;
        acks.truncated = true;
    }
    acks.file = Some((file, pos as u64));
    Ok(acks)
}

/// Recover the store directory.
pub(crate) fn recover(dir: &Path) -> Result<Recovered, StoreError> {
    let mut out = Recovered::default();
    let mut seg_nos = Vec::new();
    let mut others = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".tmp") {
            fs::remove_file(&path)?;
            continue;
        }
        let Some((stem, ext)) = name.split_once('.') else {
            continue;
        };
        let Ok(no) = stem.parse::<u64>() else {
            continue;
        };
        match ext {
            "seg" => seg_nos.push(no),
            "ack" | "idx" => others.push((no, path.clone())),
            _ => {}
        }
    }
    seg_nos.sort_unstable();
    // Orphan ack/index files (their segment was deleted) go away.
    let live_nos: HashSet<u64> = seg_nos.iter().copied().collect();
    for (no, path) in others {
        if !live_nos.contains(&no) {
            fs::remove_file(path)?;
        }
    }
    for no in seg_nos {
        out.max_no = out.max_no.max(no);
        recover_segment(dir, no, &mut out)?;
    }
    Ok(out)
}

fn recover_segment(dir: &Path, no: u64, out: &mut Recovered) -> Result<(), StoreError> {
    let path = seg_path(dir, no);
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    let file_len = file.metadata()?.len();
    let (generation, refs, index, seg_len, scanned) = match read_index(dir, no) {
        Some(l) if l.seg_len == file_len && header_generation(&file)? == Some(l.generation) => {
            (l.generation, l.refs, l.index, l.seg_len, false)
        }
        _ => {
            let Some(scan) = scan_segment(&file, no)? else {
                tracing::warn!(segment = no, "removing segment with torn header");
                drop(file);
                remove_segment_files(dir, no)?;
                out.truncated += 1;
                return Ok(());
            };
            out.skipped += scan.skipped;
            if scan.valid_len < file_len {
                tracing::warn!(
                    segment = no,
                    valid = scan.valid_len,
                    len = file_len,
                    "truncating torn/corrupt segment tail"
                );
                file.set_len(scan.valid_len)?;
                file.sync_all()?;
                out.truncated += 1;
            }
            (scan.generation, scan.refs, scan.index, scan.valid_len, true)
        }
    };
    let acks = read_acks(dir, no)?;
    if acks.truncated {
        out.truncated += 1;
    }
    out.skipped += acks.skipped;
    let mut seg = Segment {
        no,
        generation,
        file: Arc::new(file),
        size: seg_len,
        buf: Vec::new(),
        dirty: false,
        sealed: true,
        refs,
        current: HashMap::new(),
        total: 0,
        live: 0,
        ack_file: None,
        ack_buf: Vec::new(),
        ack_len: 0,
        ack_dirty: false,
        index: SegIndex::default(),
    };
    for (r, q) in seg.refs.iter().enumerate() {
        let r = u32::try_from(r).unwrap_or(u32::MAX);
        if !acks.dropped.contains(&r) {
            seg.current.insert(q.clone(), r);
        }
    }
    for (e, pairs) in index.iter() {
        for &(r, id) in pairs {
            seg.total += 1;
            if acks.dropped.contains(&r) || acks.acked.contains(&(r, id)) {
                continue;
            }
            let Some(q) = seg.refs.get(r as usize) else {
                continue;
            };
            let loc = Loc {
                seg: no,
                offset: e.offset,
                len: e.len,
                meta: e.meta.into(),
            };
            let map = match out.queues.get_mut(q) {
                Some(m) => m,
                None => out.queues.entry(q.clone()).or_default(),
            };
            if let Some(old) = map.insert(id, loc) {
                // Only possible across queue incarnations; the newer copy wins.
                if old.seg == no {
                    seg.live = seg.live.saturating_sub(1);
                } else if let Some(s) = out.segments.get_mut(&old.seg) {
                    s.live = s.live.saturating_sub(1);
                }
            }
            seg.live += 1;
        }
    }
    if seg.live == 0 {
        drop(seg);
        drop(acks);
        remove_segment_files(dir, no)?;
        return Ok(());
    }
    if let Some((f, len)) = acks.file {
        seg.ack_file = Some(Arc::new(f));
        seg.ack_len = len;
    }
    if scanned {
        write_index(dir, no, generation, seg_len, &seg.refs, &index)?;
    }
    out.segments.insert(no, seg);
    Ok(())
}

fn header_generation(file: &File) -> Result<Option<u32>, StoreError> {
    use std::os::unix::fs::FileExt;
    let mut h = [0u8; FILE_HEADER_LEN];
    if file.read_exact_at(&mut h, 0).is_err() {
        return Ok(None);
    }
    Ok(records::parse_file_header(&h, SEG_MAGIC)
        .ok()
        .map(|(_, g)| g))
}

/// Remove a segment's files (missing ones are fine).
pub(crate) fn remove_segment_files(dir: &Path, no: u64) -> std::io::Result<()> {
    for p in [seg_path(dir, no), ack_path(dir, no), idx_path(dir, no)] {
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
