/**
 * Celery's result meta, as `BaseBackend._store_result` writes it for the
 * key-value backends (Redis): `{"status", "result", "traceback", "children",
 * "date_done", ["group_id"], ["parent_id"], "task_id"}`, in the result
 * serializer (`json` by default, or `auth`). Failures carry the exception as
 * `{"exc_type", "exc_message", "exc_module"}` (`prepare_exception`).
 *
 * @module
 */
import { SecurityError } from '../errors.js';
import { dumps as kombuDumps } from '../json/dumps.js';
import { loads as kombuLoads } from '../json/loads.js';
import type { SecureSerializer } from '../serializer.js';
import { TaskError, type SerializedException } from './errors.js';
import { isoformat } from './protocol.js';

/** Celery's task states. */
export type TaskState = 'PENDING' | 'RECEIVED' | 'STARTED' | 'SUCCESS' | 'FAILURE' | 'REVOKED' | 'REJECTED' | 'RETRY' | 'IGNORED';

/** `celery.states.READY_STATES`. */
export const READY_STATES: ReadonlySet<string> = new Set(['SUCCESS', 'FAILURE', 'REVOKED']);
/** `celery.states.EXCEPTION_STATES`. */
export const EXCEPTION_STATES: ReadonlySet<string> = new Set(['RETRY', 'FAILURE', 'REVOKED']);
/** `celery.states.PROPAGATE_STATES`. */
export const PROPAGATE_STATES: ReadonlySet<string> = new Set(['FAILURE', 'REVOKED']);

/** The key Celery's key-value backends keep a task's meta under. */
export const TASK_KEY_PREFIX = 'celery-task-meta-';

/** A result meta as stored. */
export interface ResultMeta {
  status: string;
  result: unknown;
  traceback: string | null;
  children: unknown[];
  date_done: string | null;
  task_id: string;
  group_id?: string;
  parent_id?: string;
  [extra: string]: unknown;
}

/** How results are encoded: Celery's `result_serializer` (`'json'` by default, or `'auth'`). */
export type ResultSerializer = 'json' | 'auth';

/** The task fields that go into the meta (`request.group`, `request.parent_id`). */
export interface MetaRequest {
  group?: string | null;
  parentId?: string | null;
}

/** Builds a meta in Celery's key order. */
export function buildMeta(
  taskId: string,
  status: TaskState,
  result: unknown,
  traceback: string | null,
  request: MetaRequest = {},
  now: Date = new Date(),
): ResultMeta {
  const meta: ResultMeta = {
    status,
    result,
    traceback,
    children: [],
    date_done: READY_STATES.has(status) ? isoformat(now) : null,
  } as unknown as ResultMeta;
  if (request.group) meta.group_id = request.group;
  if (request.parentId) meta.parent_id = request.parentId;
  meta.task_id = taskId;
  return meta;
}

/** Python built-in exception names: a JavaScript error with one of these names keeps it, with module `builtins`. */
const PY_BUILTINS = new Set([
  'Exception', 'ArithmeticError', 'AssertionError', 'AttributeError', 'EOFError', 'FloatingPointError',
  'ImportError', 'IndexError', 'KeyError', 'LookupError', 'MemoryError', 'NameError', 'NotImplementedError',
  'OSError', 'OverflowError', 'PermissionError', 'RecursionError', 'RuntimeError', 'TimeoutError', 'TypeError',
  'UnicodeError', 'ValueError', 'ZeroDivisionError', 'ConnectionError', 'FileNotFoundError', 'FileExistsError',
]);

/**
 * Celery's `prepare_exception` for a value thrown by a JavaScript handler:
 * a {@link TaskError} as it says; an `Error` as `{exc_type: err.name,
 * exc_message: [err.message], exc_module}` where the module is `builtins` for
 * the names Python has built in (`TypeError`, `ValueError`...) and
 * `celery_sign.js` otherwise (Celery then makes an exception class of that
 * name); anything else as an `Exception` of its string form.
 */
export function serializeException(err: unknown): SerializedException {
  if (err instanceof TaskError) return { exc_type: err.excType, exc_message: err.excArgs, exc_module: err.excModule };
  if (err instanceof Error) {
    const name = typeof err.name === 'string' && /^[A-Za-z_][A-Za-z0-9_.]*$/.test(err.name) ? err.name : 'Error';
    return { exc_type: name, exc_message: [String(err.message)], exc_module: PY_BUILTINS.has(name) ? 'builtins' : 'celery_sign.js' };
  }
  let text: string;
  try {
    text = String(err);
  } catch {
    text = '<unprintable>';
  }
  return { exc_type: 'Exception', exc_message: [text], exc_module: 'builtins' };
}

/** The traceback text stored for a JavaScript error: its stack. */
export function tracebackOf(err: unknown): string | null {
  if (err instanceof Error && typeof err.stack === 'string') return err.stack;
  return null;
}

/** Encodes a meta with the result serializer. */
export function encodeMeta(meta: ResultMeta, serializer: ResultSerializer, security?: SecureSerializer): string {
  if (serializer === 'auth') {
    if (!security) throw new TypeError('the auth result serializer needs a SecureSerializer');
    return security.serialize(meta);
  }
  return kombuDumps(meta);
}

/** Encodes many metas; `auth` ones in one native batch. */
export async function encodeMetas(metas: readonly ResultMeta[], serializer: ResultSerializer, security?: SecureSerializer): Promise<string[]> {
  if (serializer === 'auth') {
    if (!security) throw new TypeError('the auth result serializer needs a SecureSerializer');
    return security.serializeMany(metas);
  }
  return metas.map((m) => kombuDumps(m));
}

/**
 * Decodes a stored meta. `json`: kombu's JSON (datetimes, decimals... come
 * back as the package's kombu JSON reads them). `auth`: verified first.
 *
 * @throws SecurityError when an `auth` meta does not verify or the text is not a meta.
 */
export async function decodeMeta(value: string, serializer: ResultSerializer, security?: SecureSerializer): Promise<ResultMeta> {
  let meta: unknown;
  if (serializer === 'auth') {
    if (!security) throw new TypeError('the auth result serializer needs a SecureSerializer');
    meta = await security.deserializeAsync(value);
  } else {
    try {
      meta = kombuLoads(value);
    } catch (err) {
      throw new SecurityError('ERR_DECODE', 'Stored result is not kombu JSON', { cause: err });
    }
  }
  if (meta instanceof Map) meta = Object.fromEntries(meta);
  if (meta === null || typeof meta !== 'object' || typeof (meta as ResultMeta).status !== 'string') {
    throw new SecurityError('ERR_DECODE', 'Stored result is not a Celery result meta');
  }
  return meta as ResultMeta;
}

/** Reads `status` without decoding (for `json` metas; `auth` metas are decoded). */
export function quickStatus(value: string): string | null {
  const m = /^\{"status": "([A-Z_]+)"/.exec(value);
  return m ? m[1]! : null;
}

/** Turns a stored exception into the fields of a {@link TaskFailedError}. */
export function exceptionFromMeta(result: unknown): SerializedException {
  if (result !== null && typeof result === 'object' && !Array.isArray(result)) {
    const r = result as Record<string, unknown>;
    if (typeof r.exc_type === 'string') {
      return {
        exc_type: r.exc_type,
        exc_message: r.exc_message ?? [],
        exc_module: typeof r.exc_module === 'string' ? r.exc_module : null,
      };
    }
  }
  return { exc_type: 'Exception', exc_message: [result], exc_module: null };
}
