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
        }
    }
}

impl HandleError {
    /// Whether another attempt may succeed. Decode errors and unknown
    /// events never will, so they are dead-lettered at once.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, HandleError::Decode(_) | HandleError::UnknownEvent(_))
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
        }
    }
}
