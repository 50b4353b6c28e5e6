//! Attribute names, as constants so a typo is a compile error here rather
//! than an attribute that silently never matches (serde's `symbol.rs`).

use std::fmt::{self, Display};

use syn::{Ident, Path};

/// One attribute word.
#[derive(Copy, Clone, Debug)]
pub struct Symbol(pub &'static str);

// Attribute containers.
pub const EVENT: Symbol = Symbol("event");
pub const HANDLER: Symbol = Symbol("handler");

// Shared.
pub const CRATE: Symbol = Symbol("crate");

// `#[event(...)]`.
pub const NAME: Symbol = Symbol("name");
pub const VERSION: Symbol = Symbol("version");
pub const KEY: Symbol = Symbol("key");

// `#[handler(...)]`.
pub const GROUP: Symbol = Symbol("group");
pub const EVENTS: Symbol = Symbol("events");
pub const CONCURRENCY: Symbol = Symbol("concurrency");
pub const ORDERING: Symbol = Symbol("ordering");
pub const MAX_ATTEMPTS: Symbol = Symbol("max_attempts");
pub const BACKOFF_MS: Symbol = Symbol("backoff_ms");
pub const MAX_BACKOFF_MS: Symbol = Symbol("max_backoff_ms");
pub const JITTER: Symbol = Symbol("jitter");
pub const TIMEOUT_MS: Symbol = Symbol("timeout_ms");
pub const TIMEOUT: Symbol = Symbol("timeout");
pub const PREFETCH: Symbol = Symbol("prefetch");
pub const PARTITIONS: Symbol = Symbol("partitions");
pub const INBOX: Symbol = Symbol("inbox");

/// Every option `#[event(...)]` accepts on the type, for "expected one of" messages.
pub const EVENT_OPTIONS: &[Symbol] = &[NAME, VERSION, KEY, CRATE];

/// Every option `#[handler(...)]` accepts, for "expected one of" messages.
pub const HANDLER_OPTIONS: &[Symbol] = &[
    GROUP,
    EVENTS,
    CONCURRENCY,
    ORDERING,
    MAX_ATTEMPTS,
    BACKOFF_MS,
    MAX_BACKOFF_MS,
    JITTER,
    TIMEOUT_MS,
    TIMEOUT,
    PREFETCH,
    PARTITIONS,
    INBOX,
    CRATE,
];

/// `` `a`, `b` or `c` `` for error messages.
pub fn one_of(options: &[Symbol]) -> String {
    let quoted: Vec<String> = options.iter().map(|s| format!("`{}`", s.0)).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, init)) => format!("{} or {}", init.join(", "), last),
    }
}

impl PartialEq<Symbol> for Ident {
    fn eq(&self, word: &Symbol) -> bool {
        self == word.0
    }
}

impl PartialEq<Symbol> for &Ident {
    fn eq(&self, word: &Symbol) -> bool {
        *self == word.0
    }
}

impl PartialEq<Symbol> for Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl PartialEq<Symbol> for &Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}
