//! The segmented file store, tested directly through the `MessageStore` trait on a real
//! filesystem (temp dirs): append/ack/sync/recover, torn and corrupt tails, segment deletion,
//! compaction, crash simulation, group commit, shared records, message metadata (enqueue
//! time, TTL), reading store format 1, and a bounded model-based proptest.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use eventbus_broker::storage::{
    FileStore, FileStoreConfig, MessageStore, MsgMeta, QueueKey, StoreError, StoredMessage,
};
use proptest::prelude::*;

fn q(name: &str) -> QueueKey {
    QueueKey {
        vhost: "/".into(),
        queue: name.into(),
    }
}

fn msg(id: u64, body: &[u8]) -> StoredMessage {
    StoredMessage {
        id,
        exchange: "amq.direct".into(),
        routing_key: "rk".into(),
        raw_properties: Bytes::from_static(&[0x10, 0x00, 0x02]),
        body: Bytes::copy_from_slice(body),
        meta: MsgMeta::default(),
    }
}

fn body_for(queue: &str, id: u64, len: usize) -> Vec<u8> {
    let mut b = format!("{queue}:{id}:").into_bytes();
    b.resize(len.max(b.len()), b'x');
    b
}

fn small() -> FileStoreConfig {
    FileStoreConfig {
        segment_size: 8 * 1024,
        write_buffer: 2048,
        compact_below: 0.0, // compaction only when a test asks for it
        ..FileStoreConfig::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Recovered ids per queue name.
fn ids(store: &FileStore) -> BTreeMap<String, Vec<u64>> {
    store
        .recover()
        .unwrap()
        .into_iter()
        .map(|(k, msgs)| (k.queue, msgs.iter().map(|m| m.id).collect()))
        .collect()
}

fn files(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn append_ack_sync_recover() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    {
        let s = FileStore::open(dir.path(), small()).unwrap();
        for id in 0..50 {
            s.append(&q("a"), &msg(id, &body_for("a", id, 300)))
                .unwrap();
            s.append(&q("b"), &msg(id, &body_for("b", id, 10))).unwrap();
        }
        for id in (0..50).step_by(2) {
            s.ack(&q("a"), id).unwrap();
        }
        s.ack(&q("b"), 49).unwrap();
        rt.block_on(s.sync()).unwrap();
        // Read-back before restart, from buffers or files.
        let m = s.read(&q("a"), 7).unwrap().unwrap();
        assert_eq!(&m.body[..], &body_for("a", 7, 300)[..]);
        assert!(s.read(&q("a"), 8).unwrap().is_none());
    }
    let s = FileStore::open(dir.path(), small()).unwrap();
    let rec = s.recover().unwrap();
    let got: BTreeMap<_, _> = rec.iter().map(|(k, v)| (k.queue.clone(), v)).collect();
    let a: Vec<u64> = got["a"].iter().map(|m| m.id).collect();
    assert_eq!(a, (1..50).step_by(2).collect::<Vec<_>>());
    assert_eq!(got["b"].len(), 49);
    for m in got["a"].iter() {
        assert_eq!(&m.body[..], &body_for("a", m.id, 300)[..]);
        assert_eq!(m.exchange, "amq.direct");
        assert_eq!(m.routing_key, "rk");
        assert_eq!(&m.raw_properties[..], &[0x10, 0x00, 0x02]);
    }
    let idx = s.recover_index().unwrap();
    assert_eq!(idx.len(), 2);
    assert_eq!(idx[0].1.len(), 25);
}

#[test]
fn shared_message_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let big = vec![7u8; 100_000];
    {
        let s = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
        let targets = vec![(q("x"), 5), (q("y"), 9), (q("z"), 1)];
        s.append_shared(&targets, &msg(0, &big)).unwrap();
        rt.block_on(s.sync()).unwrap();
        let st = s.stats();
        assert_eq!(st.messages, 3);
        assert!(st.bytes < 101_000, "stored once: {} bytes", st.bytes);
        s.ack(&q("y"), 9).unwrap();
        rt.block_on(s.sync()).unwrap();
    }
    let s = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
    assert_eq!(
        ids(&s),
        BTreeMap::from([("x".to_string(), vec![5]), ("z".to_string(), vec![1])])
    );
    assert_eq!(s.read(&q("z"), 1).unwrap().unwrap().body.len(), big.len());
    s.ack(&q("x"), 5).unwrap();
    s.ack(&q("z"), 1).unwrap();
    rt.block_on(s.sync()).unwrap();
    drop(s);
    let s = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
    assert!(ids(&s).is_empty());
    // Only the fresh head segment is left.
    assert_eq!(files(dir.path(), "seg").len(), 1);
}

#[test]
fn crash_without_sync_keeps_everything_synced() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    {
        let s = FileStore::open(dir.path(), small()).unwrap();
        for id in 0..40 {
            s.append(&q("a"), &msg(id, &body_for("a", id, 200)))
                .unwrap();
        }
        s.ack(&q("a"), 3).unwrap();
        rt.block_on(s.sync()).unwrap();
        for id in 40..60 {
            s.append(&q("a"), &msg(id, &body_for("a", id, 200)))
                .unwrap();
        }
        s.ack(&q("a"), 4).unwrap();
        s.crash();
    }
    let s = FileStore::open(dir.path(), small()).unwrap();
    let got = &ids(&s)["a"];
    for id in (0..40).filter(|&i| i != 3) {
        assert!(got.contains(&id), "synced message {id} lost");
    }
    assert!(!got.contains(&3), "synced ack lost");
    // Whatever of the unsynced tail survived is intact and in order.
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    for m in s.recover().unwrap().remove(0).1 {
        assert_eq!(&m.body[..], &body_for("a", m.id, 200)[..]);
    }
}

