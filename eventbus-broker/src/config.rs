//! Broker configuration: defaults, TOML file, environment overrides, validation.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::StorageType;

/// Broker configuration. Every field has a default; see [`Config::default`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// AMQP listen address. Default `127.0.0.1:5673` (RabbitMQ owns 5672).
    pub amqp_listen: SocketAddr,
    /// Data directory (definitions; messages once the file store lands).
    pub data_dir: PathBuf,
    /// Maximum concurrent client connections (0 = unlimited).
    pub max_connections: usize,
    /// Maximum channels per connection offered in `connection.tune` (1..=65535).
    pub channel_max: u16,
    /// Maximum frame size offered in `connection.tune` (>= 4096).
    pub frame_max: u32,
    /// Maximum message body size in bytes.
    pub max_message_size: u64,
    /// Heartbeat interval offered in seconds (0 disables).
    pub heartbeat: u16,
    /// Seconds allowed for the handshake.
    pub handshake_timeout_secs: u64,
    /// Message store type.
    pub storage: StorageType,
    /// When message bodies held in memory exceed this many bytes, publishing connections are
    /// blocked (`connection.blocked`, reads paused) until it drops again. 0 disables.
    pub memory_high_watermark: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            amqp_listen: SocketAddr::from(([127, 0, 0, 1], 5673)),
            data_dir: PathBuf::from("./data"),
            max_connections: 10_000,
            channel_max: 2047,
            frame_max: 131_072,
            max_message_size: 128 * 1024 * 1024,
            heartbeat: 60,
            handshake_timeout_secs: 10,
            storage: StorageType::File,
            memory_high_watermark: 1024 * 1024 * 1024,
        }
    }
}

impl Config {
    /// Parse a TOML document (missing keys take defaults).
    ///
    /// # Errors
    /// [`Error::Config`] on syntax errors or unknown keys.
    pub fn from_toml(s: &str) -> Result<Self> {
        toml::from_str(s).map_err(|e| Error::Config(e.to_string()))
    }

    /// Apply `EVENTBUS_BROKER_*` environment overrides (e.g. `EVENTBUS_BROKER_AMQP_LISTEN`).
    ///
    /// # Errors
    /// [`Error::Config`] when a value does not parse.
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<()> {
        fn p<T: std::str::FromStr>(k: &str, v: &str) -> Result<T> {
            v.parse()
                .map_err(|_| Error::Config(format!("invalid value for {k}: {v:?}")))
        }
        for (k, v) in vars {
            let Some(name) = k.strip_prefix("EVENTBUS_BROKER_") else {
                continue;
            };
            match name {
                "AMQP_LISTEN" => self.amqp_listen = p(&k, &v)?,
                "DATA_DIR" => self.data_dir = PathBuf::from(v),
                "MAX_CONNECTIONS" => self.max_connections = p(&k, &v)?,
                "CHANNEL_MAX" => self.channel_max = p(&k, &v)?,
                "FRAME_MAX" => self.frame_max = p(&k, &v)?,
                "MAX_MESSAGE_SIZE" => self.max_message_size = p(&k, &v)?,
                "HEARTBEAT" => self.heartbeat = p(&k, &v)?,
                "HANDSHAKE_TIMEOUT_SECS" => self.handshake_timeout_secs = p(&k, &v)?,
                "MEMORY_HIGH_WATERMARK" => self.memory_high_watermark = p(&k, &v)?,
                "CONFIG" | "LOG" => {}
                _ => return Err(Error::Config(format!("unknown environment variable {k}"))),
            }
        }
        Ok(())
    }

    /// Check limits.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad setting.
    pub fn validate(&self) -> Result<()> {
        if self.frame_max < 4096 {
            return Err(Error::Config(format!(
                "frame_max must be >= 4096 (got {})",
                self.frame_max
            )));
        }
        if self.channel_max == 0 {
            return Err(Error::Config("channel_max must be >= 1".into()));
        }
        if self.max_message_size == 0 || self.max_message_size > 512 * 1024 * 1024 {
            return Err(Error::Config(format!(
                "max_message_size must be in 1..=536870912 (got {})",
                self.max_message_size
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_env() {
        let mut c =
            Config::from_toml("amqp_listen = \"0.0.0.0:6000\"\nframe_max = 8192\n").unwrap();
        assert_eq!(c.amqp_listen.port(), 6000);
        assert_eq!(c.channel_max, 2047);
        c.apply_env([("EVENTBUS_BROKER_CHANNEL_MAX".to_owned(), "10".to_owned())])
            .unwrap();
        assert_eq!(c.channel_max, 10);
        assert!(Config::from_toml("bogus = 1").is_err());
        c.frame_max = 100;
        assert!(c.validate().is_err());
    }
}
