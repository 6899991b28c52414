//! napi-rs bindings of celery-sign: converts types and schedules work, nothing
//! else. Every refusal crosses into JavaScript as an `Error` whose message
//! starts with the stable code (`ERR_...: `); the facade turns it into a
//! `SecurityError`. Async work runs as napi `Task`s; a batch is one task that
//! fans out over the core's thread pool. One exception: `openAsync`, a single
//! verification, goes through `queue` (a dedicated native thread polled by the
//! event loop), because a libuv pool round trip costs three times the
//! verification on a small machine.
//!
//! No panic crosses into JavaScript (napi would abort the process): every
//! export has `catch_unwind`, and the work inside runs under [`guard`], which
//! turns a panic into an `ERR_INTERNAL` error; the same holds for the compute
//! and resolve steps of every `Task` and for every job of the queue.
#![deny(clippy::all)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use celery_sign_core::batch::{self, Packed, Place};
use celery_sign_core::{
    envelope, CertStore, Certificate, Digest, Error as CoreError, ErrorCode, Opener, PrivateKey,
    Sealer, WireFormat,
};
use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use celery_sign_core::jsonscan;
mod literal;
mod queue;

use literal::Literal;

/// A core error as the binding throws it: the message starts with its code.
pub(crate) fn to_js(err: CoreError) -> napi::Error {
    napi::Error::new(Status::GenericFailure, err.to_string())
}

/// Runs `f`; a panic becomes an `ERR_INTERNAL` error instead of unwinding
/// into napi (which aborts the process).
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(to_js(CoreError::from_panic(p))))
}

/// A digest name; an unknown one is a configuration mistake (a bad
/// argument: `ImproperlyConfigured` in the facade), never a key refusal.
fn digest(name: &str) -> Result<Digest> {
    Digest::from_name(name).map_err(|e| napi::Error::new(Status::InvalidArg, e.to_string()))
}

/// The batch status of a code: 1 + its index in `errorCodes()` (0 is success).
fn status_of(code: ErrorCode) -> f64 {
    f64::from(code.status())
}

/// The stable error codes, in the order the batch status numbers use (1-based).
#[napi(catch_unwind)]
pub fn error_codes() -> Vec<&'static str> {
    ErrorCode::ALL.iter().map(|c| c.as_str()).collect()
}

/// Sets the size of the native thread pool; only before the first batch
/// runs (returns whether it took effect). `n` must be an integer from 1 to
/// `MAX_THREADS` (1024): anything else is refused, never wrapped or clamped.
#[napi(catch_unwind)]
pub fn set_threads(n: f64) -> Result<bool> {
    guard(|| {
        let max = batch::MAX_THREADS;
        let refuse = || {
            napi::Error::new(
                Status::InvalidArg,
                format!("threads must be an integer from 1 to {max}, not {n}"),
            )
        };
        if n.fract() != 0.0 || !(1.0..=max as f64).contains(&n) {
            return Err(refuse());
        }
        batch::set_threads(n as usize).ok_or_else(refuse)
    })
}

/// The number of native threads batches run on (starting them: an
/// `ERR_INTERNAL` error when the system refuses them).
#[napi(catch_unwind)]
pub fn thread_count() -> Result<u32> {
    guard(|| Ok(batch::threads().map_err(to_js)? as u32))
}

/// The SIMD kernel batch verification uses in this process (`mb::kernel`):
/// `"avx512-ifma"`, `"avx2"`, or `null` (AWS-LC alone).
#[napi(catch_unwind, ts_return_type = "'avx512-ifma' | 'avx2' | null")]
pub fn simd_kernel() -> Option<&'static str> {
    celery_sign_core::mb::kernel().map(|k| k.id())
}

/// Settles the queued calls whose results are in (see `queue`); with `keep`
/// the caller promises to poll again soon. Returns twice the number of calls
/// still out, plus 1 when the machine looked busy (the CPU, yielded while
/// nothing was in, went to another process for long): no time to poll.
#[napi(catch_unwind)]
pub fn poll_queued(env: Env, keep: bool) -> Result<u32> {
    guard(|| {
        let (left, busy) = queue::poll(&env, keep)?;
        Ok(left.saturating_mul(2) | u32::from(busy))
    })
}

#[napi]
pub struct NativePrivateKey {
    inner: Arc<PrivateKey>,
}

#[napi]
impl NativePrivateKey {
    #[napi(constructor, catch_unwind)]
    pub fn new(pem: &[u8], password: Option<&[u8]>) -> Result<Self> {
        guard(|| {
            let inner = PrivateKey::from_pem(pem, password).map_err(to_js)?;
            Ok(NativePrivateKey {
                inner: Arc::new(inner),
            })
        })
    }

    #[napi(getter, catch_unwind)]
    pub fn bits(&self) -> u32 {
        self.inner.bits()
    }

