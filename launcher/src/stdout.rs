//! Writing to stdout without panicking on a closed pipe (see `say!` in main.rs).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout is gone: later output is dropped silently (the reader wanted no more).
static CLOSED: AtomicBool = AtomicBool::new(false);

pub fn write(text: &str) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
        CLOSED.store(true, Ordering::Relaxed);
    }
}
