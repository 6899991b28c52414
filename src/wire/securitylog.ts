/**
 * The security log (opt-in, `securityLog` of `createWorker` and
 * `createClient`): every refusal, certificate expiry skip, store reload
 * (rotation) and authorization refusal as one JSON line an operator can ship,
 * to a stream (`securityLog: process.stderr`, any `Writable`) or a callback.
 *
 * ```json
 * {"time":"2026-12-01T15:27:16.123Z","event":"refused","code":"ERR_BAD_SIGNATURE","reason":"Bad signature",
 *  "message":"Can't decode message body: SecurityError('Bad signature') [type:'application/data' encoding:'utf-8']",
 *  "signer":null,"subject":null,"task":"tasks.add","taskId":"...","queue":"celery","action":"ack",
 *  "broker":"redis://:********@redis:6379/0","hostname":"celery-sign@web-1","source":"worker"}
 * ```
 *
 * - Rate-limited per code (per event when there is none): at most `rate`
 *   lines per code in each one-second window (default 10); what is over is
 *   counted and reported as one `"event":"suppressed"` line per code
 *   (`"suppressed": K`) when its window has passed, so a flood of forged
 *   messages costs a bounded number of lines.
 * - Never key material, payload bodies, arguments or header values other
 *   than the task name and id; the broker URL without its password.
 * - `message` is Celery's log text for the same event where Celery logs one
 *   (`celery/worker/consumer/consumer.py`: "Can't decode message body: ..."
 *   for the refusals Celery acks, "Received invalid task message: ..." for
 *   those it rejects), without the headers and body dump Celery appends.
 * - A store with an `on` method (an `FSCertStore` that reloads) is
 *   subscribed to: `'reload'` (`store-reload`), `'expired'` (a certificate
 *   left out: `cert-expired`), `'error'` (`store-error`).
 * - With `{ to, authorized: true }` allowed authorization decisions are
 *   logged too (`"event":"authorized"`, code `null`): off by default, as it
 *   is one line per task.
 * - A callback that throws, or a stream that fails, never stops a worker.
 *
 * @module
 */
import { FSCertStore, type CertExpiredEvent, type CertStore, type CertStoreReload } from '../certificate.js';
import type { SecurityError } from '../errors.js';

/** One line of the security log. */
export interface SecurityLogEntry {
  /** ISO 8601, UTC. */
  time: string;
  /**
   * `'refused'` (a message refused: the worker's `'security'` event),
   * `'authorized'` (an allowed authorization decision, with `authorized: true`),
   * `'sign-refused'` (a client could not sign: its own certificate expired...),
   * `'result-refused'` (a client refused a stored result: bad signature...),
   * `'cert-expired'` (the store left an expired certificate out),
   * `'store-reload'`, `'store-error'`, `'suppressed'` (the summary of rate-limited lines).
   */
  event: 'refused' | 'authorized' | 'sign-refused' | 'result-refused' | 'cert-expired' | 'store-reload' | 'store-error' | 'suppressed';
  /** The stable code (`ERR_*`), or `null`. */
  code: string | null;
  /** Why, in words (celery-sign's message: no key material). */
  reason: string;
  /** Celery's log text for the same event, where Celery logs one. */
  message?: string;
  /** The Celery id of the signer, when known (verified). */
  signer: string | null;
  /** The signer's subject (`CN=billing-api,O=Acme`), when known. */
  subject: string | null;
  /** The task name as the message claims it (an unsigned header), or `null`. */
  task: string | null;
  /** The task id as the message claims it, or `null`. */
  taskId: string | null;
  /** The broker URL, password redacted. */
  broker: string;
  /** The worker's name (a client: the machine's host name). */
  hostname: string;
  /** Who logged it. */
  source: 'worker' | 'client';
  /** The queue of a refused message. */
  queue?: string;
  /** What happened to a refused message. */
  action?: 'ack' | 'reject';
  /** celery-sign's own rule that refused it (`replay`, `header-binding`, `authorization`). */
  check?: string;
  /** `suppressed` lines: how many lines of `code` were left out. */
  suppressed?: number;
}

/** Where the lines go: a stream (one JSON line each) or a callback (the entry). */
export type SecurityLogSink = NodeJS.WritableStream | ((entry: SecurityLogEntry) => void);

/** The long form of the `securityLog` option. */
export interface SecurityLogOptions {
  /** Where the lines go. */
  to: SecurityLogSink;
  /** Most lines per code in a second; more are counted in a `suppressed` line. Default 10. */
  rate?: number;
  /** Log allowed authorization decisions too. Default `false`. */
  authorized?: boolean;
}

