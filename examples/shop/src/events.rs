//! The event contracts the services share, and the topology of the groups
//! that consume them (declared by every service before its relay starts, so
//! that no event is published before its consumers' queues exist).

use eventbus::{Event, SubscriptionSpec};
use serde::{Deserialize, Serialize};

/// A user signed up (user-service → email-service, notification-service).
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
#[event(name = "user.registered", key = "user_id")]
pub struct UserRegistered {
    pub user_id: i64,
    pub email: String,
    pub name: String,
}

/// An order was accepted and waits for stock (order-service → inventory-service).
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
#[event(name = "order.placed", key = "order_id")]
pub struct OrderPlaced {
    pub order_id: String,
    pub product: String,
    pub quantity: i64,
}

/// Stock was set aside for an order (inventory-service → order-service).
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
#[event(name = "stock.reserved", key = "order_id")]
pub struct StockReserved {
    pub order_id: String,
    pub product: String,
    pub quantity: i64,
}

/// An order cannot be served (inventory-service → order-service).
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
#[event(name = "stock.rejected", key = "order_id")]
pub struct StockRejected {
    pub order_id: String,
    pub product: String,
    pub reason: String,
}

/// Handler groups of the sample.
pub mod groups {
    pub const EMAIL: &str = "email-service";
    pub const NOTIFICATION: &str = "notification-service";
    pub const ORDER: &str = "order-service";
    pub const INVENTORY: &str = "inventory-service";
}

/// Partitions of the inventory group (its instances share them).
pub const INVENTORY_PARTITIONS: u16 = 8;

/// Every consuming group with the events it subscribes to — the same specs
/// the handlers' derives produce.
pub fn topology() -> Vec<SubscriptionSpec> {
    vec![
        SubscriptionSpec::new(groups::EMAIL, [UserRegistered::NAME]),
        SubscriptionSpec::new(groups::NOTIFICATION, [UserRegistered::NAME]),
        SubscriptionSpec::new(groups::ORDER, [StockReserved::NAME, StockRejected::NAME]),
        SubscriptionSpec::new(groups::INVENTORY, [OrderPlaced::NAME])
            .partitions(INVENTORY_PARTITIONS),
    ]
}
