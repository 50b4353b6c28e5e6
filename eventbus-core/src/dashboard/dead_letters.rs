//! Browsing and settling a group's dead letters on the transport: list
//! them (with the failure headers), send one back to its group, or discard
//! it. Implemented for the memory and AMQP transports.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::FutureExt;
use uuid::Uuid;

use crate::transport::{dead_letter_name, Delivery, Subscriber, Subscription};
use crate::{header, Envelope, MemoryTransport, TransportError};

/// Dead letters per group, as the dashboard manages them.
#[async_trait]
pub trait DeadLetterAdmin: Send + Sync + 'static {
    /// Dead letters waiting in `group`'s dead-letter destination.
    async fn count(&self, group: &str) -> Result<u64, TransportError>;
    /// Up to `limit` of them, oldest first (they stay where they are).
    async fn list(&self, group: &str, limit: usize) -> Result<Vec<Envelope>, TransportError>;
    /// Sends dead letter `id` back to `group` alone (failure headers
    /// removed) and removes it; `false` if there is no such dead letter.
    async fn requeue(&self, group: &str, id: Uuid) -> Result<bool, TransportError>;
    /// Removes dead letter `id` for good; `false` if there is none.
    async fn discard(&self, group: &str, id: Uuid) -> Result<bool, TransportError>;
}

/// How many dead letters a requeue or discard looks through for its id.
pub const MAX_SCAN: usize = 10_000;

/// `envelope` without the failure headers, to be handled again.
pub fn revived(envelope: &Envelope) -> Envelope {
    let mut e = envelope.clone();
    for h in [
        header::DEAD_LETTER_ERROR,
        header::DEAD_LETTER_REASON,
        header::DEAD_LETTER_ATTEMPTS,
        header::DEAD_LETTER_GROUP,
    ] {
        e.headers.remove(h);
    }
    e
}

/// The dead letters a memory queue has ready, taken without waiting
/// (the memory transport hands out what is ready at once), and the
/// subscription they came through: keep it until they are settled.
async fn take_ready(
    t: &MemoryTransport,
    group: &str,
    limit: usize,
) -> Result<(Subscription, Vec<Delivery>), TransportError> {
    let limit = limit.clamp(1, usize::from(u16::MAX));
    let mut sub = t
        .subscribe_dead_letters(group, u16::try_from(limit).unwrap_or(u16::MAX))
        .await?;
    let mut out = Vec::new();
    while out.len() < limit {
        match sub.next().now_or_never() {
            Some(Some(d)) => out.push(d?),
            _ => break,
        }
    }
    Ok((sub, out))
}

/// Returns `deliveries` to the queue at their places.
async fn put_back(deliveries: Vec<Delivery>) -> Result<(), TransportError> {
    for d in deliveries {
        d.nack(true).await?;
    }
    Ok(())
}

#[async_trait]
impl DeadLetterAdmin for MemoryTransport {
    async fn count(&self, group: &str) -> Result<u64, TransportError> {
        Ok(self
            .queue_stats(&dead_letter_name(group))
            .map(|s| (s.ready + s.unacked) as u64)
            .unwrap_or(0))
    }

    async fn list(&self, group: &str, limit: usize) -> Result<Vec<Envelope>, TransportError> {
        let (_sub, taken) = take_ready(self, group, limit).await?;
        let envelopes = taken.iter().map(|d| (*d.envelope).clone()).collect();
        put_back(taken).await?;
        Ok(envelopes)
    }

    async fn requeue(&self, group: &str, id: Uuid) -> Result<bool, TransportError> {
        let (_sub, mut taken) = take_ready(self, group, MAX_SCAN).await?;
        let Some(i) = taken.iter().position(|d| d.envelope.id == id) else {
            put_back(taken).await?;
            return Ok(false);
        };
        let found = taken.remove(i);
        let sent = self.requeue_to_group(group, revived(&found.envelope));
        match sent {
            Ok(()) => found.ack().await?,
            Err(_) => found.nack(true).await?,
        }
        put_back(taken).await?;
        sent.map(|()| true)
    }

    async fn discard(&self, group: &str, id: Uuid) -> Result<bool, TransportError> {
        let (_sub, mut taken) = take_ready(self, group, MAX_SCAN).await?;
        let found = taken.iter().position(|d| d.envelope.id == id);
        if let Some(i) = found {
            taken.remove(i).ack().await?;
        }
        put_back(taken).await?;
        Ok(found.is_some())
    }
}

#[cfg(feature = "amqp")]
mod amqp {
    use super::*;
    use crate::transport::amqp::{envelope_from_amqp, properties_for, AmqpTransport};
    use lapin::options::{
        BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
        QueueDeclareOptions,
    };
    use lapin::types::{FieldTable, ShortString};
    use lapin::{Channel, Connection, ConnectionProperties};

