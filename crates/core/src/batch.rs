//! The batch pipeline: one call fans a whole batch out over a thread pool.
//! Every input gets exactly one result, in order; a bad item never affects
//! its neighbours.

use crate::cert::Certificate;
use crate::digest::Digest;
use crate::envelope::{self, Opened, Unverified};
use crate::error::{forget_panic, Error, ErrorCode, Result};
use crate::jsonscan::{self, Scanned};
use crate::mb::{self, MbKey, LANES};
use crate::rsa;
use crate::store::CertStore;
use rayon::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
/// Held while the pool is being built (one builder at a time; a failed
/// build leaves `POOL` empty, and the next call tries again).
static BUILDING: Mutex<()> = Mutex::new(());
static REQUESTED_THREADS: AtomicUsize = AtomicUsize::new(0);

/// The most threads the pool may have, from `set_threads` or
/// `CELERY_SIGN_THREADS`. The bound is libuv's for `UV_THREADPOOL_SIZE`
/// (1024), the figure a Node user already knows for a thread-count setting:
/// far above any useful size (the work is CPU-bound, so more threads than
/// cores only add switching; the default is the cores), low enough that a
/// typo such as 1000000 cannot ask the system for a million stacks. Carried to
/// TypeScript by `src/backend/limits.ts` (generated, see
/// [`crate::typescript_limits_module`]).
pub const MAX_THREADS: usize = 1024;

/// `CELERY_SIGN_THREADS` as the pool reads it: after trimming white space, a
/// decimal integer from 1 up; above [`MAX_THREADS`] it is taken as
/// [`MAX_THREADS`] (libuv clamps `UV_THREADPOOL_SIZE` the same way). Anything
/// else (empty, 0, a sign, not all digits) is ignored: `None`, and the pool
/// has one thread per core.
pub fn threads_from_env(value: &str) -> Option<usize> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = v.trim_start_matches('0');
    if digits.is_empty() {
        return None;
    }
    // More digits than usize holds is over the bound anyway.
    Some(
        digits
            .parse::<usize>()
            .map_or(MAX_THREADS, |n| n.min(MAX_THREADS)),
    )
}

/// Threads the pool will use: `set_threads`, else `CELERY_SIGN_THREADS`, else
/// the cores (at most [`MAX_THREADS`]).
fn wanted_threads() -> usize {
    let requested = REQUESTED_THREADS.load(Ordering::Relaxed);
    if requested > 0 {
        return requested;
    }
    std::env::var("CELERY_SIGN_THREADS")
        .ok()
        .and_then(|v| threads_from_env(&v))
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(MAX_THREADS)
        })
}

/// Sets the pool size. Only effective before the pool is built; returns
/// whether it took effect. `n` must be from 1 to [`MAX_THREADS`]: anything
/// else is refused with `None` (the binding turns that into an error, the
/// facade into a RangeError).
pub fn set_threads(n: usize) -> Option<bool> {
    if !(1..=MAX_THREADS).contains(&n) {
        return None;
    }
    if POOL.get().is_some() {
        return Some(false);
    }
    REQUESTED_THREADS.store(n, Ordering::Relaxed);
    Some(true)
}

/// The pool threads' nice value: `CELERY_SIGN_NICE` (0 to 19), else 5.
fn wanted_nice() -> i32 {
    std::env::var("CELERY_SIGN_NICE")
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
        .map_or(5, |n| n.clamp(0, 19))
}

/// Lowers the calling pool thread's priority (Linux, where nice is per
/// thread): with as many pool threads as cores, the thread that runs the event
/// loop then preempts them as soon as it has work instead of waiting out their
/// time slices (p99 event-loop delay under back-to-back batches of 4096: about
/// 3.2 ms instead of 4.7 ms on 2 cores).
fn yield_to_the_event_loop() {
    let nice = wanted_nice();
    #[cfg(target_os = "linux")]
    if nice > 0 {
        #[allow(unsafe_code)]
        // SAFETY: two system calls about the calling thread; a failure leaves
        // its priority as it was, which is harmless.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// The batch thread pool, built on first use. When the system refuses its
/// threads (a container's pids limit, no memory for their stacks), this is
/// an `ERR_INTERNAL` error of the call that wanted it, never an abort, and a
/// later call tries again.
pub fn pool() -> Result<&'static rayon::ThreadPool> {
    if let Some(pool) = POOL.get() {
        return Ok(pool);
    }
    let _building = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(pool) = POOL.get() {
        return Ok(pool);
    }
    let n = wanted_threads();
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("celery-sign-{i}"))
        .start_handler(|_| yield_to_the_event_loop())
        .build()
        .map_err(|e| {
            Error::new(
                ErrorCode::Internal,
                format!(
                    "could not start the {n} threads of the native pool ({e}): the \
                     system refused them (a pids or memory limit?); lower \
                     setThreads() / CELERY_SIGN_THREADS, or raise the limit"
                ),
            )
        })?;
    Ok(POOL.get_or_init(|| built))
}

