//! Per-vhost permissions: three regular expressions (configure, write, read), matched against
//! resource names as RabbitMQ does (unanchored search; the empty pattern grants nothing).

use regex::Regex;
use serde::{Deserialize, Serialize};

/// The kind of access an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Create/delete resources.
    Configure,
    /// Publish to an exchange, bind a queue/exchange as destination.
    Write,
    /// Consume/get/purge a queue, bind from an exchange.
    Read,
}

impl Access {
    /// Lower-case name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Access::Configure => "configure",
            Access::Write => "write",
            Access::Read => "read",
        }
    }
}

/// A user's permission on one vhost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Permission {
    /// User name.
    pub user: String,
    /// Vhost name.
    pub vhost: String,
    /// Configure regex.
    pub configure: String,
    /// Write regex.
    pub write: String,
    /// Read regex.
    pub read: String,
    #[serde(skip)]
    compiled: Option<[Option<Regex>; 3]>,
}

impl Permission {
    /// Build and compile a permission.
    ///
    /// # Errors
    /// Returns the regex error text if a pattern does not compile.
    pub fn new(
        user: &str,
        vhost: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<Self, String> {
        let mut p = Self {
            user: user.into(),
            vhost: vhost.into(),
            configure: configure.into(),
            write: write.into(),
            read: read.into(),
            compiled: None,
        };
        p.compile()?;
        Ok(p)
    }

    /// Compile the patterns (after deserialisation).
    ///
    /// # Errors
    /// Returns the regex error text if a pattern does not compile.
    pub fn compile(&mut self) -> Result<(), String> {
        let c = |s: &str| -> Result<Option<Regex>, String> {
            if s.is_empty() {
                Ok(None)
            } else {
                Regex::new(s).map(Some).map_err(|e| e.to_string())
            }
        };
        self.compiled = Some([c(&self.configure)?, c(&self.write)?, c(&self.read)?]);
        Ok(())
    }

    /// Whether `access` on resource `name` is allowed.
    pub fn allows(&self, access: Access, name: &str) -> bool {
        let Some(c) = &self.compiled else {
            return false;
        };
        let idx = match access {
            Access::Configure => 0,
            Access::Write => 1,
            Access::Read => 2,
        };
        c[idx].as_ref().is_some_and(|r| r.is_match(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let p = Permission::new("u", "/", "^cfg-.*", ".*", "").unwrap();
        assert!(p.allows(Access::Configure, "cfg-x"));
        assert!(!p.allows(Access::Configure, "x-cfg-x"));
        assert!(p.allows(Access::Write, "anything"));
        assert!(!p.allows(Access::Read, "anything"));
        assert!(Permission::new("u", "/", "(", "", "").is_err());
    }
}
