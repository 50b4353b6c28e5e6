//! The handler pipeline's policies, each a tower `Layer` + `Service` pair.
//!
//! Every layer wraps a `Service<Context, Error = HandleError>`. The bus
//! stacks them outermost first as:
//!
//! ```text
//! trace ─► dead-letter (retry decision) ─► timeout ─► recover (panics) ─► user layers ─► handler
//! ```
//!
//! One pass through the stack is one attempt, with its own span and time
//! limit; a panic is just a failed attempt. The dead-letter layer answers
//! [`Outcome::Retry`] while the retry policy allows, and the worker parks
//! the message's key until the backoff has passed (other keys keep
//! flowing), then runs the next attempt. [`RetryLayer`] retries in place
//! instead (sleeping inside the call), for pipelines run outside the bus.

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