    /// RSA-PSS, MGF1(digest), maximum salt length.
    #[napi(catch_unwind)]
    pub fn sign(&self, data: &[u8], digest_name: String) -> Result<Buffer> {
        guard(|| {
            let sig = self
                .inner
                .sign(data, digest(&digest_name)?)
                .map_err(to_js)?;
            Ok(sig.into())
        })
    }
}

#[napi]
pub struct NativeCertificate {
    inner: Arc<Certificate>,
}

#[napi]
impl NativeCertificate {
    #[napi(constructor, catch_unwind)]
    pub fn new(pem: &[u8]) -> Result<Self> {
        guard(|| {
            let inner = Certificate::from_pem(pem).map_err(to_js)?;
            Ok(NativeCertificate {
                inner: Arc::new(inner),
            })
        })
    }

    #[napi(getter, catch_unwind)]
    pub fn id(&self) -> String {
        self.inner.id().to_owned()
    }

    #[napi(getter, catch_unwind)]
    pub fn issuer(&self) -> String {
        self.inner.issuer().to_owned()
    }

    /// The serial number in decimal.
    #[napi(getter, catch_unwind)]
    pub fn serial(&self) -> String {
        self.inner.serial().to_owned()
    }

    /// notAfter in milliseconds since the epoch.
    #[napi(getter, catch_unwind)]
    pub fn not_after_ms(&self) -> f64 {
        self.inner.not_after() as f64 * 1000.0
    }

    /// notBefore in milliseconds since the epoch.
    #[napi(getter, catch_unwind)]
    pub fn not_before_ms(&self) -> f64 {
        self.inner.not_before() as f64 * 1000.0
    }

    #[napi(getter, catch_unwind)]
    pub fn bits(&self) -> u32 {
        self.inner.bits()
    }

    #[napi(catch_unwind)]
    pub fn has_expired(&self, now_ms: f64) -> bool {
        self.inner.has_expired_at(now_ms as i64)
    }

    /// `now < notBefore`.
    #[napi(catch_unwind)]
    pub fn is_not_yet_valid(&self, now_ms: f64) -> bool {
        self.inner.is_not_yet_valid_at(now_ms as i64)
    }

    /// Celery's `Certificate.verify`: expired certificates refuse, any salt length.
    #[napi(catch_unwind)]
    pub fn verify(&self, data: &[u8], signature: &[u8], digest_name: String) -> Result<()> {
        guard(|| {
            self.inner
                .verify(data, signature, digest(&digest_name)?)
                .map_err(to_js)
        })
    }
}

/// A certificate store shared with serializers: adding a certificate is seen
/// by every serializer that uses the store; a running batch works on the
/// snapshot it started with.
#[napi]
pub struct NativeCertStore {
    inner: Arc<Mutex<Arc<CertStore>>>,
}

