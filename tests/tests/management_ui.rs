//! The broker's management web UI in a real browser: our broker (AMQP and
//! the management listener on free ports) serves the UI, and
//! `tests/browser/broker_ui.mjs` (node + playwright-core + Debian's
//! `/usr/bin/chromium`, plus an amqplib client) logs in, creates queues and
//! a binding, publishes, gets the message back, moves a backlog over two
//! queues, purges, administers users, and force-closes a live AMQP
//! connection — every step waiting for what the page shows, with a
//! deadline. Screenshots go to `<target>/browser-screenshots/broker_ui`.

#[path = "support/browser.rs"]
mod browser;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_ui_in_the_browser() {
    let script = browser::script("broker_ui.mjs");
    browser::require_tools(&script, &["playwright-core", "amqplib"]);

    let dir = tempfile::tempdir().unwrap();
    let config = eventbus_broker::Config {
        amqp_listen: ([127, 0, 0, 1], 0).into(),
        management_listen: Some(([127, 0, 0, 1], 0).into()),
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let broker = eventbus_broker::Broker::start(config).await.unwrap();
    let management = broker.management_addr().expect("management listener");
    let shots = browser::screenshot_dir("broker_ui");

    let out = browser::run_node(
        &script,
        &[
            ("BASE_URL", format!("http://{management}")),
            (
                "AMQP_URL",
                format!("amqp://guest:guest@{}/%2F", broker.amqp_addr()),
            ),
            ("MQ_USER", "guest".into()),
            ("MQ_PASS", "guest".into()),
            ("SCREENSHOT_DIR", shots.display().to_string()),
            ("STEP_TIMEOUT_MS", "30000".into()),
        ],
        Duration::from_secs(300),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("broker_ui:") && last.contains(" 0 failed"),
        "unexpected verdict line: {last}\n{stdout}"
    );
    assert!(
        std::fs::read_dir(&shots).is_ok_and(|d| d.count() > 3),
        "screenshots saved in {}",
        shots.display()
    );
    broker.shutdown().await;
}
