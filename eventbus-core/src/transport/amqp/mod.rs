//! AMQP 0-9-1 transport (feature `amqp`), on lapin: works against the
//! built-in `eventbus-broker` and against RabbitMQ alike.
//!
//! # Topology
//! - Events are published, persistent and confirmed, to the topic exchange
//!   [`AmqpConfig::exchange`] (default `eventbus`) with the event name as
//!   routing key.
//! - Each group is a durable queue named after the group, bound to the
//!   exchange once per event name it handles. Consumers of one group share
//!   the queue (competing consumers); each group gets its own copy.
//! - Dead letters go to the direct exchange [`AmqpConfig::dead_letter_exchange`]
//!   (default `eventbus.dead-letter`), routing key = group, into the durable
//!   queue `<group>.dead-letter`, declared and bound together with the
//!   group's queue (by `subscribe` and `declare`). Dead letters are
//!   published `mandatory` and confirmed: a returned (unroutable) or nacked
//!   dead letter fails [`Acker::dead_letter`], and the original is requeued
//!   instead of acked.
//! - The bus exchange has the alternate exchange [`AmqpConfig::unrouted_exchange`]
//!   (fanout, durable, default `eventbus.unrouted`), bound to the durable
//!   queue of the same name, bounded by [`AmqpConfig::max_unrouted`]
//!   (default 10,000, `x-overflow: drop-head`): an event no group is bound
//!   to lands there instead of vanishing. An `eventbus` exchange declared
//!   earlier without the `alternate-exchange` argument cannot be changed by
//!   a declare (the broker answers 406): the transport then uses it as it
//!   is and logs a warning; apply the alternate exchange with a policy
//!   (`rabbitmqctl set_policy eventbus-ae '^eventbus$'
//!   '{"alternate-exchange":"eventbus.unrouted"}' --apply-to exchanges`)
//!   or delete and re-declare the exchange.
//! - A **partitioned group** `G` with `P` partitions
//!   ([`SubscriptionSpec::partitions`]) is an `x-consistent-hash` exchange
//!   `G.partitions` (durable, `hash-header = x-eb-partition-key`) bound to
//!   the bus exchange once per event name (exchange-to-exchange), and `P`
//!   durable queues `G.p0`…`G.p{P-1}` bound to it with equal weight
//!   ([`PARTITION_POINTS`] points on the hash ring each: with one point
//!   per queue the ring's arcs, and so the keys, are spread very unevenly), each
//!   consumed by one exclusive consumer at a time (exclusive rather than
//!   `x-single-active-consumer`: RabbitMQ refuses exclusive consumers on
//!   single-active-consumer queues, and an exclusive `basic.consume` makes
//!   a claim atomic — the loser of a race gets 403). Every message carries `x-eb-partition-key`: the
//!   envelope key, or the message id for unkeyed events (spread evenly). The
//!   instances of the group share the partitions: each consumes from the
//!   membership queue `G.members` (nothing is ever published to it), whose
//!   consumer count is the number of live instances `N`; a balancer per
//!   subscription (every [`AmqpConfig::rebalance_interval`], first round at
//!   once) claims free partitions (no consumer) up to `ceil(P/N)` with an
//!   exclusive consumer, one channel per partition, and releases partitions
//!   above its share: it stops taking that partition's deliveries, waits
//!   until those already handed out are settled, then closes the channel
//!   (the broker requeues what it had prefetched, in place) — only then can
//!   another instance claim it, so a key's events are never handled by two
//!   instances at once. A dead instance's connection closes, the broker
//!   requeues its unacked messages at the front of their partitions, and
//!   the next balancer round elsewhere claims them. RabbitMQ needs the
//!   `rabbitmq_consistent_hash_exchange` plugin; without it `subscribe`
//!   fails with an error saying so.
//!
//! # Message mapping
//! The envelope id is the AMQP `message-id`, the event name the `type`
//! property, the content type `content-type`; version, key and the exact
//! occurred-at travel in the `x-eb-version`, `x-eb-key` and
//! `x-eb-occurred-at` headers, and envelope headers as string headers.
//! Messages from other publishers are accepted: what is missing is filled
//! in (name from the routing key, a deterministic id from `message-id` or the
//! body), and a payload the handler cannot decode is dead-lettered.