/// Append `n` messages to queue `a` with the default (large) segment size and close cleanly.
fn write_head_segment(dir: &Path, n: u64) -> std::path::PathBuf {
    let rt = rt();
    let s = FileStore::open(dir, FileStoreConfig::default()).unwrap();
    for id in 0..n {
        s.append(&q("a"), &msg(id, &body_for("a", id, 500)))
            .unwrap();
    }
    rt.block_on(s.sync()).unwrap();
    drop(s);
    // The segment holding the messages is the one with data (the new empty head has none).
    files(dir, "seg")
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap()
}

#[test]
fn torn_tail_write_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let seg = write_head_segment(dir.path(), 20);
    // Closing sealed that segment and wrote its index: remove it so recovery must scan, as
    // after a crash of the head segment.
    for idx in files(dir.path(), "idx") {
        fs::remove_file(idx).unwrap();
    }
    let len = fs::metadata(&seg).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 100).unwrap(); // tear the last record
    drop(f);
    let s = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
    assert_eq!(ids(&s)["a"], (0..19).collect::<Vec<_>>());
    let new_len = fs::metadata(&seg).unwrap().len();
    assert!(new_len < len - 100, "torn record cut off: {new_len}");
    // The store keeps working after the repair.
    s.append(&q("a"), &msg(19, b"again")).unwrap();
    rt().block_on(s.sync()).unwrap();
    drop(s);
    let s = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
    assert_eq!(ids(&s)["a"], (0..20).collect::<Vec<_>>());
}

#[test]
fn corrupt_record_is_detected_by_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let seg = write_head_segment(dir.path(), 20);
    for idx in files(dir.path(), "idx") {
        fs::remove_file(idx).unwrap();
    }
    // Flip a byte inside the body of the 16th message: it alone is dropped.
    let mut bytes = fs::read(&seg).unwrap();
    let needle = body_for("a", 15, 0);
    let pos = bytes
        .windows(needle.len())
        .position(|w| w == &needle[..])
        .unwrap();
    bytes[pos + needle.len() + 10] ^= 0x55;
    fs::write(&seg, &bytes).unwrap();
    let s = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
    let mut want: Vec<u64> = (0..20).collect();
    want.retain(|id| *id != 15);
    assert_eq!(ids(&s)["a"], want);
}

