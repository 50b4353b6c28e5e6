//! Bounded property test: random and mutated frame sequences never crash the broker or wedge
//! other connections. (The unbounded version is the cargo-fuzz target in `fuzz/`.)

use proptest::prelude::*;

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
        picks in proptest::collection::vec((0usize..8, proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3)), 1..8),
        junk in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (b, _d) = broker().await;
            let addr = b.amqp_addr();
            let mut other = Raw::open(addr, 0).await;
            other.open_channel(1).await;
            let frames = valid_frames();
            let mut r = Raw::open(addr, 0).await;
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
    }
}
