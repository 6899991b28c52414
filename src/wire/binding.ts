/**
 * Header binding (beyond Celery, opt-in): Celery signs the body only, so the
 * headers that decide what runs and when (`task`, `id`, `eta`, `expires`)
 * can be changed on the broker without breaking the signature. A producer
 * with `headerBinding: true` puts a digest of those four headers inside the
 * signed body, in the embed dict (the body's third element, next to
 * `callbacks`, `errbacks`, `chain`, `chord`):
 *
 * ```
 * "celery_sign_binding": {"v": 1, "alg": "sha256", "digest": "<hex>"}
 * ```
 *
 * where `digest` is the SHA-256, in lower-case hex, of the UTF-8 bytes of the
 * JSON array `[task, id, eta, expires]` (each a string or `null`) written
 * without spaces and with non-ASCII characters as they are: in Python
 * `json.dumps([task, id, eta, expires], separators=(',', ':'),
 * ensure_ascii=False)`.
 *
 * A Python worker ignores the extra key (Celery's worker reads only the keys
 * it knows from the embed; the rest lands, unused, on `task.request`). A Node
 * worker checks a binding whenever a verified body carries one, and with
 * `requireHeaderBinding: true` refuses a body without one.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { SecurityError } from '../errors.js';
import type { TaskMessage } from './protocol.js';

/** The embed key of the binding. */
export const BINDING_KEY = 'celery_sign_binding';

/** The bound headers, in the order they are digested. */
export const BOUND_HEADERS = ['task', 'id', 'eta', 'expires'] as const;

/** The value of {@link BINDING_KEY}. */
export interface HeaderBinding {
  v: 1;
  alg: 'sha256';
  /** Lower-case hex SHA-256 of the bound headers (see the module notes). */
  digest: string;
}

function headerValue(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

/** The digest of a message's `task`, `id`, `eta` and `expires` headers. */
export function bindingDigest(headers: Readonly<Record<string, unknown>>): string {
  const values = BOUND_HEADERS.map((h) => headerValue(headers[h]));
  return createHash('sha256').update(JSON.stringify(values), 'utf8').digest('hex');
}

/** The binding of a message's headers. */
export function makeBinding(headers: Readonly<Record<string, unknown>>): HeaderBinding {
  return { v: 1, alg: 'sha256', digest: bindingDigest(headers) };
}

/**
 * Binds a task message's headers into its (not yet signed) body: adds
 * {@link BINDING_KEY} to the embed. Call it after every header is final.
 */
export function bindHeaders(message: TaskMessage): TaskMessage {
  const embed = message.body[2] as unknown as Record<string, unknown>;
  embed[BINDING_KEY] = makeBinding(message.headers);
  return message;
}

/**
 * Checks the binding a verified body carries against the message headers.
 * Returns the refusal, or `null` when the headers match (or there is no
 * binding and none is required).
 */
export function checkBinding(
  headers: Readonly<Record<string, unknown>>,
  embedExtra: Readonly<Record<string, unknown>> | undefined,
  required: boolean,
): SecurityError | null {
  const b = embedExtra?.[BINDING_KEY];
  if (b === undefined || b === null) {
    return required
      ? new SecurityError(
          'ERR_HEADER_MISMATCH',
          'Header binding required: the signed body does not bind the headers task, id, eta and expires',
        )
      : null;
  }
  const binding = b instanceof Map ? Object.fromEntries(b) : (b as Record<string, unknown>);
  if (typeof binding !== 'object' || binding.v !== 1 || binding.alg !== 'sha256' || typeof binding.digest !== 'string') {
    return new SecurityError('ERR_HEADER_MISMATCH', 'Header binding of an unknown version or algorithm');
  }
  const want = bindingDigest(headers);
  if (binding.digest.toLowerCase() !== want) {
    return new SecurityError(
      'ERR_HEADER_MISMATCH',
      'Header binding mismatch: the headers task, id, eta or expires differ from what the signer bound',
    );
  }
  return null;
}
