/**
 * The worker's signal handlers, as `celery worker` installs them (checked
 * against Celery 5.7's `celery/apps/worker.py`):
 *
 * - `SIGTERM`: warm shutdown (stop consuming, give back the messages held
 *   but not started and the ETA ones, let the running tasks finish and be
 *   acknowledged), then exit 0 (Celery's `EX_OK`);
 * - `SIGINT` (Ctrl+C): the same warm shutdown, then exit 1 (Celery's
 *   `EX_FAILURE` for SIGINT);
 * - `SIGQUIT`, or a second signal during a warm shutdown: cold shutdown
 *   (the running tasks are given back to their queue unacknowledged, their
 *   `ctx.signal` aborted, the connections closed), then exit 1;
 * - a further signal during a cold shutdown: exit 1 at once.
 *
 * Unlike Celery, whose warm shutdown waits for as long as the tasks run,
 * the warm shutdown here waits at most `shutdownTimeout` (default 30 s, the
 * default of `worker.stop()` and of Kubernetes' grace period), then goes
 * cold. And a second `SIGTERM` goes cold (Celery ignores it and wants
 * SIGQUIT or a second Ctrl+C).
 *
 * The worker ends the process (`process.exit`) when the shutdown is done,
 * as the signal's default action would have ended it, unless the
 * application listens to that signal itself: then the application decides.
 * Several workers in one process each shut down; the last one to finish
 * ends the process. The handlers are removed when the worker stops,
 * however it stops.
 *
 * @module
 */

/** Emitted as `'shutdown'` when a signal starts (or hardens) a shutdown. */
export interface ShutdownEvent {
  signal: NodeJS.Signals;
  /** `'warm'`: running tasks may finish; `'cold'`: they are given back; `'hard'`: exit now. */
  how: 'warm' | 'cold' | 'hard';
  /** The exit code the process will end with (Celery's). */
  exitCode: number;
}

/** The signals handled. */
export const SHUTDOWN_SIGNALS: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGQUIT'];

/** What the handlers need of the worker. */
export interface Stoppable {
  stop(options: { timeout: number }): Promise<void>;
  emit(event: 'shutdown', e: ShutdownEvent): boolean;
}

/** The handlers installed in this process (one per running worker). */
const installed = new Set<SignalHandlers>();

/** Installs and removes the worker's signal handlers. */
export class SignalHandlers {
  readonly #worker: Stoppable;
  readonly #timeout: number;
  readonly #handlers = new Map<NodeJS.Signals, () => void>();
  #how: 'warm' | 'cold' | 'hard' | undefined;
  #exitCode = 0;
  /** The application listens to the signal that started the shutdown. */
  #owned = false;

  constructor(worker: Stoppable, timeoutMs: number) {
    this.#worker = worker;
    this.#timeout = timeoutMs;
  }

  /** Adds a listener for each of {@link SHUTDOWN_SIGNALS}. */
  install(): void {
    if (this.#handlers.size > 0) return;
    for (const sig of SHUTDOWN_SIGNALS) {
      const h = (): void => this.#on(sig);
      this.#handlers.set(sig, h);
      process.on(sig, h);
    }
    installed.add(this);
  }

  /** Removes the listeners (the signals' default actions come back unless others listen). */
  remove(): void {
    for (const [sig, h] of this.#handlers) process.removeListener(sig, h);
    this.#handlers.clear();
    installed.delete(this);
  }

  #on(sig: NodeJS.Signals): void {
    if (this.#how === undefined) {
      // Listeners beyond the workers' own: the application owns the signal.
      this.#owned = process.listenerCount(sig) > installed.size;
      this.#how = sig === 'SIGQUIT' ? 'cold' : 'warm';
      this.#exitCode = sig === 'SIGTERM' ? 0 : 1;
      this.#emit(sig);
      this.#worker.stop({ timeout: this.#how === 'cold' ? 0 : this.#timeout }).then(
        () => this.#done(),
        () => this.#done(),
      );
    } else if (this.#how === 'warm') {
      this.#how = 'cold';
      this.#exitCode = 1;
      this.#emit(sig);
      // A stop under way with a shorter timeout: it gives the running tasks back now.
      void this.#worker.stop({ timeout: 0 }).catch(() => undefined);
    } else {
      this.#how = 'hard';
      this.#exitCode = 1;
      this.#emit(sig);
      if (!this.#owned) process.exit(1);
    }
  }

  #emit(signal: NodeJS.Signals): void {
    try {
      this.#worker.emit('shutdown', { signal, how: this.#how!, exitCode: this.#exitCode });
    } catch {
      /* a listener's error must not stop the shutdown */
    }
  }

  #done(): void {
    this.remove();
    // Other workers still shutting down end the process when they are done.
    if (!this.#owned && installed.size === 0) process.exit(this.#exitCode);
  }
}
