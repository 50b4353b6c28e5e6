//! One task per client socket: reads frames, runs the handshake, routes frames to channels,
//! writes replies and deliveries, keeps heartbeats, and closes with the right reply code.

pub mod handshake;
pub mod outbox;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::protocol::{basic, channel, connection, AMQPClass};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;

use self::handshake::{client_capability, negotiate, ConnectionStep};
use self::outbox::Outbox;
use crate::auth::{sasl, Permission};
use crate::channel::{Channel, ChannelState, Session};
use crate::config::Config;
use crate::error::AmqpError;
use crate::model::stats::ConnInfo;
use crate::model::{ConnHandle, Core, Notify};
use crate::protocol::constants::{ReplyCode, FRAME_MIN_SIZE, PROTOCOL_HEADER};
use crate::protocol::frame::{self, DecodeError, Frame};
use crate::protocol::method::ids;
use crate::storage::{StoreError, SyncFuture};

/// Test-only fault injection (feature `fault-injection`, enabled by the crate's own tests).
#[cfg(feature = "fault-injection")]
pub mod fault {
    use amq_protocol::protocol::{queue, AMQPClass};

    use crate::protocol::frame::Frame;

    /// Declaring a queue of this name panics the connection task, as a bug would: the tests
    /// check that the connection is still torn down.
    pub const PANIC_QUEUE: &str = "eventbus-broker.fault-injection.panic";

    pub(super) fn check(f: &Frame) {
        if let Frame::Method(_, m) = f {
            if let AMQPClass::Queue(queue::AMQPMethod::Declare(d)) = &**m {
                if d.queue.as_str() == PANIC_QUEUE {
                    panic!("fault injection: connection task panics");
                }
            }
        }
    }
}

/// Why the connection loop ended.
#[derive(Debug)]
enum Exit {
    /// Peer went away or I/O failed.
    Gone,
    /// We sent connection.close and got close-ok (or gave up waiting).
    Closed,
}

/// Per-connection state.
#[derive(Debug)]
pub struct Connection {
    core: Arc<Core>,
    config: Arc<Config>,
    id: u64,
    peer: SocketAddr,
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    inbuf: BytesMut,
    out: Outbox,
    step: ConnectionStep,
    frame_max: u32,
    channel_max: u16,
    heartbeat: u16,
    user: String,
    vhost: Option<String>,
    perm: Option<Permission>,
    cancel_notify: bool,
    /// Client understands connection.blocked/unblocked.
    blocked_notify: bool,
    /// The connection has published content (subject to the memory watermark).
    publisher: bool,
    /// Reads are paused because of the memory watermark.
    blocked: bool,
    channels: HashMap<u16, Channel>,
    notify_tx: UnboundedSender<Notify>,
    notify_rx: UnboundedReceiver<Notify>,
    last_recv: Instant,
    kick: HashSet<Arc<str>>,
    /// Replies of the current input batch that must wait for the message store to sync:
    /// publisher confirms and `tx.commit-ok` (durable stores only).
    deferred: Vec<(u16, AMQPClass)>,
    /// Earlier batches' deferred replies, each behind its store sync, oldest first. The
    /// connection keeps reading and delivering while they wait, so one fsync overlaps the
    /// next batch's work instead of stalling the connection.
    syncing: VecDeque<PendingSync>,
    /// A `tx.commit-ok` was deferred: input processing stops until it is durable, so that no
    /// later reply on its channel overtakes it.
    barrier: bool,
    /// Client properties from `connection.start-ok` (strings only), for the management API.
    client_props: std::collections::BTreeMap<String, String>,
    /// Shared with the core's connection table once open (management API counters).
    info: Option<Arc<ConnInfo>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // a guard, not a happy path: a panic or an abort of the task still releases the
        // connection slot, its exclusive queues and its unacked messages. A panic inside the
        // teardown itself (while unwinding another one) must not abort the process.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.teardown()));
        if r.is_err() {
            tracing::error!(conn = self.id, "connection teardown panicked");
        }
    }
}

/// Replies waiting for one store sync.
struct PendingSync {
    sync: SyncFuture,
    /// When the sync was requested (store-sync latency metric).
    since: Instant,
    replies: Vec<(u16, AMQPClass)>,
}

impl std::fmt::Debug for PendingSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSync")
            .field("replies", &self.replies.len())
            .finish_non_exhaustive()
    }
}

