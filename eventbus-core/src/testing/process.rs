//! Crash tests with service instances as real processes: a `harness = false`
//! test binary that re-executes itself as its own children.
//!
//! The binary's `main` calls [`main`]: started by `cargo test` it runs the
//! tests (honouring a name filter like the default harness, each on a
//! two-worker runtime within its deadline); started by a test as a child
//! (the role variable set, see [`ChildProcess::command`]) it plays that
//! role instead. Children talk to the test through lines on stdout
//! ([`ChildProcess::next_line`]) and stop gracefully when their stdin
//! closes ([`stdin_closed`]); SIGKILL ([`ChildProcess::kill`]) is the crash.
//!
//! Only std processes and threads are used (no tokio `process` feature):
//! a thread per child forwards its stdout lines to a channel.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::pin::Pin;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// One test of a process test binary.
#[derive(Debug)]
pub struct ProcessTest {
    /// Its name, matched against the command line's filters.
    pub name: &'static str,
    /// It fails if it runs longer.
    pub deadline: Duration,
    /// The test itself.
    pub run: fn() -> Pin<Box<dyn Future<Output = ()>>>,
}

/// The `main` of a process test binary: plays `child(role)` when
/// `role_var` is set, otherwise runs the `tests` that match the command
/// line's filters and prints what the default harness prints. A failing
/// test panics (non-zero exit).
pub fn main(role_var: &str, child: fn(String), tests: &[ProcessTest]) {
    if let Ok(role) = std::env::var(role_var) {
        child(role);
        return;
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected: Vec<&ProcessTest> = tests
        .iter()
        .filter(|t| filters.is_empty() || filters.iter().any(|f| t.name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", selected.len());
    for test in &selected {
        println!("test {} ...", test.name);
        runtime().block_on(async {
            tokio::time::timeout(test.deadline, (test.run)())
                .await
                .unwrap_or_else(|_| {
                    panic!("{} did not finish within {:?}", test.name, test.deadline)
                })
        });
        println!("test {} ... ok", test.name);
    }
    println!(
        "\ntest result: ok. {} passed; 0 failed; 0 ignored; 0 measured; {} filtered out\n",
        selected.len(),
        tests.len() - selected.len()
    );
}

/// The runtime tests and children run on: multi-threaded, two workers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Resolves when this process's stdin closes (the test's request to stop
/// gracefully). Spawns a thread that reads stdin to its end.
pub fn stdin_closed() -> impl Future<Output = ()> {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::stdin().lock().lines();
        while let Some(Ok(_)) = lines.next() {}
        let _ = tx.send(());
    });
    async move {
        let _ = rx.await;
    }
}

/// A child process of the test: this binary playing a role. Killed (and
/// reaped) when dropped, so a failing test leaves no orphans.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl ChildProcess {
    /// The command that re-executes this binary as `role` (stdin, stdout
    /// piped; stderr inherited). Add the role's settings with `env`.
    pub fn command(role_var: &str, role: &str) -> Command {
        let mut cmd = Command::new(std::env::current_exe().expect("current test binary"));
        cmd.env(role_var, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        cmd
    }

    /// Starts `cmd` (from [`ChildProcess::command`]).
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("spawn child process");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::unbounded_channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// The next line the child printed; `None` once its stdout closed (it
    /// exited). Panics, naming `what`, if nothing comes within `timeout`.
    pub async fn next_line(&mut self, what: &str, timeout: Duration) -> Option<String> {
        tokio::time::timeout(timeout, self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: the child printed nothing for {timeout:?}"))
    }

    /// Waits for the line `expected`, failing on anything else.
    pub async fn expect_line(&mut self, expected: &str, timeout: Duration) {
        match self.next_line(expected, timeout).await {
            Some(line) if line == expected => {}
            other => panic!("expected {expected:?} from the child, got {other:?}"),
        }
    }

    /// Closes the child's stdin: its request to stop gracefully.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Whether the child has exited (by itself or killed).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGKILLs the child unless it exited already, and reaps it. Returns
    /// whether it had exited by itself before.
    pub fn kill(&mut self) -> bool {
        let exited = self.exited();
        if !exited {
            self.child.kill().expect("SIGKILL the child");
        }
        self.child.wait().expect("reap the child");
        exited
    }

    /// Waits (polling) until the child exits; panics after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the child did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