#[test]
fn recovery_uses_the_index_and_pages_bodies_lazily() {
    let dir = tempfile::tempdir().unwrap();
    let seg = write_head_segment(dir.path(), 20);
    assert_eq!(
        files(dir.path(), "idx").len(),
        1,
        "sealed segment has an index"
    );
    // Corrupt a body in place (same length): open must not notice (bodies are not read),
    // reading that message must fail its checksum.
    let mut bytes = fs::read(&seg).unwrap();
    let needle = body_for("a", 15, 0);
    let pos = bytes
        .windows(needle.len())
        .position(|w| w == &needle[..])
        .unwrap();
    bytes[pos + needle.len() + 10] ^= 0x55;
    fs::write(&seg, &bytes).unwrap();
    let s = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
    let idx = s.recover_index().unwrap();
    assert_eq!(idx[0].1.len(), 20);
    assert!(s.read(&q("a"), 14).unwrap().is_some());
    assert!(matches!(s.read(&q("a"), 15), Err(StoreError::Corrupt(_))));
}

#[test]
fn torn_segment_header_and_ack_tail() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    {
        let s = FileStore::open(dir.path(), small()).unwrap();
        for id in 0..5 {
            s.append(&q("a"), &msg(id, b"m")).unwrap();
        }
        rt.block_on(s.sync()).unwrap();
        s.ack(&q("a"), 0).unwrap();
        s.ack(&q("a"), 1).unwrap();
        rt.block_on(s.sync()).unwrap();
    }
    // Tear the last ack record, and leave a zero-length segment (crash right after create).
    let ack = files(dir.path(), "ack").pop().unwrap();
    let len = fs::metadata(&ack).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&ack)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    fs::write(dir.path().join("00000000000000000099.seg"), b"").unwrap();
    let s = FileStore::open(dir.path(), small()).unwrap();
    // Ack of 1 was torn: it comes back (at-least-once); ack of 0 holds.
    assert_eq!(ids(&s)["a"], vec![1, 2, 3, 4]);
    assert!(!dir.path().join("00000000000000000099.seg").exists());
}

#[test]
fn fully_acked_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = FileStore::open(dir.path(), small()).unwrap();
    for id in 0..100 {
        s.append(&q("a"), &msg(id, &[1u8; 1024])).unwrap();
    }
    rt.block_on(s.sync()).unwrap();
    let before = files(dir.path(), "seg").len();
    assert!(before > 10, "{before} segments");
    for id in 0..90 {
        s.ack(&q("a"), id).unwrap();
    }
    rt.block_on(s.sync()).unwrap();
    // A second round performs the deletions queued by the first one's acks.
    s.append(&q("a"), &msg(100, b"x")).unwrap();
    rt.block_on(s.sync()).unwrap();
    // The janitor thread unlinks them shortly after the round.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut after = files(dir.path(), "seg").len();
    while after > 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        after = files(dir.path(), "seg").len();
    }
    assert!(after <= 3, "{before} -> {after} segments");
    assert!(s.stats().segments_deleted as usize >= before - 3);
    drop(s);
    let s = FileStore::open(dir.path(), small()).unwrap();
    assert_eq!(ids(&s)["a"], (90..101).collect::<Vec<_>>());
}

#[test]
fn sparse_segments_are_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let cfg = FileStoreConfig {
        segment_size: 64 * 1024,
        compact_below: 0.25,
        ..small()
    };
    let s = FileStore::open(dir.path(), cfg.clone()).unwrap();
    for id in 0..300 {
        s.append(&q("a"), &msg(id, &body_for("a", id, 1000)))
            .unwrap();
    }
    rt.block_on(s.sync()).unwrap();
    for id in (0..300).filter(|i| i % 10 != 0) {
        s.ack(&q("a"), id).unwrap();
    }
    rt.block_on(s.sync()).unwrap();
    let before = s.stats().bytes;
    let n = s.compact_now().unwrap();
    assert!(n >= 3, "compacted {n}");
    let after = s.stats().bytes;
    assert!(after * 3 < before, "{before} -> {after} bytes");
    for id in (0..300).step_by(10) {
        let m = s.read(&q("a"), id).unwrap().unwrap();
        assert_eq!(&m.body[..], &body_for("a", id, 1000)[..]);
    }
    // Acks after compaction still land.
    s.ack(&q("a"), 10).unwrap();
    rt.block_on(s.sync()).unwrap();
    drop(s);
    let s = FileStore::open(dir.path(), cfg).unwrap();
    let expect: Vec<u64> = (0..300).step_by(10).filter(|&i| i != 10).collect();
    assert_eq!(ids(&s)["a"], expect);
    for m in s.recover().unwrap().remove(0).1 {
        assert_eq!(&m.body[..], &body_for("a", m.id, 1000)[..]);
    }
}

