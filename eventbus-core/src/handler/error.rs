//! Why handling failed, and whether trying again can help.

use crate::{BoxError, DecodeError};

/// A failed handling attempt.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The handler returned an error.
    #[error("handler failed: {0}")]
    Handler(#[source] BoxError),
    /// The handler panicked.
    #[error("handler panicked: {0}")]
    Panicked(String),
    /// The attempt exceeded its time limit.
    #[error("handler timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The payload could not be decoded (not retried).
    #[error(transparent)]
    Decode(DecodeError),
    /// No handler in this group accepts the event (not retried).
    #[error("no handler for event `{0}` in this group")]
    UnknownEvent(String),
    /// The handler said retrying cannot help ([`HandleError::permanent`]):
    /// dead-lettered at once.
    #[error("handler failed permanently: {0}")]
    Permanent(#[source] BoxError),
}

/// A handler error that retrying cannot fix (made by
/// [`HandleError::permanent`]): the message is dead-lettered at once with
/// reason `permanent`.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Permanent(pub BoxError);

impl HandleError {
    /// Marks `error` as permanent, for a handler to return:
    ///
    /// ```
    /// # use eventbus_core::{BoxError, HandleError};
    /// fn check(quantity: u32) -> Result<(), BoxError> {
    ///     if quantity == 0 {
    ///         return Err(HandleError::permanent("quantity must be positive"));
    ///     }
    ///     Ok(())
    /// }
    /// assert!(check(0).is_err());
    /// ```
    pub fn permanent(error: impl Into<BoxError>) -> BoxError {
        Box::new(Permanent(error.into()))
    }

    /// The error a handler returned: [`HandleError::Permanent`] if it was
    /// made with [`HandleError::permanent`], else [`HandleError::Handler`].
    pub fn from_handler(error: BoxError) -> Self {
        match error.downcast::<Permanent>() {
            Ok(p) => HandleError::Permanent(p.0),
            Err(e) => HandleError::Handler(e),
        }
    }
}

/// Coarse failure classes, written into dead-letter headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// [`HandleError::Handler`]
    Handler,
    /// [`HandleError::Panicked`]
    Panic,
    /// [`HandleError::Timeout`]
    Timeout,
    /// [`HandleError::Decode`]
    Decode,
    /// [`HandleError::UnknownEvent`]
    UnknownEvent,
    /// [`HandleError::Permanent`]
    Permanent,
}

impl FailureKind {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Handler => "handler",
            FailureKind::Panic => "panic",
            FailureKind::Timeout => "timeout",
            FailureKind::Decode => "decode",
            FailureKind::UnknownEvent => "unknown-event",
            FailureKind::Permanent => "permanent",
        }
    }
}

impl HandleError {
    /// Whether another attempt may succeed. Decode errors, unknown events
    /// and permanent failures never will, so they are dead-lettered at once.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            HandleError::Decode(_) | HandleError::UnknownEvent(_) | HandleError::Permanent(_)
        )
    }
    /// The failure class.
    pub fn kind(&self) -> FailureKind {
        match self {
            HandleError::Handler(_) => FailureKind::Handler,
            HandleError::Panicked(_) => FailureKind::Panic,
            HandleError::Timeout(_) => FailureKind::Timeout,
            HandleError::Decode(DecodeError::UnknownEvent(_)) | HandleError::UnknownEvent(_) => {
                FailureKind::UnknownEvent
            }
            HandleError::Decode(_) => FailureKind::Decode,
            HandleError::Permanent(_) => FailureKind::Permanent,
        }
    }
}