impl NativeCertStore {
    fn snapshot(&self) -> Arc<CertStore> {
        Arc::clone(&self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[napi]
impl NativeCertStore {
    #[napi(constructor, catch_unwind)]
    pub fn new() -> Self {
        NativeCertStore {
            inner: Arc::new(Mutex::new(Arc::new(CertStore::new()))),
        }
    }

    #[napi(catch_unwind)]
    pub fn add(&self, cert: &NativeCertificate) -> Result<()> {
        guard(|| {
            let mut store = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            Arc::make_mut(&mut store)
                .add(Arc::clone(&cert.inner))
                .map_err(to_js)
        })
    }

    #[napi(getter, catch_unwind)]
    pub fn size(&self) -> u32 {
        self.snapshot().len() as u32
    }

    /// Replaces this store's certificates by `other`'s, in one step: a batch
    /// already running keeps the certificates it started with, one started
    /// after sees only the new ones.
    #[napi(catch_unwind)]
    pub fn replace_with(&self, other: &NativeCertStore) {
        let next = other.snapshot();
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = next;
    }

    /// A new store holding this one's certificates as they are now (later
    /// changes of either are not seen by the other).
    #[napi(catch_unwind)]
    pub fn copy(&self) -> NativeCertStore {
        NativeCertStore {
            inner: Arc::new(Mutex::new(self.snapshot())),
        }
    }
}

impl Default for NativeCertStore {
    fn default() -> Self {
        Self::new()
    }
}

/// One verified payload.
#[napi(object)]
pub struct Opened {
    pub content_type: String,
    pub content_encoding: String,
    /// The body: text when it is valid UTF-8 (checked here, off the event loop), else bytes.
    pub body: Either<String, Buffer>,
    pub signer: String,
}

/// Numbers an item in `OpenedBatch.meta`.
const META_STRIDE: usize = 9;

/// A verified batch, flat: `meta` has 9 numbers an item.
/// ok:  `[0, contentTypeIdx, contentEncodingIdx, signerIdx, bodyStart, bodyEnd, flags,
///        firstLiteral, literalCount]`
/// err: `[status, messageIdx, 0, 0, 0, 0, 0, 0, 0]` where status is 1 + the index in `errorCodes()`.
/// Indices point into `strings`; body ranges into `buffer`. `flags`: 1 the body
/// is UTF-8; for a body of one of the `jsonTypes` asked for, also 4 (scanned),
/// 2 (ASCII), 8 (may hold a kombu marker), 16 (has 16 digits in a row) and 32
/// (long string values were lifted out into `literals`; the body holds
/// placeholders `"\u0000<k>"` for `literals[firstLiteral + k]`).
#[napi(object, object_from_js = false)]
pub struct OpenedBatch {
    pub buffer: Buffer,
    pub meta: Float64Array,
    pub strings: Vec<String>,
    #[napi(ts_type = "Array<string>")]
    pub literals: Vec<Literal>,
}

/// Signed payloads of a batch; `errors` has `[index, status, messageIdx]` triples.
#[napi(object)]
pub struct SealedBatch {
    pub payloads: Vec<String>,
    pub errors: Vec<u32>,
    pub messages: Vec<String>,
}

/// What a `NativeSerializer` holds: its `Sealer` (when it has a key and a
/// certificate), its certificate store (shared with the `NativeCertStore`)
/// and what each call's `Opener` is made of.
#[derive(Clone)]
struct Shared {
    sealer: Option<Arc<Sealer>>,
    store: Option<Arc<Mutex<Arc<CertStore>>>>,
    digest: Digest,
    max_payload: usize,
}

impl Shared {
    /// The sealer, once it is checked to be in date now (a call refuses
    /// with `ERR_CERTIFICATE_EXPIRED` before any work is scheduled).
    fn sealer(&self) -> Result<Arc<Sealer>> {
        let sealer = self.sealer.clone().ok_or_else(|| {
            napi::Error::new(
                Status::InvalidArg,
                "this serializer has no key and certificate to sign with",
            )
        })?;
        sealer
            .check_validity_at(celery_sign_core::cert::now_unix_ms())
            .map_err(to_js)?;
        Ok(sealer)
    }

    fn store(&self) -> Result<Arc<CertStore>> {
        let store = self.store.as_ref().ok_or_else(|| {
            napi::Error::new(
                Status::InvalidArg,
                "this serializer has no certificate store",
            )
        })?;
        Ok(Arc::clone(&store.lock().unwrap_or_else(|p| p.into_inner())))
    }

    /// The opener of one call, over the store's certificates as they are now.
    fn opener(&self) -> Result<Opener> {
        Ok(Opener::new(self.store()?, self.digest, self.max_payload))
    }

    /// [`Shared::opener`] for a batch that pre-scans the bodies of `json_types`.
    fn batch_opener(&self, json_types: Vec<String>) -> Result<Opener> {
        let types = json_types.into_iter().map(String::into_bytes).collect();
        Ok(self.opener()?.with_json_types(types).with_scan(&scan_one))
    }
}

/// Opens one payload and converts it for JavaScript.
fn open_one(opener: &Opener, payload: &[u8]) -> Result<Opened> {
    let (buf, opened) = opener.open(payload).map_err(to_js)?;
    Ok(to_opened(&buf, opened))
}

/// A core `Opened` as JavaScript takes it (`buf` holds its ranges).
fn to_opened(buf: &[u8], opened: envelope::Opened) -> Opened {
    let text = |r: std::ops::Range<usize>| String::from_utf8_lossy(&buf[r]).into_owned();
    Opened {
        content_type: text(opened.content_type.clone()),
        content_encoding: text(opened.content_encoding.clone()),
        signer: opened.signer.id().to_owned(),
        body: if opened.body_is_utf8 {
            Either::A(String::from_utf8_lossy(&buf[opened.body]).into_owned())
        } else {
            Either::B(buf[opened.body].to_vec().into())
        },
    }
}

/// A napi value just made on `env`, as the `Unknown` an export returns.
fn unknown(env: &Env, value: sys::napi_value) -> Unknown<'_> {
    // SAFETY: a value just made on this environment.
    unsafe { Unknown::from_raw_unchecked(env.raw(), value) }
}

/// Runs `work` on the batch pool (`queue::spawn_on_pool`); its promise.
/// No pool (the system refused its threads): this call fails with that
/// (`ERR_INTERNAL`); the next one tries again.
fn on_pool<'env>(env: &'env Env, work: queue::Work) -> Result<Unknown<'env>> {
    let pool = batch::pool().map_err(to_js)?;
    let promise = queue::spawn_on_pool(env, pool, work)?;
    Ok(unknown(env, promise))
}

#[napi]
pub struct NativeSerializer {
    shared: Shared,
}

