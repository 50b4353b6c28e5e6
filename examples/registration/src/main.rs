//! The API in one file, in memory (no broker, no database; for those see
//! `examples/shop`). The registration flow from our domain:
//! `UserRegistered` is handled by an e-mail group and a notification group
//! (each gets every event), `OrderPlaced` by an inventory group, keyed by
//! order id so each order's events are handled in order.
//!
//! Run with: `cargo run -p example-registration`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventbus::{BoxError, Context, Event, EventBus, Handle, Handler, MemoryTransport};
use serde::{Deserialize, Serialize};

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "user.registered", version = 1, key = "user_id")]
struct UserRegistered {
    user_id: u64,
    email: String,
}

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "order.placed", key = "order_id")]
struct OrderPlaced {
    order_id: String,
    sku: String,
    quantity: u32,
}

/// Sends the welcome mail. One queue for the group; instances compete.
#[derive(Handler)]
#[handler(group = "email-service", events(UserRegistered), concurrency = 2)]
struct SendWelcomeMail {
    sent: Arc<AtomicUsize>,
}

impl Handle<UserRegistered> for SendWelcomeMail {
    async fn handle(&self, e: UserRegistered, cx: &Context) -> Result<(), BoxError> {
        println!(
            "[email-service]        welcome mail to {} (user {}, message {})",
            e.email,
            e.user_id,
            cx.message_id()
        );
        self.sent.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Pushes an in-app notification; a different group, so it gets every event too.
#[derive(Handler)]
#[handler(group = "notification-service", events(UserRegistered))]
struct NotifyAdmins {
    done: Arc<AtomicUsize>,
}

impl Handle<UserRegistered> for NotifyAdmins {
    async fn handle(&self, e: UserRegistered, _cx: &Context) -> Result<(), BoxError> {
        println!("[notification-service] new user #{} registered", e.user_id);
        self.done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Reserves stock. Four workers; events of one order always go to the same
/// worker, so they are handled in the order they were placed.
#[derive(Handler)]
#[handler(
    group = "inventory-service",
    events(OrderPlaced),
    concurrency = 4,
    max_attempts = 3,
    backoff_ms = 10
)]
struct ReserveStock {
    done: Arc<AtomicUsize>,
    flaky_once: AtomicUsize,
}

impl Handle<OrderPlaced> for ReserveStock {
    async fn handle(&self, e: OrderPlaced, cx: &Context) -> Result<(), BoxError> {
        // The first attempt at the very first line fails, to show the retry.
        if self.flaky_once.fetch_add(1, Ordering::SeqCst) == 0 {
            println!(
                "[inventory-service]    stock service busy for {} — will retry",
                e.order_id
            );
            return Err("stock service busy".into());
        }
        println!(
            "[inventory-service]    reserved {} × {} for order {} (attempt {})",
            e.quantity,
            e.sku,
            e.order_id,
            cx.attempt()
        );
        self.done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (mails, notes, reserved) = (Arc::default(), Arc::default(), Arc::default());
    let mut bus = EventBus::new(MemoryTransport::new());
    bus.register(SendWelcomeMail {
        sent: Arc::clone(&mails),
    })
    .register(NotifyAdmins {
        done: Arc::clone(&notes),
    })
    .register(ReserveStock {
        done: Arc::clone(&reserved),
        flaky_once: AtomicUsize::new(0),
    });
    let bus = bus.start().await?;

    for (user_id, email) in [(1, "ada@example.com"), (2, "grace@example.com")] {
        bus.publish(&UserRegistered {
            user_id,
            email: email.into(),
        })
        .await?;
    }
    for (order_id, sku, quantity) in [("o-1", "book", 1), ("o-2", "pen", 3), ("o-1", "lamp", 2)] {
        bus.publish(&OrderPlaced {
            order_id: order_id.into(),
            sku: sku.into(),
            quantity,
        })
        .await?;
    }

    // Wait until every handler has done its part, then shut down gracefully.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mails.load(Ordering::SeqCst) < 2
        || notes.load(Ordering::SeqCst) < 2
        || reserved.load(Ordering::SeqCst) < 3
    {
        if tokio::time::Instant::now() > deadline {
            return Err("handlers did not finish in time".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bus.shutdown().await;
    println!("done: 2 welcome mails, 2 notifications, 3 reservations");
    Ok(())
}
