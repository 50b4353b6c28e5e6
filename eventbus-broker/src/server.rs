//! The listener: accept loop, per-connection tasks, housekeeping, graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::connection::Connection;
use crate::model::Core;

/// Accept connections until `shutdown` flips, then close every connection with 320 and wait
/// (bounded) for them to finish.
pub async fn run(
    listener: TcpListener,
    core: Arc<Core>,
    config: Arc<Config>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    let sweeper = {
        let core = core.clone();
        let mut sd = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    _ = tick.tick() => core.sweep(),
                    _ = sd.changed() => break,
                }
            }
        })
    };
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    // bound sockets that have not authenticated yet, too
                    if config.max_connections != 0 && tasks.len() >= config.max_connections.saturating_mul(2) {
                        tracing::warn!(%peer, "too many sockets; refusing");
                        drop(stream);
                        continue;
                    }
                    tasks.spawn(Connection::serve(stream, peer, core.clone(), config.clone(), shutdown.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    // connections observe the same shutdown signal and send connection.close(320)
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
    sweeper.abort();
    let _ = core.store.sync().await;
    let st = core.lock();
    if let Err(e) = core.persist(&st) {
        tracing::error!(error = %e, "failed to persist definitions at shutdown");
    }
}