mod codec;
mod partitions;

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};

use super::{
    dead_letter_name, partition_name, Acker, Delivery, Publisher, Subscriber, Subscription,
    SubscriptionSpec, TransportError, TransportFuture,
};
use crate::Envelope;

pub use codec::{envelope_from_amqp, properties_for};

/// Settings of the AMQP transport.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:port/vhost` (vhost `/` is `%2f`).
    pub uri: String,
    /// Topic exchange events are published to.
    pub exchange: String,
    /// Direct exchange for dead letters.
    pub dead_letter_exchange: String,
    /// Publish events persistent (delivery-mode 2). Default true.
    pub persistent: bool,
    /// `x-expires` on group queues: delete a queue unused for this long.
    /// Default none (queues live until deleted). Useful for tests.
    pub queue_expires: Option<Duration>,
    /// Alternate exchange of [`AmqpConfig::exchange`] (fanout) and the
    /// queue bound to it that keeps unrouted events. Default `eventbus.unrouted`.
    pub unrouted_exchange: String,
    /// `x-max-length` of the unrouted queue (the oldest are dropped first);
    /// `None`: unbounded. Default 10,000.
    pub max_unrouted: Option<usize>,
    /// How often a partitioned subscription rebalances its partitions
    /// (claims free ones up to its share, releases those above it). Default 1 s.
    pub rebalance_interval: Duration,
}

impl AmqpConfig {
    /// Defaults for `uri`.
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            exchange: "eventbus".to_owned(),
            dead_letter_exchange: "eventbus.dead-letter".to_owned(),
            persistent: true,
            queue_expires: None,
            unrouted_exchange: "eventbus.unrouted".to_owned(),
            max_unrouted: Some(super::DEFAULT_MAX_UNROUTED),
            rebalance_interval: Duration::from_secs(1),
        }
    }
}

/// The AMQP transport: one connection with a confirmed publishing channel,
/// one channel per subscription. It reconnects by itself: a publish after a
/// lost connection opens a new one (the failed publish returns
/// [`TransportError::Unavailable`] for the caller to retry), and each
/// subscription re-opens its consumer with backoff, so handlers resume
/// after a broker restart. Deliveries unacked when the connection dropped
/// are redelivered by the broker (at-least-once).
#[derive(Clone)]
pub struct AmqpTransport {
    inner: Arc<Inner>,
}

struct Inner {
    config: AmqpConfig,
    /// The live link, read on every publish without waiting (fast path).
    current: std::sync::RwLock<Option<Arc<Link>>>,
    /// Serialises reconnects so one broken link is replaced once.
    reconnect: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    /// `config.exchange` and `config.dead_letter_exchange`, validated once.
    exchange: ShortString,
    dead_letter_exchange: ShortString,
    /// Per group: deliveries handed out and not settled yet, and the
    /// group's partition count (0 = one queue). For [`Subscriber::pending`].
    groups: std::sync::Mutex<std::collections::HashMap<String, GroupCounts>>,
}

#[derive(Default, Clone)]
struct GroupCounts {
    unsettled: Arc<std::sync::atomic::AtomicU64>,
    partitions: u16,
}

/// Counts a delivery as unsettled until its acker is dropped (settled or not).
struct Unsettled(Arc<std::sync::atomic::AtomicU64>);

impl Unsettled {
    fn new(count: &Arc<std::sync::atomic::AtomicU64>) -> Self {
        count.fetch_add(1, AtomicOrdering::SeqCst);
        Self(count.clone())
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        self.0.fetch_sub(1, AtomicOrdering::SeqCst);
    }
}

/// A live connection and its publishing channel.
struct Link {
    connection: Connection,
    publisher: Channel,
}

