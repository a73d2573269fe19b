//! Parallel loops for the few-token forwards of decoding and speculative verification, on
//! helpers that spin between loops instead of sleeping.
//!
//! Why: a forward over a few tokens is a chain of about 150 small parallel loops (the matmuls
//! of 30 layers, their attention), each a few tens of microseconds, with serial work between
//! them. Between two of rayon's loops an idle worker soon goes to sleep, and the next loop pays
//! for waking it through the kernel and, when the halves end unevenly, for waking the caller:
//! a 9-token verification of SmolLM2-135M switched threads about 190 times and ran at 1.15×
//! its one-thread speed on 2 threads. [`with_helpers`] keeps the pool's other workers in a
//! spinning loop for the length of one forward (as llama.cpp's threads poll between graph
//! nodes), and [`for_each_task`] hands them loops through memory alone.
//!
//! Outside [`with_helpers`], or from a thread that did not open it, [`for_each_task`] is rayon's
//! parallel loop; without helpers (one thread) it runs on the caller. Nothing but speed depends
//! on whether a helper shows up: the caller claims tasks from the same counter.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// One parallel loop: `tasks` calls of `f`, claimed through `next`.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    next: AtomicUsize,
    /// Tasks finished (or panicked).
    done: AtomicUsize,
    /// Helpers that hold a reference to this job.
    active: AtomicUsize,
    panicked: AtomicBool,
}

