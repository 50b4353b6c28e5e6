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
    /// Once bodies in memory exceed this fraction of `memory_high_watermark`, bodies of
    /// persistent messages newly stored for durable queues are paged out to the file store
    /// (kept on disk only, read back on delivery). 0.0 pages every persistent message out;
    /// values >= 1.0 (or a disabled watermark) never page out. Default 0.5.
    pub memory_paging_ratio: f64,
    /// Publishers are blocked (`connection.blocked`, like the memory watermark) while the
    /// filesystem holding `data_dir` has fewer free bytes than this. 0 disables. Default
    /// 50 MiB (RabbitMQ's `disk_free_limit`).
    pub disk_free_limit: u64,
    /// How often free disk space is checked, in milliseconds. Default 1000.
    pub disk_check_interval_ms: u64,
    /// Management HTTP API (and `/metrics`) listen address; `None` (`"off"` in TOML and
    /// the environment) disables it. Default `127.0.0.1:15673` (RabbitMQ owns 15672). Left
    /// at the default, the port follows the AMQP port as RabbitMQ's do (AMQP port + 10000:
    /// 5673 → 15673), and an ephemeral AMQP port (0) gives an ephemeral management port,
    /// so brokers on different AMQP ports never fight over it; see
    /// [`Config::effective_management_listen`].
    #[serde(with = "optional_addr")]
    pub management_listen: Option<SocketAddr>,
    /// How often message counters are sampled to compute the API's `*_details.rate`
    /// values, in milliseconds. Default 5000 (RabbitMQ's default sample interval).
    pub management_rate_interval_ms: u64,
}

/// The default management listen address.
pub const DEFAULT_MANAGEMENT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15673);

/// Parse a management listen setting: an address, or `off`/`none`/empty for disabled.
///
/// # Errors
/// The text when it is neither.
pub fn parse_optional_addr(s: &str) -> std::result::Result<Option<SocketAddr>, String> {
    match s.trim() {
        "" | "off" | "none" | "false" => Ok(None),
        a => a
            .parse()
            .map(Some)
            .map_err(|_| format!("expected an address like 127.0.0.1:15673 or \"off\", got {s:?}")),
    }
}

mod optional_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.collect_str(a),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_optional_addr(&s).map_err(serde::de::Error::custom)
    }
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
            memory_paging_ratio: 0.5,
            disk_free_limit: 50 * 1024 * 1024,
            disk_check_interval_ms: 1000,
            management_listen: Some(DEFAULT_MANAGEMENT_LISTEN),
            management_rate_interval_ms: 5000,
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
                "MEMORY_PAGING_RATIO" => self.memory_paging_ratio = p(&k, &v)?,
                "DISK_FREE_LIMIT" => self.disk_free_limit = p(&k, &v)?,
                "DISK_CHECK_INTERVAL_MS" => self.disk_check_interval_ms = p(&k, &v)?,
                "MANAGEMENT_LISTEN" => {
                    self.management_listen = parse_optional_addr(&v)
                        .map_err(|e| Error::Config(format!("invalid value for {k}: {e}")))?
                }
                "MANAGEMENT_RATE_INTERVAL_MS" => self.management_rate_interval_ms = p(&k, &v)?,
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
        if self.memory_paging_ratio.is_nan() || self.memory_paging_ratio < 0.0 {
            return Err(Error::Config(format!(
                "memory_paging_ratio must be >= 0 (got {})",
                self.memory_paging_ratio
            )));
        }
        if self.management_rate_interval_ms == 0 {
            return Err(Error::Config(
                "management_rate_interval_ms must be >= 1".into(),
            ));
        }
        if self.disk_check_interval_ms == 0 {
            return Err(Error::Config("disk_check_interval_ms must be >= 1".into()));
        }
        Ok(())
    }

    /// The management address to bind: the configured one; left at the default, on the
    /// AMQP port + 10000 (port 0 when the AMQP port is 0 or above 55535).
    pub fn effective_management_listen(&self) -> Option<SocketAddr> {
        let m = self.management_listen?;
        if m != DEFAULT_MANAGEMENT_LISTEN {
            return Some(m);
        }
        let port = match self.amqp_listen.port() {
            p @ 1..=55535 => p + 10000,
            _ => 0,
        };
        Some(SocketAddr::new(m.ip(), port))
    }

    /// The memory gauge level above which persistent bodies are paged out (`u64::MAX`:
    /// never).
    pub fn page_out_above(&self) -> u64 {
        if self.memory_high_watermark == 0 || self.memory_paging_ratio >= 1.0 {
            return u64::MAX;
        }
        (self.memory_high_watermark as f64 * self.memory_paging_ratio) as u64
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
        assert_eq!(c.management_listen, Some(DEFAULT_MANAGEMENT_LISTEN));
        assert_eq!(
            c.effective_management_listen().unwrap().port(),
            16000,
            "AMQP port + 10000"
        );
        assert_eq!(
            Config::default().effective_management_listen(),
            Some(DEFAULT_MANAGEMENT_LISTEN)
        );
        let mut e = Config::default();
        e.amqp_listen.set_port(0);
        assert_eq!(e.effective_management_listen().unwrap().port(), 0);
        e.management_listen = Some("127.0.0.1:9999".parse().unwrap());
        assert_eq!(e.effective_management_listen().unwrap().port(), 9999);
        let m = Config::from_toml("management_listen = \"off\"").unwrap();
        assert_eq!(m.management_listen, None);
        let m = Config::from_toml("management_listen = \"127.0.0.1:9000\"").unwrap();
        assert_eq!(m.management_listen.unwrap().port(), 9000);
        assert!(Config::from_toml("management_listen = \"nope\"").is_err());
        c.apply_env([(
            "EVENTBUS_BROKER_MANAGEMENT_LISTEN".to_owned(),
            "none".to_owned(),
        )])
        .unwrap();
        assert_eq!(c.management_listen, None);
        c.frame_max = 100;
        assert!(c.validate().is_err());
    }
}