#[test]
fn dropped_queue_stays_dropped_and_can_be_redeclared() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    {
        let s = FileStore::open(dir.path(), small()).unwrap();
        for id in 0..30 {
            s.append(&q("a"), &msg(id, &[0u8; 500])).unwrap();
            s.append(&q("b"), &msg(id, &[0u8; 10])).unwrap();
        }
        s.drop_queue(&q("a")).unwrap();
        // Redeclared with ids starting again.
        for id in 0..3 {
            s.append(&q("a"), &msg(id, b"new")).unwrap();
        }
        rt.block_on(s.sync()).unwrap();
    }
    let s = FileStore::open(dir.path(), small()).unwrap();
    let got = ids(&s);
    assert_eq!(got["a"], vec![0, 1, 2]);
    assert_eq!(got["b"].len(), 30);
    assert_eq!(&s.read(&q("a"), 0).unwrap().unwrap().body[..], b"new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_shares_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(FileStore::open(dir.path(), FileStoreConfig::default()).unwrap());
    let tasks = 64u64;
    let per = 20u64;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let s = Arc::clone(&s);
        handles.push(tokio::spawn(async move {
            let key = q(&format!("q{t}"));
            for id in 0..per {
                s.append(&key, &msg(id, &[0u8; 1024])).unwrap();
                s.sync().await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let rounds = s.stats().sync_rounds;
    assert!(
        rounds < tasks * per / 4,
        "{rounds} fsync rounds for {} syncs",
        tasks * per
    );
    assert_eq!(s.stats().messages, tasks * per);
}

#[test]
fn sync_is_immediate_when_clean_and_unknown_acks_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = FileStore::open(dir.path(), small()).unwrap();
    rt.block_on(s.sync()).unwrap();
    let rounds = s.stats().sync_rounds;
    rt.block_on(s.sync()).unwrap();
    assert_eq!(s.stats().sync_rounds, rounds);
    assert!(s.ack(&q("nope"), 1).is_ok());
}

// ---------------------------------------------------------------------------------------
// Model-based: random append/ack/sync/restart/crash sequences against a simple model.

#[derive(Debug, Clone)]
enum Op {
    Append(u8, u16),
    Shared(u16),
    Ack(u8, u16),
    Sync,
    Restart,
    Crash,
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..3, 1u16..1500).prop_map(|(q, n)| Op::Append(q, n)),
        2 => (1u16..1500).prop_map(Op::Shared),
        5 => (0u8..3, any::<u16>()).prop_map(|(q, i)| Op::Ack(q, i)),
        2 => Just(Op::Sync),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
        1 => Just(Op::Compact),
    ]
}

/// Metadata derived from `seed`, with and without a TTL.
fn meta_for(seed: u64) -> MsgMeta {
    MsgMeta {
        enqueued_at_ms: 1_700_000_000_000 + seed,
        ttl_ms: (seed % 3 != 0).then_some(seed * 7),
    }
}

fn msg_with(id: u64, body: &[u8], meta: MsgMeta) -> StoredMessage {
    StoredMessage {
        meta,
        ..msg(id, body)
    }
}

/// What a recovered message must hold: its body and metadata.
type Content = (Vec<u8>, MsgMeta);

#[derive(Default)]
struct Model {
    next: [u64; 3],
    /// Live: (queue, id) -> (content, durable).
    live: BTreeMap<(u8, u64), (Content, bool)>,
    /// Acked, ack not yet synced: may come back after a crash.
    acked_unsynced: BTreeSet<(u8, u64)>,
}

fn qname(i: u8) -> QueueKey {
    q(&format!("q{i}"))
}

fn check_recovered(s: &FileStore, m: &mut Model, crashed: bool) {
    let mut got = BTreeMap::new();
    for (k, msgs) in s.recover().unwrap() {
        let qi: u8 = k.queue[1..].parse().unwrap();
        let ids: Vec<u64> = msgs.iter().map(|x| x.id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "id order");
        for x in msgs {
            got.insert((qi, x.id), (x.body.to_vec(), x.meta));
        }
    }
    for (key, (body, durable)) in &m.live {
        if *durable || !crashed {
            assert_eq!(got.get(key), Some(body), "lost {key:?}");
        }
    }
    for (key, body) in &got {
        match m.live.get(key) {
            Some((b, _)) => assert_eq!(b, body, "body and metadata of {key:?}"),
            None => assert!(
                crashed && m.acked_unsynced.contains(key),
                "resurrected {key:?}"
            ),
        }
    }
    m.live = got.into_iter().map(|(k, b)| (k, (b, true))).collect();
    m.acked_unsynced.clear();
}

fn run_ops(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let cfg = FileStoreConfig {
        segment_size: 6 * 1024,
        write_buffer: 1024,
        compact_below: 0.5,
        ..FileStoreConfig::default()
    };
    let mut s = Some(FileStore::open(dir.path(), cfg.clone()).unwrap());
    let mut m = Model::default();
    for op in ops {
        let st = s.as_ref().unwrap();
        match op {
            Op::Append(qi, n) => {
                let id = m.next[qi as usize];
                m.next[qi as usize] += 1;
                let body = body_for(&format!("q{qi}"), id, n as usize);
                let meta = meta_for(id * 3 + qi as u64);
                st.append(&qname(qi), &msg_with(id, &body, meta)).unwrap();
                m.live.insert((qi, id), ((body, meta), false));
            }
            Op::Shared(n) => {
                let targets: Vec<(QueueKey, u64)> =
                    (0..3).map(|qi| (qname(qi), m.next[qi as usize])).collect();
                let body = body_for("shared", m.next[0], n as usize);
                let meta = meta_for(m.next[0] + 1000);
                st.append_shared(&targets, &msg_with(0, &body, meta))
                    .unwrap();
                for qi in 0..3u8 {
                    let id = m.next[qi as usize];
                    m.next[qi as usize] += 1;
                    m.live.insert((qi, id), ((body.clone(), meta), false));
                }
            }
            Op::Ack(qi, i) => {
                let keys: Vec<_> = m.live.keys().filter(|k| k.0 == qi).copied().collect();
                if !keys.is_empty() {
                    let key = keys[i as usize % keys.len()];
                    st.ack(&qname(qi), key.1).unwrap();
                    m.live.remove(&key);
                    m.acked_unsynced.insert(key);
                }
            }
            Op::Sync => {
                rt.block_on(st.sync()).unwrap();
                for v in m.live.values_mut() {
                    v.1 = true;
                }
                m.acked_unsynced.clear();
            }
            Op::Compact => {
                st.compact_now().unwrap();
            }
            Op::Restart => {
                drop(s.take());
                let st = FileStore::open(dir.path(), cfg.clone()).unwrap();
                check_recovered(&st, &mut m, false);
                s = Some(st);
            }
            Op::Crash => {
                s.take().unwrap().crash();
                let st = FileStore::open(dir.path(), cfg.clone()).unwrap();
                check_recovered(&st, &mut m, true);
                s = Some(st);
            }
        }
    }
    drop(s.take());
    let st = FileStore::open(dir.path(), cfg).unwrap();
    check_recovered(&st, &mut m, false);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn random_sequences_match_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        run_ops(ops);
    }
}

