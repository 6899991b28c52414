/**
 * Wycheproof's RSA-PSS and PKCS#1 v1.5 vectors on the verification path this
 * process's environment gives: the AVX-512 IFMA kernels where the CPU has
 * them (the IFMA tests say "skipped" with the reason where it has not, or
 * under CELERY_SIGN_SIMD=0; batches then take the AVX2 kernel where the CPU
 * has AVX2), the node:crypto fallback under
 * CELERY_SIGN_BACKEND=js. test/wycheproof-awslc.test.ts runs the same vectors
 * on AWS-LC. See test/helpers/wycheproof.ts and test/vectors/wycheproof/README.md.
 */
import { defineWycheproofSuite } from './helpers/wycheproof.js';

defineWycheproofSuite('environment');
