//! The bus-level conformance suite on the in-memory transport (every bus of
//! a check shares the one in-process transport).

use std::sync::Arc;

use eventbus_core::testing::bus::run_bus_conformance;
use eventbus_core::{MemoryTransport, Transport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_on_memory_transport_conforms() {
    let t = MemoryTransport::new();
    run_bus_conformance(|| {
        let t = t.clone();
        async move { Arc::new(t) as Arc<dyn Transport> }
    })
    .await;
}
