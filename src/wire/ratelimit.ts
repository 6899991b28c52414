/**
 * Per-task rate limits, as a Celery worker applies a task's `rate_limit`
 * (`celery/worker/consumer/consumer.py` `bucket_for_task`): a token bucket
 * (kombu's `TokenBucket`) per task name, filled at the limit's rate, of
 * capacity 1. A task whose bucket is empty waits, held by the worker
 * (unacknowledged), until its bucket has a token; the other tasks go past it.
 *
 * @module
 */

/** Celery's `rate_limit` string: `'10/s'`, `'10/m'`, `'10/h'`, a plain number (per second); `''`, `0`, `null`: no limit. */
export type RateLimit = string | number | null;

/**
 * Celery's `celery.utils.time.rate`: tasks per second of a rate limit
 * (0: no limit).
 *
 * @throws Error named `ValueError` when the number is not a number, named
 *   `KeyError` when the unit is not `s`, `m` or `h` (what Celery's `rate` raises).
 */
export function rate(limit: RateLimit | undefined): number {
  if (limit === null || limit === undefined || limit === '' || limit === 0) return 0;
  if (typeof limit === 'number') {
    if (!Number.isFinite(limit) || limit < 0) throw pyError('ValueError', `could not convert string to float: '${String(limit)}'`);
    return limit;
  }
  const at = limit.indexOf('/');
  const ops = at < 0 ? limit : limit.slice(0, at);
  const unit = at < 0 ? 's' : limit.slice(at + 1) || 's';
  const n = pyFloat(ops);
  const div = unit === 's' ? 1 : unit === 'm' ? 60 : unit === 'h' ? 3600 : null;
  if (div === null) throw pyError('KeyError', `'${unit}'`, `KeyError('${unit}')`);
  return n / div || 0;
}

function pyFloat(text: string): number {
  const t = text.trim();
  if (!/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(t)) throw pyError('ValueError', `could not convert string to float: '${text}'`);
  return Number(t);
}

function pyError(name: string, message: string, repr?: string): Error {
  return Object.assign(new Error(message), { name, pyRepr: repr ?? `${name}("${message}")` });
}

/** kombu's `TokenBucket(fill_rate, capacity=1)`. Times in milliseconds. */
export class TokenBucket {
  readonly fillRate: number;
  readonly capacity: number;
  #tokens: number;
  #last: number;

  constructor(fillRate: number, capacity = 1, now = performance.now()) {
    this.fillRate = fillRate;
    this.capacity = capacity;
    this.#tokens = capacity;
    this.#last = now;
  }

  #refill(now: number): void {
    if (now > this.#last) {
      this.#tokens = Math.min(this.capacity, this.#tokens + ((now - this.#last) / 1000) * this.fillRate);
      this.#last = now;
    }
  }

  /** Takes `tokens` when the bucket has them. */
  canConsume(tokens = 1, now = performance.now()): boolean {
    this.#refill(now);
    if (tokens <= this.#tokens) {
      this.#tokens -= tokens;
      return true;
    }
    return false;
  }

  /** Milliseconds until the bucket has `tokens`. */
  expectedTime(tokens = 1, now = performance.now()): number {
    this.#refill(now);
    return Math.max(0, ((tokens - this.#tokens) / this.fillRate) * 1000);
  }
}

/** The rate limits of a worker's tasks, changed at run time by the `rate_limit` control command. */
export class RateLimits {
  readonly #limits = new Map<string, { limit: RateLimit; bucket: TokenBucket }>();

  /** Initial limits by task name (invalid ones throw, see {@link rate}). */
  constructor(initial: Record<string, RateLimit> = {}) {
    for (const [name, limit] of Object.entries(initial)) this.set(name, limit);
  }

  /** Sets (or, with no limit, removes) a task's limit; a new bucket, as Celery's `reset_rate_limits`. */
  set(name: string, limit: RateLimit): void {
    const r = rate(limit);
    if (r > 0) this.#limits.set(name, { limit, bucket: new TokenBucket(r, 1) });
    else this.#limits.delete(name);
  }

  /** The limit as it was set (for `inspect registered`), or `null`. */
  get(name: string): RateLimit {
    return this.#limits.get(name)?.limit ?? null;
  }

  /** Whether any task has a limit. */
  get size(): number {
    return this.#limits.size;
  }

  /** 0 when a task of `name` may start now (its token is taken), else milliseconds to wait. */
  take(name: string): number {
    const l = this.#limits.get(name);
    if (!l) return 0;
    if (l.bucket.canConsume(1)) return 0;
    return Math.max(1, l.bucket.expectedTime(1));
  }
}