#[napi]
impl NativeSerializer {
    #[napi(constructor, catch_unwind)]
    pub fn new(
        key: Option<&NativePrivateKey>,
        cert: Option<&NativeCertificate>,
        store: Option<&NativeCertStore>,
        digest_name: String,
        wire_format: String,
        max_payload: f64,
    ) -> Result<Self> {
        guard(|| {
            let format = WireFormat::from_name(&wire_format).ok_or_else(|| {
                napi::Error::new(
                    Status::InvalidArg,
                    "wireFormat must be 'celery-5.5' or 'celery-5.4'",
                )
            })?;
            let digest = digest(&digest_name)?;
            let sealer = match (key, cert) {
                (Some(k), Some(c)) => Some(Arc::new(Sealer::new(
                    Arc::clone(&k.inner),
                    Arc::clone(&c.inner),
                    digest,
                    format,
                ))),
                _ => None,
            };
            Ok(NativeSerializer {
                shared: Shared {
                    sealer,
                    store: store.map(|s| Arc::clone(&s.inner)),
                    digest,
                    max_payload: if max_payload.is_finite() && max_payload >= 0.0 {
                        max_payload as usize
                    } else {
                        envelope::DEFAULT_MAX_PAYLOAD
                    },
                },
            })
        })
    }

    /// Signs and packs one body on the calling thread.
    #[napi(catch_unwind)]
    pub fn seal(
        &self,
        content_type: String,
        content_encoding: String,
        body: &[u8],
    ) -> Result<String> {
        guard(|| {
            self.shared
                .sealer()?
                .seal(&content_type, &content_encoding, body)
                .map_err(to_js)
        })
    }

    /// Signs and packs one body on a libuv worker thread.
    #[napi(ts_return_type = "Promise<string>", catch_unwind)]
    pub fn seal_async(
        &self,
        content_type: String,
        content_encoding: String,
        body: &[u8],
    ) -> Result<AsyncTask<SealTask>> {
        guard(|| {
            Ok(AsyncTask::new(SealTask {
                sealer: self.shared.sealer()?,
                content_type,
                content_encoding,
                body: body.to_vec(),
            }))
        })
    }

