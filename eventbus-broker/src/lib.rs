//! `eventbus-broker`: a RabbitMQ-compatible AMQP 0-9-1 message broker, embeddable as a
//! library ([`Broker::start`]) or run as the `eventbus-broker` binary.
//!
//! ```no_run
//! # async fn demo() -> eventbus_broker::Result<()> {
//! use eventbus_broker::{Broker, Config};
//! let mut config = Config::default();
//! config.amqp_listen = "127.0.0.1:0".parse().unwrap();
//! let broker = Broker::start(config).await?;
//! println!("amqp://guest:guest@{}/%2f", broker.amqp_addr());
//! broker.admin().add_user("app", "secret", &["management"])?;
//! broker.admin().set_permissions("app", "/", ".*", ".*", ".*")?;
//! broker.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! Layers go strictly bytes → frames → methods → model:
//! - [`protocol`]: pure codec on top of `amq-protocol` (frame checks, nesting bound, encoding).
//! - `connection`: socket task, handshake, heartbeats, frame routing, close codes.
//! - `channel`: methods → model operations; content assembly, acks, qos, confirms, tx.
//! - [`model`]: vhosts, exchanges, queues, consumers; knows nothing of frames.
//! - [`routing`]: topic trie, headers matching, consistent hashing.
//! - [`storage`]: [`storage::MessageStore`] (memory now, segmented file store next) and the
//!   definitions file.
//! - [`auth`]: SASL, password hashing, permissions.
//! - `server`: accept loop and graceful shutdown.
//! - [`management`]: the RabbitMQ-compatible management HTTP API, `/metrics` and the static
//!   UI on their own listener (`Config::management_listen`).
//!
//! ## Feature flags
//! None yet.

#![deny(missing_debug_implementations, unsafe_code)]
#![warn(clippy::unwrap_in_result, clippy::panic_in_result_fn)]

pub mod auth;
mod channel;
pub mod config;
mod connection;
/// Test-only fault injection (feature `fault-injection`).
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub use connection::fault;
pub mod error;
pub mod management;
pub mod model;
pub mod protocol;
pub mod routing;
mod server;
pub mod storage;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::Config;
pub use error::{AmqpError, Error, Result};

use model::Core;
use storage::MemoryStore;

/// The message store `config` asks for: in memory, or the segmented file
/// store in `<data_dir>/messages`.
fn open_store(config: &Config) -> Result<Arc<dyn storage::MessageStore>> {
    Ok(match config.storage {
        storage::StorageType::Memory => Arc::new(MemoryStore),
        storage::StorageType::File => Arc::new(
            storage::FileStore::open(
                config.data_dir.join("messages"),
                storage::FileStoreConfig::default(),
            )
            .map_err(|e| Error::Io(std::io::Error::other(e)))?,
        ),
    })
}

