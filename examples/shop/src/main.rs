//! `cargo run -p shop`: the sample application on embedded defaults (the
//! built-in broker in-process, a SQLite file per service in `./shop-data`).
//! `--demo` runs the scripted walk and exits; `burst` measures peak shaving.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use eventbus::embedded::EmbeddedBroker;
use eventbus::BoxError;
use shop::app::{
    sqlite_url, HttpServer, RunningService, ServiceName, ServiceSettings, Shop, ShopConfig,
};
use shop::demo::{self, ShopClient};
use shop::procs::{ProcessSet, SetConfig, READY};

#[derive(Debug, Parser)]
#[command(name = "shop", about = "The eventbus sample application")]
struct Cli {
    /// Broker data and the services' SQLite files.
    #[arg(
        long,
        env = "SHOP_DATA_DIR",
        default_value = "./shop-data",
        global = true
    )]
    data_dir: PathBuf,
    /// HTTP address of the services (in one process: all on one port).
    #[arg(long, env = "SHOP_HTTP", default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Stock writes per second of inventory-service.
    #[arg(
        long,
        env = "SHOP_INVENTORY_RATE",
        default_value_t = 500,
        global = true,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    inventory_rate: u32,
    /// Run the scripted walk through all three flows, then exit (0: every check passed).
    #[arg(long)]
    demo: bool,
    /// Orders in the demo's burst.
    #[arg(long, default_value_t = 2000)]
    demo_orders: usize,
    /// Concurrent connections of the burst (1 to 1024).
    #[arg(
        long,
        default_value_t = 64,
        global = true,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024)
    )]
    concurrency: usize,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Peak shaving, measured: starts the set in-process and sends a burst
    /// of orders as fast as the client can, printing queue depth and figures.
    Burst {
        /// Orders in the burst.
        #[arg(long, default_value_t = 10_000)]
        orders: usize,
        /// Orders per second (0: as fast as the connections are answered).
        #[arg(long, default_value_t = 0)]
        rate: u32,
    },
    /// Runs one service in this process against a broker and a database.
    Serve {
        service: ServiceName,
        /// `amqp://user:pass@host:port/vhost`: the built-in broker (standalone) or RabbitMQ.
        #[arg(long, env = "SHOP_BROKER_URL")]
        broker_url: String,
        /// `postgres://…` or `sqlite://file.db` [default: sqlite://<data-dir>/<service>.db].
        #[arg(long, env = "SHOP_DATABASE_URL")]
        database_url: Option<String>,
        /// HTTP address of the service.
        #[arg(long, env = "SHOP_LISTEN", default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Runs the built-in broker as a process of its own (data in `<data-dir>/broker`).
    Broker {
        /// AMQP address (RabbitMQ keeps 5672).
        #[arg(long, default_value = "127.0.0.1:0")]
        amqp_listen: SocketAddr,
        /// Management HTTP API and web UI address (a free port by default).
        #[arg(long, default_value = "127.0.0.1:0")]
        management_listen: SocketAddr,
    },
    /// Starts the whole set as child processes: a broker (unless
    /// `--broker-url`), each service, two inventory-service instances.
    Up {
        /// A running broker to use instead of starting one.
        #[arg(long, env = "SHOP_BROKER_URL")]
        broker_url: Option<String>,
        /// One PostgreSQL database for all services (each with its own
        /// tables) [default: a SQLite file per service in <data-dir>/multi].
        #[arg(long, env = "SHOP_DATABASE_URL")]
        database_url: Option<String>,
        /// Instances of inventory-service.
        #[arg(long, default_value_t = 2)]
        inventory_instances: usize,
        /// Run the scripted walk against the set, then stop it.
        #[arg(long)]
        demo: bool,
        /// Orders in the demo's burst.
        #[arg(long, default_value_t = 2000)]
        demo_orders: usize,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,lapin=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shop: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, BoxError> {
    match cli.command {
        None => in_process(&cli).await,
        Some(Command::Burst { orders, rate }) => {
            let shop = start_in_process(&cli, true).await?;
            let client = ShopClient::new(shop.endpoints());
            let mut checks = demo::Checks::default();
            let result =
                demo::peak_shaving_paced(&client, orders, cli.concurrency, rate, &mut checks).await;
            shop.shutdown().await;
            result?;
            Ok(report(checks))
        }
        Some(Command::Serve {
            service,
            ref broker_url,
            ref database_url,
            listen,
        }) => {
            let settings = ServiceSettings {
                broker_url: broker_url.clone(),
                database_url: database_url
                    .clone()
                    .unwrap_or_else(|| sqlite_url(&cli.data_dir, service)),
                inventory_rate: cli.inventory_rate,
            };
            if settings.database_url.starts_with("sqlite:") {
                std::fs::create_dir_all(&cli.data_dir)?;
            }
            let svc = RunningService::start(service, &settings).await?;
            let http = HttpServer::start(listen, false, svc.router.clone()).await?;
            println!("{READY} {service} {}", http.url());
            stop_signal().await?;
            http.shutdown().await;
            svc.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Broker {
            amqp_listen,
            management_listen,
        }) => {
            let broker = EmbeddedBroker::start_with(eventbus_broker::Config {
                amqp_listen,
                management_listen: Some(management_listen),
                data_dir: cli.data_dir.join("broker"),
                ..eventbus_broker::Config::default()
            })
            .await?;
            println!("{READY} broker {}", broker.amqp_url());
            if let Some(management) = broker.management_url() {
                println!("shop: broker management UI and HTTP API at {management} (guest/guest)");
            }
            stop_signal().await?;
            broker.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Up {
            ref broker_url,
            ref database_url,
            inventory_instances,
            demo,
            demo_orders,
        }) => {
            let set = ProcessSet::start(SetConfig {
                exe: std::env::current_exe()?,
                broker_url: broker_url.clone(),
                database_url: database_url.clone(),
                data_dir: cli.data_dir.join("multi"),
                inventory_rate: cli.inventory_rate,
                inventory_instances,
            })
            .await?;
            println!(
                "shop: the set as {} processes",
                set.services.len() + usize::from(set.broker.is_some())
            );
            println!("  broker     {}", set.broker_url);
            for s in &set.services {
                println!(
                    "  {:<24} {}   (pid {})",
                    s.label,
                    s.url,
                    s.pid().unwrap_or(0)
                );
            }
            let code = if demo {
                let client = ShopClient::new(set.endpoints());
                let result = demo::run(&client, demo_orders, cli.concurrency).await;
                set.stop().await;
                report(result?)
            } else {
                let ep = set.endpoints();
                println!(
                    "\nTry: curl -s -XPOST {}/users -H 'content-type: application/json' -d '{{\"email\":\"ada@example.com\",\"name\":\"Ada\"}}'",
                    ep.users
                );
                println!(
                    "     curl -s -XPOST {}/orders -H 'content-type: application/json' -d '{{\"product\":\"book\",\"quantity\":2}}'",
                    ep.orders
                );
                println!("Ctrl-C stops every process.");
                stop_signal().await?;
                set.stop().await;
                ExitCode::SUCCESS
            };
            Ok(code)
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() -> Result<(), BoxError> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Prints the demo's verdict; exit code 0 only if every check passed.
fn report(checks: demo::Checks) -> ExitCode {
    let failed = checks.failed();
    if failed.is_empty() {
        println!("\ndemo: all {} checks passed", checks.0.len());
        ExitCode::SUCCESS
    } else {
        println!(
            "\ndemo: {} of {} checks FAILED",
            failed.len(),
            checks.0.len()
        );
        ExitCode::FAILURE
    }
}

async fn start_in_process(cli: &Cli, quiet_port: bool) -> Result<Shop, BoxError> {
    let http = if quiet_port || cli.demo {
        SocketAddr::new(cli.http.ip(), 0)
    } else {
        cli.http
    };
    Shop::start(ShopConfig {
        data_dir: cli.data_dir.clone(),
        http,
        http_fallback: true,
        inventory_rate: cli.inventory_rate,
    })
    .await
}

async fn in_process(cli: &Cli) -> Result<ExitCode, BoxError> {
    let shop = start_in_process(cli, false).await?;
    let url = shop.http.url();
    println!("shop: five services in one process");
    println!("  HTTP       {url}   (all services)");
    println!(
        "  broker     {}   (built-in broker, embedded; data in {})",
        shop.broker.amqp_url(),
        shop.data_dir.join("broker").display()
    );
    if let Some(management) = shop.broker.management_url() {
        println!("  management {management}   (the broker's web UI and RabbitMQ-compatible HTTP API; guest/guest)");
    }
    println!(
        "  databases  {}/<service>.db   (SQLite, one per service, each with its outbox and inbox)",
        shop.data_dir.display()
    );
    if cli.demo {
        let client = ShopClient::new(shop.endpoints());
        let result = demo::run(&client, cli.demo_orders, cli.concurrency).await;
        shop.shutdown().await;
        let checks = result?;
        let failed = checks.failed();
        return Ok(if failed.is_empty() {
            println!("\ndemo: all {} checks passed", checks.0.len());
            ExitCode::SUCCESS
        } else {
            println!(
                "\ndemo: {} of {} checks FAILED",
                failed.len(),
                checks.0.len()
            );
            ExitCode::FAILURE
        });
    }
    print_tour(&url);
    stop_signal().await?;
    println!("\nshop: stopping");
    shop.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

fn print_tour(url: &str) {
    let json = "-H 'content-type: application/json'";
    println!(
        r#"
What just happened: five services started, each with its own SQLite
database, outbox relay and broker connection; every consumer group's queue
was declared on the broker before any relay published.

Try it (in another terminal):

 1. Asynchronous work: registration answers at once; mail and notification follow.
      curl -s -XPOST {url}/users {json} -d '{{"email":"ada@example.com","name":"Ada"}}'
      curl -s '{url}/emails?user_id=1'          # email-service (its own table)
      curl -s '{url}/notifications?user_id=1'   # notification-service
 2. Decoupling: the order service never calls the inventory; events connect them.
      curl -s -XPOST {url}/orders {json} -d '{{"product":"book","quantity":2}}'
      curl -s {url}/orders/<id>                 # pending → reserved
      curl -s -XPOST {url}/orders {json} -d '{{"product":"unicorn","quantity":1}}'   # → rejected, with a reason
      curl -s {url}/inventory
 3. Peak shaving: 10,000 orders at once; the inventory writes 500/s, the queue absorbs the rest.
      cargo run --release -p shop -- burst

Or run everything scripted: cargo run -p shop -- --demo
Ctrl-C stops."#
    );
}