    /// Signs and packs a batch of bodies in one native call over the thread
    /// pool. The job runs on the pool itself (`queue::spawn_on_pool`), as
    /// `openPacked` does, holding no libuv thread: the facade keeps two
    /// chunks in flight, which as `AsyncTask`s held two of libuv's four
    /// threads (fs, dns, zlib) for the whole batch.
    #[napi(ts_return_type = "Promise<SealedBatch>", catch_unwind)]
    pub fn seal_many<'env>(
        &self,
        env: &'env Env,
        content_type: String,
        content_encoding: String,
        bodies: Vec<&[u8]>,
    ) -> Result<Unknown<'env>> {
        guard(|| {
            let sealer = self.shared.sealer()?;
            let bodies = Packed::from_items(bodies);
            let work: queue::Work = Box::new(move || {
                let r = sealer
                    .seal_many(&content_type, &content_encoding, bodies.items())
                    .map(sealed_batch)
                    .map_err(to_js);
                Box::new(move |env| {
                    let b = r?;
                    // SAFETY: env is the live environment of the JavaScript thread.
                    unsafe { ToNapiValue::to_napi_value(env, b) }
                })
            });
            on_pool(env, work)
        })
    }

    /// Verifies one payload on the calling thread.
    #[napi(catch_unwind)]
    pub fn open(&self, payload: &[u8]) -> Result<Opened> {
        guard(|| open_one(&self.shared.opener()?, payload))
    }

    /// Verifies one payload on a native thread: this JavaScript thread's own
    /// (see `queue`), or the batch pool when several calls are out together.
    /// Results come quickest while the caller polls (`pollQueued`).
    #[napi(ts_return_type = "Promise<Opened>", catch_unwind)]
    pub fn open_async<'env>(&self, env: &'env Env, payload: &[u8]) -> Result<Unknown<'env>> {
        guard(|| {
            let opener = self.shared.opener()?;
            let payload = payload.to_vec();
            // The queue runs the job and its settling under `catch_unwind` (see `queue`).
            let promise = queue::submit(
                env,
                Box::new(move || {
                    let r = open_one(&opener, &payload);
                    Box::new(move |env| {
                        let o = r?;
                        // SAFETY: env is the live environment of the JavaScript thread.
                        unsafe { ToNapiValue::to_napi_value(env, o) }
                    })
                }),
            )?;
            Ok(unknown(env, promise))
        })
    }

    /// Verifies a batch in one native call over the thread pool. The payloads
    /// are laid end to end in `data`, item `i` being `lengths[i]` bytes long;
    /// the buffer is read in place by the native threads, never copied.
    /// Bodies of the `jsonTypes` content types (those kombu's JSON decodes)
    /// are pre-scanned on the native threads as well (see `OpenedBatch`).
    ///
    /// The job runs on the pool itself (`queue::spawn_on_pool`), holding no
    /// libuv thread, so a caller may keep several in flight. With `spread`
    /// false the job opens its items one after the other on the one pool
    /// thread that runs it: for a chunk with others in flight, which keep
    /// the other threads busy. Fanned out (the default), a thread that
    /// waits for the rest of its chunk runs the next chunk's job meanwhile,
    /// so the chunks in flight finished together rather than one after the
    /// other, and the pool waited while the caller decoded them.
    #[napi(ts_return_type = "Promise<OpenedBatch>", catch_unwind)]
    pub fn open_packed<'env>(
        &self,
        env: &'env Env,
        data: Buffer,
        lengths: &[u32],
        json_types: Vec<String>,
        spread: Option<bool>,
    ) -> Result<Unknown<'env>> {
        guard(|| {
            let offsets = packed_offsets(data.len(), lengths)?;
            let opener = self.shared.batch_opener(json_types)?;
            // Over the JavaScript buffer of payloads, kept alive (and
            // unmoved) by its reference until the job is settled.
            let batch = PackedBatch {
                opener,
                data,
                offsets,
            };
            let place = if spread.unwrap_or(true) {
                Place::Pool
            } else {
                Place::Here
            };
            let work: queue::Work = Box::new(move || {
                let r = batch.open(place);
                Box::new(move |env| r?.into_napi(env))
            });
            on_pool(env, work)
        })
    }

    /// `openPacked` on the calling thread, for a batch too small to pay for
    /// a round trip through the pool (the event loop waits for it, as for
    /// `open`). The buffer is read in place.
    #[napi(ts_return_type = "OpenedBatch", catch_unwind)]
    pub fn open_packed_sync<'env>(
        &self,
        env: &'env Env,
        data: &[u8],
        lengths: &[u32],
        json_types: Vec<String>,
    ) -> Result<Unknown<'env>> {
        guard(|| {
            let batch = self.small_batch(data, lengths, json_types)?;
            let value = batch.open(Place::Here)?.into_napi(env.raw())?;
            Ok(unknown(env, value))
        })
    }

    /// `openPacked` on this JavaScript thread's native thread (the queue of
    /// `openAsync`, see `queue`) instead of the pool: for a small batch,
    /// which the event loop splits with it. The payloads are copied (a
    /// small batch is a few KiB). Results come quickest while the caller
    /// polls (`pollQueued`).
    #[napi(ts_return_type = "Promise<OpenedBatch>", catch_unwind)]
    pub fn open_packed_queued<'env>(
        &self,
        env: &'env Env,
        data: &[u8],
        lengths: &[u32],
        json_types: Vec<String>,
    ) -> Result<Unknown<'env>> {
        guard(|| {
            let batch = self.small_batch(data, lengths, json_types)?.into_owned();
            // The queue runs the job and its settling under `catch_unwind` (see `queue`).
            let promise = queue::submit(
                env,
                Box::new(move || {
                    let r = batch.open(Place::Here);
                    Box::new(move |env| r?.into_napi(env))
                }),
            )?;
            Ok(unknown(env, promise))
        })
    }
}

impl NativeSerializer {
    /// What the two small-batch entry points (`openPackedSync`,
    /// `openPackedQueued`) open: the call's opener over `data` as `lengths`
    /// lay it out.
    fn small_batch<'d>(
        &self,
        data: &'d [u8],
        lengths: &[u32],
        json_types: Vec<String>,
    ) -> Result<PackedBatch<&'d [u8]>> {
        let opener = self.shared.batch_opener(json_types)?;
        let offsets = packed_offsets(data.len(), lengths)?;
        Ok(PackedBatch {
            opener,
            data,
            offsets,
        })
    }
}

/// A packed batch to open: the call's opener, the payloads laid end to end
/// and their offsets (`offsets[i]..offsets[i + 1]` is item `i`).
struct PackedBatch<D> {
    opener: Opener,
    data: D,
    offsets: Vec<usize>,
}

impl PackedBatch<&[u8]> {
    /// The same batch over a copy of its payloads (for a job that outlives
    /// the call).
    fn into_owned(self) -> PackedBatch<Vec<u8>> {
        let end = self.offsets[self.offsets.len() - 1];
        PackedBatch {
            data: self.data[..end].to_vec(),
            opener: self.opener,
            offsets: self.offsets,
        }
    }
}

impl<D: std::ops::Deref<Target = [u8]>> PackedBatch<D> {
    /// Opens the batch at `place` (the pool, or this thread) and lays the
    /// results out flat for JavaScript (see `OpenedBatch`): verification and
    /// the pre-scan of the JSON bodies in one pass (`Opener::open_batch`).
    fn open(&self, place: Place) -> Result<OpenManyOutput> {
        let items = batch::Items::new(&self.data, &self.offsets)
            .ok_or_else(|| napi::Error::new(Status::InvalidArg, "inconsistent batch layout"))?;
        let opened = self.opener.open_batch(items, place).map_err(to_js)?;
        Ok(flatten(opened))
    }
}