/// The number of threads in the pool (building it).
pub fn threads() -> Result<usize> {
    Ok(pool()?.current_num_threads())
}

/// Items laid end to end: `data[offsets[i]..offsets[i + 1]]` is item `i`.
/// A borrowed view, so the bytes may live anywhere (a JavaScript buffer too).
#[derive(Clone, Copy)]
pub struct Items<'a> {
    data: &'a [u8],
    offsets: &'a [usize],
}

impl<'a> Items<'a> {
    /// `offsets` starts at 0, never decreases and ends at most at `data.len()`.
    pub fn new(data: &'a [u8], offsets: &'a [usize]) -> Option<Items<'a>> {
        let valid = offsets.first() == Some(&0)
            && offsets.windows(2).all(|w| w[0] <= w[1])
            && offsets.last().is_some_and(|&end| end <= data.len());
        valid.then_some(Items { data, offsets })
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn item(&self, i: usize) -> &'a [u8] {
        &self.data[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// Owned items laid end to end.
pub struct Packed {
    pub data: Vec<u8>,
    pub offsets: Vec<usize>,
}

impl Packed {
    pub fn from_items<I: IntoIterator<Item = T>, T: AsRef<[u8]>>(items: I) -> Packed {
        let mut data = Vec::new();
        let mut offsets = vec![0];
        for item in items {
            data.extend_from_slice(item.as_ref());
            offsets.push(data.len());
        }
        Packed { data, offsets }
    }

    pub fn items(&self) -> Items<'_> {
        Items {
            data: &self.data,
            offsets: &self.offsets,
        }
    }
}

/// The results of a verified batch: all bodies live in one buffer.
pub struct OpenedBatch {
    /// Decoded payloads, item `i` at `bases[i]..`; result ranges are absolute.
    pub buffer: Vec<u8>,
    pub results: Vec<Result<Opened>>,
    /// By item, what the kombu-JSON pre-scan found (`None`: not scanned);
    /// empty when the batch asked for no scan. A scanned body may have been
    /// rewritten in place (literals lifted): its range in `results` is the
    /// new one.
    pub scanned: Vec<Option<Scanned>>,
}

/// The pre-scan of one body, as the batch runs it (the binding may wrap
/// [`jsonscan::scan`], e.g. with a test probe).
pub type ScanFn = dyn Fn(&mut [u8]) -> Scanned + Sync;

/// How payloads are opened: what a serializer fixes once (the store it
/// trusts, the digest, the size limit) and what a call may add (which inner
/// content types get the kombu-JSON pre-scan, in the same pass as their
/// verification, and the scan to run). One payload: [`Opener::open`],
/// [`Opener::open_into`]; a batch: [`Opener::open_many`],
/// [`Opener::open_batch`].
#[derive(Clone)]
pub struct Opener {
    pub(crate) store: Arc<CertStore>,
    pub(crate) digest: Digest,
    pub(crate) max_payload: usize,
    /// Content types whose UTF-8 bodies a batch pre-scans; empty: none.
    pub(crate) json_types: Vec<Vec<u8>>,
    /// The scan to run on them.
    pub(crate) scan: &'static ScanFn,
}

impl Opener {
    /// Opens payloads signed by `store`'s certificates with `digest`,
    /// refusing those over `max_payload` bytes; no pre-scan.
    pub fn new(store: Arc<CertStore>, digest: Digest, max_payload: usize) -> Opener {
        Opener {
            store,
            digest,
            max_payload,
            json_types: Vec::new(),
            scan: &jsonscan::scan,
        }
    }

