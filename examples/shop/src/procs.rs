//! The multi-process shape: each service (and the broker) as a child
//! process of the `shop` binary, found by the `READY` line it prints.
//! Used by `shop up` and by the multi-process tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use eventbus::BoxError;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::app::{Endpoints, ServiceName};

/// The line a process prints once it serves: `READY <what> <url>`.
pub const READY: &str = "READY";

/// A child process of the set.
#[derive(Debug)]
pub struct ChildProcess {
    /// `broker`, `user-service`, … (`inventory-service#2` for a second instance).
    pub label: String,
    /// What it printed after `READY <label>`: its HTTP or AMQP URL.
    pub url: String,
    child: Child,
}

impl ChildProcess {
    /// Starts `exe args…`, forwards its output to stderr prefixed with
    /// `label`, and waits (at most `limit`) for its `READY` line.
    pub async fn spawn(
        exe: &Path,
        label: &str,
        args: &[String],
        limit: Duration,
    ) -> Result<Self, BoxError> {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {label} ({}): {e}", exe.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let prefix = label.to_owned();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{prefix}] {line}");
            }
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let prefix = label.to_owned();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with(READY) {
                    if let Some(tx) = tx.take() {
                        let url = line
                            .split_whitespace()
                            .nth(2)
                            .unwrap_or_default()
                            .to_owned();
                        let _ = tx.send(url);
                        continue;
                    }
                }
                eprintln!("[{prefix}] {line}");
            }
        });
        let url = match tokio::time::timeout(limit, rx).await {
            Ok(Ok(url)) if !url.is_empty() => url,
            Ok(_) => {
                let status = child.wait().await?;
                return Err(format!("{label} exited before it was ready ({status})").into());
            }
            Err(_) => return Err(format!("{label} not ready after {limit:?}").into()),
        };
        Ok(Self {
            label: label.to_owned(),
            url,
            child,
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no cleanup (the crash case).
    pub async fn kill(mut self) -> Result<(), BoxError> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// SIGTERM, then waits up to `limit` before SIGKILL.
    pub async fn stop(mut self, limit: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(limit, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

/// Where and how the set runs.
#[derive(Debug, Clone)]
pub struct SetConfig {
    /// The `shop` binary.
    pub exe: PathBuf,
    /// `amqp://…` of a running broker; `None`: start `shop broker` as a child.
    pub broker_url: Option<String>,
    /// One database for all services (`postgres://…`), each with its own
    /// tables; `None`: a SQLite file per service in `data_dir`.
    pub database_url: Option<String>,
    /// Broker data (when started here) and SQLite files.
    pub data_dir: PathBuf,
    pub inventory_rate: u32,
    /// Instances of inventory-service (they share its partitions).
    pub inventory_instances: usize,
}

/// The set of child processes.
#[derive(Debug)]
pub struct ProcessSet {
    pub config: SetConfig,
    pub broker_url: String,
    pub broker: Option<ChildProcess>,
    pub services: Vec<ChildProcess>,
}

const READY_LIMIT: Duration = Duration::from_secs(120);

impl ProcessSet {
    /// Starts the broker (unless given) and every service, the inventory
    /// `inventory_instances` times.
    pub async fn start(config: SetConfig) -> Result<Self, BoxError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let broker = match &config.broker_url {
            Some(_) => None,
            None => {
                let args = vec![
                    "broker".into(),
                    "--data-dir".into(),
                    config.data_dir.join("broker").display().to_string(),
                ];
                Some(ChildProcess::spawn(&config.exe, "broker", &args, READY_LIMIT).await?)
            }
        };
        let broker_url = match (&config.broker_url, &broker) {
            (Some(url), _) => url.clone(),
            (None, Some(b)) => b.url.clone(),
            (None, None) => unreachable!("a broker was started"),
        };
        let mut set = Self {
            config,
            broker_url,
            broker,
            services: Vec::new(),
        };
        for name in ServiceName::ALL {
            let instances = if name == ServiceName::Inventory {
                set.config.inventory_instances.max(1)
            } else {
                1
            };
            for i in 1..=instances {
                let child = set.spawn_service(name, i).await?;
                set.services.push(child);
            }
        }
        Ok(set)
    }

    /// `inventory-service`, or `inventory-service#2` for the second instance.
    pub fn label(name: ServiceName, instance: usize) -> String {
        if instance <= 1 {
            name.to_string()
        } else {
            format!("{name}#{instance}")
        }
    }

    /// Starts one service process (instance `instance` of `name`).
    pub async fn spawn_service(
        &self,
        name: ServiceName,
        instance: usize,
    ) -> Result<ChildProcess, BoxError> {
        let database_url = match &self.config.database_url {
            Some(url) => url.clone(),
            None => crate::app::sqlite_url(&self.config.data_dir, name),
        };
        let args = vec![
            "serve".into(),
            name.to_string(),
            "--broker-url".into(),
            self.broker_url.clone(),
            "--database-url".into(),
            database_url,
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--inventory-rate".into(),
            self.config.inventory_rate.to_string(),
        ];
        ChildProcess::spawn(
            &self.config.exe,
            &Self::label(name, instance),
            &args,
            READY_LIMIT,
        )
        .await
    }

    /// The first instance's URL of each service.
    pub fn endpoints(&self) -> Endpoints {
        let url = |name: ServiceName| {
            self.services
                .iter()
                .find(|s| s.label == name.as_str())
                .map(|s| s.url.clone())
                .unwrap_or_default()
        };
        Endpoints {
            users: url(ServiceName::Users),
            emails: url(ServiceName::Email),
            notifications: url(ServiceName::Notifications),
            orders: url(ServiceName::Orders),
            inventory: url(ServiceName::Inventory),
            broker_url: self.broker_url.clone(),
        }
    }

    /// Takes a service process out of the set (to kill or restart it).
    pub fn take(&mut self, label: &str) -> Option<ChildProcess> {
        let i = self.services.iter().position(|s| s.label == label)?;
        Some(self.services.remove(i))
    }

    /// Stops the services (SIGTERM, SIGKILL after 30 s), then the broker.
    pub async fn stop(self) {
        for s in self.services.into_iter().rev() {
            s.stop(Duration::from_secs(30)).await;
        }
        if let Some(b) = self.broker {
            b.stop(Duration::from_secs(30)).await;
        }
    }
}
