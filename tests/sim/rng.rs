//! Every random choice of a run comes from its seed.
//!
//! - [`SimRng`]: the simulation's own choices (operations, faults, delays).
//! - `getrandom`, defined here for the whole process: std's `HashMap`
//!   keys, tokio's runtime seeds (so `watch` wake order and `select!`
//!   branch order), and openraft's election timeouts (rand 0.10, through
//!   getrandom 0.4, which looks `getrandom` up with `dlsym`: `build.rs`
//!   exports the symbol from the test binaries) all draw from one stream
//!   seeded by the run's seed. A process runs one seed (`main.rs` starts
//!   one child per seed), because tokio also mixes a process-wide counter
//!   into each runtime's seed.
//!
//! Not covered: rand 0.8 (`rand::random` in drover: request ids, the
//! cluster id) reads the raw `getrandom` syscall. Those values are bytes
//! in messages and rows, never a branch, so the trace does not depend on
//! them (the digests' values do, which is why the trace hashes what the
//! digests agree on, not their values).

use std::sync::atomic::{AtomicU64, Ordering};

/// SplitMix64 step.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_133a_111e);
    z ^ (z >> 31)
}

/// The entropy stream behind `getrandom` on the simulation's thread.
static ENTROPY: AtomicU64 = AtomicU64::new(0x5eed);
/// The stream of every other thread (RocksDB's background threads ask for
/// entropy at moments of their own: drawing from the simulation's stream
/// then would shift it).
static OTHER: AtomicU64 = AtomicU64::new(0x07e4);

std::thread_local! {
    /// Whether this thread runs the simulation.
    static SIM_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Seed the simulation thread's entropy: call first thing in a run's
/// process, on the thread that runs the simulation.
pub fn seed_entropy(seed: u64) {
    ENTROPY.store(mix(seed ^ 0xe17a_0b9e), Ordering::SeqCst);
    SIM_THREAD.with(|c| c.set(true));
}

/// Overrides libc's `getrandom(2)` wrapper for this process.
///
/// # Safety
/// `buf` must be valid for `len` bytes, as for libc's.
#[no_mangle]
pub unsafe extern "C" fn getrandom(buf: *mut u8, len: usize, _flags: u32) -> isize {
    let source = if SIM_THREAD.try_with(|c| c.get()).unwrap_or(false) { &ENTROPY } else { &OTHER };
    let mut i = 0;
    while i < len {
        let word = mix(source.fetch_add(1, Ordering::SeqCst)).to_le_bytes();
        for b in word.iter().take(len - i) {
            // SAFETY: i < len, and the caller gives len valid bytes.
            unsafe { *buf.add(i) = *b };
            i += 1;
        }
    }
    len as isize
}

/// The simulation's own random choices.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng(mix(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }

    /// Uniform in `lo..hi` (`lo` when empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    /// True with probability `p` (0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / ((1u64 << 53) as f64) < p
    }

    /// An independent stream for one part of the run.
    pub fn fork(&mut self, label: u64) -> SimRng {
        SimRng(mix(self.next_u64() ^ mix(label)))
    }
}