impl Link {
    fn healthy(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }
}

impl std::fmt::Debug for AmqpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpTransport")
            .field("exchange", &self.inner.config.exchange)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: lapin::Error) -> TransportError {
    TransportError::Unavailable(Box::new(e))
}

/// Whether `e`, returned by `Connection::close`, still means the connection
/// is closed: a reply for a channel that the close had already put in
/// `Closing`, or a connection that was closed before.
fn closed_anyway(e: &lapin::Error) -> bool {
    matches!(
        e.kind(),
        lapin::ErrorKind::InvalidChannelState(..) | lapin::ErrorKind::InvalidConnectionState(..)
    )
}

/// A declaration's failure: the broker's refusal (an AMQP error reply:
/// access refused, inequivalent arguments, …) is final and names `what`
/// was refused; anything else (connection lost) is [`unavailable`].
fn refused(what: impl std::fmt::Display) -> impl FnOnce(lapin::Error) -> TransportError {
    move |e| {
        if e.is_amqp_error() {
            TransportError::Other(format!("the broker refused to declare {what}: {e}").into())
        } else {
            unavailable(e)
        }
    }
}

fn short(s: &str) -> Result<ShortString, TransportError> {
    ShortString::try_new(s.to_owned())
        .map_err(|_| TransportError::Rejected(format!("name longer than 255 bytes: {s:.40}…")))
}

