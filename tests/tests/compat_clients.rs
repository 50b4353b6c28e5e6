//! Real-client compatibility: starts `eventbus-broker` in-process on an ephemeral
//! port and runs the pika (Python) and amqplib (Node) suites of `compat/run.sh`
//! against it over TCP.
//!
//! The suites install their pinned clients themselves (a virtualenv from PyPI,
//! `npm ci` from the committed lock file). A missing `python3`, `node` or `npm`
//! fails these tests: they are never skipped silently.
//!
//! The same scripts run against RabbitMQ:
//! `AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ compat/run.sh`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use eventbus_broker::{Broker, Config};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits inside the workspace root")
        .to_path_buf()
}

/// Panics with a clear message when a tool the suite needs is not installed.
fn require_tool(tool: &str, why: &str) {
    match Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`{tool} --version` failed ({}): {why}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("`{tool}` is required ({why}) but could not be run: {e}"),
    }
}

fn print_output(suite: &str, out: &Output) {
    println!("----- compat/run.sh {suite}: stdout -----");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    println!("----- compat/run.sh {suite}: stderr -----");
    println!("{}", String::from_utf8_lossy(&out.stderr));
    println!("----- compat/run.sh {suite}: {} -----", out.status);
}

/// Starts a broker on 127.0.0.1:0 with a fresh data directory, runs one suite of
/// `compat/run.sh` against it and asserts that the suite passed.
// `Config` is set field by field, as its docs show, so this keeps compiling when
// it gains fields or becomes `#[non_exhaustive]`.
#[allow(clippy::field_reassign_with_default)]
fn run_suite_against_our_broker(suite: &str) {
    let root = workspace_root();
    let script = root.join("compat").join("run.sh");
    assert!(script.is_file(), "{} is missing", script.display());

    // The broker's tasks run on the runtime's worker threads while this thread
    // waits for the client processes.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let data_dir = tempfile::tempdir().expect("temporary data directory");
    let mut config = Config::default();
    config.amqp_listen = "127.0.0.1:0".parse().expect("socket address");
    config.data_dir = data_dir.path().to_path_buf();
    let broker = rt
        .block_on(Broker::start(config))
        .unwrap_or_else(|e| panic!("eventbus-broker failed to start: {e:?}"));
    let addr = broker.amqp_addr();
    let url = format!("amqp://guest:guest@127.0.0.1:{}/", addr.port());
    println!("eventbus-broker listening on {addr}; running compat/run.sh {suite}");

    let out = Command::new("bash")
        .arg(&script)
        .arg(suite)
        .current_dir(&root)
        .env("AMQP_URL", &url)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .output();

    rt.block_on(broker.shutdown());
    drop(rt);

    let out = out.unwrap_or_else(|e| panic!("could not run {}: {e}", script.display()));
    print_output(suite, &out);
    assert!(
        out.status.success(),
        "compat/run.sh {suite} failed against eventbus-broker ({}); its output is above",
        out.status
    );
}

#[test]
fn pika_suite_passes_against_eventbus_broker() {
    require_tool("bash", "compat/run.sh is a bash script");
    require_tool(
        "python3",
        "the pika suite needs python3 with venv (apt-get install python3 python3-venv)",
    );
    run_suite_against_our_broker("python");
}

#[test]
fn amqplib_suite_passes_against_eventbus_broker() {
    require_tool("bash", "compat/run.sh is a bash script");
    require_tool(
        "node",
        "the amqplib suite needs Node.js 18+ (apt-get install nodejs)",
    );
    require_tool(
        "npm",
        "the amqplib suite installs amqplib with npm (apt-get install npm)",
    );
    run_suite_against_our_broker("node");
}
