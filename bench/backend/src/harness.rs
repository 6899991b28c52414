//! Timing: N threads, each with its own state, released together by a barrier,
//! each running until `secs` have passed. Also measures how much CPU *other*
//! processes used meanwhile (from /proc), so a noisy sample can be recognised.

use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Other processes using less than this (% of one core) during a sample: a quiet sample.
pub const QUIET_PCT: f64 = 10.0;

pub struct Sample {
    /// Sum over threads of ops / that thread's elapsed time.
    pub ops_per_s: f64,
    /// CPU used by other processes during the sample, in % of one core.
    pub foreign_pct: f64,
    /// Hypervisor steal during the sample, in % of one core.
    pub steal_pct: f64,
}

/// (busy ticks of all CPUs excluding steal, steal ticks, this process's utime+stime ticks)
fn cpu_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6];
    let steal = *cpu.get(7).unwrap_or(&0);
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_comm = &me[me.rfind(')')? + 2..];
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    // fields 14 and 15 of /proc/PID/stat are utime, stime; after "pid (comm) " they are at 11, 12
    let own = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((busy, steal, own))
}

fn clk_tck() -> f64 {
    // USER_HZ is 100 on every Linux ABI we run on.
    100.0
}

/// Runs `setup()` once per thread to get that thread's operation, then times it.
/// Returns None if any operation returned false.
pub fn measure<F, S>(threads: usize, secs: f64, setup: F) -> Option<Sample>
where
    F: Fn() -> S + Sync,
    S: FnMut() -> bool,
{
    let barrier = Barrier::new(threads + 1);
    let dur = Duration::from_secs_f64(secs);
    let mut before = None;
    let mut wall0 = Instant::now();
    let results: Vec<Option<(u64, f64)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut op = setup();
                    // warm-up: caches, lazily built Montgomery contexts, page faults
                    let warm = Instant::now();
                    let mut ok = true;
                    while warm.elapsed() < Duration::from_millis(50) {
                        ok &= op();
                    }
                    barrier.wait();
                    let t0 = Instant::now();
                    let mut n = 0u64;
                    loop {
                        for _ in 0..4 {
                            ok &= op();
                        }
                        n += 4;
                        if t0.elapsed() >= dur {
                            break;
                        }
                    }
                    let el = t0.elapsed().as_secs_f64();
                    ok.then_some((n, el))
                })
            })
            .collect();
        before = cpu_ticks();
        wall0 = Instant::now();
        barrier.wait();
        hs.into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .collect()
    });
    let wall = wall0.elapsed().as_secs_f64();
    let after = cpu_ticks();
    let mut ops_per_s = 0.0;
    for r in results {
        let (n, el) = r?;
        ops_per_s += n as f64 / el;
    }
    let (foreign_pct, steal_pct) = match (before, after) {
        (Some(b), Some(a)) => {
            let busy = a.0.saturating_sub(b.0) as f64;
            let own = a.2.saturating_sub(b.2) as f64;
            let steal = a.1.saturating_sub(b.1) as f64;
            let t = wall * clk_tck();
            (((busy - own) / t * 100.0).max(0.0), steal / t * 100.0)
        }
        _ => (f64::NAN, f64::NAN),
    };
    Some(Sample {
        ops_per_s,
        foreign_pct,
        steal_pct,
    })
}

/// 1-minute load average.
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(f64::NAN)
}