    /// Pre-scans the UTF-8 bodies of these content types in a batch.
    pub fn with_json_types(mut self, json_types: Vec<Vec<u8>>) -> Opener {
        self.json_types = json_types;
        self
    }

    /// Runs `scan` as the pre-scan (by default [`jsonscan::scan`]).
    pub fn with_scan(mut self, scan: &'static ScanFn) -> Opener {
        self.scan = scan;
        self
    }

    pub fn store(&self) -> &Arc<CertStore> {
        &self.store
    }

    pub fn digest(&self) -> Digest {
        self.digest
    }

    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    pub fn json_types(&self) -> &[Vec<u8>] {
        &self.json_types
    }

    /// Decodes and verifies every payload on the pool. Fails as a whole only
    /// when the pool cannot be built; an item whose processing panics (a bug)
    /// gets `ERR_INTERNAL` in its own slot, its neighbours their own results.
    pub fn open_many(&self, payloads: Items<'_>) -> Result<OpenedBatch> {
        self.open_batch(payloads, Place::Pool)
    }

    /// Decodes, verifies and (for the JSON types) pre-scans every payload,
    /// in one pass, at `place`. Fails as a whole only when the pool is
    /// wanted and cannot be built; an item whose processing panics (a bug)
    /// gets `ERR_INTERNAL` in its own slot, its neighbours their own results.
    pub fn open_batch(&self, payloads: Items<'_>, place: Place) -> Result<OpenedBatch> {
        let pool = match place {
            Place::Pool => Some(pool()?),
            Place::Here => None,
        };
        let n = payloads.len();
        let (bases, mut buffer) = self.room_for(payloads);
        let mut slots: Vec<(usize, &mut [u8])> = Vec::with_capacity(n);
        let mut rest: &mut [u8] = &mut buffer;
        for i in 0..n {
            let (head, tail) = rest.split_at_mut(bases[i + 1] - bases[i]);
            slots.push((i, head));
            rest = tail;
        }
        let now = crate::cert::now_unix_ms();
        let open = |items: &mut [(usize, &mut [u8])]| self.open_chunk(payloads, now, &bases, items);
        let guarded = |items: &mut [(usize, &mut [u8])]| guard_chunk(&open, items);
        let done: Vec<Done> = match pool {
            Some(pool) => {
                let chunk = chunk_len(n, pool.current_num_threads());
                pool.install(|| {
                    slots
                        .into_par_iter()
                        .chunks(chunk)
                        .flat_map_iter(|mut items| guarded(&mut items))
                        .collect()
                })
            }
            None => slots.chunks_mut(LANES).flat_map(guarded).collect(),
        };
        let (results, scanned) = self.collect(done);
        Ok(OpenedBatch {
            buffer,
            results,
            scanned,
        })
    }

    /// One buffer for every decoded payload (oversize items get no room),
    /// and where each item's room starts (`bases[n]` is the end).
    fn room_for(&self, payloads: Items<'_>) -> (Vec<usize>, Vec<u8>) {
        let n = payloads.len();
        let mut bases = Vec::with_capacity(n + 1);
        let mut total = 0usize;
        for i in 0..n {
            bases.push(total);
            let len = payloads.item(i).len();
            if len <= self.max_payload {
                total += envelope::decode_capacity(len);
            }
        }
        bases.push(total);
        (bases, vec![0u8; total])
    }

    /// The outcomes in order, as results and (when the batch scans) scans.
    fn collect(&self, done: Vec<Done>) -> (Vec<Result<Opened>>, Vec<Option<Scanned>>) {
        let scanning = !self.json_types.is_empty();
        let mut results = Vec::with_capacity(done.len());
        let mut scanned = Vec::with_capacity(if scanning { done.len() } else { 0 });
        for (r, s) in done {
            results.push(r);
            if scanning {
                scanned.push(s);
            }
        }
        (results, scanned)
    }