impl Job<'_> {
    /// Claims and runs tasks until none is left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.tasks {
                return;
            }
            if catch_unwind(AssertUnwindSafe(|| (self.f)(i))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

/// A job's address with its lifetime erased, as the helpers see it.
#[derive(Clone, Copy)]
struct JobPtr(*const Job<'static>);
// SAFETY: a `Job` is `Sync` (atomics and a `Sync` closure); the pointer is only dereferenced
// under the protocol of `Helpers::run`, which keeps the job alive while any helper holds it.
unsafe impl Send for JobPtr {}

/// What the caller and its helpers share for the length of [`with_helpers`].
struct Helpers {
    /// The posted job, while helpers may still join it.
    job: Mutex<Option<JobPtr>>,
    /// Bumped at every posted job, so a spinning helper reads one atomic, not the lock.
    posted: AtomicUsize,
    stop: AtomicBool,
}

impl Helpers {
    /// A helper's loop: join each posted job until `stop`.
    fn serve(&self) {
        let mut seen = self.posted.load(Ordering::Acquire);
        let mut idle = 0u32;
        while !self.stop.load(Ordering::Acquire) {
            let posted = self.posted.load(Ordering::Acquire);
            if posted == seen {
                pause(&mut idle);
                continue;
            }
            (seen, idle) = (posted, 0);
            let job = {
                let slot = self.job.lock().unwrap_or_else(|e| e.into_inner());
                slot.inspect(|job| {
                    // SAFETY: the slot holds a job only while its caller waits in `run`, and
                    // `run` clears the slot (under this lock) before it waits for `active` to
                    // fall to 0, so counting ourselves in under the lock keeps the job alive
                    // until we count ourselves out.
                    unsafe { (*job.0).active.fetch_add(1, Ordering::Relaxed) };
                })
            };
            if let Some(job) = job {
                // SAFETY: counted in `active` above, so the job outlives this use.
                let job = unsafe { &*job.0 };
                job.work();
                job.active.fetch_sub(1, Ordering::Release);
            }
        }
    }

    /// Runs `tasks` calls of `f` on the caller and the helpers; returns when all are done and
    /// no helper holds the job.
    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let job = Job {
            f,
            tasks,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        };
        let ptr = JobPtr(std::ptr::from_ref(&job).cast::<Job<'static>>());
        *self.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(ptr);
        self.posted.fetch_add(1, Ordering::Release);
        job.work();
        // No helper joins from here on; wait for those that did.
        *self.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut waited = 0;
        while job.done.load(Ordering::Acquire) < tasks || job.active.load(Ordering::Acquire) > 0 {
            pause(&mut waited);
        }
        if job.panicked.load(Ordering::Relaxed) {
            panic!("a task of a parallel loop panicked");
        }
    }
}

/// One turn of a wait loop: a spin, and every 4096th turn a yield to the OS, since the machine
/// may have fewer free cores than the pool has threads (a helper that claimed a task may be
/// waiting for the core its caller spins on).
fn pause(turns: &mut u32) {
    *turns = turns.wrapping_add(1);
    if turns.is_multiple_of(4096) {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

thread_local! {
    /// The helpers this thread opened with [`with_helpers`], while it runs `op`.
    static HELPERS: Cell<Option<*const Helpers>> = const { Cell::new(None) };
}

/// Runs `op` with the other workers of the current rayon pool spinning as helpers for
/// [`for_each_task`]. Called outside a pool, from inside another `with_helpers`, or in a pool of
/// one thread, it just runs `op`.
pub fn with_helpers<R>(op: impl FnOnce() -> R) -> R {
    let others = rayon::current_num_threads().saturating_sub(1);
    if rayon::current_thread_index().is_none() || others == 0 || HELPERS.get().is_some() {
        return op();
    }
    let helpers = Helpers {
        job: Mutex::new(None),
        posted: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    };
    /// Stops the helpers and forgets them, also when `op` panics (else the scope would wait
    /// for the spinning helpers forever).
    struct Close<'a>(&'a Helpers);
    impl Drop for Close<'_> {
        fn drop(&mut self) {
            HELPERS.set(None);
            self.0.stop.store(true, Ordering::Release);
        }
    }
    rayon::in_place_scope(|scope| {
        for _ in 0..others {
            scope.spawn(|_| helpers.serve());
        }
        let _close = Close(&helpers);
        HELPERS.set(Some(&helpers as *const Helpers));
        op()
    })
}

/// Calls `f(0)`, ..., `f(tasks - 1)` in parallel and returns when all have returned: on the
/// helpers of [`with_helpers`] when this thread opened it, else on rayon's pool.
pub fn for_each_task(tasks: usize, f: impl Fn(usize) + Sync) {
    match HELPERS.get() {
        // SAFETY: `with_helpers` clears the thread-local before `helpers` goes out of scope.
        Some(helpers) if tasks > 1 => unsafe { &*helpers }.run(tasks, &f),
        Some(_) => (0..tasks).for_each(f),
        None => {
            use rayon::prelude::*;
            (0..tasks).into_par_iter().for_each(&f)
        }
    }
}

/// `f(i, chunk)` for each `chunk`-long piece `i` of `data` (the last may be shorter), in
/// parallel as [`for_each_task`].
pub fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    // Each task locks its own piece, once: the locks are never contended, and they let the
    // pieces cross threads without unsafe code.
    let pieces: Vec<Mutex<&mut [T]>> = data.chunks_mut(chunk.max(1)).map(Mutex::new).collect();
    for_each_task(pieces.len(), |i| {
        let mut piece = pieces[i].lock().unwrap_or_else(|e| e.into_inner());
        f(i, &mut piece)
    });
}

/// `[f(0), ..., f(tasks - 1)]`, computed in parallel as [`for_each_task`].
pub fn map_tasks<T: Send>(tasks: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let slots: Vec<Mutex<Option<T>>> = (0..tasks).map(|_| Mutex::new(None)).collect();
    for_each_task(tasks, |i| {
        *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(f(i));
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("for_each_task runs every task")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::threads::run_on_workers;
    use std::sync::atomic::AtomicU64;

    /// Every task runs exactly once, with helpers and without, loop after loop.
    #[test]
    fn every_task_runs_once() {
        for threads in [1, 2, 3] {
            run_on_workers(Some(threads), || {
                for helped in [false, true] {
                    let body = || {
                        for tasks in [0, 1, 2, 7, 64] {
                            let counts: Vec<AtomicU64> =
                                (0..tasks).map(|_| AtomicU64::new(0)).collect();
                            for_each_task(tasks, |i| {
                                counts[i].fetch_add(1, Ordering::Relaxed);
                            });
                            assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
                        }
                    };
                    if helped {
                        with_helpers(body)
                    } else {
                        body()
                    }
                }
            })
            .unwrap();
        }
    }

    /// The chunk and map forms see every piece and index once, in order.
    #[test]
    fn chunks_and_maps_cover_everything() {
        run_on_workers(Some(2), || {
            with_helpers(|| {
                let mut data: Vec<usize> = vec![0; 103];
                for_each_chunk_mut(&mut data, 10, |i, piece| {
                    for (j, v) in piece.iter_mut().enumerate() {
                        *v = 10 * i + j;
                    }
                });
                assert!(data.iter().enumerate().all(|(i, &v)| v == i));
                assert_eq!(map_tasks(5, |i| i * i), vec![0, 1, 4, 9, 16]);
            })
        })
        .unwrap();
    }

    /// The helpers do take tasks: with two threads some task runs on another thread.
    #[test]
    fn helpers_share_the_work() {
        let shared = run_on_workers(Some(2), || {
            with_helpers(|| {
                let me = std::thread::current().id();
                (0..2000).any(|_| {
                    let others = AtomicU64::new(0);
                    for_each_task(8, |_| {
                        if std::thread::current().id() != me {
                            others.fetch_add(1, Ordering::Relaxed);
                        }
                        std::thread::sleep(std::time::Duration::from_micros(50));
                    });
                    others.load(Ordering::Relaxed) > 0
                })
            })
        })
        .unwrap();
        assert!(shared);
    }

    /// A panicking task reaches the caller instead of leaving it waiting, and the helpers stop.
    #[test]
    fn a_panic_in_a_task_reaches_the_caller() {
        let result = run_on_workers(Some(2), || {
            catch_unwind(|| {
                with_helpers(|| {
                    for_each_task(16, |i| {
                        if i == 11 {
                            panic!("task 11");
                        }
                    })
                })
            })
        })
        .unwrap();
        assert!(result.is_err());
    }
}
