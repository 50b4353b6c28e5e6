//! The connection state machine: a real broker on an ephemeral port receives a valid handshake
//! followed by fuzzer-chosen bytes; no broker task may panic (the process aborts on any panic,
//! on any thread: a panicking connection task leaves the listener up, so "still accepting"
//! alone would miss it), and it must keep serving new connections.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use eventbus_broker::{Broker, Config};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Env {
    rt: tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    _broker: Broker,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        // the oracle: any panic in any task (tokio catches task panics, which would hide
        // them from libFuzzer) aborts the process, so libFuzzer records a crash
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            std::process::abort();
        }));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("eventbus-fuzz-{}", std::process::id()));
        let config = Config {
            amqp_listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir,
            ..Config::default()
        };
        let broker = rt.block_on(Broker::start(config)).unwrap();
        Env {
            addr: broker.amqp_addr(),
            rt,
            _broker: broker,
        }
    })
}

// connection.start-ok (PLAIN guest/guest), tune-ok, open "/", channel.open 1
const HANDSHAKE: &[u8] = &[
    b'A', b'M', b'Q', b'P', 0, 0, 9, 1, //
    1, 0, 0, 0, 0, 0, 36, 0, 10, 0, 11, 0, 0, 0, 0, 5, b'P', b'L', b'A', b'I', b'N', 0, 0, 0, 12,
    0, b'g', b'u', b'e', b's', b't', 0, b'g', b'u', b'e', b's', b't', 5, b'e', b'n', b'_', b'U',
    b'S', 0xCE, //
    1, 0, 0, 0, 0, 0, 12, 0, 10, 0, 31, 0x07, 0xFF, 0, 2, 0, 0, 0, 0, 0xCE, //
    1, 0, 0, 0, 0, 0, 8, 0, 10, 0, 40, 1, b'/', 0, 0, 0xCE, //
    1, 0, 1, 0, 0, 0, 5, 0, 20, 0, 10, 0, 0xCE,
];

async fn session(addr: std::net::SocketAddr, data: &[u8]) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return;
    };
    let _ = s.write_all(HANDSHAKE).await;
    let _ = s.write_all(data).await;
    let mut buf = vec![0u8; 65536];
    let _ = tokio::time::timeout(Duration::from_millis(20), async {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

fuzz_target!(|data: &[u8]| {
    let e = env();
    e.rt.block_on(async {
        session(e.addr, data).await;
        // the broker must still accept and answer a fresh handshake
        let mut s = TcpStream::connect(e.addr)
            .await
            .expect("broker still accepting");
        s.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
        let mut b = [0u8; 7];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b))
            .await
            .expect("broker answers")
            .unwrap();
        assert_eq!(b[0], 1, "connection.start expected");
    });
});
