import { DIGESTS, type Digest } from './bytes.js';
import { ImproperlyConfigured } from './errors.js';

/** Accepts a digest name as Celery does (case-insensitive); anything else is a configuration error. */
export function checkDigest(digest: unknown): Digest {
  if (typeof digest === 'string') {
    const d = digest.toLowerCase();
    if ((DIGESTS as readonly string[]).includes(d)) return d as Digest;
  }
  throw new ImproperlyConfigured(
    `Unsupported digest ${JSON.stringify(digest)}: use one of ${DIGESTS.join(', ')}`,
  );
}

/** The envelope a `SecureSerializer` writes: Celery 5.5 and later (base64 signer and signature, the default) or Celery 5.4 and older (raw). Both are always read. */
export type WireFormat = 'celery-5.5' | 'celery-5.4';

export function checkWireFormat(format: unknown): WireFormat {
  if (format === 'celery-5.5' || format === 'celery-5.4') return format;
  throw new ImproperlyConfigured(`wireFormat must be 'celery-5.5' or 'celery-5.4', not ${JSON.stringify(format)}`);
}