pub struct SealTask {
    sealer: Arc<Sealer>,
    content_type: String,
    content_encoding: String,
    body: Vec<u8>,
}

impl Task for SealTask {
    type Output = String;
    type JsValue = String;

    fn compute(&mut self) -> Result<String> {
        guard(|| {
            self.sealer
                .seal(&self.content_type, &self.content_encoding, &self.body)
                .map_err(to_js)
        })
    }

    fn resolve(&mut self, _env: Env, output: String) -> Result<String> {
        Ok(output)
    }
}

/// A sealed batch as JavaScript takes it (see `SealedBatch`).
fn sealed_batch(results: Vec<celery_sign_core::Result<String>>) -> SealedBatch {
    let mut out = SealedBatch {
        payloads: Vec::with_capacity(results.len()),
        errors: Vec::new(),
        messages: Vec::new(),
    };
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(p) => out.payloads.push(p),
            Err(e) => {
                out.payloads.push(String::new());
                out.errors.push(i as u32);
                out.errors.push(e.code.status());
                out.errors.push(out.messages.len() as u32);
                out.messages.push(e.message);
            }
        }
    }
    out
}

/// Interns short strings (content types, encodings, signer ids) of a batch:
/// by a look through the few first ones (a small batch has three), by a
/// hash map once there are more.
#[derive(Default)]
struct Interner {
    index: HashMap<Vec<u8>, usize>,
    /// Indices of the interned strings while there are few (`index` empty).
    few: Vec<usize>,
    strings: Vec<String>,
}

/// Interned strings looked up one by one, before `Interner` hashes them.
const FEW: usize = 8;

impl Interner {
    fn intern(&mut self, bytes: &[u8]) -> f64 {
        if self.index.is_empty() {
            if let Some(&i) = self
                .few
                .iter()
                .find(|&&i| self.strings[i].as_bytes() == bytes)
            {
                return i as f64;
            }
            if self.few.len() < FEW {
                let i = self.push(String::from_utf8_lossy(bytes).into_owned());
                self.few.push(i as usize);
                return i;
            }
            for &i in &self.few {
                self.index.insert(self.strings[i].as_bytes().to_vec(), i);
            }
        }
        if let Some(&i) = self.index.get(bytes) {
            return i as f64;
        }
        let i = self.strings.len();
        self.strings
            .push(String::from_utf8_lossy(bytes).into_owned());
        self.index.insert(bytes.to_vec(), i);
        i as f64
    }

    fn push(&mut self, s: String) -> f64 {
        self.strings.push(s);
        (self.strings.len() - 1) as f64
    }
}

pub struct OpenManyOutput {
    buffer: Vec<u8>,
    meta: Vec<f64>,
    strings: Vec<String>,
    literals: Vec<Vec<u8>>,
}

/// The pre-scan of one body (with the `panic-probe` feature, a body holding
/// the probe's marker panics instead, while the probe asks for it).
fn scan_one(body: &mut [u8]) -> jsonscan::Scanned {
    #[cfg(feature = "panic-probe")]
    if probe::PANIC_SCAN.load(std::sync::atomic::Ordering::Relaxed)
        && body
            .windows(probe::MARKER.len())
            .any(|w| w == probe::MARKER)
    {
        #[allow(clippy::panic)]
        {
            panic!("probe: a panic in the pre-scan of one body");
        }
    }
    jsonscan::scan(body)
}

/// Below this many bytes of buffer and meta, a batch's output is copied into
/// memory V8 allocates rather than handed over as external memory: for a
/// few KiB the copy is cheaper than the external buffers and their
/// finalizers (which V8's collector also has to sweep).
const COPY_BELOW: usize = 64 * 1024;

fn napi_check(status: sys::napi_status, what: &str) -> Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(napi::Error::new(Status::from(status), what.to_owned()))
    }
}

