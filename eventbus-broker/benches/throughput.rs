//! Transient publish→consume throughput with lapin, 1 KiB messages: our broker (in-process,
//! ephemeral port) and the local RabbitMQ at amqp://guest:guest@127.0.0.1:5672 in the same run.
//!
//! Run with: `cargo bench -p eventbus-broker --bench throughput`
//! Env: `BENCH_MESSAGES` (default 50000), `RABBITMQ_URL` (default above; "off" to skip).

use std::time::{Duration, Instant};

use eventbus_broker::{Broker, Config};
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

#[derive(Debug, Clone, Copy)]
struct Result {
    msgs_per_sec: f64,
    mib_per_sec: f64,
}

async fn run(uri: &str, n: usize, manual_ack: bool) -> lapin::Result<Result> {
    let queue = format!("bench-{}-{}", std::process::id(), fastrand::u32(..));
    let pconn = Connection::connect(uri, ConnectionProperties::default()).await?;
    let cconn = Connection::connect(uri, ConnectionProperties::default()).await?;
    let pch = pconn.create_channel().await?;
    let cch = cconn.create_channel().await?;
    cch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            auto_delete: false,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    if manual_ack {
        cch.basic_qos(200, BasicQosOptions::default()).await?;
    }
    let mut consumer = cch
        .basic_consume(
            queue.as_str().into(),
            "bench".into(),
            BasicConsumeOptions {
                no_ack: !manual_ack,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let body = vec![0x5Au8; 1024];
    let start = Instant::now();
    let q2 = queue.clone();
    let publisher = tokio::spawn(async move {
        for _ in 0..n {
            pch.basic_publish(
                "".into(),
                q2.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await?;
        }
        lapin::Result::Ok(pch)
    });
    let mut received = 0usize;
    while received < n {
        match tokio::time::timeout(Duration::from_secs(30), consumer.next()).await {
            Ok(Some(Ok(d))) => {
                received += 1;
                if manual_ack && (received % 50 == 0 || received == n) {
                    d.ack(BasicAckOptions { multiple: true }).await?;
                }
            }
            _ => break,
        }
    }
    let elapsed = start.elapsed();
    let _ = publisher.await;
    assert_eq!(received, n, "lost messages");
    let _ = cch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = pconn.close(200, "bye".into()).await;
    let _ = cconn.close(200, "bye".into()).await;
    let secs = elapsed.as_secs_f64();
    Ok(Result {
        msgs_per_sec: n as f64 / secs,
        mib_per_sec: n as f64 / 1024.0 / secs,
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let rabbit = std::env::var("RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let dir = std::env::temp_dir().join(format!("eventbus-broker-bench-{}", std::process::id()));
    let config = Config {
        amqp_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.clone(),
        ..Config::default()
    };
    let broker = Broker::start(config).await.expect("start broker");
    let ours_uri = format!("amqp://guest:guest@{}/%2f", broker.amqp_addr());

    println!("publish→consume, {n} × 1 KiB, transient, one publisher + one consumer (lapin)");
    for manual_ack in [false, true] {
        let mode = if manual_ack {
            "manual ack, prefetch 200"
        } else {
            "auto-ack"
        };
        // warm-up
        let _ = run(&ours_uri, n / 10, manual_ack).await;
        let ours = run(&ours_uri, n, manual_ack)
            .await
            .expect("eventbus-broker run");
        println!(
            "  [{mode}] eventbus-broker: {:>10.0} msg/s {:>8.1} MiB/s",
            ours.msgs_per_sec, ours.mib_per_sec
        );
        if rabbit != "off" {
            let _ = run(&rabbit, n / 10, manual_ack).await;
            match run(&rabbit, n, manual_ack).await {
                Ok(r) => {
                    println!(
                        "  [{mode}] RabbitMQ:        {:>10.0} msg/s {:>8.1} MiB/s",
                        r.msgs_per_sec, r.mib_per_sec
                    );
                    println!(
                        "  [{mode}] ratio eventbus-broker / RabbitMQ: {:.2}",
                        ours.msgs_per_sec / r.msgs_per_sec
                    );
                }
                Err(e) => println!("  [{mode}] RabbitMQ: skipped ({e})"),
            }
        }
    }
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
