//! Authentication and authorisation: SASL mechanisms (PLAIN, AMQPLAIN), users with salted
//! password hashes, and per-vhost configure/write/read permissions.

pub mod permissions;
pub mod sasl;
pub mod users;

pub use permissions::{Access, Permission};
pub use users::User;
