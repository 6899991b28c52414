/**
 * The `security` option of the client and the worker: a ready
 * {@link SecureSerializer}, or Celery's settings for `setupSecurity`.
 *
 * @module
 */
import { ImproperlyConfigured } from '../errors.js';
import { SecureSerializer } from '../serializer.js';
import { setupSecurity } from '../setup.js';

/**
 * A {@link SecureSerializer}, or Celery's settings as `setupSecurity` reads
 * them (`task_serializer: 'auth'`, `accept_content: ['auth']`,
 * `security_key`, `security_certificate`, `security_cert_store`,
 * `security_digest`...). Settings go through `setupSecurity`, with its effects
 * on the package's `registry` (as Celery's `app.setup_security()`).
 */
export type SecurityOption = SecureSerializer | Record<string, unknown>;

/** Resolves the `security` option to a serializer. */
export function resolveSecurity(security: SecurityOption | undefined): SecureSerializer {
  if (security instanceof SecureSerializer) return security;
  if (security !== null && typeof security === 'object') return setupSecurity(security);
  throw new ImproperlyConfigured(
    'security is required: a SecureSerializer or Celery settings for setupSecurity (messages are always signed)',
  );
}