/// A shared message with distinct ids per queue survives as one record for all of them.
#[test]
fn shared_message_with_distinct_ids() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    {
        let s = FileStore::open(dir.path(), small()).unwrap();
        for round in 0..20u64 {
            let targets = vec![(q("a"), round), (q("b"), round * 2), (q("c"), round + 100)];
            s.append_shared(&targets, &msg(0, format!("shared{round}").as_bytes()))
                .unwrap();
        }
        for round in 0..20u64 {
            s.ack(&q("b"), round * 2).unwrap();
            if round % 2 == 0 {
                s.ack(&q("a"), round).unwrap();
            }
        }
        rt.block_on(s.sync()).unwrap();
    }
    let s = FileStore::open(dir.path(), small()).unwrap();
    let got = ids(&s);
    assert!(!got.contains_key("b"));
    assert_eq!(got["a"], (1..20).step_by(2).collect::<Vec<_>>());
    assert_eq!(got["c"], (100..120).collect::<Vec<_>>());
    assert_eq!(&s.read(&q("c"), 105).unwrap().unwrap().body[..], b"shared5");
}

/// Enqueue time and TTL survive a restart with indexes (clean close), a rescan (no index) and
/// compaction, for plain and shared records; `recover_index` returns them without bodies.
#[test]
fn metadata_survives_index_rescan_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let cfg = FileStoreConfig {
        segment_size: 16 * 1024,
        compact_below: 0.5,
        ..small()
    };
    let expect = |s: &FileStore| {
        let idx = s.recover_index().unwrap();
        let by_q: BTreeMap<_, _> = idx.into_iter().map(|(k, v)| (k.queue, v)).collect();
        for e in &by_q["a"] {
            assert_eq!(e.meta, meta_for(e.id), "a/{}", e.id);
        }
        for e in &by_q["b"] {
            assert_eq!(e.meta, meta_for(e.id - 500 + 1000), "b/{}", e.id);
        }
        for (k, msgs) in s.recover().unwrap() {
            for m in msgs {
                let seed = if k.queue == "a" {
                    m.id
                } else {
                    m.id - 500 + 1000
                };
                assert_eq!(m.meta, meta_for(seed));
                assert_eq!(&m.body[..], &body_for(&k.queue, m.id, 700)[..]);
            }
        }
        by_q.values().map(Vec::len).sum::<usize>()
    };
    {
        let s = FileStore::open(dir.path(), cfg.clone()).unwrap();
        for id in 0..100u64 {
            s.append(
                &q("a"),
                &msg_with(id, &body_for("a", id, 700), meta_for(id)),
            )
            .unwrap();
            // shared by "b" (id + 500) and "c" (id): the body is b's
            let targets = vec![(q("b"), id + 500), (q("c"), id)];
            let body = body_for("b", id + 500, 700);
            s.append_shared(&targets, &msg_with(0, &body, meta_for(id + 1000)))
                .unwrap();
        }
        // "c" acks all its references and "a" most: sparse segments
        for id in 0..100u64 {
            s.ack(&q("c"), id).unwrap();
            if id % 8 != 0 {
                s.ack(&q("a"), id).unwrap();
            }
        }
        rt.block_on(s.sync()).unwrap();
        assert_eq!(expect(&s), 13 + 100);
        // (the syncer may compact some on its own meanwhile)
        s.compact_now().unwrap();
        assert!(s.stats().segments_compacted > 0);
        assert_eq!(expect(&s), 13 + 100);
    }
    let s = FileStore::open(dir.path(), cfg.clone()).unwrap();
    assert_eq!(expect(&s), 13 + 100);
    drop(s);
    // without indexes recovery rescans the segments and reads the metadata from the records
    for idx in files(dir.path(), "idx") {
        fs::remove_file(idx).unwrap();
    }
    let s = FileStore::open(dir.path(), cfg).unwrap();
    assert_eq!(expect(&s), 13 + 100);
    assert!(!ids(&s).contains_key("c"));
}

