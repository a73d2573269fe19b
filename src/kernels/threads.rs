//! Where the model's parallel work runs: on the worker threads of one rayon pool, with the
//! caller itself one of them.
//!
//! Why it matters: candle's CPU ops and our kernels split each matmul, norm and softmax over
//! rayon's pool. Called from a thread outside the pool (a program's main thread), every such
//! split hands the job to the pool and puts the caller to sleep until a worker has finished and
//! woken it: a decode step of SmolLM2-135M does several hundred of these hand-offs, and on a
//! 2-core virtual machine each costs tens of microseconds of sleeping and waking. Called from a
//! worker, a split pushes the halves on the worker's own queue and starts on one of them; an
//! idle worker steals the other, and if none is awake the caller simply does it too. SmolLM2-135M
//! decodes at 116 tokens/s with the whole command on a worker, at 73 from the main thread (2
//! threads, AVX-512 VNNI host; results/README.md). candle 0.11's `Device::with_context` does the same
//! with a pool of its own, sized once per process; ours takes the thread count as an argument,
//! so one process can measure 1 and 2 threads.
//!
//! candle also reads `RAYON_NUM_THREADS` for every matmul it splits (unset, it counts the cores
//! from `/proc/cpuinfo` each time: 5% of a SmolLM2 decode). Changing the environment while
//! threads run is a data race, so the library never does: the command line sets the variable
//! once, at startup, before any thread exists ([`candle_threads_variable`]).

use anyhow::Result;

/// Runs `op` on a worker of a new pool of `threads` threads (when `None`: the
/// `RAYON_NUM_THREADS` variable, or one per core). The process environment is left as it is.
pub fn run_on_workers<R: Send>(threads: Option<usize>, op: impl FnOnce() -> R + Send) -> Result<R> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(thread_count(threads))
        .build()?;
    Ok(pool.install(op))
}

/// `threads`, else the `RAYON_NUM_THREADS` variable, else one per core.
pub fn thread_count(threads: Option<usize>) -> usize {
    threads
        .or_else(|| std::env::var("RAYON_NUM_THREADS").ok()?.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The `RAYON_NUM_THREADS` value a program should set at startup, before it starts any thread,
/// so candle does not count the cores at every matmul: `None` when the variable is already set.
pub fn candle_threads_variable(threads: Option<usize>) -> Option<String> {
    std::env::var_os("RAYON_NUM_THREADS")
        .is_none()
        .then(|| thread_count(threads).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operation_runs_on_a_worker_of_a_pool_of_the_asked_size() {
        let (index, threads) = run_on_workers(Some(3), || {
            (rayon::current_thread_index(), rayon::current_num_threads())
        })
        .unwrap();
        assert!(index.is_some());
        assert_eq!(threads, 3);
        assert_eq!(rayon::current_thread_index(), None);
    }

    /// Setting a variable while other threads may read the environment is a data race (and
    /// `unsafe` from Rust 2024 on): running work on a pool must not touch the environment.
    #[test]
    fn running_on_workers_leaves_the_environment_alone() {
        let before = std::env::var_os("RAYON_NUM_THREADS");
        let asked = if before.as_deref() == Some("3".as_ref()) {
            5
        } else {
            3
        };
        run_on_workers(Some(asked), || ()).unwrap();
        assert_eq!(std::env::var_os("RAYON_NUM_THREADS"), before);
    }
}
