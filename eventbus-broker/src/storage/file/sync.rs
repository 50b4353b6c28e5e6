//! The group-commit syncer thread, and compaction of sparse segments.
//!
//! One round: under the lock, write every buffer out to the OS and collect the dirty files and
//! the `written` counter; without the lock, fsync each dirty file once (and the directory if
//! files were created); under the lock again, resolve every waiter whose target is covered.
//! Callers that arrive during the fsync are served by the next round, so the number of fsyncs
//! per second stays bounded by the disk while the number of messages per fsync grows with load.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{mpsc, Arc};

use super::index::write_index;
use super::records::{self, Parsed, SEG_MAGIC};
use super::recovery::remove_segment_files;
use super::segment::{seg_path, SegIndex};
use super::{Inner, SealJob, State, StoreError};

/// fsync a directory (makes file creations, renames and deletions durable).
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What one round fsyncs.
struct Round {
    target: u64,
    files: Vec<Arc<File>>,
    dir_dirty: bool,
    seals: Vec<SealJob>,
    deletes: Vec<u64>,
}

fn prepare(st: &mut State) -> io::Result<Round> {
    let mut files = Vec::new();
    // segments being deleted get their last acks written and synced in this round too
    let mut dying = std::mem::take(&mut st.dying);
    for seg in st.segments.values_mut().chain(dying.iter_mut()) {
        seg.flush()?;
        if seg.dirty {
            files.push(Arc::clone(&seg.file));
            seg.dirty = false;
        }
        if seg.ack_dirty {
            if let Some(f) = &seg.ack_file {
                files.push(Arc::clone(f));
            }
            seg.ack_dirty = false;
        }
    }
    Ok(Round {
        target: st.written,
        files,
        dir_dirty: std::mem::take(&mut st.dir_dirty),
        seals: std::mem::take(&mut st.seals),
        deletes: std::mem::take(&mut st.deletes),
    })
}

fn execute(dir: &Path, round: &Round) -> io::Result<()> {
    for f in &round.files {
        f.sync_data()?;
    }
    if round.dir_dirty {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// The syncer thread's body. Fully acked segments are deleted by a janitor thread it owns:
/// unlinking a large file takes milliseconds, which would otherwise delay the next round's
/// confirms.
pub(crate) fn run(inner: &Arc<Inner>) {
    let (tx, rx) = mpsc::channel::<Vec<u64>>();
    let janitor = {
        let inner = Arc::clone(inner);
        let dir = inner.lock().dir.clone();
        std::thread::Builder::new()
            .name("eventbus-store-janitor".into())
            .spawn(move || janitor(&inner, &dir, &rx))
    };
    match janitor {
        Ok(handle) => {
            rounds(inner, Some(&tx));
            drop(tx);
            let _ = handle.join();
        }
        Err(e) => {
            tracing::warn!(error = %e, "no janitor thread; deleting segments on the syncer");
            rounds(inner, None);
        }
    }
}

/// Deletes the files of segments sent by the syncer (each batch already fsynced acks that
/// made them fully acked), then fsyncs the directory. Stops when the syncer hangs up, or at
/// once after a simulated crash.
fn janitor(inner: &Inner, dir: &Path, rx: &mpsc::Receiver<Vec<u64>>) {
    while let Ok(mut nos) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            nos.extend(more);
        }
        if inner.lock().abandon {
            return;
        }
        delete_segments(dir, &nos);
    }
}

fn delete_segments(dir: &Path, nos: &[u64]) {
    for &no in nos {
        if let Err(e) = remove_segment_files(dir, no) {
            tracing::warn!(segment = no, error = %e, "deleting segment failed");
        }
    }
    if !nos.is_empty() {
        let _ = fsync_dir(dir);
    }
}

fn rounds(inner: &Inner, janitor: Option<&mpsc::Sender<Vec<u64>>>) {
    // Under sustained load there are always waiters; still compact now and then.
    let mut last_compaction = std::time::Instant::now();
    loop {
        let mut st = inner.lock();
        while !st.stop && st.waiters.is_empty() {
            let idle = st.cfg.idle_interval;
            let (g, t) = inner
                .cv
                .wait_timeout(st, idle)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st = g;
            if t.timed_out() {
                break;
            }
        }
        if st.abandon {
            return;
        }
        let stop = st.stop;
        let had_waiters = !st.waiters.is_empty();
        let dir = st.dir.clone();
        let round = prepare(&mut st);
        drop(st);
        let result = round.and_then(|r| execute(&dir, &r).map(|()| r));
        let mut st = inner.lock();
        let round = match result {
            Ok(r) => {
                if !r.files.is_empty() || r.dir_dirty {
                    st.sync_rounds += 1;
                }
                st.durable = st.durable.max(r.target);
                let target = st.durable;
                let waiters = std::mem::take(&mut st.waiters);
                for (seq, tx) in waiters {
                    if seq <= target {
                        let _ = tx.send(Ok(()));
                    } else {
                        st.waiters.push((seq, tx));
                    }
                }
                Some(r)
            }
            Err(e) => {
                tracing::error!(error = %e, "message store sync failed");
                st.failed = Some((e.kind(), e.to_string()));
                for (_, tx) in st.waiters.drain(..) {
                    let _ = tx.send(Err(StoreError::Io(io::Error::new(e.kind(), e.to_string()))));
                }
                None
            }
        };
        let compact_below = st.cfg.compact_below;
        drop(st);
        if let Some(r) = round {
            finish(inner, &dir, r, janitor);
        }
        if stop {
            return;
        }
        let due = !had_waiters || last_compaction.elapsed() > std::time::Duration::from_secs(5);
        if due && compact_below > 0.0 {
            last_compaction = std::time::Instant::now();
            if let Some(no) = compaction_candidate(inner) {
                if let Err(e) = compact(inner, no) {
                    tracing::warn!(segment = no, error = %e, "compaction failed");
                }
            }
        }
    }
}