impl OpenManyOutput {
    /// As a JavaScript `OpenedBatch` (see [`COPY_BELOW`]).
    fn into_napi(self, env: sys::napi_env) -> Result<sys::napi_value> {
        if self.buffer.len() + self.meta.len() * 8 > COPY_BELOW {
            // SAFETY: env is the live environment of the JavaScript thread.
            return unsafe { ToNapiValue::to_napi_value(env, self.into_js()) };
        }
        let mut obj = std::ptr::null_mut();
        let mut buffer = std::ptr::null_mut();
        let mut meta_bytes = std::ptr::null_mut();
        let mut meta_buffer = std::ptr::null_mut();
        let mut meta = std::ptr::null_mut();
        let mut ignored = std::ptr::null_mut();
        let len = self.meta.len();
        // SAFETY: plain napi calls on the JavaScript thread's environment;
        // the copies write `len * 8` bytes into an ArrayBuffer just made
        // that long, and read the Vec's own bytes.
        unsafe {
            napi_check(sys::napi_create_object(env, &mut obj), "creating a batch")?;
            napi_check(
                sys::napi_create_buffer_copy(
                    env,
                    self.buffer.len(),
                    self.buffer.as_ptr().cast(),
                    &mut ignored,
                    &mut buffer,
                ),
                "creating a batch's buffer",
            )?;
            napi_check(
                sys::napi_create_arraybuffer(env, len * 8, &mut meta_bytes, &mut meta_buffer),
                "creating a batch's meta",
            )?;
            if len > 0 {
                std::ptr::copy_nonoverlapping(
                    self.meta.as_ptr().cast::<u8>(),
                    meta_bytes.cast::<u8>(),
                    len * 8,
                );
            }
            napi_check(
                sys::napi_create_typedarray(
                    env,
                    sys::TypedarrayType::float64_array,
                    len,
                    meta_buffer,
                    0,
                    &mut meta,
                ),
                "creating a batch's meta",
            )?;
            let strings = ToNapiValue::to_napi_value(env, self.strings)?;
            let literals: Vec<Literal> = self.literals.into_iter().map(Literal).collect();
            let literals = ToNapiValue::to_napi_value(env, literals)?;
            for (name, value) in [
                (c"buffer", buffer),
                (c"meta", meta),
                (c"strings", strings),
                (c"literals", literals),
            ] {
                napi_check(
                    sys::napi_set_named_property(env, obj, name.as_ptr(), value),
                    "filling a batch",
                )?;
            }
        }
        Ok(obj)
    }

    fn into_js(self) -> OpenedBatch {
        OpenedBatch {
            buffer: self.buffer.into(),
            meta: self.meta.into(),
            strings: self.strings,
            literals: self.literals.into_iter().map(Literal).collect(),
        }
    }
}

/// The item offsets of a packed batch (`offsets[i]..offsets[i + 1]` is item
/// `i`), checked against the data's length.
fn packed_offsets(data_len: usize, lengths: &[u32]) -> Result<Vec<usize>> {
    let mut offsets = Vec::with_capacity(lengths.len() + 1);
    let mut at = 0usize;
    offsets.push(0);
    for &l in lengths {
        at += l as usize;
        offsets.push(at);
    }
    if at > data_len {
        return Err(napi::Error::new(
            Status::InvalidArg,
            "lengths add up to more than the data",
        ));
    }
    Ok(offsets)
}

/// An opened batch as JavaScript takes it: `meta`, interned strings, the
/// lifted literals, and the buffer (compacted when the bodies fill less than
/// half of it).
fn flatten(opened: batch::OpenedBatch) -> OpenManyOutput {
    let batch::OpenedBatch {
        buffer,
        results,
        scanned,
    } = opened;
    let mut strings = Interner::default();
    let (mut meta, lifted) = lay_out_meta(&buffer, &results, &scanned, &mut strings);
    let literals = lifted_literals(scanned, lifted);
    let buffer = compact_bodies(buffer, &results, &mut meta);
    OpenManyOutput {
        buffer,
        meta,
        strings: strings.strings,
        literals,
    }
}

/// Every item's `META_STRIDE` numbers (see `OpenedBatch`), and how many
/// literals the batch lifted out of its bodies.
fn lay_out_meta(
    buffer: &[u8],
    results: &[celery_sign_core::Result<envelope::Opened>],
    scanned: &[Option<jsonscan::Scanned>],
    strings: &mut Interner,
) -> (Vec<f64>, usize) {
    let mut meta = Vec::with_capacity(results.len() * META_STRIDE);
    let mut lifted = 0usize;
    for (i, r) in results.iter().enumerate() {
        let item = match r {
            Ok(o) => {
                let scan = scanned.get(i).and_then(Option::as_ref);
                let item = opened_meta(buffer, o, scan, lifted, strings);
                lifted += scan.map_or(0, |s| s.literals.len());
                item
            }
            Err(e) => refused_meta(e, strings),
        };
        meta.extend_from_slice(&item);
    }
    (meta, lifted)
}

/// A verified item's numbers: `[0, contentTypeIdx, contentEncodingIdx,
/// signerIdx, bodyStart, bodyEnd, flags, firstLiteral, literalCount]`, its
/// literals (if its body was scanned) numbered from `first_literal`.
fn opened_meta(
    buffer: &[u8],
    o: &envelope::Opened,
    scanned: Option<&jsonscan::Scanned>,
    first_literal: usize,
    strings: &mut Interner,
) -> [f64; META_STRIDE] {
    let ct = strings.intern(&buffer[o.content_type.clone()]);
    let enc = strings.intern(&buffer[o.content_encoding.clone()]);
    let signer = strings.intern(o.signer.id().as_bytes());
    let (flags, count) = match scanned {
        Some(s) => (s.flags, s.literals.len()),
        None if o.body_is_utf8 => (jsonscan::FLAG_UTF8, 0),
        None => (0, 0),
    };
    [
        0.0,
        ct,
        enc,
        signer,
        o.body.start as f64,
        o.body.end as f64,
        flags as f64,
        first_literal as f64,
        count as f64,
    ]
}

