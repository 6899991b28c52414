//! A low-latency path for single async calls: a dedicated native thread per
//! JavaScript thread, fed through a queue, that stays awake a little after
//! each job before it parks. Results come back two ways: the JavaScript side
//! may poll for them (`poll`) while it expects one soon, and otherwise a
//! threadsafe function wakes the event loop.
//!
//! napi's `AsyncTask` goes through the libuv pool: a wake-up of a pool thread
//! for each call and a wake-up of the event loop for each result. On a small
//! virtual machine a wake-up of a sleeping thread costs tens of microseconds,
//! more than an RSA-2048 verification. The work itself never runs on the
//! JavaScript thread.
//!
//! Panic-proof: a job that panics, on the native thread or while its promise
//! is settled, rejects its own promise with `ERR_INTERNAL`; the thread and
//! every other job carry on (a panic that escaped a job anyway restarts the
//! thread's loop).

use celery_sign_core::error::forget_panic;
use celery_sign_core::{batch, Error as CoreError, ErrorCode};
use napi::bindgen_prelude::*;
use napi::sys;
use rayon::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Turns a job's output into a JavaScript value, on the JavaScript thread.
pub type Settle = Box<dyn FnOnce(sys::napi_env) -> Result<sys::napi_value> + Send>;
/// A job: runs on the native thread, returns how to settle its promise.
pub type Work = Box<dyn FnOnce() -> Settle + Send>;

/// How long the native thread stays awake after a job, waiting for the next.
const SPIN: Duration = Duration::from_micros(50);

/// A yield of the CPU that takes longer than this means another process
/// wanted it: the machine has no CPU to spare for spinning.
const CONTENDED_YIELD: Duration = Duration::from_micros(50);

/// How long spinning stays off once the machine was found busy: doubled
/// each time it is still busy after, up to the maximum. Threads of this
/// process (V8's collector, the batch pool winding down) also make a yield
/// slow now and then, so it starts short; on a machine another process
/// keeps busy, every try costs the CPU time slice it yields, so it grows.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Gives the CPU up to anything else runnable on it (back at once when
/// nothing is); returns false when that took long: the machine is busy.
fn yield_cpu() -> bool {
    let t = Instant::now();
    thread::yield_now();
    t.elapsed() < CONTENDED_YIELD
}

struct Deferred(sys::napi_deferred);
// SAFETY: the deferred is only used by napi on the JavaScript thread that
// created it (in `drain`); the native thread only carries the pointer.
unsafe impl Send for Deferred {}

struct Tsfn(sys::napi_threadsafe_function);
// SAFETY: napi_call_threadsafe_function may be called from any thread;
// ref/unref/release are only called on the JavaScript thread.
unsafe impl Send for Tsfn {}
// SAFETY: as above.
unsafe impl Sync for Tsfn {}

struct Shared {
    jobs: Mutex<VecDeque<(Deferred, Work)>>,
    queued: AtomicUsize,
    done: Mutex<Vec<(Deferred, Settle)>>,
    /// The JavaScript side polls for results: no need to wake it.
    polling: AtomicBool,
    /// A call of the threadsafe function is on its way and not yet drained.
    notified: AtomicBool,
    parked: AtomicBool,
    stop: AtomicBool,
    /// Jobs spawned on the batch pool (`spawn_on_pool`) not yet finished:
    /// the threadsafe function outlives them (see `cleanup`).
    pool_jobs: AtomicUsize,
    tsfn: Tsfn,
}

impl Shared {
    /// Hands settled jobs to the JavaScript thread: wakes its event loop,
    /// unless it polls for them or a wake-up is already on its way.
    fn notify(&self) {
        if !self.polling.load(Ordering::SeqCst) && !self.notified.swap(true, Ordering::SeqCst) {
            // SAFETY: the threadsafe function lives until this thread is
            // joined and every pool job has finished (`cleanup`).
            unsafe {
                sys::napi_call_threadsafe_function(
                    self.tsfn.0,
                    ptr::null_mut(),
                    sys::ThreadsafeFunctionCallMode::nonblocking,
                )
            };
        }
    }
}

struct Dispatcher {
    shared: Arc<Shared>,
    worker: JoinHandle<()>,
    /// Promises not yet settled (JavaScript thread only).
    inflight: Cell<usize>,
}

