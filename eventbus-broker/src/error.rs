//! Errors: the crate error, and AMQP exceptions with their reply code and scope.

use crate::protocol::constants::ReplyCode;

/// The crate's public error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// I/O error (binding, data directory).
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    /// Invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Definitions file could not be read or written.
    #[error("definitions: {0}")]
    Definitions(String),
    /// An administrative operation failed (unknown user, vhost, bad regex…).
    #[error("{0}")]
    Admin(String),
}

/// Crate result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An AMQP exception: a reply code and text. Whether it closes the channel or the whole
/// connection follows from [`ReplyCode::is_hard`], unless forced with [`AmqpError::hard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpError {
    /// The reply code.
    pub code: ReplyCode,
    /// Reply text, without the `CODE_NAME - ` prefix.
    pub text: String,
    /// Close the connection rather than the channel.
    pub connection: bool,
    /// `(class id, method id)` of the method that caused it (`(0, 0)`:
    /// none), sent in `connection.close` / `channel.close`.
    pub cause: (u16, u16),
}

impl AmqpError {
    /// New exception; scope from the code.
    pub fn new(code: ReplyCode, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
            connection: code.is_hard(),
            cause: (0, 0),
        }
    }

    /// Record the method that caused it, unless one is recorded already.
    pub fn caused_by(mut self, class_id: u16, method_id: u16) -> Self {
        if self.cause == (0, 0) {
            self.cause = (class_id, method_id);
        }
        self
    }

    /// Force connection scope.
    pub fn hard(mut self) -> Self {
        self.connection = true;
        self
    }

    /// Full reply text as RabbitMQ formats it: `NOT_FOUND - no queue 'x' in vhost '/'`.
    pub fn reply_text(&self) -> String {
        let mut s = format!("{} - {}", self.code.name(), self.text);
        let keep = prefix_len(&s, 255);
        s.truncate(keep);
        s
    }

    /// 404 helper.
    pub fn not_found(kind: &str, name: &str, vhost: &str) -> Self {
        Self::new(
            ReplyCode::NotFound,
            format!("no {kind} '{name}' in vhost '{vhost}'"),
        )
    }

    /// 406 helper.
    pub fn precondition(text: impl Into<String>) -> Self {
        Self::new(ReplyCode::PreconditionFailed, text)
    }

    /// 403 helper.
    pub fn access_refused(text: impl Into<String>) -> Self {
        Self::new(ReplyCode::AccessRefused, text)
    }
}

/// The length of the longest prefix of `s` that is at most `max` bytes and ends on a
/// character boundary (an AMQP short-string holds at most 255 bytes, and cutting inside a
/// multi-byte character would panic or send invalid UTF-8).
pub fn prefix_len(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    // a char is at most 4 bytes: a boundary lies within the last 4 positions
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

impl std::fmt::Display for AmqpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code.code(), self.reply_text())
    }
}

impl std::error::Error for AmqpError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_text_is_cut_on_a_char_boundary() {
        for pad in 0..4 {
            let name = format!("{}{}", "a".repeat(pad), "é€😀".repeat(40));
            let e = AmqpError::not_found("queue", &name, "/");
            let t = e.reply_text();
            assert!(t.len() <= 255 && t.len() >= 252, "{}", t.len());
            assert!(format!("NOT_FOUND - no queue '{name}'").starts_with(&t));
        }
        assert_eq!(prefix_len("abc", 255), 3);
        assert_eq!(prefix_len("é", 1), 0);
    }
}