/** The `securityLog` option: a sink, or {@link SecurityLogOptions}. */
export type SecurityLogOption = SecurityLogSink | SecurityLogOptions;

/** A URL (or several, `;`-separated, as kombu's fail-over lists) without passwords. */
export function redactUrl(url: string): string {
  return url
    .replace(/(\/\/[^/@;?#]*?:)[^@/;?#]*@/g, '$1********@')
    .replace(/([?&](?:password|sentinel_password|ssl_keyfile_password)=)[^&;#]*/gi, '$1********');
}

interface Bucket {
  start: number;
  count: number;
  suppressed: number;
}

const WINDOW_MS = 1000;

type Entry = Omit<SecurityLogEntry, 'time' | 'broker' | 'hostname' | 'source' | 'signer' | 'subject' | 'task' | 'taskId'> &
  Partial<Pick<SecurityLogEntry, 'signer' | 'subject' | 'task' | 'taskId'>>;

function pyRepr(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'").replace(/\n/g, '\\n')}'`;
}

/** @internal Writes the security log of one worker or client. */
export class SecurityLog {
  readonly #write: (entry: SecurityLogEntry) => void;
  readonly #rate: number;
  readonly authorized: boolean;
  readonly #broker: string;
  readonly #hostname: string;
  readonly #source: 'worker' | 'client';
  readonly #buckets = new Map<string, Bucket>();
  #timer: NodeJS.Timeout | undefined;
  readonly #unsubscribe: (() => void)[] = [];

  constructor(option: SecurityLogOption, context: { broker: string; hostname: string; source: 'worker' | 'client' }) {
    const o: SecurityLogOptions = isSink(option) ? { to: option } : option;
    if (!o || !isSink(o.to)) throw new TypeError('securityLog: a Writable stream, a function, or { to, rate?, authorized? }');
    const to = o.to;
    this.#write =
      typeof to === 'function'
        ? to
        : (entry) => {
            to.write(`${JSON.stringify(entry)}\n`);
          };
    this.#rate = Math.max(1, Math.floor(o.rate ?? 10));
    this.authorized = o.authorized === true;
    this.#broker = redactUrl(context.broker);
    this.#hostname = context.hostname;
    this.#source = context.source;
  }

  /** Logs one entry, rate-limited by its code (or event). */
  log(e: Entry): void {
    const key = e.code ?? e.event;
    const now = Date.now();
    let b = this.#buckets.get(key);
    if (b && now - b.start >= WINDOW_MS) {
      this.#summarize(key, b);
      b = undefined;
    }
    if (!b) {
      b = { start: now, count: 0, suppressed: 0 };
      this.#buckets.set(key, b);
    }
    if (b.count < this.#rate) {
      b.count++;
      this.#emit(e);
      return;
    }
    b.suppressed++;
    this.#timer ??= setInterval(() => this.#tick(), WINDOW_MS).unref();
  }

  /** A refused message (the worker's `'security'` event), with Celery's log text. */
  refused(
    e: { code: string; reason: string; task: string | null; taskId: string | null; signer?: string; queue: string; action: 'ack' | 'reject'; check?: string },
    delivery?: { contentType?: string | null; contentEncoding?: string | null },
    subject?: string | null,
  ): void {
    const message =
      e.check === 'authorization' && e.task === null
        ? `Refused remote control command: ${e.reason}`
        : e.action === 'ack'
        ? `Can't decode message body: SecurityError(${pyRepr(e.reason)}) [type:${pyRepr(String(delivery?.contentType ?? ''))} encoding:${pyRepr(String(delivery?.contentEncoding ?? ''))}]`
        : `Received invalid task message: ${e.reason}\nThe message has been ignored and discarded.`;
    this.log({
      event: 'refused',
      code: e.code,
      reason: e.reason,
      message,
      signer: e.signer ?? null,
      subject: subject ?? null,
      task: e.task,
      taskId: e.taskId,
      queue: e.queue,
      action: e.action,
      ...(e.check !== undefined ? { check: e.check } : {}),
    });
  }

  /** A client refusal (signing, or a stored result). */
  clientRefused(event: 'sign-refused' | 'result-refused', error: SecurityError, task: string | null, taskId: string | null): void {
    this.log({ event, code: error.code, reason: error.message, task, taskId });
  }

  /**
   * Subscribes to an {@link FSCertStore}'s events: `'reload'`
   * (`store-reload`, with the ids added and removed), `'expired'` (a
   * certificate left out, `onExpired: 'skip'`: `cert-expired`) and `'error'`
   * (a reload of a watch that failed, the old store kept: `store-error`).
   * Other stores have no events.
   */
  watchStore(store: CertStore | undefined): void {
    if (!(store instanceof FSCertStore)) return;
    const guard =
      <A extends unknown[]>(fn: (...a: A) => void) =>
      (...a: A): void => {
        try {
          fn(...a);
        } catch {
          /* the log never breaks the store */
        }
      };
    const onReload = guard((info: CertStoreReload) => {
      const list = (ids: string[]): string => ids.map((id) => JSON.stringify(id)).join(', ');
      const parts = [
        `${info.ids.length} certificates`,
        info.added.length ? `added ${list(info.added)}` : null,
        info.removed.length ? `removed ${list(info.removed)}` : null,
        info.replaced.length ? `replaced ${list(info.replaced)}` : null,
        info.skipped.length ? `expired, left out ${list(info.skipped)}` : null,
      ].filter((p) => p !== null);
      this.log({ event: 'store-reload', code: null, reason: `Certificate store reloaded (${info.source}): ${parts.join('; ')}` });
    });
    const onExpired = guard((info: CertExpiredEvent) => {
      this.log({
        event: 'cert-expired',
        code: 'ERR_CERTIFICATE_EXPIRED',
        reason: `Expired certificate left out of the store: ${JSON.stringify(info.id)} (${JSON.stringify(info.file)}, expired ${info.notAfter.toISOString()})`,
        signer: info.id,
        subject: info.subject,
      });
    });
    const onError = guard((err: SecurityError) => {
      this.log({ event: 'store-error', code: err.code, reason: err.message });
    });
    // Left out when the store was made, before this log listened.
    for (const e of store.skipped) onExpired(e);
    store.on('reload', onReload);
    store.on('expired', onExpired);
    store.on('error', onError);
    this.#unsubscribe.push(() => {
      store.off('reload', onReload);
      store.off('expired', onExpired);
      store.off('error', onError);
    });
  }

  /** Writes the pending `suppressed` lines and unsubscribes. */
  close(): void {
    for (const u of this.#unsubscribe.splice(0)) u();
    clearInterval(this.#timer);
    this.#timer = undefined;
    for (const [key, b] of this.#buckets) this.#summarize(key, b);
    this.#buckets.clear();
  }

  #tick(): void {
    const now = Date.now();
    let pending = false;
    for (const [key, b] of this.#buckets) {
      if (now - b.start >= WINDOW_MS) {
        this.#summarize(key, b);
        this.#buckets.delete(key);
      } else if (b.suppressed > 0) pending = true;
    }
    if (!pending) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }

  #summarize(key: string, b: Bucket): void {
    if (b.suppressed === 0) return;
    const n = b.suppressed;
    b.suppressed = 0;
    const isCode = key.startsWith('ERR_');
    this.#emit({
      event: 'suppressed',
      code: isCode ? key : null,
      reason: `suppressed: ${n} more ${key} lines in ${WINDOW_MS} ms (at most ${this.#rate} a second per code)`,
      suppressed: n,
    });
  }

  #emit(e: Entry): void {
    const entry: SecurityLogEntry = {
      time: new Date().toISOString(),
      event: e.event,
      code: e.code,
      reason: e.reason,
      ...(e.message !== undefined ? { message: e.message } : {}),
      signer: e.signer ?? null,
      subject: e.subject ?? null,
      task: e.task ?? null,
      taskId: e.taskId ?? null,
      broker: this.#broker,
      hostname: this.#hostname,
      source: this.#source,
      ...(e.queue !== undefined ? { queue: e.queue } : {}),
      ...(e.action !== undefined ? { action: e.action } : {}),
      ...(e.check !== undefined ? { check: e.check } : {}),
      ...(e.suppressed !== undefined ? { suppressed: e.suppressed } : {}),
    };
    try {
      this.#write(entry);
    } catch {
      /* a failing sink never stops the worker */
    }
  }
}

/** @internal The subject of a signer the store has, or `null`. */
export function subjectIn(store: CertStore | undefined, id: string | undefined): string | null {
  if (!store || id === undefined) return null;
  try {
    return store.has(id) ? store.get(id).subject || null : null;
  } catch {
    return null;
  }
}

function isSink(v: unknown): v is SecurityLogSink {
  return typeof v === 'function' || (v !== null && typeof v === 'object' && typeof (v as { write?: unknown }).write === 'function');
}