/// A refused item's numbers: `[status, messageIdx, 0, ...]`.
fn refused_meta(e: &CoreError, strings: &mut Interner) -> [f64; META_STRIDE] {
    let msg = strings.push(e.message.clone());
    let mut item = [0.0; META_STRIDE];
    item[0] = status_of(e.code);
    item[1] = msg;
    item
}

/// The literals lifted out of the scanned bodies, in item order (`lifted`
/// of them).
fn lifted_literals(scanned: Vec<Option<jsonscan::Scanned>>, lifted: usize) -> Vec<Vec<u8>> {
    let mut literals = Vec::with_capacity(lifted);
    for s in scanned.into_iter().flatten() {
        literals.extend(s.literals);
    }
    literals
}

/// The decoded payloads also hold signers and signatures, and bodies whose
/// long values were lifted out shrank: when the bodies fill less than half
/// of the buffer, hand over only them (the body ranges in `meta` moved with
/// them), and free the rest now rather than at JavaScript's next collection
/// (which, as external memory, it would also bring nearer).
fn compact_bodies(
    buffer: Vec<u8>,
    results: &[celery_sign_core::Result<envelope::Opened>],
    meta: &mut [f64],
) -> Vec<u8> {
    let bodies: usize = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|o| o.body.len()))
        .sum();
    if bodies > buffer.len() / 2 {
        return buffer;
    }
    let mut compact = Vec::with_capacity(bodies);
    for (r, m) in results.iter().zip(meta.chunks_exact_mut(META_STRIDE)) {
        if let Ok(o) = r {
            m[4] = compact.len() as f64;
            compact.extend_from_slice(&buffer[o.body.clone()]);
            m[5] = compact.len() as f64;
        }
    }
    compact
}

/// Exports that exist only in a build with the `panic-probe` feature (never
/// in a release: `npm run build:native` does not enable it), for
/// test/panic.test.ts: each panics where a bug would, to show that the panic
/// arrives as an `ERR_INTERNAL` error and nothing else happens.
#[cfg(feature = "panic-probe")]
#[allow(clippy::panic)]
#[cfg_attr(test, allow(dead_code))]
mod probe {
    use super::*;

    /// Panics in a synchronous export.
    #[napi(catch_unwind)]
    pub fn panic_probe_sync() -> Result<()> {
        guard(|| panic!("probe: a panic in a synchronous call"))
    }

    /// Panics before the guard, in napi's own frame (the attribute's catch).
    #[napi(catch_unwind)]
    pub fn panic_probe_unguarded() {
        panic!("probe: a panic outside the guard")
    }

    pub struct PanicTask;

    impl Task for PanicTask {
        type Output = ();
        type JsValue = ();

        fn compute(&mut self) -> Result<()> {
            guard(|| panic!("probe: a panic in a task's compute"))
        }

        fn resolve(&mut self, _env: Env, _output: ()) -> Result<()> {
            Ok(())
        }
    }

    /// A task whose compute (on a libuv thread) panics.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn panic_probe_task() -> AsyncTask<PanicTask> {
        AsyncTask::new(PanicTask)
    }

    /// Queues a job on the `deserializeAsync` queue that panics on the native
    /// thread (`where = "work"`), while its promise is settled (`"settle"`),
    /// or not at all (anything else: resolves to `where`).
    #[napi(catch_unwind, ts_return_type = "Promise<string>")]
    pub fn panic_probe_queued<'env>(env: &'env Env, at: String) -> Result<Unknown<'env>> {
        guard(|| {
            let promise = queue::submit(
                env,
                Box::new(move || {
                    if at == "work" {
                        panic!("probe: a panic in a queued job");
                    }
                    Box::new(move |env| {
                        if at == "settle" {
                            panic!("probe: a panic settling a queued job");
                        }
                        // SAFETY: env is the live environment of the JavaScript thread.
                        unsafe { ToNapiValue::to_napi_value(env, at) }
                    })
                }),
            )?;
            // SAFETY: a promise just made on this environment.
            Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), promise) })
        })
    }

    /// While set, the pre-scan panics on a body that holds [`MARKER`].
    pub static PANIC_SCAN: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);
    pub const MARKER: &[u8] = b"celery-sign-probe-panic";

    /// Makes the pre-scan of a batch panic on bodies that hold the marker.
    #[napi(catch_unwind)]
    pub fn probe_panic_in_scan(on: bool) {
        PANIC_SCAN.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes every external string creation fail (or succeed again).
    #[napi(catch_unwind)]
    pub fn probe_fail_external_strings(fail: bool) {
        literal::FAIL_EXTERNAL.store(fail, std::sync::atomic::Ordering::Relaxed);
    }
}
