//! Fuzz oracle: any panic in any broker task fails the case, not only a dead listener (a
//! panicking connection task leaves the listener up, and used to skip its teardown).
//!
//! A process-wide panic hook records every panic with its thread's name. A case checks the
//! panics recorded since it began on its own thread (where its current-thread runtime runs
//! the broker's tasks) and on runtime/blocking threads; other tests run on threads named
//! after themselves and are not counted against it.

use std::sync::{Mutex, Once};

static PANICS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn install() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("").to_owned();
            PANICS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((thread, info.to_string()));
            default(info);
        }));
    });
}

/// Watches for panics from the moment it is made.
#[derive(Debug)]
pub struct PanicWatch {
    from: usize,
    thread: String,
}

impl PanicWatch {
    pub fn start() -> Self {
        install();
        Self {
            from: PANICS.lock().unwrap_or_else(|p| p.into_inner()).len(),
            thread: std::thread::current().name().unwrap_or("").to_owned(),
        }
    }

    /// Panics recorded since `start` on this thread or on a runtime/blocking thread.
    pub fn seen(&self) -> Vec<String> {
        PANICS.lock().unwrap_or_else(|p| p.into_inner())[self.from..]
            .iter()
            .filter(|(t, _)| *t == self.thread || t.is_empty() || t.starts_with("tokio"))
            .map(|(t, m)| format!("[{t}] {m}"))
            .collect()
    }

    pub fn assert_none(&self) {
        let seen = self.seen();
        assert!(seen.is_empty(), "a broker task panicked: {seen:?}");
    }
}