    /// Opens the items of one task: decodes them, checks their signatures
    /// together (the SIMD lanes), finishes the valid ones and pre-scans the
    /// bodies of the JSON types, while they are hot in the cache. Result
    /// ranges are made absolute (`bases`).
    fn open_chunk(
        &self,
        payloads: Items<'_>,
        now: i64,
        bases: &[usize],
        items: &mut [(usize, &mut [u8])],
    ) -> Vec<Done> {
        #[cfg(test)]
        if items
            .iter()
            .any(|(i, _)| payloads.item(*i) == tests::PANIC_PAYLOAD)
        {
            panic!("test: a panic opening one item");
        }
        let pending: Vec<Result<Unverified>> = items
            .iter_mut()
            .map(|(i, slot)| envelope::open_unverified(self, payloads.item(*i), slot, now))
            .collect();
        let checks: Vec<Check<'_>> = pending
            .iter()
            .zip(items.iter())
            .filter_map(|(p, (_, slot))| {
                let p = p.as_ref().ok()?;
                Some(Check {
                    cert: &p.opened.signer,
                    data: &slot[p.opened.body.clone()],
                    signature: &p.signature,
                })
            })
            .collect();
        let mut verdicts = verify_all(self.digest, &checks).into_iter();
        pending
            .into_iter()
            .zip(items.iter_mut())
            .map(|(p, (i, slot))| {
                let opened = match p {
                    Ok(p) => p.opened,
                    Err(e) => return (Err(e), None),
                };
                if verdicts.next() != Some(true) {
                    return (
                        Err(Error::new(ErrorCode::BadSignature, "Bad signature")),
                        None,
                    );
                }
                let (o, scanned) = self.finish_one(slot, opened);
                (Ok(rebase(o, bases[*i])), scanned)
            })
            .collect()
    }

    /// A verified item: its UTF-8 check and, for a JSON type, its pre-scan
    /// (which may shorten the body).
    fn finish_one(&self, slot: &mut [u8], opened: Opened) -> (Opened, Option<Scanned>) {
        let mut o = envelope::finish(slot, opened);
        let wanted = o.body_is_utf8
            && self
                .json_types
                .iter()
                .any(|t| t.as_slice() == &slot[o.content_type.clone()]);
        if !wanted {
            return (o, None);
        }
        let s = (self.scan)(&mut slot[o.body.clone()]);
        o.body = o.body.start..o.body.start + s.len.min(o.body.len());
        (o, Some(s))
    }
}

/// Runs `open` on a chunk; a chunk that panics (a bug) is run again one by
/// one, so only the item that panics gets ERR_INTERNAL. Its slot may hold
/// half-decoded bytes; nothing reads them.
fn guard_chunk<F>(open: &F, items: &mut [(usize, &mut [u8])]) -> Vec<Done>
where
    F: Fn(&mut [(usize, &mut [u8])]) -> Vec<Done>,
{
    match catch_unwind(AssertUnwindSafe(|| open(items))) {
        Ok(results) => results,
        Err(payload) => {
            forget_panic(payload);
            items
                .chunks_mut(1)
                .flat_map(|one| {
                    catch_unwind(AssertUnwindSafe(|| open(one)))
                        .unwrap_or_else(|p| vec![(Err(Error::from_panic(p)), None)])
                })
                .collect()
        }
    }
}

/// Makes an item's ranges absolute: its room starts at `base`.
fn rebase(mut o: Opened, base: usize) -> Opened {
    o.content_type = o.content_type.start + base..o.content_type.end + base;
    o.content_encoding = o.content_encoding.start + base..o.content_encoding.end + base;
    o.body = o.body.start + base..o.body.end + base;
    o
}

/// Where a batch runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Place {
    /// Fanned out over the thread pool (the caller waits).
    Pool,
    /// On the thread that runs the call, item after item in chunks of the
    /// SIMD lanes: for a batch too small to pay for a round trip through the
    /// pool, or a pool job among others in flight.
    Here,
}

/// One item's outcome: its result and, if its body was pre-scanned, the scan.
type Done = (Result<Opened>, Option<Scanned>);

/// Items per task on the pool: a multiple of the SIMD lanes, small enough that
/// every thread gets work, large enough to fill the lanes.
fn chunk_len(n: usize, threads: usize) -> usize {
    let per_thread = n.div_ceil(threads.max(1));
    per_thread.div_ceil(LANES).clamp(1, 8) * LANES
}

/// One signature to check.
struct Check<'a> {
    cert: &'a Certificate,
    data: &'a [u8],
    signature: &'a [u8],
}

