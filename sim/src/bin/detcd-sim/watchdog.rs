//! A guard for sweeps. A seed that hangs or eats memory (a simulator bug, such as a loop that
//! never lets simulated time pass) would otherwise stall CI until something kills it, with no
//! seed to show for it. The watchdog thread names the seed and ends the process instead. It
//! lives in the binary: it reads the wall clock and runs a thread, which the simulator library
//! must not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one seed may run. A history takes milliseconds; a few seconds is already odd.
const SEED_WALL_TIME_MAX: Duration = Duration::from_secs(120);
/// How much memory the sweep may hold. A history needs a few MiB.
const RESIDENT_BYTES_MAX: u64 = 4 << 30;
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// What the sweep is running, as the watchdog thread reads it.
#[derive(Clone)]
pub struct Watchdog {
    seed: Arc<AtomicU64>,
    /// Milliseconds from the watchdog's start to the start of the current seed.
    since_ms: Arc<AtomicU64>,
    epoch: Instant,
}

impl Watchdog {
    pub fn spawn() -> Watchdog {
        let watchdog = Watchdog {
            seed: Arc::new(AtomicU64::new(u64::MAX)),
            since_ms: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
        };
        let watching = watchdog.clone();
        std::thread::spawn(move || watching.watch());
        watchdog
    }

    /// Records that `seed` starts now.
    pub fn running(&self, seed: u64) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.since_ms.store(ms, Ordering::Relaxed);
        self.seed.store(seed, Ordering::Relaxed);
    }

    fn watch(&self) {
        loop {
            std::thread::sleep(CHECK_EVERY);
            let seed = self.seed.load(Ordering::Relaxed);
            if seed == u64::MAX {
                continue;
            }
            let since = Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
            let running = self.epoch.elapsed().saturating_sub(since);
            let problem = if running > SEED_WALL_TIME_MAX {
                Some(format!("has run for {} s", running.as_secs()))
            } else {
                resident_bytes()
                    .filter(|&bytes| bytes > RESIDENT_BYTES_MAX)
                    .map(|bytes| format!("holds {} MiB", bytes >> 20))
            };
            if let Some(problem) = problem {
                println!("FAILED seed {seed}: the simulator {problem} (reproduce: --seed {seed})");
                std::process::exit(1);
            }
        }
    }
}

/// This process's resident memory, from /proc (None where there is no /proc).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
