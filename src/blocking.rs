//! Blocking work (RocksDB scans and big writes, snapshot files) off the
//! async runtime: [`run`] hands it to tokio's blocking pool.
//!
//! The seam: the deterministic simulation (`tests/sim/`) runs every host
//! on one thread and controls when each task is polled, but a blocking
//! thread finishes at a moment of real time, so a completion's turn would
//! depend on the machine's load. A thread that called
//! [`run_inline_on_this_thread`] runs the work in place instead, at the
//! point of the call. Production never calls it; what it pays is one
//! thread-local read per call, beside a thread hop that costs thousands of
//! times more.

use std::cell::Cell;
use std::io;

std::thread_local! {
    /// Whether blocking work called from this thread runs in place.
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// From now on, blocking work started from this thread runs in place (the
/// simulation's thread; never a server's).
pub fn run_inline_on_this_thread() {
    INLINE.with(|c| c.set(true));
}

/// Run `work` on tokio's blocking pool (or in place, see the module doc).
/// A panic in `work` comes back as an error.
pub async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    if INLINE.with(Cell::get) {
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
            .map_err(|_| io::Error::other("blocking work panicked"));
    }
    tokio::task::spawn_blocking(work).await.map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_on_the_pool_by_default() {
        let caller = std::thread::current().id();
        let pooled = run(move || std::thread::current().id()).await.ok();
        assert!(pooled.is_some_and(|id| id != caller));
    }

    #[test]
    fn runs_in_place_on_a_thread_that_asked_and_returns_a_panic_as_an_error() {
        // A thread of its own, so that no other test's thread runs inline
        // (with one test thread, libtest runs every test on the same one).
        let thread = std::thread::Builder::new().name("inline".into());
        let spawned = thread.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().build().ok()?;
            run_inline_on_this_thread();
            let caller = std::thread::current().id();
            let inline = rt.block_on(run(move || std::thread::current().id())).ok()?;
            let panicked = rt.block_on(run(|| -> u32 { panic!("boom") }));
            Some(inline == caller && panicked.is_err())
        });
        let checked = spawned.map(|t| t.join());
        assert!(matches!(checked, Ok(Ok(Some(true)))));
    }
}