/// A segment written by store format 1 (version 1 header, `MSG` records without metadata, a
/// version 1 index) is still read: its index is ignored and the segment rescanned, its
/// messages come back with unknown metadata, can be read and acked, and new messages are
/// written next to it in the current format.
#[test]
fn format_1_segment_is_still_readable() {
    fn record(ty: u8, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![ty];
        body.extend_from_slice(payload);
        let mut r = (body.len() as u32).to_le_bytes().to_vec();
        r.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        r.extend_from_slice(&body);
        r
    }
    fn str16(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let dir = tempfile::tempdir().unwrap();
    let mut seg = b"EBMS".to_vec();
    seg.extend_from_slice(&[1, 0, 0, 0]); // version 1
    seg.extend_from_slice(&7u64.to_le_bytes());
    seg.extend_from_slice(&[0u8; 8]); // generation 0, reserved
    let mut qdef = 0u32.to_le_bytes().to_vec();
    str16(&mut qdef, "/");
    str16(&mut qdef, "old");
    seg.extend_from_slice(&record(1, &qdef));
    for id in 1..=3u64 {
        let mut p = 1u16.to_le_bytes().to_vec();
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(&id.to_le_bytes());
        str16(&mut p, "ex");
        str16(&mut p, "rk");
        p.extend_from_slice(&3u32.to_le_bytes());
        p.extend_from_slice(&[0x10, 0x00, 0x02]);
        p.extend_from_slice(format!("old body {id}").as_bytes());
        seg.extend_from_slice(&record(2, &p));
    }
    fs::write(dir.path().join("00000000000000000007.seg"), &seg).unwrap();
    // a format 1 index (checksummed, right length) must not be trusted
    let mut idx = b"EBIX".to_vec();
    idx.extend_from_slice(&[1, 0, 0, 0]);
    idx.extend_from_slice(&7u64.to_le_bytes());
    idx.extend_from_slice(&[0u8; 8]);
    idx.extend_from_slice(&(seg.len() as u64).to_le_bytes());
    idx.extend_from_slice(&[0u8; 8]); // no refs, no entries
    let crc = crc32fast::hash(&idx);
    idx.extend_from_slice(&crc.to_le_bytes());
    fs::write(dir.path().join("00000000000000000007.idx"), &idx).unwrap();

    let rt = rt();
    {
        let s = FileStore::open(dir.path(), small()).unwrap();
        let idx = s.recover_index().unwrap();
        assert_eq!(idx.len(), 1);
        let entries = &idx[0].1;
        assert_eq!(entries.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(entries.iter().all(|e| e.meta == MsgMeta::default()));
        let m = s.read(&q("old"), 2).unwrap().unwrap();
        assert_eq!(&m.body[..], b"old body 2");
        assert_eq!((m.exchange.as_str(), m.routing_key.as_str()), ("ex", "rk"));
        assert_eq!(&m.raw_properties[..], &[0x10, 0x00, 0x02]);
        s.ack(&q("old"), 1).unwrap();
        s.append(&q("old"), &msg_with(4, b"new", meta_for(4)))
            .unwrap();
        rt.block_on(s.sync()).unwrap();
    }
    let s = FileStore::open(dir.path(), small()).unwrap();
    let msgs = s.recover().unwrap().remove(0).1;
    let got: Vec<_> = msgs.iter().map(|m| (m.id, m.meta)).collect();
    let old = MsgMeta::default();
    assert_eq!(got, [(2, old), (3, old), (4, meta_for(4))]);
    assert_eq!(&msgs[2].body[..], b"new");
}

// ===== corruption in the middle of a file =====

/// One record of a segment file as the test reads it: its byte range and the (queue, id)
/// memberships of a message record (empty for a queue definition).
struct RecordSpan {
    start: usize,
    end: usize,
    members: Vec<(String, u64)>,
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().unwrap())
}

fn str16(b: &[u8]) -> (String, &[u8]) {
    let n = u16::from_le_bytes([b[0], b[1]]) as usize;
    (
        String::from_utf8(b[2..2 + n].to_vec()).unwrap(),
        &b[2 + n..],
    )
}

/// Walks a segment file's records (format 2: `len | crc | type | payload`).
fn segment_records(bytes: &[u8]) -> Vec<RecordSpan> {
    let mut refs = BTreeMap::new();
    let mut out = Vec::new();
    let mut pos = 24;
    while pos + 9 <= bytes.len() {
        let len = le32(&bytes[pos..]) as usize;
        let end = pos + 8 + len;
        let (ty, payload) = (bytes[pos + 8], &bytes[pos + 9..end]);
        let mut members = Vec::new();
        if ty == 1 {
            let r = le32(payload);
            let (_vhost, rest) = str16(&payload[4..]);
            let (queue, _) = str16(rest);
            refs.insert(r, queue);
        } else {
            let n = u16::from_le_bytes([payload[0], payload[1]]) as usize;
            for k in 0..n {
                let at = 2 + k * 12;
                let r = le32(&payload[at..]);
                let id = u64::from_le_bytes(payload[at + 4..at + 12].try_into().unwrap());
                members.push((refs[&r].clone(), id));
            }
        }
        out.push(RecordSpan {
            start: pos,
            end,
            members,
        });
        pos = end;
    }
    out
}

/// Live (queue, id) pairs after recovery.
fn live(dir: &Path) -> BTreeSet<(String, u64)> {
    let s = FileStore::open(dir, small()).unwrap();
    ids(&s)
        .into_iter()
        .flat_map(|(q, ids)| ids.into_iter().map(move |id| (q.clone(), id)))
        .collect()
}

/// A store of several sealed segments (no indexes, so recovery scans them), two queues,
/// every third message of `a` acked. Returns the expected live set.
fn damaged_store_fixture(dir: &Path) -> BTreeSet<(String, u64)> {
    let rt = rt();
    let s = FileStore::open(dir, small()).unwrap();
    let mut expected = BTreeSet::new();
    for id in 0..120u64 {
        s.append(
            &q("a"),
            &msg(id, &body_for("a", id, 40 + (id as usize * 37) % 400)),
        )
        .unwrap();
        s.append(&q("b"), &msg(id, &body_for("b", id, 20))).unwrap();
        expected.insert(("a".to_owned(), id));
        expected.insert(("b".to_owned(), id));
    }
    for id in (0..120u64).step_by(3) {
        s.ack(&q("a"), id).unwrap();
        expected.remove(&("a".to_owned(), id));
    }
    rt.block_on(s.sync()).unwrap();
    drop(s);
    for idx in files(dir, "idx") {
        fs::remove_file(idx).unwrap();
    }
    expected
}

fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A byte flipped anywhere inside one message record of a segment (length, checksum,
    /// type or payload): recovery loses that message and nothing else; no acked message
    /// comes back.
    #[test]
    fn corrupt_segment_record_costs_only_itself(pick in any::<u64>(), offset in any::<u64>(), mask in 1u8..=255) {
        let fixture = tempfile::tempdir().unwrap();
        let expected = damaged_store_fixture(fixture.path());
        let dir = tempfile::tempdir().unwrap();
        copy_dir(fixture.path(), dir.path());
        // every message record of every segment, in one list
        let mut candidates = Vec::new();
        for seg in files(dir.path(), "seg") {
            let bytes = fs::read(&seg).unwrap();
            for r in segment_records(&bytes) {
                if !r.members.is_empty() {
                    candidates.push((seg.clone(), r));
                }
            }
        }
        prop_assert!(candidates.len() > 100);
        let (seg, rec) = &candidates[(pick % candidates.len() as u64) as usize];
        let mut bytes = fs::read(seg).unwrap();
        let at = rec.start + (offset % (rec.end - rec.start) as u64) as usize;
        bytes[at] ^= mask;
        fs::write(seg, &bytes).unwrap();
        let got = live(dir.path());
        let lost: BTreeSet<_> = expected.difference(&got).cloned().collect();
        let back: BTreeSet<_> = got.difference(&expected).cloned().collect();
        prop_assert!(back.is_empty(), "acked messages came back: {back:?}");
        let damaged: BTreeSet<_> = rec.members.iter().cloned().collect();
        prop_assert!(lost.is_subset(&damaged), "lost {lost:?}, only {damaged:?} was damaged");
    }

    /// A byte flipped in one ack record in the middle of an ack file: at most that one
    /// acked message comes back; no other ack is lost and no message is lost.
    #[test]
    fn corrupt_ack_record_costs_only_itself(pick in any::<u64>(), offset in 0usize..17, mask in 1u8..=255) {
        let fixture = tempfile::tempdir().unwrap();
        let expected = damaged_store_fixture(fixture.path());
        let dir = tempfile::tempdir().unwrap();
        copy_dir(fixture.path(), dir.path());
        let acks: Vec<_> = files(dir.path(), "ack")
            .into_iter()
            .filter(|p| fs::metadata(p).unwrap().len() >= 24 + 2 * 17)
            .collect();
        prop_assert!(!acks.is_empty());
        let file = &acks[(pick % acks.len() as u64) as usize];
        let mut bytes = fs::read(file).unwrap();
        let records = (bytes.len() - 24) / 17;
        // not the last record: a damaged last record is a torn tail
        let k = ((pick >> 8) % (records as u64 - 1)) as usize;
        bytes[24 + k * 17 + offset] ^= mask;
        fs::write(file, &bytes).unwrap();
        let got = live(dir.path());
        let lost: BTreeSet<_> = expected.difference(&got).cloned().collect();
        let back: BTreeSet<_> = got.difference(&expected).cloned().collect();
        prop_assert!(lost.is_empty(), "messages lost: {lost:?}");
        prop_assert!(back.len() <= 1, "acked messages came back: {back:?}");
    }
}
