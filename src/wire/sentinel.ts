/**
 * Redis Sentinel for the Redis transport and result backend (`./redis.ts`):
 * the `sentinel://` URLs of kombu's `SentinelChannel` and Celery's
 * `SentinelBackend`, turned into ioredis's sentinel options, and the
 * replication acknowledgement (`WAIT`) both may ask for.
 *
 * URLs, as kombu and Celery read them: one URL per sentinel, joined with
 * `;`, e.g. `sentinel://:secret@10.0.0.1:26379/0;sentinel://10.0.0.2:26379;sentinel://10.0.0.3:26379`.
 * The FIRST URL gives the master's credentials (`user:password@`) and the
 * database (the path); every URL gives one sentinel's host and port. The
 * sentinels themselves authenticate with `sentinel_kwargs`. A URL without
 * a port means 26379 for the broker (kombu's `SentinelTransport.default_port`)
 * but 6379 for the result backend (Celery's `redis_port` default, which its
 * `SentinelBackend` uses): give the port.
 *
 * Options (`broker_transport_options` / `result_backend_transport_options`):
 * - `master_name` (required): the name the sentinels monitor the master under;
 * - `sentinel_kwargs`: `{ password, username, socket_timeout, socket_connect_timeout }`
 *   for the connections to the sentinels (redis-py's `Sentinel(sentinel_kwargs=...)`);
 * - `min_other_sentinels`: only `0` (the default) is supported;
 * - beyond kombu: `wait_replicas` and `wait_timeout` ({@link ReplicationWait}).
 *
 * Fail-over: every connection asks the sentinels for the master's address
 * when it (re)connects, and checks the server's role; a connection whose
 * server turned replica (`READONLY`, or a blocked command cut with
 * `UNBLOCKED`) reconnects and sends the command again. The sentinels cut
 * the clients of a master they demote; a client that still reaches an old
 * master the sentinels cannot (a partition) writes there until it is
 * reconfigured, and such writes are lost: `wait_replicas` makes them fail
 * instead (the old master has no replica left to acknowledge them).
 * (ioredis's `failoverDetector` is not used: its sentinel connections
 * outlive the client.)
 *
 * @module
 */
import { ImproperlyConfigured } from '../errors.js';
import { WireError } from './errors.js';

/** kombu's `SentinelTransport.default_port`. */
export const SENTINEL_PORT = 26379;
/** Celery's `redis_port` default, which `SentinelBackend` gives a URL without a port. */
const BACKEND_DEFAULT_PORT = 6379;

/**
 * The sentinel options of `broker_transport_options` (kombu's
 * `SentinelChannel`) and `result_backend_transport_options` (Celery's
 * `SentinelBackend`), with the replication acknowledgement this package adds.
 */
export interface SentinelTransportOptions {
  /** The master's name on the sentinels (`sentinel monitor <master_name> ...`). Required. */
  master_name?: string;
  /**
   * Options of the connections to the sentinels, redis-py's names:
   * `password`, `username`, `socket_timeout` and `socket_connect_timeout`
   * (seconds). TLS to the sentinels is not supported yet.
   */
  sentinel_kwargs?: Record<string, unknown>;
  /** redis-py's `min_other_sentinels`: only `0` (the default) is supported. */
  min_other_sentinels?: number;
  /**
   * Beyond kombu and Celery, any Redis URL: task publishes (broker options)
   * and result stores (backend options) resolve only once this many replicas
   * hold them (`WAIT` in the same round trip), else they fail with
   * `ERR_BROKER` (a worker then does not acknowledge the task). Default 0: no `WAIT`.
   */
  wait_replicas?: number;
  /** Seconds `WAIT` may block (`wait_replicas`). Default 1. */
  wait_timeout?: number;
}

