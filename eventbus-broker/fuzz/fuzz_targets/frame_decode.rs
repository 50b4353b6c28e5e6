//! Frame decoding: arbitrary bytes must never panic, overflow the stack or loop forever, and
//! every decoded frame must be consumed from the buffer.
#![no_main]

use bytes::BytesMut;
use eventbus_broker::protocol::frame::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for frame_max in [0u32, 4096, 131_072] {
        let mut buf = BytesMut::from(data);
        loop {
            let before = buf.len();
            match decode(&mut buf, frame_max) {
                Ok(Some(_)) => assert!(buf.len() < before),
                Ok(None) | Err(_) => break,
            }
        }
    }
});
