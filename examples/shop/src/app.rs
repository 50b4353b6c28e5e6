//! Wiring: starts one service (database, broker connection, topology, bus,
//! relay, HTTP routes) and the whole set in one process on embedded
//! defaults — the built-in broker in-process, a SQLite file per service.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use eventbus::embedded::EmbeddedBroker;
use eventbus::inbox::PrunerHandle;
use eventbus::outbox::RelayHandle;
use eventbus::transport::amqp::AmqpTransport;
use eventbus::{BoxError, EventBus, RelayConfig, RunningBus, Subscriber};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::db::{self, Database};
use crate::email::EmailService;
use crate::events::topology;
use crate::inventory::InventoryService;
use crate::notifications::NotificationService;
use crate::orders::OrderService;
use crate::users::UserService;
use crate::with_db;

/// The services of the sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceName {
    #[value(name = "user-service")]
    Users,
    #[value(name = "email-service")]
    Email,
    #[value(name = "notification-service")]
    Notifications,
    #[value(name = "order-service")]
    Orders,
    #[value(name = "inventory-service")]
    Inventory,
}

impl ServiceName {
    /// All five, in start order (consumers before producers is not needed:
    /// every service declares the whole topology before its relay starts).
    pub const ALL: [ServiceName; 5] = [
        ServiceName::Email,
        ServiceName::Notifications,
        ServiceName::Inventory,
        ServiceName::Orders,
        ServiceName::Users,
    ];

    /// `user-service`, …
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Users => "user-service",
            ServiceName::Email => "email-service",
            ServiceName::Notifications => "notification-service",
            ServiceName::Orders => "order-service",
            ServiceName::Inventory => "inventory-service",
        }
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one service needs to start.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// `amqp://…`: the built-in broker (embedded or standalone) or RabbitMQ.
    pub broker_url: String,
    /// `sqlite://path.db` or `postgres://…`.
    pub database_url: String,
    /// Stock writes per second (inventory-service).
    pub inventory_rate: u32,
}

/// A running service.
#[derive(Debug)]
pub struct RunningService {
    pub name: ServiceName,
    /// Its HTTP routes (served by the caller: one server per process).
    pub router: Router,
    pub db: Database,
    transport: AmqpTransport,
    bus: Option<RunningBus>,
    relay: RelayHandle,
    pruner: PrunerHandle,
}

impl RunningService {
    /// Connects (retrying with backoff while the database or broker is
    /// unreachable), creates its tables, declares every group of the
    /// sample, starts its handlers, then its relay.
    pub async fn start(name: ServiceName, settings: &ServiceSettings) -> Result<Self, BoxError> {
        let db = Database::connect(&settings.database_url, name.as_str()).await?;
        let url = settings.broker_url.clone();
        let transport = db::retry(name.as_str(), "broker", &url, || {
            AmqpTransport::connect(&url)
        })
        .await;
        for spec in topology() {
            transport.declare(&spec).await?;
        }
        let mut bus = EventBus::new(transport.clone());
        bus.inbox(with_db!(&db, |_pool, _outbox, inbox, DB| inbox.layer()));
        let router = match name {
            ServiceName::Users => UserService::new(db.clone()).await?.router(),
            ServiceName::Email => {
                let svc = EmailService::new(db.clone()).await?;
                bus.register(svc.handler());
                svc.router()
            }
            ServiceName::Notifications => {
                let svc = NotificationService::new(db.clone()).await?;
                bus.register(svc.handler());
                svc.router()
            }
            ServiceName::Orders => {
                let svc = OrderService::new(db.clone()).await?;
                bus.register(svc.handler());
                svc.router()
            }
            ServiceName::Inventory => {
                let svc = InventoryService::new(db.clone(), settings.inventory_rate).await?;
                bus.register(svc.handler());
                svc.router()
            }
        };
        let bus = match name {
            ServiceName::Users => None,
            _ => Some(bus.start().await.map_err(|e| format!("{name}: {e}"))?),
        };
        let relay_config = RelayConfig {
            // SQLite has no insert notification: poll often for a lively demo.
            poll_interval: Duration::from_millis(20),
            ..RelayConfig::default()
        };
        let (relay, pruner) = with_db!(&db, |_pool, outbox, inbox, DB| (
            outbox
                .relay(transport.clone())
                .with_config(relay_config)
                .spawn(),
            inbox.spawn_pruner()
        ));
        Ok(Self {
            name,
            router,
            db,
            transport,
            bus,
            relay,
            pruner,
        })
    }

