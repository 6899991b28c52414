/**
 * The replay guard (beyond Celery, opt-in: `createWorker({ replayWindow })`):
 * a worker refuses a task whose id it accepted within the last
 * `replayWindow` milliseconds. Celery signs the body only, so a captured
 * message can be published again as it is; the guard stops that, and also
 * drops a second copy of a message the broker delivers twice (a Redis
 * visibility timeout shorter than the task, a lost acknowledgement).
 *
 * An id is remembered when its verified message is accepted, and forgotten
 * again when the worker gives the message back unstarted (at stop, or when
 * its result could not be stored), so that the broker's redelivery runs.
 * Memory is bounded: at most `maxEntries` ids (the oldest go first when full,
 * which shortens the window under a flood).
 *
 * The task id is a header, not signed: a replay with a fresh id passes the
 * guard unless the producer binds the headers (`headerBinding`) and the worker
 * requires it (`requireHeaderBinding`).
 *
 * @module
 */

/** Remembers task ids for a time window, in bounded memory. */
export class ReplayGuard {
  readonly windowMs: number;
  readonly maxEntries: number;
  /** id -> time accepted (ms); insertion order = time order. */
  readonly #seen = new Map<string, number>();

  constructor(windowMs: number, maxEntries = 100_000) {
    if (!(windowMs > 0) || !Number.isFinite(windowMs)) throw new RangeError('replayWindow must be a positive number of milliseconds');
    if (!Number.isInteger(maxEntries) || maxEntries < 1) throw new RangeError('replayCacheSize must be a positive integer');
    this.windowMs = windowMs;
    this.maxEntries = maxEntries;
  }

  /** How many ids are remembered now. */
  get size(): number {
    return this.#seen.size;
  }

  #evict(now: number): void {
    const floor = now - this.windowMs;
    for (const [id, at] of this.#seen) {
      if (at > floor && this.#seen.size <= this.maxEntries) break;
      this.#seen.delete(id);
    }
  }

  /**
   * Records `id` and returns `null`, or, when it was accepted within the
   * window, returns how many milliseconds ago (and records nothing).
   */
  check(id: string, now: number = Date.now()): number | null {
    this.#evict(now);
    const at = this.#seen.get(id);
    if (at !== undefined) return Math.max(0, now - at);
    this.#seen.set(id, now);
    if (this.#seen.size > this.maxEntries) this.#evict(now);
    return null;
  }

  /** Forgets `id` (its message went back to the broker unstarted). */
  forget(id: string): void {
    this.#seen.delete(id);
  }
}
