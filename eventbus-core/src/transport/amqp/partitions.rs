//! Partitioned groups on AMQP: the instances of a group share its partition
//! queues (see the [module docs](super) for the topology and the protocol).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::{
    members_name, partition_name, short, unavailable, AmqpTransport, InFlight, InFlightGuard,
    ReceiverStream,
};
use crate::transport::{Delivery, Subscription, SubscriptionSpec, TransportError};

type Tx = mpsc::Sender<Result<Delivery, TransportError>>;

/// Starts the balancer of a new member of `spec`'s (declared) group.
pub(super) fn subscribe(transport: AmqpTransport, spec: SubscriptionSpec) -> Subscription {
    let (tx, rx) = mpsc::channel(usize::from(spec.prefetch.max(1)));
    let (owned_tx, owned_rx) = watch::channel(Vec::new());
    tokio::spawn(balance(transport, spec, tx, owned_tx));
    Subscription::new(ReceiverStream(rx)).with_partitions(owned_rx)
}

/// A partition this member consumes.
struct Claimed {
    /// Sent to release it (dropped: released already).
    release: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// The balancer: joins the group (a consumer on its membership queue) and
/// every round claims free partitions up to `ceil(P/N)` and releases the
/// ones above it, until the subscription is dropped.
async fn balance(
    transport: AmqpTransport,
    spec: SubscriptionSpec,
    tx: Tx,
    owned: watch::Sender<Vec<u16>>,
) {
    let group: Arc<str> = Arc::from(spec.group.as_str());
    let mut claimed: BTreeMap<u16, Claimed> = BTreeMap::new();
    // The membership consumer's channel (kept open: it is what counts us).
    let mut member: Option<(Channel, lapin::Consumer)> = None;
    let mut interval = tokio::time::interval(transport.inner.config.rebalance_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tx.closed() => break,
            _ = interval.tick() => {}
        }
        if transport
            .inner
            .closed
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            break;
        }
        claimed.retain(|_, c| !c.task.is_finished());
        if let Err(e) = round(&transport, &spec, &group, &tx, &mut member, &mut claimed).await {
            tracing::warn!(group = %spec.group, error = %e, "partition rebalance failed; retrying");
            member = None;
        }
        claimed.retain(|_, c| !c.task.is_finished());
        let now: Vec<u16> = claimed.keys().copied().collect();
        owned.send_if_modified(|v| {
            let changed = *v != now;
            *v = now;
            changed
        });
    }
    // Subscription dropped: the partition tasks see it too and close their
    // channels (the broker requeues what they hold); wait for them so that
    // the partitions are free once this task ends.
    for (_, c) in claimed {
        let _ = c.task.await;
    }
    if let Some((channel, _)) = member {
        let _ = channel.close(200, "subscription dropped".into()).await;
    }
    owned.send_replace(Vec::new());
}