/**
 * Beyond kombu and Celery: Redis `WAIT` after the writes that must survive a
 * fail-over. With `wait_replicas: n` (transport options of the broker, of
 * the backend, or both), a task publish and a result store resolve only once
 * `n` replicas hold them (`WAIT n wait_timeout` on the same connection, in
 * the same round trip as the writes); fewer within `wait_timeout` seconds
 * is a `WireError` `ERR_BROKER`. A worker whose result store fails this way
 * does not acknowledge the task: it stores again, then gives the message
 * back to the queue, to run again; a client's `send` rejects (the task may
 * still run: sending it again may run it twice). Works with any Redis URL,
 * sentinel or not.
 */
export interface ReplicationWait {
  /** Replicas that must acknowledge; 0: no `WAIT`. */
  replicas: number;
  /** Milliseconds `WAIT` may block. */
  timeoutMs: number;
}

/**
 * The ioredis options {@link sentinelOptions} makes (a subset of ioredis's
 * `RedisOptions`, spelled out so that the declarations do not name the
 * optional peer).
 */
export interface SentinelConnectionOptions {
  sentinels: { host: string; port: number }[];
  name: string;
  role: 'master';
  reconnectOnError: (err: Error) => boolean | 1 | 2;
  username?: string;
  password?: string;
  db?: number;
  sentinelUsername?: string;
  sentinelPassword?: string;
  sentinelCommandTimeout?: number;
}

/** Whether a URL is kombu's / Celery's Redis Sentinel URL (`sentinel://`). */
export function isSentinelUrl(url: string): boolean {
  return typeof url === 'string' && /^sentinel:\/\//i.test(url.trimStart());
}

function parseOne(chunk: string): URL {
  let u: URL;
  try {
    u = new URL(chunk.trim());
  } catch (err) {
    // No URL text in the message: it may carry a password.
    throw new ImproperlyConfigured('Not a sentinel:// URL (sentinel://[user:password@]host:port[/db], several joined with ";")', {
      cause: err,
    });
  }
  if (u.protocol.toLowerCase() !== 'sentinel:') {
    throw new ImproperlyConfigured(`Every URL of a sentinel list must be sentinel://, not ${u.protocol}//`);
  }
  return u;
}

function seconds(v: unknown, what: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new ImproperlyConfigured(`${what} must be a non-negative number of seconds`);
  return v;
}

/**
 * ioredis options for a `sentinel://` URL (one or many joined with `;`) and
 * the transport options: the sentinels, `name` = `master_name`, the master's
 * credentials and database from the first URL, the sentinels' from
 * `sentinel_kwargs`. `kind` picks the default port of a URL without one
 * (broker: 26379, kombu's; backend: 6379, Celery's). Throws
 * `ImproperlyConfigured` (never with the URL's text in the message).
 */