thread_local! {
    static DISPATCHER: RefCell<Option<Rc<Dispatcher>>> = const { RefCell::new(None) };
}

fn check(status: sys::napi_status, what: &str) -> Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(Error::new(Status::from(status), what.to_owned()))
    }
}

/// Runs one job; a panic becomes a settling that rejects with `ERR_INTERNAL`.
fn run(work: Work) -> Settle {
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(settle) => settle,
        Err(payload) => {
            let err = CoreError::from_panic(payload);
            Box::new(move |_env| Err(crate::to_js(err)))
        }
    }
}

/// Settles one job's promise value; a panic becomes an `ERR_INTERNAL` error.
fn settled(settle: Settle, env: sys::napi_env) -> Result<sys::napi_value> {
    catch_unwind(AssertUnwindSafe(move || settle(env)))
        .unwrap_or_else(|p| Err(crate::to_js(CoreError::from_panic(p))))
}

/// The native thread: [`worker_loop`], started again should a panic ever
/// escape it (the jobs each run under `catch_unwind`, so none is expected).
fn worker_main(shared: Arc<Shared>) {
    loop {
        let for_loop = Arc::clone(&shared);
        match catch_unwind(AssertUnwindSafe(move || worker_loop(for_loop))) {
            Ok(()) => return,
            Err(payload) => forget_panic(payload),
        }
    }
}