/// Free bytes available to unprivileged users on the filesystem holding `path`.
///
/// # Errors
/// `statvfs` failures.
pub fn disk_free(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Compare free disk space with the core's `disk_free_limit` every `every` and raise or
/// clear the disk alarm, until shutdown.
async fn disk_monitor(
    core: Arc<Core>,
    data_dir: PathBuf,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let limit = core.disk_free_limit();
        if limit == 0 {
            core.set_disk_alarm(false);
        } else {
            match disk_free(&data_dir) {
                Ok(free) => core.set_disk_alarm(free < limit),
                Err(e) => tracing::warn!(error = %e, "cannot check free disk space"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
    }
}

/// A running broker. Dropping it without [`Broker::shutdown`] stops accepting but does not
/// wait for connections.
#[derive(Debug)]
pub struct Broker {
    core: Arc<Core>,
    addr: SocketAddr,
    management_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    management_task: Option<JoinHandle<()>>,
}

impl Broker {
    /// Bind the AMQP listener, load definitions from `config.data_dir`, and start serving.
    /// Returns once the socket is listening.
    ///
    /// # Errors
    /// Invalid configuration, bind failure, unreadable data directory.
    pub async fn start(config: Config) -> Result<Broker> {
        config.validate()?;
        let core = Arc::new(Core::open(&config.data_dir, open_store(&config)?)?);
        core.set_page_out_above(config.page_out_above());
        core.set_disk_free_limit(config.disk_free_limit);
        let listener = tokio::net::TcpListener::bind(config.amqp_listen).await?;
        let addr = listener.local_addr()?;
        let management = match config.effective_management_listen() {
            Some(a) => {
                let l = tokio::net::TcpListener::bind(a).await.map_err(|e| {
                    Error::Io(std::io::Error::new(
                        e.kind(),
                        format!("management listener on {a}: {e}"),
                    ))
                })?;
                Some((l.local_addr()?, l))
            }
            None => None,
        };
        let (tx, rx) = watch::channel(false);
        tokio::spawn(disk_monitor(
            core.clone(),
            config.data_dir.clone(),
            Duration::from_millis(config.disk_check_interval_ms),
            rx.clone(),
        ));
        let config = Arc::new(config);
        let (management_addr, management_task) = match management {
            Some((maddr, l)) => {
                core.enable_sync_latency();
                let t = tokio::spawn(management::serve(
                    l,
                    core.clone(),
                    config.clone(),
                    addr,
                    rx.clone(),
                ));
                tracing::info!(addr = %maddr, "management API listening");
                (Some(maddr), Some(t))
            }
            None => (None, None),
        };
        let task = tokio::spawn(server::run(listener, core.clone(), config, rx));
        tracing::info!(%addr, "eventbus-broker listening");
        Ok(Broker {
            core,
            addr,
            management_addr,
            shutdown: tx,
            task: Some(task),
            management_task,
        })
    }

    /// The bound AMQP address (useful with port 0).
    pub fn amqp_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound management HTTP address (`None` when disabled).
    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.management_addr
    }

    /// Change the disk free limit at run time (bytes, 0 disables); takes effect at the next
    /// disk check (`disk_check_interval_ms`).
    pub fn set_disk_free_limit(&self, bytes: u64) {
        self.core.set_disk_free_limit(bytes);
    }

    /// Bytes of message bodies currently held in memory (the memory watermark's gauge).
    pub fn memory_used(&self) -> u64 {
        self.core.memory.used()
    }

    /// Management operations (users, vhosts, permissions).
    pub fn admin(&self) -> Admin {
        Admin {
            core: self.core.clone(),
        }
    }

    /// Graceful shutdown: stop accepting, send `connection.close` (320) to every client,
    /// wait for them (bounded), flush state.
    ///
    /// # Cancel safety
    /// If cancelled, shutdown still proceeds in the background.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        if let Some(t) = self.management_task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Administration handle: users, vhosts and permissions. Changes are persisted at once.
#[derive(Debug, Clone)]
pub struct Admin {
    core: Arc<Core>,
}

impl Admin {
    /// Operate on a data directory without running a broker (used by the admin CLI).
    ///
    /// # Errors
    /// Unreadable data directory.
    pub fn open(data_dir: &Path) -> Result<Admin> {
        Ok(Admin {
            core: Arc::new(Core::open(data_dir, Arc::new(MemoryStore))?),
        })
    }

    /// Create or replace a user.
    ///
    /// # Errors
    /// I/O errors.
    pub fn add_user(&self, name: &str, password: &str, tags: &[&str]) -> Result<()> {
        self.core
            .put_user(name, password, tags.iter().map(|t| t.to_string()).collect())
    }

    /// Delete a user.
    ///
    /// # Errors
    /// Unknown user, I/O errors.
    pub fn delete_user(&self, name: &str) -> Result<()> {
        self.core.delete_user(name)
    }

    /// Change a password.
    ///
    /// # Errors
    /// Unknown user, I/O errors.
    pub fn change_password(&self, name: &str, password: &str) -> Result<()> {
        self.core.change_password(name, password)
    }

    /// Replace a user's tags.
    ///
    /// # Errors
    /// Unknown user, I/O errors.
    pub fn set_user_tags(&self, name: &str, tags: &[&str]) -> Result<()> {
        self.core
            .set_user_tags(name, tags.iter().map(|t| t.to_string()).collect())
    }

    /// List users with their tags.
    pub fn list_users(&self) -> Vec<(String, Vec<String>)> {
        self.core.users()
    }

    /// Create a vhost.
    ///
    /// # Errors
    /// I/O errors.
    pub fn add_vhost(&self, name: &str) -> Result<()> {
        self.core.add_vhost(name)
    }

    /// Delete a vhost and everything in it.
    ///
    /// # Errors
    /// Unknown vhost, I/O errors.
    pub fn delete_vhost(&self, name: &str) -> Result<()> {
        self.core.delete_vhost(name)
    }

    /// List vhosts.
    pub fn list_vhosts(&self) -> Vec<String> {
        self.core.vhosts()
    }

    /// Set configure/write/read regexes for a user on a vhost.
    ///
    /// # Errors
    /// Unknown user/vhost, invalid regex, I/O errors.
    pub fn set_permissions(
        &self,
        user: &str,
        vhost: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<()> {
        self.core
            .set_permissions(user, vhost, configure, write, read)
    }

    /// Remove a user's permissions on a vhost.
    ///
    /// # Errors
    /// I/O errors.
    pub fn clear_permissions(&self, user: &str, vhost: &str) -> Result<()> {
        self.core.clear_permissions(user, vhost)
    }
}