/// One balancing round.
async fn round(
    transport: &AmqpTransport,
    spec: &SubscriptionSpec,
    group: &Arc<str>,
    tx: &Tx,
    member: &mut Option<(Channel, lapin::Consumer)>,
    claimed: &mut BTreeMap<u16, Claimed>,
) -> Result<(), TransportError> {
    let link = transport.link().await?;
    if !member.as_ref().is_some_and(|(c, _)| c.status().connected()) {
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(unavailable)?;
        let consumer = channel
            .basic_consume(
                short(&members_name(&spec.group))?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
        *member = Some((channel, consumer));
    }
    let mut probe = link
        .connection
        .create_channel()
        .await
        .map_err(unavailable)?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let members = probe
        .queue_declare(
            short(&members_name(&spec.group))?,
            passive,
            FieldTable::default(),
        )
        .await
        .map_err(unavailable)?
        .consumer_count()
        .max(1);
    let p = spec.partitions;
    let share = usize::from(p).div_ceil(members as usize);
    let mut active: Vec<u16> = claimed
        .iter()
        .filter(|(_, c)| c.release.is_some())
        .map(|(i, _)| *i)
        .collect();
    // Above the share: release the highest partitions.
    while active.len() > share {
        let i = active.pop().expect("non-empty");
        if let Some(release) = claimed.get_mut(&i).and_then(|c| c.release.take()) {
            tracing::debug!(group = %spec.group, partition = i, "releasing partition");
            let _ = release.send(());
        }
    }
    // Below it: claim free partitions, starting anywhere (fewer collisions
    // between instances claiming at the same time).
    let start = fastrand::u16(0..p);
    for k in 0..p {
        if claimed.len() >= share {
            break;
        }
        let i = (start + k) % p;
        if claimed.contains_key(&i) {
            continue;
        }
        let queue = partition_name(&spec.group, i);
        if !probe.status().connected() {
            probe = link
                .connection
                .create_channel()
                .await
                .map_err(unavailable)?;
        }
        let free = match probe
            .queue_declare(short(&queue)?, passive, FieldTable::default())
            .await
        {
            Ok(q) => q.consumer_count() == 0,
            Err(e) => {
                tracing::warn!(queue = %queue, error = %e, "cannot inspect partition");
                continue;
            }
        };
        if !free {
            continue;
        }
        match claim(&link.connection, spec, &queue).await {
            Ok((channel, consumer)) => {
                tracing::debug!(group = %spec.group, partition = i, "claimed partition");
                let (release, released) = oneshot::channel();
                let task = tokio::spawn(run_partition(
                    transport.clone(),
                    group.clone(),
                    queue,
                    channel,
                    consumer,
                    tx.clone(),
                    released,
                ));
                claimed.insert(
                    i,
                    Claimed {
                        release: Some(release),
                        task,
                    },
                );
            }
            // Another instance was faster (403 on the exclusive consume).
            Err(e) => tracing::debug!(queue = %queue, error = %e, "partition not claimed"),
        }
    }
    if probe.status().connected() {
        let _ = probe.close(200, "probed".into()).await;
    }
    Ok(())
}

/// Opens a channel and an exclusive consumer on partition queue `queue`.
async fn claim(
    connection: &lapin::Connection,
    spec: &SubscriptionSpec,
    queue: &str,
) -> Result<(Channel, lapin::Consumer), TransportError> {
    let channel = connection.create_channel().await.map_err(unavailable)?;
    channel
        .basic_qos(spec.prefetch.max(1), BasicQosOptions::default())
        .await
        .map_err(unavailable)?;
    let consumer = channel
        .basic_consume(
            short(queue)?,
            "".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(unavailable)?;
    Ok((channel, consumer))
}

/// Forwards one partition's deliveries until it is released, its channel
/// breaks or the subscription is dropped. On release it stops forwarding,
/// waits until every forwarded delivery is settled, then closes the
/// channel: the broker requeues what was prefetched and not forwarded, in
/// place, and only now can another instance claim the partition.
async fn run_partition(
    transport: AmqpTransport,
    group: Arc<str>,
    queue: String,
    channel: Channel,
    mut consumer: lapin::Consumer,
    tx: Tx,
    mut release: oneshot::Receiver<()>,
) {
    let in_flight = Arc::new(InFlight::default());
    let unsettled = transport.counts(&group).unsettled;
    loop {
        tokio::select! {
            _ = tx.closed() => {
                let _ = channel.close(200, "subscription dropped".into()).await;
                return;
            }
            _ = &mut release => break,
            item = consumer.next() => match item {
                Some(Ok(d)) => {
                    let guard = InFlightGuard::new(&in_flight);
                    let delivery = transport.delivery(d, &group, &unsettled, Some(guard));
                    if tx.send(Ok(delivery)).await.is_err() {
                        let _ = channel.close(200, "subscription dropped".into()).await;
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(queue = %queue, error = %e, "partition consumer failed");
                    return;
                }
                None => {
                    tracing::warn!(queue = %queue, "partition consumer ended");
                    return;
                }
            }
        }
    }
    // Released: keep the consumer (it keeps the partition ours) until what
    // was handed out is settled.
    while in_flight.count.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        tokio::select! {
            _ = in_flight.settled.notified() => {}
            _ = tx.closed() => break,
        }
    }
    let _ = channel.close(200, "partition released".into()).await;
    tracing::debug!(queue = %queue, "partition released");
}