export function sentinelOptions(
  url: string,
  options: Record<string, unknown> = {},
  kind: 'broker' | 'backend' = 'broker',
): SentinelConnectionOptions {
  const chunks = url.split(';').filter((c) => c.trim() !== '');
  if (chunks.length === 0) throw new ImproperlyConfigured('A sentinel:// URL names no sentinel');
  const urls = chunks.map(parseOne);
  const dflt = kind === 'broker' ? SENTINEL_PORT : BACKEND_DEFAULT_PORT;
  const sentinels = urls.map((u) => ({
    host: u.hostname.replace(/^\[|\]$/g, '') || (kind === 'broker' ? '127.0.0.1' : 'localhost'),
    port: u.port ? Number(u.port) : dflt,
  }));
  const name = options.master_name;
  if (name === undefined || name === null) {
    // kombu: ValueError("'master_name' transport option must be specified.")
    throw new ImproperlyConfigured(
      `'master_name' transport option must be specified (${kind === 'broker' ? 'broker_transport_options' : 'result_backend_transport_options'}: { master_name: 'mymaster' })`,
    );
  }
  if (typeof name !== 'string' || name === '') throw new ImproperlyConfigured('master_name must be a non-empty string');
  const min = options.min_other_sentinels;
  if (min !== undefined && min !== null && min !== 0) {
    throw new ImproperlyConfigured('min_other_sentinels is not supported (ioredis asks one sentinel at a time): leave it 0');
  }
  const first = urls[0]!;
  const out: SentinelConnectionOptions = {
    sentinels,
    name,
    role: 'master',
    // A connection to a server that turned replica: reconnect (through the sentinels) and send again.
    // Nothing ran: a replica refuses the write (READONLY) or cut the blocked wait (UNBLOCKED).
    reconnectOnError: (err: Error) => (/^(READONLY|UNBLOCKED)\b/.test(err.message) ? 2 : false),
  };
  if (first.username) out.username = decodeURIComponent(first.username);
  if (first.password) out.password = decodeURIComponent(first.password);
  const db = first.pathname.replace(/^\//, '');
  if (db !== '') {
    if (!/^\d+$/.test(db)) throw new ImproperlyConfigured('The Redis database must be a number in the URL path');
    out.db = Number(db);
  }
  const kw = options.sentinel_kwargs;
  if (kw !== undefined && kw !== null) {
    if (typeof kw !== 'object' || Array.isArray(kw)) throw new ImproperlyConfigured('sentinel_kwargs must be an object');
    for (const [k, v] of Object.entries(kw as Record<string, unknown>)) {
      if (v === undefined || v === null) continue;
      if (k === 'password' || k === 'username') {
        if (typeof v !== 'string') throw new ImproperlyConfigured(`sentinel_kwargs.${k} must be a string`);
        if (k === 'password') out.sentinelPassword = v;
        else out.sentinelUsername = v;
      } else if (k === 'socket_timeout') {
        out.sentinelCommandTimeout = Math.ceil(seconds(v, 'sentinel_kwargs.socket_timeout')! * 1000);
      } else if (k === 'socket_connect_timeout') {
        // ioredis connects to the sentinels with the connection's connectTimeout.
        seconds(v, 'sentinel_kwargs.socket_connect_timeout');
      } else if (k.startsWith('ssl')) {
        throw new ImproperlyConfigured(`sentinel_kwargs.${k}: TLS to the sentinels is not supported yet`);
      } else {
        throw new ImproperlyConfigured(
          `sentinel_kwargs.${k} is not supported (supported: password, username, socket_timeout, socket_connect_timeout)`,
        );
      }
    }
  }
  return out;
}

/** The `WAIT` asked for by `wait_replicas` / `wait_timeout` (`null`: none). */
export function replicationWait(options: Record<string, unknown> = {}): ReplicationWait | null {
  const n = options.wait_replicas;
  if (n === undefined || n === null || n === 0) return null;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) throw new ImproperlyConfigured('wait_replicas must be a non-negative integer');
  const t = seconds(options.wait_timeout, 'wait_timeout') ?? 1;
  if (t === 0) throw new ImproperlyConfigured('wait_timeout must be more than 0 seconds (WAIT 0 would block forever)');
  return { replicas: n, timeoutMs: Math.max(1, Math.round(t * 1000)) };
}

/** The error for a `WAIT` that heard from fewer replicas than asked. */
export function notReplicated(what: string, got: unknown, wait: ReplicationWait): WireError {
  return new WireError(
    'ERR_BROKER',
    `${what} reached ${typeof got === 'number' ? got : '?'} of ${wait.replicas} replica(s) within ${wait.timeoutMs} ms (WAIT): ` +
      'a fail-over now could lose it',
  );
}

/** Transport options as they may be shown (`inspect stats`): `sentinel_kwargs.password` masked. */
export function redactTransportOptions(options: Record<string, unknown>): Record<string, unknown> {
  const kw = options.sentinel_kwargs;
  if (kw === null || typeof kw !== 'object' || Array.isArray(kw) || !('password' in kw)) return options;
  return { ...options, sentinel_kwargs: { ...(kw as Record<string, unknown>), password: '**' } };
}
