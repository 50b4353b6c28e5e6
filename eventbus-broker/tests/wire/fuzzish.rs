//! Bounded property test: random and mutated frame sequences never panic a broker task (the
//! oracle in `oracle.rs`), never crash the broker and never wedge other connections. (The
//! unbounded version is the cargo-fuzz target in `fuzz/`.)

use proptest::prelude::*;

use super::oracle::PanicWatch;
use super::*;

fn valid_frames() -> Vec<Vec<u8>> {
    let declare = method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "fz".into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    );
    let mut publish = vec![0, 60, 0, 40, 0, 0, 0, 2, b'f', b'z', 0];
    let publish_f = raw_frame(1, 1, &publish);
    publish.clear();
    let mut hdr = vec![0, 60, 0, 0];
    hdr.extend(3u64.to_be_bytes());
    hdr.extend([0, 0]);
    vec![
        method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        ),
        declare,
        publish_f,
        raw_frame(2, 1, &hdr),
        raw_frame(3, 1, b"abc"),
        raw_frame(8, 0, &[]),
        raw_frame(1, 1, &[0, 60, 0, 70, 0, 0, 2, b'f', b'z', 1]),
        raw_frame(1, 1, &[0, 20, 0, 40, 0, 200, 0, 0, 0, 0, 0, 0]),
        // a client string in an error text (a 404 naming the queue) crossing byte 255
        method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "é".repeat(127).as_str().into(),
                passive: true,
                durable: false,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        ),
    ]
}

fn mutate(mut v: Vec<u8>, ops: &[(usize, u8)]) -> Vec<u8> {
    for (i, b) in ops {
        if v.is_empty() {
            break;
        }
        let i = i % v.len();
        v[i] = *b;
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_and_mutated_frames_never_crash(
        picks in proptest::collection::vec((0usize..9, proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3)), 1..8),
        junk in proptest::collection::vec(any::<u8>(), 0..64),
        open_first in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let watch = PanicWatch::start();
        rt.block_on(async {
            let (b, _d) = broker().await;
            let addr = b.amqp_addr();
            let mut other = Raw::open(addr, 0).await;
            other.open_channel(1).await;
            let frames = valid_frames();
            let mut r = Raw::open(addr, 0).await;
            // most frames need an open channel to get past the first checks
            if open_first {
                r.open_channel(1).await;
            }
            for (i, ops) in &picks {
                r.send(&mutate(frames[*i].clone(), ops)).await;
            }
            r.send(&junk).await;
            // drain whatever the server says (bounded by its 5 s close timeout)
            let _ = tokio::time::timeout(Duration::from_millis(300), async { while r.read().await.is_some() {} }).await;
            assert_healthy(addr, &mut other).await;
            drop(r);
            drop(other);
            b.shutdown().await;
        });
        drop(rt);
        watch.assert_none();
    }
}

/// The oracle itself: a connection task that panics (fault injection) leaves the listener up
/// and other connections working — the old oracle passed — but the watch sees it.
#[test]
fn oracle_fails_on_a_panicking_connection_task() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let watch = PanicWatch::start();
    rt.block_on(async {
        let (b, _d) = broker().await;
        let addr = b.amqp_addr();
        let mut other = Raw::open(addr, 0).await;
        other.open_channel(1).await;
        let mut r = Raw::open(addr, 0).await;
        r.open_channel(1).await;
        r.send(&method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: eventbus_broker::fault::PANIC_QUEUE.into(),
                passive: false,
                durable: false,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        ))
        .await;
        // the task is gone: the socket closes without a connection.close
        assert_eq!(r.closed().await, Closed::Eof);
        assert_healthy(addr, &mut other).await;
        b.shutdown().await;
    });
    drop(rt);
    let seen = watch.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].contains("fault injection"), "{seen:?}");
}
