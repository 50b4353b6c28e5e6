//! The handler pipeline's policies, each a tower `Layer` + `Service` pair.
//!
//! Every layer wraps a `Service<Context, Error = HandleError>`. The bus
//! stacks them outermost first as:
//!
//! ```text
//! trace ─► dead-letter ─► retry ─► timeout ─► recover (panics) ─► user layers ─► handler
//! ```
//!
//! so a span covers all attempts, each attempt gets its own time limit, and a
//! panic is just a failed attempt. User layers run inside every attempt.

pub mod dead_letter;
pub mod recover;
pub mod retry;
pub mod timeout;
pub mod trace;

pub use dead_letter::{DeadLetter, DeadLetterLayer, Outcome};
pub use recover::{CatchPanic, CatchPanicLayer};
pub use retry::{Retry, RetryLayer};
pub use timeout::{Timeout, TimeoutLayer};
pub use trace::{Trace, TraceLayer, TraceParent};
