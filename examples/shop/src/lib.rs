//! The eventbus sample application: a small shop of five services that
//! talk only through events — user-service, email-service,
//! notification-service, order-service, inventory-service — each owning its
//! tables, publishing through its own transactional outbox and handling
//! through the inbox. See the README's "Sample application" section.

pub mod app;
pub mod db;
pub mod demo;
pub mod email;
pub mod events;
pub mod http;
pub mod inventory;
pub mod notifications;
pub mod orders;
pub mod procs;
pub mod ratelimit;
pub mod users;
