/**
 * Errors of the Celery wire layer. Like the rest of the package, each has a
 * stable `code`; none carries key material.
 *
 * @module
 */

/** Python's view of an exception, as Celery's JSON result backend stores it. */
export interface SerializedException {
  /** `type(exc).__qualname__`, e.g. `'ValueError'`. */
  exc_type: string;
  /** `exc.args` (a list). */
  exc_message: unknown;
  /** `type(exc).__module__`, e.g. `'builtins'`. */
  exc_module: string | null;
}

/**
 * A task ended in a failure state (`FAILURE` or `REVOKED`): what
 * `AsyncResult.get()` raises in Celery. Carries the exception as the worker
 * stored it and the worker's traceback (a Python traceback for a Python
 * worker, a JavaScript stack for a Node worker).
 */
export class TaskFailedError extends Error {
  override readonly name = 'TaskFailedError';
  readonly code = 'ERR_TASK_FAILED' as const;
  /** The task id. */
  readonly taskId: string;
  /** The state the worker stored: `'FAILURE'` or `'REVOKED'`. */
  readonly status: string;
  /** The exception's type name, e.g. `'ValueError'`, `'TaskRevokedError'`. */
  readonly excType: string;
  /** The exception's module, e.g. `'builtins'`, `'celery.exceptions'`. */
  readonly excModule: string | null;
  /** The exception's arguments (Python's `exc.args`, usually a one-element list). */
  readonly excMessage: unknown;
  /** The traceback text the worker stored, or `null`. */
  readonly traceback: string | null;

  constructor(taskId: string, status: string, exc: SerializedException, traceback: string | null) {
    super(`${exc.exc_type}(${describeArgs(exc.exc_message)})`);
    this.taskId = taskId;
    this.status = status;
    this.excType = exc.exc_type;
    this.excModule = exc.exc_module;
    this.excMessage = exc.exc_message;
    this.traceback = traceback;
  }
}

/** `AsyncResult.get({ timeout })` ran out of time (Celery's `celery.exceptions.TimeoutError`). */
export class ResultTimeoutError extends Error {
  override readonly name = 'ResultTimeoutError';
  readonly code = 'ERR_RESULT_TIMEOUT' as const;
  readonly taskId: string;

  constructor(taskId: string, timeoutMs: number) {
    super(`The operation timed out: no result for task ${taskId} within ${timeoutMs} ms`);
    this.taskId = taskId;
  }
}

/**
 * Throw it from a task handler to choose how the failure looks to Python:
 * `new TaskError('ValueError', ['bad input'])` is stored as
 * `{"exc_type": "ValueError", "exc_message": ["bad input"], "exc_module": "builtins"}`,
 * which a Python `AsyncResult.get()` re-raises as a real `ValueError`.
 * Any other thrown value is stored with its `name` as the type (see the worker).
 */
export class TaskError extends Error {
  override readonly name: string = 'TaskError';
  /** Python exception type name. */
  readonly excType: string;
  /** Python `exc.args`. */
  readonly excArgs: unknown[];
  /** Python module of the exception type. Default `'builtins'`. */
  readonly excModule: string;

  constructor(excType: string, excArgs: unknown[] = [], excModule = 'builtins', options?: { cause?: unknown }) {
    super(`${excType}(${describeArgs(excArgs)})`, options);
    this.excType = excType;
    this.excArgs = excArgs;
    this.excModule = excModule;
  }
}

/** The broker or result backend cannot be used (closed client, unknown URL scheme at run time...). */
export class WireError extends Error {
  override readonly name = 'WireError';
  readonly code: 'ERR_CLOSED' | 'ERR_BROKER';

  constructor(code: 'ERR_CLOSED' | 'ERR_BROKER', message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

function describeArgs(args: unknown): string {
  try {
    if (Array.isArray(args)) return args.map((a) => (typeof a === 'string' ? JSON.stringify(a) : String(a))).join(', ');
    return typeof args === 'string' ? JSON.stringify(args) : String(args);
  } catch {
    return '...';
  }
}