/// After a round's fsync: write indexes of sealed segments, have fully-acked ones deleted.
fn finish(inner: &Inner, dir: &Path, round: Round, janitor: Option<&mpsc::Sender<Vec<u64>>>) {
    // Serialised with compaction, which rewrites indexes too: an index for a generation that
    // compaction already replaced must not be written over the new one.
    let _serial = inner
        .compacting
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut changed = false;
    for job in round.seals {
        if round.deletes.contains(&job.no) {
            continue;
        }
        let generation = inner.lock().segments.get(&job.no).map(|s| s.generation);
        if generation != Some(job.generation) {
            continue;
        }
        if let Err(e) = write_index(dir, job.no, job.generation, job.size, &job.refs, &job.index) {
            tracing::warn!(segment = job.no, error = %e, "writing segment index failed");
        }
        changed = true;
    }
    if changed {
        let _ = fsync_dir(dir);
    }
    if round.deletes.is_empty() {
        return;
    }
    match janitor {
        Some(tx) => {
            if let Err(mpsc::SendError(nos)) = tx.send(round.deletes) {
                delete_segments(dir, &nos);
            }
        }
        None => delete_segments(dir, &round.deletes),
    }
}

/// The sealed segment with the lowest live fraction below the threshold, if any.
pub(crate) fn compaction_candidate(inner: &Inner) -> Option<u64> {
    let st = inner.lock();
    let ratio = st.cfg.compact_below;
    st.segments
        .values()
        .filter(|s| s.sealed && s.live > 0 && s.total > 0)
        .filter(|s| (s.live as f64) < ratio * s.total as f64)
        .filter(|s| !st.seals.iter().any(|j| j.no == s.no))
        .min_by(|a, b| {
            let fa = a.live as f64 / a.total as f64;
            let fb = b.live as f64 / b.total as f64;
            fa.total_cmp(&fb)
        })
        .map(|s| s.no)
}

/// Rewrite sealed segment `no` with only its live records (same queue references, next
/// generation), then swap it in with a rename. Acks keep going to the same ack file (they
/// name (queue reference, id), which compaction preserves). Returns false if there was
/// nothing to do.
pub(crate) fn compact(inner: &Inner, no: u64) -> Result<bool, StoreError> {
    let _serial = inner
        .compacting
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Phase 1: snapshot the live records.
    let (dir, file, generation, refs, live) = {
        let st = inner.lock();
        let Some(seg) = st.segments.get(&no) else {
            return Ok(false);
        };
        if !seg.sealed {
            return Ok(false);
        }
        let mut live: BTreeMap<u64, u32> = BTreeMap::new();
        for map in st.queues.values() {
            for loc in map.values() {
                if loc.seg == no {
                    live.insert(loc.offset, loc.len);
                }
            }
        }
        (
            st.dir.clone(),
            Arc::clone(&seg.file),
            seg.generation,
            seg.refs.clone(),
            live,
        )
    };
    // Phase 2: write the new file next to the old one.
    let new_gen = generation.wrapping_add(1);
    let mut out = records::file_header(SEG_MAGIC, no, new_gen).to_vec();
    for (i, q) in refs.iter().enumerate() {
        let r = u32::try_from(i).unwrap_or(u32::MAX);
        records::push_qdef(&mut out, r, &q.vhost, &q.queue);
    }
    let mut moved: BTreeMap<u64, u64> = BTreeMap::new();
    let mut index = SegIndex::default();
    let mut total = 0u64;
    let mut rec = Vec::new();
    for (&off, &len) in &live {
        rec.resize(len as usize, 0);
        file.read_exact_at(&mut rec, off)?;
        let head = match records::parse_record(&rec) {
            Parsed::Record(ty, payload, _) => records::parse_msg_head(ty, payload),
            _ => None,
        };
        let Some((pairs, meta)) = head else {
            return Err(StoreError::Corrupt(format!(
                "segment {no} offset {off}: record fails checksum, not compacting"
            )));
        };
        let new_off = out.len() as u64;
        out.extend_from_slice(&rec);
        index.push(new_off, len, &pairs, meta);
        total += pairs.len() as u64;
        moved.insert(off, new_off);
    }
    let path = seg_path(&dir, no);
    let tmp = path.with_extension("seg.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
    }
    // Phase 3: swap it in.
    {
        let mut st = inner.lock();
        let st = &mut *st;
        let Some(seg) = st.segments.get_mut(&no) else {
            drop(fs::remove_file(&tmp));
            return Ok(false);
        };
        fs::rename(&tmp, &path)?;
        let new_file = OpenOptions::new().read(true).write(true).open(&path)?;
        seg.file = Arc::new(new_file);
        seg.generation = new_gen;
        seg.size = out.len() as u64;
        // Measure future sparseness against what is live now (records shared with acked
        // queues cannot shrink further), so a segment is not compacted again and again.
        seg.total = seg.live.min(total);
        for map in st.queues.values_mut() {
            for loc in map.values_mut() {
                if loc.seg == no {
                    if let Some(&n) = moved.get(&loc.offset) {
                        loc.offset = n;
                    }
                }
            }
        }
        st.segments_compacted += 1;
    }
    fsync_dir(&dir)?;
    write_index(&dir, no, new_gen, out.len() as u64, &refs, &index)?;
    Ok(true)
}