/// Opens a connection, a confirmed publishing channel, and declares the
/// exchanges and the unrouted queue.
async fn open_link(config: &AmqpConfig) -> Result<Link, TransportError> {
    let connection = Connection::connect(
        &config.uri,
        ConnectionProperties::default().with_connection_name("eventbus".into()),
    )
    .await
    .map_err(unavailable)?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    declare_bus_exchange(&connection, config).await?;
    let publisher = connection.create_channel().await.map_err(unavailable)?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(unavailable)?;
    publisher
        .exchange_declare(
            short(&config.dead_letter_exchange)?,
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(unavailable)?;
    Ok(Link {
        connection,
        publisher,
    })
}

/// Declares the unrouted exchange and queue, then the bus exchange with
/// them as its alternate exchange — or, if the bus exchange already exists
/// without one (406 on the declare), checks that it exists and warns.
async fn declare_bus_exchange(
    connection: &Connection,
    config: &AmqpConfig,
) -> Result<(), TransportError> {
    let channel = connection.create_channel().await.map_err(unavailable)?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let unrouted = short(&config.unrouted_exchange)?;
    channel
        .exchange_declare(
            unrouted.clone(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(unavailable)?;
    let mut args = FieldTable::default();
    if let Some(max) = config.max_unrouted {
        args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(i64::try_from(max).unwrap_or(i64::MAX)),
        );
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("drop-head".into()),
        );
    }
    channel
        .queue_declare(
            unrouted.clone(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .map_err(unavailable)?;
    channel
        .queue_bind(
            unrouted.clone(),
            unrouted.clone(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(unavailable)?;
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(config.unrouted_exchange.as_str().into()),
    );
    let declared = channel
        .exchange_declare(short(&config.exchange)?, ExchangeKind::Topic, durable, args)
        .await;
    match declared {
        Ok(()) => {
            let _ = channel.close(200, "declared".into()).await;
            Ok(())
        }
        Err(e)
            if e.to_string().contains("PRECONDITION_FAILED") || e.to_string().contains("406") =>
        {
            tracing::warn!(
                exchange = %config.exchange,
                error = %e,
                "the bus exchange exists without alternate-exchange {}: events no group is bound to are dropped; \
                 apply it with a policy (see eventbus_core::transport::amqp)",
                config.unrouted_exchange
            );
            let channel = connection.create_channel().await.map_err(unavailable)?;
            channel
                .exchange_declare(
                    short(&config.exchange)?,
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        passive: true,
                        ..durable
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(unavailable)?;
            let _ = channel.close(200, "declared".into()).await;
            Ok(())
        }
        Err(e) => Err(unavailable(e)),
    }
}

/// Where a subscription consumes from and how its queue is bound.
#[derive(Clone)]
struct ConsumeSpec {
    queue: String,
    prefetch: u16,
    /// (exchange, routing key) bindings.
    binds: Vec<(String, String)>,
    /// The group whose dead-letter destination deliveries use.
    group: Arc<str>,
}

impl AmqpTransport {
    /// Connects to `uri` with default settings and declares the exchanges.
    pub async fn connect(uri: &str) -> Result<Self, TransportError> {
        Self::connect_with(AmqpConfig::new(uri)).await
    }

    /// Connects with `config` and declares the exchanges. Fails if the
    /// broker cannot be reached now; later outages are recovered from.
    pub async fn connect_with(config: AmqpConfig) -> Result<Self, TransportError> {
        let link = open_link(&config).await?;
        let exchange = short(&config.exchange)?;
        let dead_letter_exchange = short(&config.dead_letter_exchange)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                current: std::sync::RwLock::new(Some(Arc::new(link))),
                reconnect: tokio::sync::Mutex::new(()),
                exchange,
                dead_letter_exchange,
                closed: AtomicBool::new(false),
                groups: Default::default(),
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &AmqpConfig {
        &self.inner.config
    }

    /// Closes the connection and stops reconnecting (unacked deliveries
    /// return to their queues).
    ///
    /// A channel operation still in flight when the close starts (a
    /// partition balancer opening a channel just as its subscription is
    /// dropped, say) makes lapin report the late reply as an invalid channel
    /// state; the connection is closed all the same, so that is not an error
    /// of `close`. Errors that leave the outcome in doubt (I/O) are returned.
    pub async fn close(&self) -> Result<(), TransportError> {
        self.inner.closed.store(true, AtomicOrdering::SeqCst);
        let link = self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(link) = link else { return Ok(()) };
        match link.connection.close(200, "bye".into()).await {
            Ok(()) => Ok(()),
            Err(e) if closed_anyway(&e) => {
                tracing::debug!(error = %e, "AMQP connection closed while an operation was in flight");
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The current link, reconnecting if it broke.
    async fn link(&self) -> Result<Arc<Link>, TransportError> {
        if self.inner.closed.load(AtomicOrdering::SeqCst) {
            return Err(TransportError::Closed);
        }
        if let Some(link) = self.healthy_link() {
            return Ok(link);
        }
        let _reconnecting = self.inner.reconnect.lock().await;
        // Another task may have reconnected while this one waited.
        if let Some(link) = self.healthy_link() {
            return Ok(link);
        }
        if self.inner.closed.load(AtomicOrdering::SeqCst) {
            return Err(TransportError::Closed);
        }
        tracing::info!(uri = %redact(&self.inner.config.uri), "connecting to AMQP broker");
        let link = Arc::new(open_link(&self.inner.config).await?);
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(link.clone());
        Ok(link)
    }

    /// The current link if it is still usable (one read lock, one Arc clone).
    fn healthy_link(&self) -> Option<Arc<Link>> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|l| l.healthy())
            .cloned()
    }

    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if let Some(exp) = self.inner.config.queue_expires {
            args.insert(
                "x-expires".into(),
                AMQPValue::LongLongInt(exp.as_millis() as i64),
            );
        }
        args
    }

    async fn send(
        &self,
        exchange: &ShortString,
        routing_key: &str,
        envelope: &Envelope,
        mandatory: bool,
    ) -> Result<lapin::PublisherConfirm, TransportError> {
        let props = properties_for(envelope, self.inner.config.persistent)?;
        let link = self.link().await?;
        link.publisher
            .basic_publish(
                exchange.clone(),
                short(routing_key)?,
                BasicPublishOptions {
                    mandatory,
                    ..Default::default()
                },
                &envelope.payload,
                props,
            )
            .await
            .map_err(unavailable)
    }

    /// Opens a channel, declares and binds the queue, starts consuming.
    async fn open_consumer(
        &self,
        spec: &ConsumeSpec,
    ) -> Result<(Channel, lapin::Consumer), TransportError> {
        let link = self.link().await?;
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(unavailable)?;
        channel
            .queue_declare(
                short(&spec.queue)?,
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                self.queue_args(),
            )
            .await
            .map_err(unavailable)?;
        for (exchange, key) in &spec.binds {
            channel
                .queue_bind(
                    short(&spec.queue)?,
                    short(exchange)?,
                    short(key)?,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(unavailable)?;
        }
        channel
            .basic_qos(spec.prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(unavailable)?;
        let consumer = channel
            .basic_consume(
                short(&spec.queue)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
        Ok((channel, consumer))
    }

    async fn consume(&self, spec: ConsumeSpec) -> Result<Subscription, TransportError> {
        // The first consumer is opened here so that errors (access refused,
        // bad names) reach the caller; later re-opens happen in the pump.
        let first = self.open_consumer(&spec).await?;
        let (tx, rx) = mpsc::channel(usize::from(spec.prefetch.max(1)));
        tokio::spawn(pump(self.clone(), spec, first, tx));
        Ok(Subscription::new(ReceiverStream(rx)))
    }

    /// Wraps a broker delivery of `group`'s; `unsettled` is the group's
    /// counter (resolved once per subscription: no lock per delivery).
    fn delivery(
        &self,
        d: lapin::message::Delivery,
        group: &Arc<str>,
        unsettled: &Arc<std::sync::atomic::AtomicU64>,
        in_flight: Option<InFlightGuard>,
    ) -> Delivery {
        let envelope = envelope_from_amqp(d.routing_key.as_str(), &d.properties, &d.data);
        let unsettled = Unsettled::new(unsettled);
        Delivery::new(
            Arc::new(envelope),
            d.redelivered,
            Box::new(AmqpAcker {
                acker: d.acker,
                transport: self.clone(),
                group: group.clone(),
                _in_flight: in_flight,
                _unsettled: unsettled,
            }),
        )
    }

    /// The counters of `group` (made on first use).
    fn counts(&self, group: &str) -> GroupCounts {
        self.inner
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(group.to_owned())
            .or_default()
            .clone()
    }

    /// Declares a durable queue with the configured arguments plus `extra`.
    async fn declare_queue(
        &self,
        channel: &Channel,
        name: &str,
        extra: &[(&str, AMQPValue)],
    ) -> Result<lapin::Queue, TransportError> {
        let mut args = self.queue_args();
        for (k, v) in extra {
            args.insert((*k).into(), v.clone());
        }
        channel
            .queue_declare(
                short(name)?,
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .map_err(refused(format_args!("queue '{name}'")))
    }

    /// Declares `spec`'s topology on `channel` (see the module docs).
    async fn declare_on(
        &self,
        link: &Link,
        channel: &Channel,
        spec: &SubscriptionSpec,
    ) -> Result<(), TransportError> {
        let bind = |queue: String, exchange: String, key: String| async move {
            channel
                .queue_bind(
                    short(&queue)?,
                    short(&exchange)?,
                    short(&key)?,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(refused(format_args!(
                    "the binding of queue '{queue}' to exchange '{exchange}' ('{key}')"
                )))
        };
        let dlq = dead_letter_name(&spec.group);
        self.declare_queue(channel, &dlq, &[]).await?;
        bind(
            dlq,
            self.inner.config.dead_letter_exchange.clone(),
            spec.group.clone(),
        )
        .await?;
        let exchange = &self.inner.config.exchange;
        if !spec.is_partitioned() {
            self.declare_queue(channel, &spec.group, &[]).await?;
            for event in &spec.events {
                bind(spec.group.clone(), exchange.clone(), event.clone()).await?;
            }
            return Ok(());
        }
        let hash = partition_exchange(&spec.group);
        self.declare_hash_exchange(link, &hash).await?;
        for event in &spec.events {
            channel
                .exchange_bind(
                    short(&hash)?,
                    short(exchange)?,
                    short(event)?,
                    ExchangeBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(refused(format_args!(
                    "the binding of exchange '{hash}' to exchange '{exchange}' ('{event}')"
                )))?;
        }
        for i in 0..spec.partitions {
            let queue = partition_name(&spec.group, i);
            // Not `x-single-active-consumer`: RabbitMQ refuses exclusive
            // consumers on such queues ("in exclusive use"), and the
            // exclusive consumer is what makes a claim atomic.
            self.declare_queue(channel, &queue, &[]).await?;
            bind(queue, hash.clone(), PARTITION_POINTS.to_string()).await?;
        }
        self.declare_queue(channel, &members_name(&spec.group), &[])
            .await?;
        Ok(())
    }

    /// Declares the `x-consistent-hash` exchange `name` unless it exists.
    /// The active declare runs on a connection of its own: a broker without
    /// the exchange type answers with a connection error, which must not
    /// take the transport's connection down.
    async fn declare_hash_exchange(&self, link: &Link, name: &str) -> Result<(), TransportError> {
        let probe = link
            .connection
            .create_channel()
            .await
            .map_err(unavailable)?;
        let kind = ExchangeKind::Custom("x-consistent-hash".to_owned());
        let exists = probe
            .exchange_declare(
                short(name)?,
                kind.clone(),
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .is_ok();
        if exists {
            let _ = probe.close(200, "declared".into()).await;
            return Ok(());
        }
        let connection = Connection::connect(
            &self.inner.config.uri,
            ConnectionProperties::default().with_connection_name("eventbus-declare".into()),
        )
        .await
        .map_err(unavailable)?;
        let mut args = FieldTable::default();
        args.insert(
            "hash-header".into(),
            AMQPValue::LongString(codec::PARTITION_KEY.into()),
        );
        let exchange = short(name)?;
        let declared = async {
            let channel = connection.create_channel().await?;
            channel
                .exchange_declare(
                    exchange,
                    kind,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    args,
                )
                .await
        }
        .await;
        let _ = connection.close(200, "declared".into()).await;
        declared.map_err(|e| {
            let text = e.to_string();
            if text.contains("COMMAND_INVALID")
                || text.contains("503")
                || text.contains("exchange type")
            {
                TransportError::Other(
                    format!(
                        "x-consistent-hash exchange type not available: enable \
                         rabbitmq_consistent_hash_exchange (declaring {name}: {text})"
                    )
                    .into(),
                )
            } else {
                refused(format_args!("exchange '{name}'"))(e)
            }
        })
    }
}

/// Points on the `x-consistent-hash` ring per partition queue (the binding
/// key). On the built-in broker's ring, 1000 keys over 8 partitions put up
/// to 3.3× the fair share on one partition with 1 point each, ~1.3× with
/// 100 (RabbitMQ spreads evenly either way). Queues bound by an older
/// version with key `1` keep that binding too: one more point each.
pub const PARTITION_POINTS: u32 = 100;

/// The `x-consistent-hash` exchange of partitioned group `group`.
fn partition_exchange(group: &str) -> String {
    format!("{group}.partitions")
}

/// The membership queue of partitioned group `group`.
fn members_name(group: &str) -> String {
    format!("{group}.members")
}

/// Counts the deliveries of one partition handed out and not yet settled.
#[derive(Default)]
struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    settled: tokio::sync::Notify,
}

/// One delivery of a partition, counted in its [`InFlight`] until dropped.
struct InFlightGuard(Arc<InFlight>);

impl InFlightGuard {
    fn new(f: &Arc<InFlight>) -> Self {
        f.count.fetch_add(1, AtomicOrdering::SeqCst);
        Self(f.clone())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, AtomicOrdering::SeqCst) == 1 {
            self.0.settled.notify_one();
        }
    }
}

/// `amqp://user:***@host/…` for logs.
fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &uri[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &uri[..s + 3], &uri[at..])
        }
        _ => uri.to_owned(),
    }
}

/// Moves deliveries from the broker into the subscription's bounded queue,
/// re-opening the consumer (with backoff) when the channel or connection
/// breaks, until the subscription is dropped or the transport closed.
async fn pump(
    transport: AmqpTransport,
    spec: ConsumeSpec,
    first: (Channel, lapin::Consumer),
    tx: mpsc::Sender<Result<Delivery, TransportError>>,
) {
    let mut current = Some(first);
    let mut backoff = Duration::from_millis(100);
    let unsettled = transport.counts(&spec.group).unsettled;
    loop {
        let (channel, mut consumer) = match current.take() {
            Some(c) => c,
            None => match transport.open_consumer(&spec).await {
                Ok(c) => {
                    tracing::info!(queue = %spec.queue, "consumer re-opened");
                    backoff = Duration::from_millis(100);
                    c
                }
                Err(TransportError::Closed) => return,
                Err(e) => {
                    tracing::warn!(queue = %spec.queue, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot open consumer");
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            },
        };
        loop {
            tokio::select! {
                _ = tx.closed() => {
                    // Subscription dropped: closing the channel makes the
                    // broker requeue whatever is still unacked.
                    let _ = channel.close(200, "subscription dropped".into()).await;
                    return;
                }
                item = consumer.next() => match item {
                    Some(Ok(d)) => {
                        let delivery = transport.delivery(d, &spec.group, &unsettled, None);
                        if tx.send(Ok(delivery)).await.is_err() {
                            let _ = channel.close(200, "subscription dropped".into()).await;
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(queue = %spec.queue, error = %e, "consumer failed; reconnecting");
                        break;
                    }
                    None => {
                        tracing::warn!(queue = %spec.queue, "consumer ended; reconnecting");
                        break;
                    }
                }
            }
        }
        if transport.inner.closed.load(AtomicOrdering::SeqCst) {
            return;
        }
    }
}

/// A bounded receiver as a stream.
struct ReceiverStream(mpsc::Receiver<Result<Delivery, TransportError>>);

impl futures_util::Stream for ReceiverStream {
    type Item = Result<Delivery, TransportError>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

fn check(confirmation: Confirmation) -> Result<(), TransportError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        // A mandatory publish the broker could not route: returned, then confirmed.
        Confirmation::Ack(Some(returned)) => Err(TransportError::Rejected(format!(
            "unroutable: the broker returned the message ({} {})",
            returned.reply_code, returned.reply_text
        ))),
        Confirmation::Nack(_) => Err(TransportError::Rejected(
            "broker nacked the message".to_owned(),
        )),
        Confirmation::NotRequested => Err(TransportError::Other(
            "publisher confirms not enabled".into(),
        )),
    }
}

#[async_trait]
impl Publisher for AmqpTransport {
    async fn publish(&self, envelope: &Envelope) -> Result<(), TransportError> {
        let confirm = self
            .send(&self.inner.exchange, &envelope.name, envelope, false)
            .await?;
        check(confirm.await.map_err(unavailable)?)
    }

    async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), TransportError> {
        // Pipelined: send everything, then collect the confirms.
        let mut pending = Vec::with_capacity(envelopes.len());
        for e in envelopes {
            pending.push(self.send(&self.inner.exchange, &e.name, e, false).await?);
        }
        for confirm in pending {
            check(confirm.await.map_err(unavailable)?)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Subscriber for AmqpTransport {
    async fn declare(&self, spec: &SubscriptionSpec) -> Result<(), TransportError> {
        spec.validate()?;
        self.inner
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(spec.group.clone())
            .or_default()
            .partitions = if spec.is_partitioned() {
            spec.partitions
        } else {
            0
        };
        let link = self.link().await?;
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(unavailable)?;
        let declared = self.declare_on(&link, &channel, spec).await;
        if channel.status().connected() {
            let _ = channel.close(200, "declared".into()).await;
        }
        declared
    }

    /// Ready messages in the group's queue(s) (passive `queue.declare`)
    /// plus the deliveries this transport handed out and were not settled.
    /// A message in flight from the broker to this client is counted by
    /// neither for a moment; `RunningBus::wait_idle` therefore wants zero
    /// twice in a row.
    async fn pending(&self, group: &str) -> Result<Option<u64>, TransportError> {
        let counts = self.counts(group);
        let queues: Vec<String> = if counts.partitions > 0 {
            (0..counts.partitions)
                .map(|i| partition_name(group, i))
                .collect()
        } else {
            vec![group.to_owned()]
        };
        let link = self.link().await?;
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(unavailable)?;
        let mut ready = 0u64;
        for q in queues {
            let declared = channel
                .queue_declare(
                    short(&q)?,
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(unavailable)?;
            ready += u64::from(declared.message_count());
        }
        let _ = channel.close(200, "counted".into()).await;
        Ok(Some(ready + counts.unsettled.load(AtomicOrdering::SeqCst)))
    }

    async fn subscribe(&self, spec: SubscriptionSpec) -> Result<Subscription, TransportError> {
        self.declare(&spec).await?;
        if spec.is_partitioned() {
            return Ok(partitions::subscribe(self.clone(), spec));
        }
        let exchange = &self.inner.config.exchange;
        self.consume(ConsumeSpec {
            queue: spec.group.clone(),
            prefetch: spec.prefetch,
            binds: spec
                .events
                .iter()
                .map(|e| (exchange.clone(), e.clone()))
                .collect(),
            group: Arc::from(spec.group.as_str()),
        })
        .await
    }

    async fn subscribe_dead_letters(
        &self,
        group: &str,
        prefetch: u16,
    ) -> Result<Subscription, TransportError> {
        self.consume(ConsumeSpec {
            queue: dead_letter_name(group),
            prefetch,
            binds: vec![(
                self.inner.config.dead_letter_exchange.clone(),
                group.to_owned(),
            )],
            group: Arc::from(group),
        })
        .await
    }
}

struct AmqpAcker {
    acker: lapin::Acker,
    transport: AmqpTransport,
    group: Arc<str>,
    /// For a partition's delivery: counted until settled (or dropped).
    _in_flight: Option<InFlightGuard>,
    /// Counted for [`Subscriber::pending`] until settled (or dropped).
    _unsettled: Unsettled,
}

fn settled(r: Result<bool, lapin::Error>) -> Result<(), TransportError> {
    match r {
        Ok(true) => Ok(()),
        Ok(false) => Err(TransportError::Settled),
        Err(e) => Err(unavailable(e)),
    }
}

impl Acker for AmqpAcker {
    fn ack(self: Box<Self>) -> TransportFuture<'static> {
        TransportFuture::new(
            async move { settled(self.acker.ack(BasicAckOptions::default()).await) },
        )
    }

    fn nack(self: Box<Self>, requeue: bool) -> TransportFuture<'static> {
        TransportFuture::new(async move {
            settled(
                self.acker
                    .nack(BasicNackOptions {
                        requeue,
                        multiple: false,
                    })
                    .await,
            )
        })
    }

    fn dead_letter(self: Box<Self>, envelope: Envelope) -> TransportFuture<'static> {
        TransportFuture::new(async move {
            let sent = async {
                let confirm = self
                    .transport
                    .send(
                        &self.transport.inner.dead_letter_exchange,
                        &self.group,
                        &envelope,
                        true,
                    )
                    .await?;
                check(confirm.await.map_err(unavailable)?)
            }
            .await;
            match sent {
                // Stored in the dead-letter queue: now drop the original.
                Ok(()) => settled(self.acker.ack(BasicAckOptions::default()).await),
                // Not stored: give the original back rather than lose it.
                Err(e) => {
                    let _ = self
                        .acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            multiple: false,
                        })
                        .await;
                    Err(e)
                }
            }
        })
    }
}
