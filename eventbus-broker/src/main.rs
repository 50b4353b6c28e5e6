//! The `eventbus-broker` binary: `eventbus-broker [serve] [--config FILE] [--amqp-listen ADDR] …`
//! and `eventbus-broker admin <command>` working on the data directory.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use eventbus_broker::{Admin, Broker, Config};

#[derive(Debug, Parser)]
#[command(
    name = "eventbus-broker",
    version,
    about = "A RabbitMQ-compatible AMQP 0-9-1 broker"
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short, env = "EVENTBUS_BROKER_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// AMQP listen address (overrides file and env).
    #[arg(long, global = true)]
    amqp_listen: Option<std::net::SocketAddr>,
    /// Data directory (overrides file and env).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Maximum connections.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Maximum channels per connection.
    #[arg(long)]
    channel_max: Option<u16>,
    /// Maximum frame size.
    #[arg(long)]
    frame_max: Option<u32>,
    /// Maximum message size.
    #[arg(long)]
    max_message_size: Option<u64>,
    /// Heartbeat seconds.
    #[arg(long)]
    heartbeat: Option<u16>,
    /// Management HTTP API listen address, or `off` (overrides file and env).
    #[arg(long)]
    management_listen: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (default).
    Serve,
    /// Manage users, vhosts and permissions in the data directory (broker stopped).
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCmd {
    /// Create or replace a user.
    AddUser {
        name: String,
        password: String,
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// Delete a user.
    DeleteUser { name: String },
    /// Change a password.
    ChangePassword { name: String, password: String },
    /// Replace a user's tags.
    SetUserTags { name: String, tags: Vec<String> },
    /// List users.
    ListUsers,
    /// Create a vhost.
    AddVhost { name: String },
    /// Delete a vhost.
    DeleteVhost { name: String },
    /// List vhosts.
    ListVhosts,
    /// Set permissions: USER CONFIGURE WRITE READ.
    SetPermissions {
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
        user: String,
        configure: String,
        write: String,
        read: String,
    },
    /// Clear permissions.
    ClearPermissions {
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
        user: String,
    },
}

fn load_config(cli: &Cli) -> anyhow_lite::Result<Config> {
    let mut config = match &cli.config {
        Some(p) => Config::from_toml(
            &std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
        )?,
        None => Config::default(),
    };
    config.apply_env(std::env::vars())?;
    if let Some(a) = cli.amqp_listen {
        config.amqp_listen = a;
    }
    if let Some(d) = &cli.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(v) = cli.max_connections {
        config.max_connections = v;
    }
    if let Some(v) = cli.channel_max {
        config.channel_max = v;
    }
    if let Some(v) = cli.frame_max {
        config.frame_max = v;
    }
    if let Some(v) = cli.max_message_size {
        config.max_message_size = v;
    }
    if let Some(v) = cli.heartbeat {
        config.heartbeat = v;
    }
    if let Some(v) = &cli.management_listen {
        config.management_listen = eventbus_broker::config::parse_optional_addr(v)
            .map_err(|e| format!("--management-listen: {e}"))?;
    }
    config.validate()?;
    Ok(config)
}

mod anyhow_lite {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
}

fn admin(config: &Config, cmd: AdminCmd) -> anyhow_lite::Result<()> {
    let a = Admin::open(&config.data_dir)?;
    match cmd {
        AdminCmd::AddUser {
            name,
            password,
            tags,
        } => a.add_user(
            &name,
            &password,
            &tags.iter().map(String::as_str).collect::<Vec<_>>(),
        )?,
        AdminCmd::DeleteUser { name } => a.delete_user(&name)?,
        AdminCmd::ChangePassword { name, password } => a.change_password(&name, &password)?,
        AdminCmd::SetUserTags { name, tags } => {
            a.set_user_tags(&name, &tags.iter().map(String::as_str).collect::<Vec<_>>())?
        }
        AdminCmd::ListUsers => {
            for (u, tags) in a.list_users() {
                println!("{u}\t[{}]", tags.join(", "));
            }
        }
        AdminCmd::AddVhost { name } => a.add_vhost(&name)?,
        AdminCmd::DeleteVhost { name } => a.delete_vhost(&name)?,
        AdminCmd::ListVhosts => {
            for v in a.list_vhosts() {
                println!("{v}");
            }
        }
        AdminCmd::SetPermissions {
            vhost,
            user,
            configure,
            write,
            read,
        } => a.set_permissions(&user, &vhost, &configure, &write, &read)?,
        AdminCmd::ClearPermissions { vhost, user } => a.clear_permissions(&user, &vhost)?,
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EVENTBUS_BROKER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::Admin { cmd }) => match admin(&config, cmd) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Some(Command::Serve) | None => {
            let broker = match Broker::start(config).await {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("error: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            println!("AMQP: amqp://{}", broker.amqp_addr());
            match broker.management_addr() {
                Some(a) => {
                    println!("Management API: http://{a}/api/ (metrics: http://{a}/metrics)")
                }
                None => println!("Management API: off"),
            }
            shutdown_signal().await;
            tracing::info!("shutting down");
            broker.shutdown().await;
            std::process::ExitCode::SUCCESS
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
