//! The in-memory transport passes the conformance kit.

use eventbus_core::testing;
use eventbus_core::MemoryTransport;

#[tokio::test]
async fn memory_transport_conforms() {
    let t = MemoryTransport::new();
    testing::run_conformance(&t).await;
}

#[tokio::test]
async fn closed_transport_refuses_work() {
    use eventbus_core::{Publisher, Subscriber, SubscriptionSpec, TransportError};
    let t = MemoryTransport::new();
    t.close();
    let e = testing::envelope("ev", None, 1);
    assert!(matches!(t.publish(&e).await, Err(TransportError::Closed)));
    assert!(matches!(
        t.subscribe(SubscriptionSpec::new("g", ["ev"])).await,
        Err(TransportError::Closed)
    ));
}