    /// Stops handlers (in-flight work finishes), the relay and the pruner,
    /// then closes the broker connection.
    pub async fn shutdown(self) {
        if let Some(bus) = self.bus {
            bus.shutdown().await;
        }
        self.relay.shutdown().await;
        self.pruner.shutdown().await;
        let _ = self.transport.close().await;
    }
}

/// An HTTP server running `router` until [`HttpServer::shutdown`].
#[derive(Debug)]
pub struct HttpServer {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Binds `addr`; if that port is taken and `fallback` is set, any free port.
    pub async fn start(addr: SocketAddr, fallback: bool, router: Router) -> Result<Self, BoxError> {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) if fallback => {
                eprintln!("shop: {addr} unavailable ({e}); using a free port");
                TcpListener::bind(SocketAddr::new(addr.ip(), 0)).await?
            }
            Err(e) => return Err(format!("cannot listen on {addr}: {e}").into()),
        };
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let graceful = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(graceful)
                .await
            {
                eprintln!("shop: HTTP server failed: {e}");
            }
        });
        Ok(Self { addr, stop, task })
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, finishes requests in progress.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Settings of the one-process set.
#[derive(Debug, Clone)]
pub struct ShopConfig {
    /// Broker data and the services' SQLite files (default `./shop-data`).
    pub data_dir: PathBuf,
    /// HTTP address for all services (port 0: any free port).
    pub http: SocketAddr,
    /// Fall back to a free port when `http` is taken.
    pub http_fallback: bool,
    /// Stock writes per second.
    pub inventory_rate: u32,
}

/// All five services in one process on the embedded broker.
#[derive(Debug)]
pub struct Shop {
    pub broker: EmbeddedBroker,
    pub http: HttpServer,
    pub services: Vec<RunningService>,
    pub data_dir: PathBuf,
}

impl Shop {
    /// Starts the embedded broker (data in `<data_dir>/broker`), the five
    /// services with a SQLite file each in `data_dir`, and one HTTP server.
    pub async fn start(config: ShopConfig) -> Result<Self, BoxError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| format!("cannot create {}: {e}", config.data_dir.display()))?;
        let broker = EmbeddedBroker::start(config.data_dir.join("broker")).await?;
        let mut services = Vec::new();
        let mut router = Router::new();
        for name in ServiceName::ALL {
            let settings = ServiceSettings {
                broker_url: broker.amqp_url(),
                database_url: sqlite_url(&config.data_dir, name),
                inventory_rate: config.inventory_rate,
            };
            let svc = RunningService::start(name, &settings).await?;
            router = router.merge(svc.router.clone());
            services.push(svc);
        }
        let http = HttpServer::start(config.http, config.http_fallback, router).await?;
        Ok(Self {
            broker,
            http,
            services,
            data_dir: config.data_dir,
        })
    }

    /// The same base URL for every service.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints::single(&self.http.url(), &self.broker.amqp_url())
    }

    /// Stops HTTP, then the services, then the broker.
    pub async fn shutdown(self) {
        self.http.shutdown().await;
        for svc in self.services {
            svc.shutdown().await;
        }
        self.broker.shutdown().await;
    }
}

/// `sqlite://<dir>/<service>.db`.
pub fn sqlite_url(dir: &Path, name: ServiceName) -> String {
    format!("sqlite://{}", dir.join(format!("{name}.db")).display())
}

/// Where a client finds each service (one URL for all in one process).
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub users: String,
    pub emails: String,
    pub notifications: String,
    pub orders: String,
    pub inventory: String,
    /// For the queue depth.
    pub broker_url: String,
}

impl Endpoints {
    /// Every service behind `http`.
    pub fn single(http: &str, broker_url: &str) -> Self {
        Self {
            users: http.to_owned(),
            emails: http.to_owned(),
            notifications: http.to_owned(),
            orders: http.to_owned(),
            inventory: http.to_owned(),
            broker_url: broker_url.to_owned(),
        }
    }
}
