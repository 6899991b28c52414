//! A long ASCII string handed to JavaScript. Where Node has
//! `node_api_create_external_string_latin1` (Node >= 20.4; Node-API 10), the
//! string is made over the Rust allocation, without a copy on the event loop;
//! elsewhere it is copied in.
//!
//! The function is looked up at run time rather than linked: the addon is
//! linked with immediate binding, and an unresolved symbol would keep it from
//! loading at all on a Node that lacks it.

use napi::bindgen_prelude::*;
use napi::sys;
use std::ffi::c_void;
use std::ptr;
use std::sync::OnceLock;

/// Bytes in 0x00..=0x7f (ASCII: Latin-1 and UTF-8 read them alike).
pub struct Literal(pub Vec<u8>);

type CreateExternalLatin1 = unsafe extern "C" fn(
    env: sys::napi_env,
    str_: *const std::ffi::c_char,
    length: isize,
    finalize: sys::napi_finalize,
    finalize_hint: *mut c_void,
    result: *mut sys::napi_value,
    copied: *mut bool,
) -> sys::napi_status;

fn create_external_latin1() -> Option<CreateExternalLatin1> {
    static FOUND: OnceLock<Option<CreateExternalLatin1>> = OnceLock::new();
    *FOUND.get_or_init(|| {
        if std::env::var_os("CELERY_SIGN_NO_EXTERNAL_STRINGS").is_some() {
            return None;
        }
        #[cfg(unix)]
        let this = libloading::os::unix::Library::this();
        #[cfg(windows)]
        let this = libloading::os::windows::Library::this().ok()?;
        // SAFETY: the symbol, when the running Node exports it, has exactly
        // this signature (js_native_api.h since Node 20.4).
        let f = unsafe {
            this.get::<CreateExternalLatin1>(b"node_api_create_external_string_latin1\0")
        }
        .ok()
        .map(|s| *s);
        std::mem::forget(this); // the process image: never unloaded
        f
    })
}

/// What an external string's finalizer frees.
struct Owned {
    bytes: Vec<u8>,
    /// Whether `bytes.len()` was added to V8's count of external memory.
    counted: bool,
}

unsafe extern "C" fn free_literal(env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
    // SAFETY: hint is the Box<Owned> leaked in `to_napi_value`, finalized once.
    let owned = unsafe { Box::from_raw(hint as *mut Owned) };
    if owned.counted {
        let mut total = 0;
        // SAFETY: a finalizer may adjust the external memory count.
        unsafe { sys::napi_adjust_external_memory(env, -(owned.bytes.len() as i64), &mut total) };
    }
}

/// Test builds only (feature `panic-probe`): makes every external string
/// creation fail, so that the copying fallback is taken.
#[cfg(feature = "panic-probe")]
pub static FAIL_EXTERNAL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes an external string over `bytes`; gives the bytes back when Node
/// refuses (then the finalizer will not run).
///
/// # Safety
/// `env` is the live environment of the calling JavaScript thread.
unsafe fn external(
    env: sys::napi_env,
    create: CreateExternalLatin1,
    bytes: Vec<u8>,
) -> std::result::Result<sys::napi_value, Vec<u8>> {
    let mut out = ptr::null_mut();
    let len = bytes.len() as isize;
    let owned = Box::into_raw(Box::new(Owned {
        bytes,
        counted: false,
    }));
    // SAFETY: owned is live until its finalizer runs.
    let data = unsafe { (*owned).bytes.as_ptr() };
    let mut copied = false;
    #[cfg(feature = "panic-probe")]
    let refused = FAIL_EXTERNAL.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(feature = "panic-probe"))]
    let refused = false;
    // SAFETY: the bytes stay put until the finalizer frees them (at once,
    // before this returns, when V8 copies them).
    let status = if refused {
        sys::Status::napi_generic_failure
    } else {
        unsafe {
            create(
                env,
                data.cast(),
                len,
                Some(free_literal),
                owned.cast(),
                &mut out,
                &mut copied,
            )
        }
    };
    if status != sys::Status::napi_ok {
        // SAFETY: not taken: the finalizer will not run, the box is ours again.
        let owned = unsafe { Box::from_raw(owned) };
        return Err(owned.bytes);
    }
    if !copied {
        // V8 does not weigh an external string's bytes when it decides to
        // collect: without this, they would pile up between collections.
        // Undone by the finalizer.
        // SAFETY: owned is live (the string is); JavaScript thread.
        unsafe { (*owned).counted = true };
        let mut total = 0;
        // SAFETY: JavaScript thread.
        unsafe { sys::napi_adjust_external_memory(env, len as i64, &mut total) };
    }
    Ok(out)
}

impl ToNapiValue for Literal {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let bytes = match create_external_latin1() {
            Some(create) if !val.0.is_empty() => {
                // SAFETY: env is live (this function's contract).
                match unsafe { external(env, create, val.0) } {
                    Ok(v) => return Ok(v),
                    // Refused (out of memory, or a string too long): copy
                    // instead, once. Never this function again, which would
                    // fail the same way until the stack overflows.
                    Err(bytes) => bytes,
                }
            }
            _ => val.0,
        };
        let mut out = ptr::null_mut();
        // SAFETY: plain copy into the JavaScript heap.
        let status = unsafe {
            sys::napi_create_string_latin1(
                env,
                bytes.as_ptr().cast(),
                bytes.len() as isize,
                &mut out,
            )
        };
        if status != sys::Status::napi_ok {
            return Err(Error::new(
                Status::from(status),
                "creating a string".to_owned(),
            ));
        }
        Ok(out)
    }
}

impl TypeName for Literal {
    fn type_name() -> &'static str {
        "string"
    }

    fn value_type() -> ValueType {
        ValueType::String
    }
}
