/**
 * Imported first by test/wycheproof-awslc.test.ts: turns the IFMA kernels off
 * for this process before celery-sign loads. The core reads CELERY_SIGN_SIMD
 * once, at its first verification (crates/core/src/mb.rs `available()`), and
 * Node's process.env writes reach the C environment it reads.
 */
process.env.CELERY_SIGN_SIMD = '0';
