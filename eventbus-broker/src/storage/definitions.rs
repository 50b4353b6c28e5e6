//! Durable definitions (vhosts, users, permissions, durable exchanges/queues/bindings) in one
//! JSON file in the data directory, shaped like a RabbitMQ definitions export. Written
//! atomically: temp file, fsync, rename, fsync of the directory.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use amq_protocol::types::FieldTable;
use serde::{Deserialize, Serialize};

use crate::auth::{Permission, User};

/// File name inside the data directory.
pub const FILE_NAME: &str = "definitions.json";

/// Everything that survives a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Definitions {
    /// Users.
    #[serde(default)]
    pub users: Vec<User>,
    /// Vhosts.
    #[serde(default)]
    pub vhosts: Vec<VhostDef>,
    /// Permissions.
    #[serde(default)]
    pub permissions: Vec<Permission>,
    /// Durable exchanges (non-builtin).
    #[serde(default)]
    pub exchanges: Vec<ExchangeDef>,
    /// Durable queues.
    #[serde(default)]
    pub queues: Vec<QueueDef>,
    /// Bindings between durable entities.
    #[serde(default)]
    pub bindings: Vec<BindingDef>,
}

/// A vhost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VhostDef {
    /// Name.
    pub name: String,
}

/// A durable exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExchangeDef {
    /// Name.
    pub name: String,
    /// Vhost.
    pub vhost: String,
    /// Type (`direct`, `topic`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Always true here.
    pub durable: bool,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Internal flag.
    pub internal: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
}

/// A durable queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueDef {
    /// Name.
    pub name: String,
    /// Vhost.
    pub vhost: String,
    /// Always true here.
    pub durable: bool,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
}

/// A binding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BindingDef {
    /// Source exchange.
    pub source: String,
    /// Vhost.
    pub vhost: String,
    /// Destination name.
    pub destination: String,
    /// `queue` or `exchange`.
    pub destination_type: String,
    /// Binding key.
    pub routing_key: String,
    /// Binding arguments.
    pub arguments: FieldTable,
}

/// Reads and atomically writes the definitions file.
#[derive(Debug, Clone)]
pub struct DefinitionStore {
    dir: PathBuf,
}

impl DefinitionStore {
    /// A store in `dir` (created if missing).
    ///
    /// # Errors
    /// I/O errors creating the directory.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Path of the definitions file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Load definitions; `Ok(None)` on first start.
    ///
    /// # Errors
    /// I/O or JSON errors.
    pub fn load(&self) -> Result<Option<Definitions>, String> {
        match fs::read(self.path()) {
            Ok(b) => {
                let mut d: Definitions = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
                for p in &mut d.permissions {
                    p.compile()?;
                }
                Ok(Some(d))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Write atomically: temp + fsync + rename + dir fsync.
    ///
    /// # Errors
    /// I/O errors.
    pub fn save(&self, defs: &Definitions) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(defs).map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.path())?;
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}
