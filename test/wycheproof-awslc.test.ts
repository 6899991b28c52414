/**
 * Wycheproof's RSA-PSS and PKCS#1 v1.5 vectors on AWS-LC: CELERY_SIGN_SIMD=0
 * is set (by the first import, before celery-sign loads) so the IFMA kernels
 * stay off. Under CELERY_SIGN_BACKEND=js there is no AWS-LC path: the test
 * says it skips. See test/helpers/wycheproof.ts.
 */
import './helpers/wycheproof-simd-off.js';
import { defineWycheproofSuite } from './helpers/wycheproof.js';

defineWycheproofSuite('aws-lc');