/// The oldest pending sync; never resolves while there is none.
fn next_sync(
    q: &mut VecDeque<PendingSync>,
) -> impl std::future::Future<Output = Result<(), StoreError>> + '_ {
    std::future::poll_fn(move |cx| match q.front_mut() {
        Some(p) => p.sync.as_mut().poll(cx),
        None => std::task::Poll::Pending,
    })
}

impl Connection {
    /// Serve one client socket until it closes.
    pub async fn serve(
        stream: TcpStream,
        peer: SocketAddr,
        core: Arc<Core>,
        config: Arc<Config>,
        shutdown: watch::Receiver<bool>,
    ) {
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        let (notify_tx, notify_rx) = unbounded_channel();
        let id = core.next_connection_id();
        let mut conn = Connection {
            core,
            frame_max: config.frame_max,
            channel_max: config.channel_max,
            heartbeat: config.heartbeat,
            config,
            id,
            peer,
            reader,
            writer,
            inbuf: BytesMut::with_capacity(64 * 1024),
            out: Outbox {
                buf: Vec::with_capacity(64 * 1024),
                frame_max: FRAME_MIN_SIZE,
            },
            step: ConnectionStep::ProtocolHeader,
            user: String::new(),
            vhost: None,
            perm: None,
            cancel_notify: false,
            blocked_notify: false,
            publisher: false,
            blocked: false,
            channels: HashMap::new(),
            notify_tx,
            notify_rx,
            last_recv: Instant::now(),
            kick: HashSet::new(),
            deferred: Vec::new(),
            syncing: VecDeque::new(),
            barrier: false,
            client_props: Default::default(),
            info: None,
        };
        tracing::debug!(conn = id, %peer, "accepted connection");
        let exit = conn.run(shutdown).await;
        tracing::debug!(conn = id, ?exit, "connection finished");
        // `conn` drops here: teardown runs in `Drop`, as it does when the task panics or is
        // aborted
    }

    /// Release everything the connection holds in the broker: its consumers are detached,
    /// its unacked messages and the deliveries routed to it but not yet written go back to
    /// their queues (in their original order, before any other consumer is served), its
    /// exclusive queues are deleted and it no longer counts toward `max_connections`.
    /// Idempotent; runs from [`Drop`] whatever ends the task (return, panic or abort).
    fn teardown(&mut self) {
        let Some(vhost) = self.vhost.take() else {
            return;
        };
        let mut consumers = Vec::new();
        let mut requeue = Vec::new();
        for ch in self.channels.values_mut() {
            ch.release(&mut consumers, &mut requeue);
        }
        self.channels.clear();
        // messages already routed to us but not yet written go back to their queues
        self.notify_rx.close();
        while let Ok(n) = self.notify_rx.try_recv() {
            if let Notify::Deliver(d) = n {
                d.credit.release(1);
                requeue.push((d.queue, d.msg, !d.no_ack));
            }
        }
        // first its slot and exclusive queues (messages for those are gone with them), then
        // the requeues, which may hand messages to the next consumers
        self.core.connection_closed(self.id, Some(&vhost));
        let id = self.id;
        self.core
            .with_vhost(&vhost, |vh, ctx| vh.release(id, &consumers, requeue, ctx));
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.buf.is_empty() {
            self.writer.write_all(&self.out.buf).await?;
            if let Some(i) = &self.info {
                crate::model::stats::bump(&i.send_oct, self.out.buf.len() as u64);
            }
            self.out.buf.clear();
            if self.out.buf.capacity() > 4 * 1024 * 1024 {
                self.out.buf.shrink_to(64 * 1024);
            }
        }
        Ok(())
    }

