//! Shared by the browser tests (`browser_dashboard.rs`, `management_ui.rs`):
//! the tools they need (fail loudly when missing) and the node run with a
//! deadline.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// `tests/browser/<name>`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("browser")
        .join(name)
}

/// Panics, naming the fix, unless node, Debian's Chromium and the npm
/// packages of `tests/browser` are installed (`.ci/run` installs them).
pub fn require_tools(script: &Path, packages: &[&str]) {
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is required on PATH for the browser test"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is required for the browser test (apt-get install -y chromium)"
    );
    for package in packages {
        let dir = script.with_file_name("node_modules").join(package);
        assert!(
            dir.join("package.json").exists(),
            "{} is required for the browser test (npm ci --prefix tests/browser)",
            dir.display()
        );
    }
}

/// Where a browser test saves its screenshots: `$SCREENSHOT_DIR/<test>`, or
/// `<target dir>/browser-screenshots/<test>` (kept as CI artifacts).
pub fn screenshot_dir(test: &str) -> PathBuf {
    let base = std::env::var_os("SCREENSHOT_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(|t| PathBuf::from(t).join("browser-screenshots"))
        })
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-screenshots")
        });
    base.join(test)
}

/// Runs `node <script>` with `env`, killed after `limit`; panics with the
/// script's whole output unless it exits 0.
pub async fn run_node(script: &Path, env: &[(&str, String)], limit: Duration) -> Output {
    let mut command = tokio::process::Command::new("node");
    command.arg(script).kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("{} did not finish in {limit:?}", script.display()))
        .expect("node runs");
    assert!(
        out.status.success(),
        "browser test {} failed ({}):\n{}\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