fn worker_loop(shared: Arc<Shared>) {
    let mut quiet_until = Instant::now();
    let mut backoff = BACKOFF_MIN;
    loop {
        let jobs: Vec<(Deferred, Work)> = {
            let mut q = shared.jobs.lock().unwrap_or_else(|p| p.into_inner());
            shared.queued.store(0, Ordering::SeqCst);
            q.drain(..).collect()
        };
        if !jobs.is_empty() {
            // Calls made together run together, over the batch pool; one
            // call, or no pool (the system refused its threads), runs here.
            let pool = if jobs.len() > 1 {
                batch::pool().ok()
            } else {
                None
            };
            let settled: Vec<(Deferred, Settle)> = match pool {
                Some(pool) => pool.install(|| {
                    jobs.into_par_iter()
                        .map(|(d, work)| (d, run(work)))
                        .collect()
                }),
                None => jobs.into_iter().map(|(d, work)| (d, run(work))).collect(),
            };
            shared
                .done
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(settled);
            shared.notify();
            continue;
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        // Stay awake a little: one call often follows right after the last
        // one's promise settles. Not on a busy machine, where spinning takes
        // the CPU from the event loop that is to make that call.
        let start = Instant::now();
        if start >= quiet_until {
            let mut spins = 0u32;
            let mut busy = false;
            while shared.queued.load(Ordering::SeqCst) == 0 && !shared.stop.load(Ordering::Relaxed)
            {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(32) {
                    if start.elapsed() >= SPIN {
                        break;
                    }
                    if !yield_cpu() {
                        busy = true;
                        break;
                    }
                }
            }
            if busy {
                quiet_until = Instant::now() + backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            } else if shared.queued.load(Ordering::SeqCst) > 0 {
                // Spinning paid, on a machine with a CPU to spare.
                backoff = BACKOFF_MIN;
            }
        }
        if shared.queued.load(Ordering::SeqCst) > 0 {
            continue;
        }
        shared.parked.store(true, Ordering::SeqCst);
        if shared.queued.load(Ordering::SeqCst) == 0 && !shared.stop.load(Ordering::SeqCst) {
            thread::park();
        }
        shared.parked.store(false, Ordering::SeqCst);
    }
}

/// Settles the promises whose results are in; returns how many are still out.
fn drain(env: sys::napi_env, d: &Dispatcher) -> usize {
    let done = std::mem::take(&mut *d.shared.done.lock().unwrap_or_else(|p| p.into_inner()));
    let n = done.len();
    for (deferred, settle) in done {
        // SAFETY: env is the live environment of this JavaScript thread, and
        // each deferred is settled exactly once.
        unsafe {
            match settled(settle, env) {
                Ok(v) => sys::napi_resolve_deferred(env, deferred.0, v),
                Err(e) => match ToNapiValue::to_napi_value(env, e) {
                    Ok(err) => sys::napi_reject_deferred(env, deferred.0, err),
                    // No error object to be had (out of memory?): still settle,
                    // with undefined, rather than leave the promise out for ever.
                    Err(_) => {
                        let mut undefined = ptr::null_mut();
                        sys::napi_get_undefined(env, &mut undefined);
                        sys::napi_reject_deferred(env, deferred.0, undefined)
                    }
                },
            }
        };
    }
    let left = d.inflight.get().saturating_sub(n);
    d.inflight.set(left);
    if n > 0 && left == 0 {
        // SAFETY: JavaScript thread, live function. Nothing out: the
        // function no longer keeps the event loop alive.
        unsafe { sys::napi_unref_threadsafe_function(env, d.shared.tsfn.0) };
    }
    left
}

unsafe extern "C" fn call_js(
    env: sys::napi_env,
    _js_cb: sys::napi_value,
    _context: *mut std::ffi::c_void,
    _data: *mut std::ffi::c_void,
) {
    if env.is_null() {
        return;
    }
    if let Some(d) = DISPATCHER.with(|d| d.borrow().clone()) {
        d.shared.notified.store(false, Ordering::SeqCst);
        drain(env, &d);
    }
}

unsafe extern "C" fn cleanup(_arg: *mut std::ffi::c_void) {
    if let Some(d) = DISPATCHER.with(|d| d.borrow_mut().take()) {
        d.shared.stop.store(true, Ordering::SeqCst);
        d.worker.thread().unpark();
        // The environment is going away: let the thread finish its job (it
        // may still call the function, which napi then refuses) and release.
        if let Ok(d) = Rc::try_unwrap(d) {
            let _ = d.worker.join();
            // Jobs on the batch pool may still call the function: let them
            // finish first (each is one batch chunk, a few ms at most).
            while d.shared.pool_jobs.load(Ordering::SeqCst) > 0 {
                thread::sleep(Duration::from_micros(100));
            }
            // SAFETY: the other users, the thread and the pool jobs, have ended.
            unsafe {
                sys::napi_release_threadsafe_function(
                    d.shared.tsfn.0,
                    sys::ThreadsafeFunctionReleaseMode::abort,
                )
            };
        }
    }
}

impl Dispatcher {
    fn new(env: sys::napi_env) -> Result<Rc<Dispatcher>> {
        let mut name = ptr::null_mut();
        let label = "celery-sign";
        // SAFETY: plain napi calls on the JavaScript thread.
        check(
            unsafe {
                sys::napi_create_string_utf8(
                    env,
                    label.as_ptr().cast(),
                    label.len() as isize,
                    &mut name,
                )
            },
            "creating the dispatcher's name",
        )?;
        let mut tsfn = ptr::null_mut();
        check(
            unsafe {
                sys::napi_create_threadsafe_function(
                    env,
                    ptr::null_mut(),
                    ptr::null_mut(),
                    name,
                    0,
                    1,
                    ptr::null_mut(),
                    None,
                    ptr::null_mut(),
                    Some(call_js),
                    &mut tsfn,
                )
            },
            "creating the dispatcher's threadsafe function",
        )?;
        // SAFETY: JavaScript thread, live function.
        unsafe { sys::napi_unref_threadsafe_function(env, tsfn) };
        let shared = Arc::new(Shared {
            jobs: Mutex::new(VecDeque::new()),
            queued: AtomicUsize::new(0),
            done: Mutex::new(Vec::new()),
            polling: AtomicBool::new(false),
            notified: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            pool_jobs: AtomicUsize::new(0),
            tsfn: Tsfn(tsfn),
        });
        let for_worker = Arc::clone(&shared);
        let worker = thread::Builder::new()
            .name("celery-sign-async".into())
            .spawn(move || worker_main(for_worker))
            .map_err(|e| {
                crate::to_js(CoreError::new(
                    ErrorCode::Internal,
                    format!("could not start the native thread of deserializeAsync ({e})"),
                ))
            })?;
        // SAFETY: JavaScript thread; runs once when the environment ends.
        unsafe { sys::napi_add_env_cleanup_hook(env, Some(cleanup), ptr::null_mut()) };
        Ok(Rc::new(Dispatcher {
            shared,
            worker,
            inflight: Cell::new(0),
        }))
    }
}

fn dispatcher(env: &Env) -> Result<Rc<Dispatcher>> {
    DISPATCHER.with(|d| {
        let mut slot = d.borrow_mut();
        if let Some(d) = slot.as_ref() {
            return Ok(Rc::clone(d));
        }
        let made = Dispatcher::new(env.raw())?;
        *slot = Some(Rc::clone(&made));
        Ok(made)
    })
}

/// A promise for a job about to go out, counted among those out (the
/// threadsafe function keeps the event loop alive while any is).
fn promise_out(env: &Env, d: &Dispatcher) -> Result<(Deferred, sys::napi_value)> {
    let mut deferred = ptr::null_mut();
    let mut promise = ptr::null_mut();
    // SAFETY: JavaScript thread.
    check(
        unsafe { sys::napi_create_promise(env.raw(), &mut deferred, &mut promise) },
        "creating a promise",
    )?;
    if d.inflight.get() == 0 {
        // SAFETY: JavaScript thread, live function: keeps the loop alive
        // while a promise is out.
        unsafe { sys::napi_ref_threadsafe_function(env.raw(), d.shared.tsfn.0) };
    }
    d.inflight.set(d.inflight.get() + 1);
    Ok((Deferred(deferred), promise))
}

/// Runs `work` on the batch pool itself, settled as the queue's jobs are (a
/// threadsafe function, or the caller's polling); returns its promise.
///
/// Unlike napi's `AsyncTask`, which blocks a libuv pool thread in
/// `pool.install` for the whole job, this holds no libuv thread (those stay
/// free for `fs`, `dns` and `zlib`), and the job starts without waking one:
/// a batch can keep several chunks in flight, so that the pool's threads
/// always have the next one when they finish one.
pub fn spawn_on_pool(
    env: &Env,
    pool: &'static rayon::ThreadPool,
    work: Work,
) -> Result<sys::napi_value> {
    let d = dispatcher(env)?;
    let (deferred, promise) = promise_out(env, &d)?;
    d.shared.pool_jobs.fetch_add(1, Ordering::SeqCst);
    let shared = Arc::clone(&d.shared);
    // Nothing in here unwinds: `run` catches the job's panic (rayon would
    // abort the process on one that escaped a spawned closure).
    pool.spawn(move || {
        let settle = run(work);
        shared
            .done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((deferred, settle));
        shared.notify();
        shared.pool_jobs.fetch_sub(1, Ordering::SeqCst);
    });
    Ok(promise)
}

/// Queues `work` on this JavaScript thread's native thread; returns its promise.
pub fn submit(env: &Env, work: Work) -> Result<sys::napi_value> {
    let d = dispatcher(env)?;
    let (deferred, promise) = promise_out(env, &d)?;
    {
        let mut q = d.shared.jobs.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back((deferred, work));
        d.shared.queued.fetch_add(1, Ordering::SeqCst);
    }
    if d.shared.parked.load(Ordering::SeqCst) {
        d.worker.thread().unpark();
    }
    Ok(promise)
}

/// Settles what is done; with `keep`, the native thread need not wake the
/// event loop for the next results (the caller polls again). Returns how
/// many promises are still out, and whether the machine looked busy (a
/// yield of the CPU, made while nothing was in yet, took long).
pub fn poll(env: &Env, keep: bool) -> Result<(u32, bool)> {
    // No dispatcher (none made yet, or its thread could not start): nothing is out.
    let Some(d) = DISPATCHER.with(|d| d.borrow().clone()) else {
        return Ok((0, false));
    };
    // Before draining: a result pushed after the drain then sees the flag down.
    d.shared.polling.store(keep, Ordering::SeqCst);
    let before = d.inflight.get();
    let left = drain(env.raw(), &d);
    if left == 0 {
        // Nothing out: nothing to poll for until the next call.
        d.shared.polling.store(false, Ordering::SeqCst);
    }
    let mut busy = false;
    if keep && left > 0 && left == before {
        // Nothing yet: let the native thread have this CPU if it needs one.
        busy = !yield_cpu();
    }
    Ok((left as u32, busy))
}