/// Checks every signature: those whose key the multi-buffer kernel takes go
/// through it eight at a time (two or more per call; one alone is faster
/// through the one-number kernel), the rest one by one.
fn verify_all(digest: Digest, checks: &[Check<'_>]) -> Vec<bool> {
    let mut ok = vec![false; checks.len()];
    // Checks left for one-by-one verification (all but those the kernel runs).
    let mut one_by_one = vec![true; checks.len()];
    let mut simd: Vec<(usize, &MbKey)> = checks
        .iter()
        .enumerate()
        .filter_map(|(k, c)| Some((k, c.cert.simd_key_for(c.signature)?)))
        .collect();
    // Keys of one group (size and exponent) share a call; keep batch order within.
    simd.sort_by_key(|(k, key)| (key.group(), *k));
    // The encoded messages' room, zeroed once for the whole chunk: the kernel
    // writes all `key.len()` bytes of each lane it accepts, and a lane it
    // refuses (out of range) is never read.
    let mut ems = [[0u8; mb::MAX_BYTES]; LANES];
    for run in simd.chunk_by(|a, b| a.1.group() == b.1.group()) {
        for lanes in run.chunks(LANES) {
            if lanes.len() < 2 {
                continue;
            }
            let keys: Vec<&MbKey> = lanes.iter().map(|(_, key)| *key).collect();
            let sigs: Vec<&[u8]> = lanes.iter().map(|(k, _)| checks[*k].signature).collect();
            let mut outs: Vec<&mut [u8]> = ems
                .iter_mut()
                .zip(&keys)
                .map(|(em, key)| &mut em[..key.len()])
                .collect();
            let in_range = mb::public_op(&keys, &sigs, &mut outs);
            for (lane, (k, key)) in lanes.iter().enumerate() {
                ok[*k] = in_range[lane]
                    && rsa::pss_verify_digest(digest, checks[*k].data, outs[lane], key.bits());
                one_by_one[*k] = false;
            }
        }
    }
    for (k, c) in checks.iter().enumerate() {
        if one_by_one[k] {
            ok[k] = c.cert.verify_signature(c.data, c.signature, digest).is_ok();
        }
    }
    ok
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// A payload whose opening panics (test builds only, see `open_chunk`).
    pub(super) const PANIC_PAYLOAD: &[u8] = b"celery-sign-test-panic";

    #[test]
    fn an_item_that_panics_fails_alone() {
        let store = CertStore::new();
        let mut items: Vec<&[u8]> = vec![b"garbage"; 40];
        items[17] = PANIC_PAYLOAD;
        let packed = Packed::from_items(&items);
        let opener = Opener::new(Arc::new(store), Digest::Sha256, 1 << 20);
        let here = opener.open_batch(packed.items(), Place::Here).unwrap();
        let out = opener.open_many(packed.items()).unwrap();
        for (i, r) in out.results.iter().chain(&here.results).enumerate() {
            let i = i % 40;
            let code = r.as_ref().unwrap_err().code;
            if i == 17 {
                assert_eq!(code, ErrorCode::Internal);
            } else {
                assert_eq!(code, ErrorCode::MalformedPayload, "item {i}");
            }
        }
        for out in [&out, &here] {
            let msg = &out.results[17].as_ref().unwrap_err().message;
            assert!(msg.ends_with("test: a panic opening one item"), "{msg}");
        }
    }

    #[test]
    fn thread_counts_are_bounded() {
        assert_eq!(set_threads(0), None);
        assert_eq!(set_threads(MAX_THREADS + 1), None);
        assert_eq!(set_threads(1_000_000), None);
        assert_eq!(set_threads(usize::MAX), None);
        for (env, want) in [
            ("4", Some(4)),
            (" 16\n", Some(16)),
            ("0004", Some(4)),
            ("1024", Some(1024)),
            ("1025", Some(MAX_THREADS)),
            ("1000000", Some(MAX_THREADS)),
            ("99999999999999999999999999", Some(MAX_THREADS)),
            ("0", None),
            ("000", None),
            ("", None),
            ("-4", None),
            ("+4", None),
            ("4abc", None),
            ("4.5", None),
            ("1e6", None),
            ("four", None),
        ] {
            assert_eq!(threads_from_env(env), want, "{env:?}");
        }
    }
}
