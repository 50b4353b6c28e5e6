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
//!   queue `<group>.dead-letter`.
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

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};

use super::{
    dead_letter_name, Acker, Delivery, Publisher, Subscriber, Subscription, SubscriptionSpec,
    TransportError,
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
        }
    }
}

/// The AMQP transport: one connection, one confirmed publishing channel,
/// one channel per subscription.
#[derive(Clone)]
pub struct AmqpTransport {
    inner: Arc<Inner>,
}

struct Inner {
    config: AmqpConfig,
    connection: Connection,
    publisher: Channel,
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

fn short(s: &str) -> Result<ShortString, TransportError> {
    ShortString::try_new(s.to_owned())
        .map_err(|_| TransportError::Rejected(format!("name longer than 255 bytes: {s:.40}…")))
}

impl AmqpTransport {
    /// Connects to `uri` with default settings and declares the exchanges.
    pub async fn connect(uri: &str) -> Result<Self, TransportError> {
        Self::connect_with(AmqpConfig::new(uri)).await
    }

    /// Connects with `config` and declares the exchanges.
    pub async fn connect_with(config: AmqpConfig) -> Result<Self, TransportError> {
        let connection = Connection::connect(
            &config.uri,
            ConnectionProperties::default().with_connection_name("eventbus".into()),
        )
        .await
        .map_err(unavailable)?;
        let publisher = connection.create_channel().await.map_err(unavailable)?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(unavailable)?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        publisher
            .exchange_declare(
                short(&config.exchange)?,
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
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
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                connection,
                publisher,
            }),
        })
    }

    /// Closes the connection (unacked deliveries return to their queues).
    pub async fn close(&self) -> Result<(), TransportError> {
        self.inner
            .connection
            .close(200, "bye".into())
            .await
            .map_err(unavailable)
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
        exchange: &str,
        routing_key: &str,
        envelope: &Envelope,
    ) -> Result<lapin::PublisherConfirm, TransportError> {
        let props = properties_for(envelope, self.inner.config.persistent)?;
        self.inner
            .publisher
            .basic_publish(
                short(exchange)?,
                short(routing_key)?,
                BasicPublishOptions::default(),
                &envelope.payload,
                props,
            )
            .await
            .map_err(unavailable)
    }

    async fn consume(
        &self,
        queue: &str,
        prefetch: u16,
        bind: impl FnOnce(Channel) -> futures_util::future::BoxFuture<'static, Result<(), lapin::Error>>,
    ) -> Result<Subscription, TransportError> {
        let channel = self
            .inner
            .connection
            .create_channel()
            .await
            .map_err(unavailable)?;
        channel
            .queue_declare(
                short(queue)?,
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                self.queue_args(),
            )
            .await
            .map_err(unavailable)?;
        bind(channel.clone()).await.map_err(unavailable)?;
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(unavailable)?;
        let consumer = channel
            .basic_consume(
                short(queue)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
        let transport = self.clone();
        let group: Arc<str> = Arc::from(
            queue
                .strip_suffix(".dead-letter")
                .filter(|_| queue.ends_with(".dead-letter"))
                .unwrap_or(queue),
        );
        let guard = ChannelGuard(channel);
        let stream = consumer.map(move |item| {
            let _keep = &guard;
            match item {
                Ok(d) => {
                    let envelope = envelope_from_amqp(d.routing_key.as_str(), &d.properties, &d.data);
                    Ok(Delivery::new(
                        Arc::new(envelope),
                        d.redelivered,
                        Box::new(AmqpAcker {
                            acker: d.acker,
                            transport: transport.clone(),
                            group: group.clone(),
                        }),
                    ))
                }
                Err(e) => Err(unavailable(e)),
            }
        });
        Ok(Subscription::new(stream))
    }
}

/// Closes a subscription's channel when the subscription is dropped, so the
/// broker requeues its unacked deliveries.
struct ChannelGuard(Channel);

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        let channel = self.0.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = channel.close(200, "subscription dropped".into()).await;
            });
        }
    }
}

fn check(confirmation: Confirmation) -> Result<(), TransportError> {
    match confirmation {
        Confirmation::Ack(_) => Ok(()),
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
            .send(&self.inner.config.exchange, &envelope.name, envelope)
            .await?;
        check(confirm.await.map_err(unavailable)?)
    }

    async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), TransportError> {
        // Pipelined: send everything, then collect the confirms.
        let mut pending = Vec::with_capacity(envelopes.len());
        for e in envelopes {
            pending.push(self.send(&self.inner.config.exchange, &e.name, e).await?);
        }
        for confirm in pending {
            check(confirm.await.map_err(unavailable)?)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Subscriber for AmqpTransport {
    async fn subscribe(&self, spec: SubscriptionSpec) -> Result<Subscription, TransportError> {
        let exchange = short(&self.inner.config.exchange)?;
        let queue = short(&spec.group)?;
        let keys = spec
            .events
            .iter()
            .map(|e| short(e))
            .collect::<Result<Vec<_>, _>>()?;
        self.consume(&spec.group, spec.prefetch, move |ch| {
            Box::pin(async move {
                for key in keys {
                    ch.queue_bind(
                        queue.clone(),
                        exchange.clone(),
                        key,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn subscribe_dead_letters(
        &self,
        group: &str,
        prefetch: u16,
    ) -> Result<Subscription, TransportError> {
        let dlq = dead_letter_name(group);
        let exchange = short(&self.inner.config.dead_letter_exchange)?;
        let queue = short(&dlq)?;
        let key = short(group)?;
        self.consume(&dlq, prefetch, move |ch| {
            Box::pin(async move {
                ch.queue_bind(
                    queue,
                    exchange,
                    key,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
            })
        })
        .await
    }
}

struct AmqpAcker {
    acker: lapin::Acker,
    transport: AmqpTransport,
    group: Arc<str>,
}

fn settled(r: Result<bool, lapin::Error>) -> Result<(), TransportError> {
    match r {
        Ok(true) => Ok(()),
        Ok(false) => Err(TransportError::Settled),
        Err(e) => Err(unavailable(e)),
    }
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(self: Box<Self>) -> Result<(), TransportError> {
        settled(self.acker.ack(BasicAckOptions::default()).await)
    }

    async fn nack(self: Box<Self>, requeue: bool) -> Result<(), TransportError> {
        settled(
            self.acker
                .nack(BasicNackOptions {
                    requeue,
                    multiple: false,
                })
                .await,
        )
    }

    async fn dead_letter(self: Box<Self>, envelope: Envelope) -> Result<(), TransportError> {
        let sent = async {
            let confirm = self
                .transport
                .send(
                    &self.transport.inner.config.dead_letter_exchange,
                    &self.group,
                    &envelope,
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
    }
}