    async fn run(&mut self, mut shutdown: watch::Receiver<bool>) -> Exit {
        // --- protocol header (with handshake timeout) ---
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.config.handshake_timeout_secs);
        let hs = tokio::time::timeout_at(deadline, self.read_protocol_header()).await;
        match hs {
            Ok(Ok(true)) => {}
            _ => return Exit::Gone,
        }
        self.out.method(0, handshake::start());
        self.step = ConnectionStep::StartOk;
        if self.flush().await.is_err() {
            return Exit::Gone;
        }
        let mut hb_interval = tokio::time::interval(Duration::from_secs(3600));
        hb_interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hb_period: Option<Duration> = None;
        let mut closing_since: Option<Instant> = None;
        loop {
            if self.step != ConnectionStep::Running
                && self.step != ConnectionStep::Closing
                && tokio::time::Instant::now() > deadline
            {
                return Exit::Gone;
            }
            // before the flush: a connection.unblocked queued after it would wait for the
            // next event, which may never come while the client holds its publishes
            self.check_watermark();
            if self.flush().await.is_err() {
                return Exit::Gone;
            }
            if let Some(t) = closing_since {
                if t.elapsed() > Duration::from_secs(5) {
                    return Exit::Closed;
                }
            }
            let want_hb = (self.step == ConnectionStep::Running && self.heartbeat > 0)
                .then(|| Duration::from_secs(self.heartbeat as u64));
            if want_hb != hb_period {
                hb_period = want_hb;
                let p = want_hb.map(|d| d / 2).unwrap_or(Duration::from_secs(3600));
                hb_interval = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
                hb_interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            if self.blocked {
                // heartbeats are not read while blocked; do not count that against the client
                self.last_recv = Instant::now();
            }
            tokio::select! {
                            biased;
                            // confirms whose messages are now durable, oldest batch first (none
                            // after our connection.close)
                            r = next_sync(&mut self.syncing), if closing_since.is_none() => {
                                if let Err(e) = r {
                                    tracing::error!(error = %e, "message store sync failed");
                                    return Exit::Gone;
                                }
                                if let Some(p) = self.syncing.pop_front() {
                                    self.core.record_sync_latency(p.since.elapsed());
                                    self.emit_replies(p.replies);
                                }
                            }
                            r = self.reader.read_buf(&mut self.inbuf), if !self.blocked => {
                                match r {
                                    Ok(0) | Err(_) => return Exit::Gone,
                                    Ok(n) => {
                                        self.last_recv = Instant::now();
                                        if let Some(i) = &self.info {
                                            crate::model::stats::bump(&i.recv_oct, n as u64);
                                        }
                                        match self.process_and_settle().await {
                                            Ok(()) => {}
                                            Err(ConnErr::Gone) => return Exit::Gone,
            Err(ConnErr::CloseOk) => {
                                                let _ = self.flush().await;
                                                return Exit::Closed;
                                            }
                                            Err(ConnErr::ClientClosed) => {
                                                // like RabbitMQ: after close-ok keep reading (and discarding) until the
                                                // client closes the socket, so its in-flight writes do not hit a reset
                                                let _ = self.flush().await;
                                                // release exclusive queues, consumers and unacked messages now (RabbitMQ
                                                // does it before close-ok), not when the client gets round to closing
                                                // its socket; `serve` calling teardown again is then a no-op
                                                self.teardown();
                                                let drain = async {
                                                    let mut scratch = [0u8; 8192];
                                                    while let Ok(n) = self.reader.read(&mut scratch).await {
                                                        if n == 0 {
                                                            break;
                                                        }
                                                    }
                                                };
                                                let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
                                                return Exit::Closed;
                                            }
                                            Err(ConnErr::Exception(e)) => {
                                                self.send_close(&e);
                                                closing_since = Some(Instant::now());
                                                if self.step != ConnectionStep::Running && self.step != ConnectionStep::Closing {
                                                    let _ = self.flush().await;
                                                    return Exit::Closed;
                                                }
                                                self.step = ConnectionStep::Closing;
                                            }
                                        }
                                    }
                                }
                            }
                            // after our connection.close nothing else may be sent: deliveries wait in
                            // the channel and go back to their queues at teardown
                            n = self.notify_rx.recv(), if closing_since.is_none() => {
                                if let Some(n) = n {
                                    if let Some(e) = self.handle_notify(n) {
                                        self.send_close(&e);
                                        self.step = ConnectionStep::Closing;
                                        closing_since = Some(Instant::now());
                                    }
                                    // drain a bounded batch without waiting
                                    for _ in 0..256 {
                                        match self.notify_rx.try_recv() {
                                            Ok(n) => {
                                                if let Some(e) = self.handle_notify(n) {
                                                    self.send_close(&e);
                                                    self.step = ConnectionStep::Closing;
                                                    closing_since = Some(Instant::now());
                                                }
                                            }
                                            Err(_) => break,
                                        }
                                    }
                                    self.run_kicks();
                                }
                            }
                            _ = hb_interval.tick(), if hb_period.is_some() => {
                                let period = hb_period.unwrap_or(Duration::from_secs(60));
                                if self.last_recv.elapsed() > period * 2 {
                                    tracing::info!(conn = self.id, peer = %self.peer, "missed heartbeats from client, closing");
                                    return Exit::Gone;
                                }
                                self.out.heartbeat();
                            }
                            _ = shutdown.changed(), if closing_since.is_none() => {
                                let e = AmqpError::new(ReplyCode::ConnectionForced, "broker forced connection closure with reason 'shutdown'");
                                self.send_close(&e);
                                if self.step != ConnectionStep::Running {
                                    let _ = self.flush().await;
                                    return Exit::Closed;
                                }
                                self.step = ConnectionStep::Closing;
                                closing_since = Some(Instant::now());
                            }
                            _ = tokio::time::sleep(Duration::from_millis(500)), if closing_since.is_some() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)), if self.blocked => {}
                            _ = tokio::time::sleep_until(deadline), if self.step != ConnectionStep::Running && closing_since.is_none() => {
                                tracing::info!(conn = self.id, peer = %self.peer, "handshake timeout");
                                return Exit::Gone;
                            }
                        }
        }
    }

    /// Block or unblock a publishing connection around the memory high watermark and the
    /// disk free limit.
    fn check_watermark(&mut self) {
        if !self.publisher || self.step != ConnectionStep::Running {
            return;
        }
        let wm = self.config.memory_high_watermark;
        let low_memory = wm != 0 && self.core.memory.used() > wm;
        let low_disk = self.core.disk_alarm();
        let over = low_memory || low_disk;
        if over && !self.blocked {
            self.blocked = true;
            if let Some(i) = &self.info {
                i.blocked.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            tracing::info!(
                conn = self.id,
                used = self.core.memory.used(),
                low_memory,
                low_disk,
                "resource alarm; blocking publisher"
            );
            if self.blocked_notify {
                let reason = if low_memory {
                    "low on memory"
                } else {
                    "low on disk"
                };
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
                        reason: reason.into(),
                    })),
                );
            }
        } else if !over && self.blocked {
            self.blocked = false;
            if let Some(i) = &self.info {
                i.blocked.store(false, std::sync::atomic::Ordering::Relaxed);
            }
            tracing::info!(
                conn = self.id,
                "resource alarm cleared; unblocking publisher"
            );
            if self.blocked_notify {
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Unblocked(
                        connection::Unblocked {},
                    )),
                );
            }
        }
    }

    async fn read_protocol_header(&mut self) -> std::io::Result<bool> {
        while self.inbuf.len() < 8 {
            if self.reader.read_buf(&mut self.inbuf).await? == 0 {
                return Ok(false);
            }
        }
        if &self.inbuf[..8] != PROTOCOL_HEADER {
            let _ = self.writer.write_all(PROTOCOL_HEADER).await;
            return Ok(false);
        }
        let _ = self.inbuf.split_to(8);
        Ok(true)
    }

    fn send_close(&mut self, e: &AmqpError) {
        tracing::info!(conn = self.id, peer = %self.peer, code = e.code.code(), text = %e.text, "closing connection");
        self.out.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: e.code.code(),
                reply_text: e.reply_text().into(),
                class_id: e.cause.0,
                method_id: e.cause.1,
            })),
        );
    }

    fn process_input(&mut self) -> Result<(), ConnErr> {
        let res = loop {
            let limit =
                if self.step == ConnectionStep::Running || self.step == ConnectionStep::Closing {
                    self.frame_max
                } else {
                    self.config.frame_max
                };
            match frame::decode(&mut self.inbuf, limit) {
                Ok(None) => break Ok(()),
                Ok(Some(f)) => {
                    if let Err(e) = self.handle_frame(f) {
                        break Err(e);
                    }
                    if matches!(self.deferred.last(), Some((_, AMQPClass::Tx(_)))) {
                        self.barrier = true;
                        break Ok(());
                    }
                }
                Err(e) => {
                    if self.step == ConnectionStep::Closing {
                        break Err(ConnErr::Gone);
                    }
                    break Err(ConnErr::Exception(decode_error_to_amqp(&e)));
                }
            }
        };
        self.run_kicks();
        res
    }

    /// Process the buffered input, then put the batch's deferred replies behind a store sync.
    /// A deferred `tx.commit-ok` is a barrier: every pending sync is awaited and its replies
    /// written before the rest of the input is processed.
    async fn process_and_settle(&mut self) -> Result<(), ConnErr> {
        loop {
            self.process_input()?;
            if !self.deferred.is_empty() {
                let replies = std::mem::take(&mut self.deferred);
                self.syncing.push_back(PendingSync {
                    sync: self.core.store.sync(),
                    since: Instant::now(),
                    replies,
                });
            }
            if !std::mem::take(&mut self.barrier) {
                return Ok(());
            }
            while let Some(p) = self.syncing.pop_front() {
                if let Err(e) = p.sync.await {
                    tracing::error!(error = %e, "message store sync failed");
                    return Err(ConnErr::Gone);
                }
                self.core.record_sync_latency(p.since.elapsed());
                self.emit_replies(p.replies);
            }
        }
    }

    /// Write replies that waited for a sync. Confirms of one channel come in tag order and
    /// every lower tag is already settled, so a run of acks becomes one
    /// `basic.ack multiple=true` (as RabbitMQ sends them). Replies for channels closed since
    /// are dropped.
    fn emit_replies(&mut self, replies: Vec<(u16, AMQPClass)>) {
        let ack = |tag| {
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: tag,
                multiple: true,
            }))
        };
        let mut run: Option<(u16, u64)> = None;
        for (ch, m) in replies {
            if !self
                .channels
                .get(&ch)
                .is_some_and(|c| c.state != ChannelState::Closing)
            {
                continue;
            }
            if let AMQPClass::Basic(basic::AMQPMethod::Ack(a)) = &m {
                if let Some((c, t)) = run.filter(|(c, _)| *c != ch) {
                    self.out.method(c, ack(t));
                }
                run = Some((ch, a.delivery_tag));
                continue;
            }
            if let Some((c, t)) = run.take() {
                self.out.method(c, ack(t));
            }
            self.out.method(ch, m);
        }
        if let Some((c, t)) = run {
            self.out.method(c, ack(t));
        }
    }

    /// Drop the not yet written deferred replies of a channel that was closed.
    fn forget_replies(&mut self, chan: u16) {
        self.deferred.retain(|(c, _)| *c != chan);
        for p in &mut self.syncing {
            p.replies.retain(|(c, _)| *c != chan);
        }
    }

    fn run_kicks(&mut self) {
        if self.kick.is_empty() {
            return;
        }
        let Some(vhost) = &self.vhost else { return };
        let kick = std::mem::take(&mut self.kick);
        self.core.with_vhost(vhost, |vh, ctx| {
            for q in &kick {
                vh.dispatch(q, ctx);
            }
        });
    }

    /// The channel is gone: drop it from the management view.
    fn forget_channel_info(&self, chan: u16) {
        if let Some(i) = &self.info {
            i.channels().remove(&chan);
        }
    }

    fn session_parts(&mut self) -> Option<(String,)> {
        self.vhost.clone().map(|v| (v,))
    }

    fn handle_notify(&mut self, n: Notify) -> Option<AmqpError> {
        let (vhost,) = self.session_parts()?;
        match n {
            Notify::Deliver(d) => {
                let chan = d.channel;
                let mut s = Session {
                    core: &self.core,
                    conn_id: self.id,
                    vhost: &vhost,
                    user: &self.user,
                    perm: self.perm.as_ref(),
                    out: &mut self.out,
                    notify: &self.notify_tx,
                    max_message_size: self.config.max_message_size,
                    kick: &mut self.kick,
                    cancel_notify: self.cancel_notify,
                    deferred: &mut self.deferred,
                };
                match self.channels.get_mut(&chan) {
                    Some(ch) => {
                        ch.deliver(&mut s, d);
                        ch.publish_info();
                    }
                    None => Channel::new(chan).deliver(&mut s, d),
                }
                None
            }
            Notify::Cancelled {
                channel,
                consumer_tag,
            } => {
                let mut s = Session {
                    core: &self.core,
                    conn_id: self.id,
                    vhost: &vhost,
                    user: &self.user,
                    perm: self.perm.as_ref(),
                    out: &mut self.out,
                    notify: &self.notify_tx,
                    max_message_size: self.config.max_message_size,
                    kick: &mut self.kick,
                    cancel_notify: self.cancel_notify,
                    deferred: &mut self.deferred,
                };
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.server_cancelled(&mut s, &consumer_tag);
                }
                None
            }
            Notify::Close { code, text } => {
                let code = match code {
                    320 => ReplyCode::ConnectionForced,
                    _ => ReplyCode::InternalError,
                };
                Some(AmqpError::new(code, text))
            }
        }
    }

    fn handle_frame(&mut self, f: Frame) -> Result<(), ConnErr> {
        match self.step {
            ConnectionStep::Running => self.handle_running(f),
            ConnectionStep::Closing => match f {
                Frame::Method(0, m) => match *m {
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => {
                        Err(ConnErr::CloseOk)
                    }
                    AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                        self.out.method(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                                connection::CloseOk {},
                            )),
                        );
                        Err(ConnErr::ClientClosed)
                    }
                    _ => Ok(()),
                },
                _ => Ok(()),
            },
            _ => self.handle_handshake(f),
        }
    }

    fn handle_handshake(&mut self, f: Frame) -> Result<(), ConnErr> {
        let Frame::Method(0, m) = f else {
            if matches!(f, Frame::Heartbeat(_)) {
                return Ok(());
            }
            return Err(ConnErr::Exception(AmqpError::new(
                ReplyCode::UnexpectedFrame,
                "expected method frame on channel 0 during handshake",
            )));
        };
        let unexpected = |m: &AMQPClass| {
            let (c, mm) = ids(m);
            ConnErr::Exception(AmqpError::new(
                ReplyCode::CommandInvalid,
                format!("unexpected method {c}/{mm} during handshake"),
            ))
        };
        match (self.step, *m) {
            (
                ConnectionStep::StartOk,
                AMQPClass::Connection(connection::AMQPMethod::StartOk(s)),
            ) => {
                let mech = s.mechanism.as_str();
                if mech != "PLAIN" && mech != "AMQPLAIN" {
                    return Err(ConnErr::Exception(
                        AmqpError::new(
                            ReplyCode::CommandInvalid,
                            format!("unknown authentication mechanism '{mech}'"),
                        )
                        .hard(),
                    ));
                }
                let Some((user, pass)) = sasl::parse_response(mech, s.response.as_bytes()) else {
                    return Err(ConnErr::Exception(AmqpError::new(
                        ReplyCode::SyntaxError,
                        "malformed SASL response",
                    )));
                };
                let refused = || {
                    ConnErr::Exception(
                        AmqpError::access_refused(format!(
                            "Login was refused using authentication mechanism {mech}. For details see the broker logfile."
                        ))
                        .hard(),
                    )
                };
                let Some(u) = self.core.authenticate(&user, &pass) else {
                    tracing::warn!(conn = self.id, peer = %self.peer, %user, "authentication failed");
                    return Err(refused());
                };
                if u.name == "guest" && !self.peer.ip().is_loopback() {
                    tracing::warn!(conn = self.id, peer = %self.peer, "guest may only connect from loopback");
                    return Err(ConnErr::Exception(
                        AmqpError::access_refused("user 'guest' can only connect via localhost")
                            .hard(),
                    ));
                }
                self.user = u.name;
                self.cancel_notify =
                    client_capability(&s.client_properties, "consumer_cancel_notify");
                self.blocked_notify = client_capability(&s.client_properties, "connection.blocked");
                self.client_props = s
                    .client_properties
                    .inner()
                    .iter()
                    .filter_map(|(k, v)| {
                        crate::protocol::method::value_as_str(v).map(|v| (k.to_string(), v))
                    })
                    .collect();
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
                        channel_max: self.config.channel_max,
                        frame_max: self.config.frame_max,
                        heartbeat: self.config.heartbeat,
                    })),
                );
                self.step = ConnectionStep::TuneOk;
                Ok(())
            }
            (ConnectionStep::TuneOk, AMQPClass::Connection(connection::AMQPMethod::TuneOk(t))) => {
                if t.frame_max != 0 && t.frame_max < FRAME_MIN_SIZE {
                    return Err(ConnErr::Exception(AmqpError::new(
                        ReplyCode::NotAllowed,
                        format!("frame_max={} < {FRAME_MIN_SIZE} min size", t.frame_max),
                    )));
                }
                // 0 from the client means "no preference": it gets ours
                if t.frame_max > self.config.frame_max {
                    return Err(ConnErr::Exception(AmqpError::new(
                        ReplyCode::NotAllowed,
                        format!(
                            "frame_max={} > {} max size",
                            t.frame_max, self.config.frame_max
                        ),
                    )));
                }
                if t.channel_max > self.config.channel_max
                    || (t.channel_max == 0 && self.config.channel_max != u16::MAX)
                {
                    // a client asking for "no limit" gets ours
                    self.channel_max = self.config.channel_max;
                } else {
                    self.channel_max = negotiate(self.config.channel_max, t.channel_max);
                }
                self.frame_max = negotiate(self.config.frame_max, t.frame_max);
                self.out.frame_max = self.frame_max;
                self.heartbeat = t.heartbeat;
                self.step = ConnectionStep::Open;
                Ok(())
            }
            (ConnectionStep::Open, AMQPClass::Connection(connection::AMQPMethod::Open(o))) => {
                let vhost = o.virtual_host.to_string();
                if !self.core.vhost_exists(&vhost) {
                    return Err(ConnErr::Exception(AmqpError::new(
                        ReplyCode::NotAllowed,
                        format!("vhost {vhost} not found"),
                    )));
                }
                let Some(perm) = self.core.permission(&self.user, &vhost) else {
                    return Err(ConnErr::Exception(AmqpError::new(
                        ReplyCode::NotAllowed,
                        format!("access to vhost '{vhost}' refused for user '{}'", self.user),
                    )));
                };
                let max = self.config.max_connections;
                if max != 0 && self.core.connection_count() >= max {
                    return Err(ConnErr::Exception(AmqpError::new(
                        ReplyCode::NotAllowed,
                        format!("access to vhost '{vhost}' refused for user '{}': connection limit ({max}) is reached", self.user),
                    )));
                }
                let local = self
                    .reader
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                let info = Arc::new(ConnInfo {
                    name: format!("{} -> {local}", self.peer),
                    local,
                    connected_at_ms: crate::model::message::unix_ms(),
                    client_properties: std::mem::take(&mut self.client_props),
                    channel_max: self.channel_max,
                    frame_max: self.frame_max,
                    heartbeat: self.heartbeat,
                    recv_oct: Default::default(),
                    send_oct: Default::default(),
                    blocked: Default::default(),
                    channels: Default::default(),
                });
                self.info = Some(info.clone());
                self.core.add_connection(
                    self.id,
                    ConnHandle {
                        tx: self.notify_tx.clone(),
                        user: self.user.clone(),
                        peer: self.peer.to_string(),
                        vhost: vhost.clone(),
                        info,
                    },
                );
                self.vhost = Some(vhost);
                self.perm = Some(perm);
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
                );
                self.step = ConnectionStep::Running;
                Ok(())
            }
            (_, AMQPClass::Connection(connection::AMQPMethod::Close(_))) => {
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                Err(ConnErr::ClientClosed)
            }
            (_, m) => Err(unexpected(&m)),
        }
    }

    fn handle_running(&mut self, f: Frame) -> Result<(), ConnErr> {
        #[cfg(feature = "fault-injection")]
        fault::check(&f);
        let vhost = self.vhost.as_deref().unwrap_or_default();
        let chan = f.channel();
        if chan == 0 {
            return match f {
                Frame::Heartbeat(_) => Ok(()),
                Frame::Method(_, m) => match *m {
                    AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                        self.out.method(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                                connection::CloseOk {},
                            )),
                        );
                        Err(ConnErr::ClientClosed)
                    }
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => {
                        Err(ConnErr::CloseOk)
                    }
                    AMQPClass::Connection(
                        connection::AMQPMethod::Blocked(_) | connection::AMQPMethod::Unblocked(_),
                    ) => Ok(()),
                    AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(_)) => {
                        self.out.method(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(
                                connection::UpdateSecretOk {},
                            )),
                        );
                        Ok(())
                    }
                    m => {
                        let (c, mm) = ids(&m);
                        Err(ConnErr::Exception(AmqpError::new(
                            ReplyCode::CommandInvalid,
                            format!("unexpected method {c}/{mm} on channel 0"),
                        )))
                    }
                },
                _ => Err(ConnErr::Exception(AmqpError::new(
                    ReplyCode::UnexpectedFrame,
                    "unexpected content frame on channel 0",
                ))),
            };
        }
        if let Frame::Heartbeat(_) = f {
            return Err(ConnErr::Exception(AmqpError::new(
                ReplyCode::FrameError,
                format!("heartbeat frame on channel {chan}"),
            )));
        }
        let mut s = Session {
            core: &self.core,
            conn_id: self.id,
            vhost,
            user: &self.user,
            perm: self.perm.as_ref(),
            out: &mut self.out,
            notify: &self.notify_tx,
            max_message_size: self.config.max_message_size,
            kick: &mut self.kick,
            cancel_notify: self.cancel_notify,
            deferred: &mut self.deferred,
        };
        let Some(ch) = self.channels.get_mut(&chan) else {
            // only channel.open is valid on an unknown channel
            return match f {
                Frame::Method(_, m)
                    if matches!(*m, AMQPClass::Channel(channel::AMQPMethod::Open(_))) =>
                {
                    if chan > self.channel_max {
                        return Err(ConnErr::Exception(AmqpError::new(
                            ReplyCode::NotAllowed,
                            format!(
                                "channel number {chan} exceeds negotiated channel_max ({})",
                                self.channel_max
                            ),
                        )));
                    }
                    if self.channels.len() >= self.channel_max as usize {
                        return Err(ConnErr::Exception(AmqpError::new(
                            ReplyCode::NotAllowed,
                            format!("number of channels opened ({}) has reached the negotiated channel_max ({})", self.channels.len(), self.channel_max),
                        )));
                    }
                    let ch = Channel::new(chan);
                    if let Some(i) = &self.info {
                        i.channels().insert(chan, ch.info.clone());
                    }
                    self.channels.insert(chan, ch);
                    s.out.method(
                        chan,
                        AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                    );
                    Ok(())
                }
                Frame::Method(_, m)
                    if matches!(*m, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) =>
                {
                    Ok(())
                }
                Frame::Method(..) => Err(ConnErr::Exception(AmqpError::new(
                    ReplyCode::ChannelError,
                    format!("expected 'channel.open' on channel {chan}"),
                ))),
                _ => Err(ConnErr::Exception(AmqpError::new(
                    ReplyCode::ChannelError,
                    format!("channel {chan} is not open"),
                ))),
            };
        };
        if ch.state == ChannelState::Closing {
            if let Frame::Method(_, m) = &f {
                match **m {
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                        self.channels.remove(&chan);
                        self.forget_channel_info(chan);
                        self.forget_replies(chan);
                    }
                    AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                        s.out.method(
                            chan,
                            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                        );
                        self.channels.remove(&chan);
                        self.forget_channel_info(chan);
                        self.forget_replies(chan);
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        let (class_id, method_id, result) = match f {
            Frame::Method(_, m) => {
                let (c, mm) = ids(&m);
                if ch.awaiting_content() {
                    return Err(ConnErr::Exception(AmqpError::new(
                        ReplyCode::UnexpectedFrame,
                        format!("expected content header for class 60, got non content header frame instead (method {c}/{mm})"),
                    )));
                }
                match *m {
                    AMQPClass::Channel(channel::AMQPMethod::Open(_)) => {
                        return Err(ConnErr::Exception(
                            AmqpError::new(ReplyCode::ChannelError, "second 'channel.open' seen")
                                .caused_by(c, mm),
                        ));
                    }
                    AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                        ch.cleanup(&mut s);
                        s.out.method(
                            chan,
                            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                        );
                        self.channels.remove(&chan);
                        self.forget_channel_info(chan);
                        self.forget_replies(chan);
                        return Ok(());
                    }
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => return Ok(()),
                    AMQPClass::Connection(_) => {
                        return Err(ConnErr::Exception(
                            AmqpError::new(
                                ReplyCode::CommandInvalid,
                                format!("connection method {c}/{mm} on channel {chan}"),
                            )
                            .caused_by(c, mm),
                        ));
                    }
                    m => {
                        let r = ch.handle_method(&mut s, m);
                        ch.publish_info();
                        (c, mm, r)
                    }
                }
            }
            Frame::Header(_, h) => {
                self.publisher = true;
                (60, 40, ch.handle_header(&mut s, *h))
            }
            Frame::Body(_, b) => (60, 40, ch.handle_body(&mut s, b)),
            Frame::Heartbeat(_) => (0, 0, Ok(())),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.connection => Err(ConnErr::Exception(e.caused_by(class_id, method_id))),
            Err(e) => {
                tracing::debug!(conn = self.id, channel = chan, code = e.code.code(), text = %e.text, "channel exception");
                ch.fail(&mut s);
                s.out.method(
                    chan,
                    AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                        reply_code: e.code.code(),
                        reply_text: e.reply_text().into(),
                        class_id,
                        method_id,
                    })),
                );
                Ok(())
            }
        }
    }
}

#[derive(Debug)]
enum ConnErr {
    Gone,
    /// We initiated the close and got close-ok.
    CloseOk,
    /// The client sent connection.close; we replied close-ok.
    ClientClosed,
    Exception(AmqpError),
}

/// Map a frame decoding failure to the connection exception RabbitMQ sends.
pub fn decode_error_to_amqp(e: &DecodeError) -> AmqpError {
    let code = match e {
        DecodeError::FrameTooLarge { .. }
        | DecodeError::BadFrameEnd(_)
        | DecodeError::UnknownFrameType(_)
        | DecodeError::TooDeep => ReplyCode::FrameError,
        // RabbitMQ resets the socket here; the spec's closest code is NOT_IMPLEMENTED
        DecodeError::UnknownMethod { .. } => ReplyCode::NotImplemented,
        // RabbitMQ: "FRAME_ERROR - cannot decode …"
        DecodeError::Syntax { .. } | DecodeError::BadHeader(_) => ReplyCode::FrameError,
        DecodeError::UnexpectedProtocolHeader => ReplyCode::FrameError,
        DecodeError::NotImplemented(_) => ReplyCode::NotImplemented,
    };
    AmqpError::new(code, e.to_string()).hard()
}