    fn unavailable(e: lapin::Error) -> TransportError {
        TransportError::Unavailable(Box::new(e))
    }

    fn short(s: &str) -> Result<ShortString, TransportError> {
        ShortString::try_new(s.to_owned())
            .map_err(|_| TransportError::Rejected(format!("name longer than 255 bytes: {s:.40}…")))
    }

    /// A connection of its own for one admin operation (rare; the bus's
    /// connection stays untouched). Closing it returns every message got
    /// and not acked to its queue, at its place.
    async fn open(t: &AmqpTransport) -> Result<(Connection, Channel), TransportError> {
        let connection = Connection::connect(
            &t.config().uri,
            ConnectionProperties::default().with_connection_name("eventbus-dashboard".into()),
        )
        .await
        .map_err(unavailable)?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        Ok((connection, channel))
    }

    async fn close(connection: Connection) {
        let _ = connection.close(200, "done".into()).await;
    }

    /// `basic.get`s dead letters of `group` (unacked) until `stop` says so
    /// or `limit` were read; returns their envelopes and delivery tags.
    async fn get_until(
        channel: &Channel,
        group: &str,
        limit: usize,
        mut stop: impl FnMut(&Envelope) -> bool,
    ) -> Result<Vec<(Envelope, u64)>, TransportError> {
        let queue = short(&dead_letter_name(group))?;
        let mut out = Vec::new();
        while out.len() < limit {
            let got = channel
                .basic_get(queue.clone(), BasicGetOptions { no_ack: false })
                .await
                .map_err(unavailable)?;
            let Some(m) = got else { break };
            let d = m.delivery;
            let env = envelope_from_amqp(d.routing_key.as_str(), &d.properties, &d.data);
            let done = stop(&env);
            out.push((env, d.delivery_tag));
            if done {
                break;
            }
        }
        Ok(out)
    }

    #[async_trait]
    impl DeadLetterAdmin for AmqpTransport {
        async fn count(&self, group: &str) -> Result<u64, TransportError> {
            let (connection, channel) = open(self).await?;
            let declared = channel
                .queue_declare(
                    short(&dead_letter_name(group))?,
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            close(connection).await;
            match declared {
                Ok(q) => Ok(u64::from(q.message_count())),
                // 404: no such queue, so no dead letters.
                Err(e) if e.to_string().contains("NOT_FOUND") || e.to_string().contains("404") => {
                    Ok(0)
                }
                Err(e) => Err(unavailable(e)),
            }
        }

        async fn list(&self, group: &str, limit: usize) -> Result<Vec<Envelope>, TransportError> {
            let (connection, channel) = open(self).await?;
            let got = get_until(&channel, group, limit.max(1), |_| false).await;
            close(connection).await;
            Ok(got?.into_iter().map(|(e, _)| e).collect())
        }

        async fn requeue(&self, group: &str, id: Uuid) -> Result<bool, TransportError> {
            let (connection, channel) = open(self).await?;
            let result = async {
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(unavailable)?;
                let got = get_until(&channel, group, MAX_SCAN, |e| e.id == id).await?;
                let Some((env, tag)) = got.into_iter().find(|(e, _)| e.id == id) else {
                    return Ok(false);
                };
                let env = revived(&env);
                // To the group's queue alone, through the default exchange.
                let confirm = channel
                    .basic_publish(
                        "".into(),
                        short(group)?,
                        // Returned (not lost) if the group has no such queue.
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &env.payload,
                        properties_for(&env, true)?,
                    )
                    .await
                    .map_err(unavailable)?
                    .await
                    .map_err(unavailable)?;
                if !matches!(confirm, lapin::Confirmation::Ack(None)) {
                    return Err(TransportError::Rejected(format!(
                        "the broker refused or could not route the requeue to queue {group:.80}"
                    )));
                }
                channel
                    .basic_ack(tag, BasicAckOptions::default())
                    .await
                    .map_err(unavailable)?;
                Ok(true)
            }
            .await;
            close(connection).await;
            result
        }

        async fn discard(&self, group: &str, id: Uuid) -> Result<bool, TransportError> {
            let (connection, channel) = open(self).await?;
            let result = async {
                let got = get_until(&channel, group, MAX_SCAN, |e| e.id == id).await?;
                let Some((_, tag)) = got.into_iter().find(|(e, _)| e.id == id) else {
                    return Ok(false);
                };
                channel
                    .basic_ack(tag, BasicAckOptions::default())
                    .await
                    .map_err(unavailable)?;
                Ok(true)
            }
            .await;
            close(connection).await;
            result
        }
    }
}

/// A shared admin (what the dashboard holds).
pub type SharedDeadLetterAdmin = Arc<dyn DeadLetterAdmin>;
