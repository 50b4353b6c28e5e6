pub use eventbus_core::*;
