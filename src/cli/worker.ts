/**
 * `celery-sign worker MODULE`: a Node worker from a module that exports its
 * tasks, configured with Celery's setting names (as `celery -A app worker`).
 *
 * @internal
 * @module
 */
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createWorker, type TaskHandler, type WorkerOptions } from '../wire/worker.js';
import type { BrokerUseSsl, RedisSslOptions } from '../wire/tls.js';
import { CliError, EXIT, int, str, UsageError, type Command } from './common.js';
import { checkConfig } from './check-config.js';
import { loadSettings } from './settings.js';

// tsc compiles `import()` to `require()` for CommonJS output; this keeps a real
// dynamic import, so that MODULE may be ESM (.mjs, "type": "module") or CommonJS.
const importModule = new Function('specifier', 'return import(specifier)') as (s: string) => Promise<Record<string, unknown>>;

/** What a task module may export beside its tasks, never taken for a task. */
const MODULE_OPTIONS = ['authorize', 'authorizeControl', 'requireHeaderBinding'] as const;

/** The tasks a module exports: `tasks`, a default export of handlers, or its named functions. */
export function tasksOf(mod: Record<string, unknown>): Record<string, TaskHandler> {
  const pick = (o: unknown): Record<string, TaskHandler> | null => {
    if (o === null || typeof o !== 'object') return null;
    const entries = Object.entries(o).filter(([k, v]) => typeof v === 'function' && !(MODULE_OPTIONS as readonly string[]).includes(k));
    return entries.length > 0 ? (Object.fromEntries(entries) as Record<string, TaskHandler>) : null;
  };
  const def = mod.default as Record<string, unknown> | undefined;
  return pick(mod.tasks) ?? pick(def?.tasks) ?? pick(def) ?? pick(mod) ?? {};
}

/**
 * The worker options a module exports beside its tasks (`authorize`,
 * `authorizeControl`: rules, a map or a function; `requireHeaderBinding`,
 * which `authorize` needs; as `createWorker` takes them), as named exports or
 * on its default export.
 */
export function moduleOptions(mod: Record<string, unknown>): Pick<WorkerOptions, (typeof MODULE_OPTIONS)[number]> {
  const def = mod.default as Record<string, unknown> | null | undefined;
  const out: Record<string, unknown> = {};
  for (const k of MODULE_OPTIONS) {
    const v = mod[k] ?? (def !== null && typeof def === 'object' ? def[k] : undefined);
    if (v !== undefined) out[k] = v;
  }
  return out as Pick<WorkerOptions, (typeof MODULE_OPTIONS)[number]>;
}

/** Celery's result-store retry settings, as the worker's options. */
function storeRetryOptions(conf: Record<string, unknown>): Partial<WorkerOptions> {
  const out: Record<string, unknown> = {};
  const always = conf.result_backend_always_retry;
  if (always !== undefined) {
    if (typeof always !== 'boolean') throw new CliError('result_backend_always_retry must be true or false');
    out.resultBackendAlwaysRetry = always;
  }
  for (const [setting, option] of [
    ['result_backend_max_retries', 'resultBackendMaxRetries'],
    ['result_backend_base_sleep_between_retries_ms', 'resultBackendBaseSleepBetweenRetriesMs'],
    ['result_backend_max_sleep_between_retries_ms', 'resultBackendMaxSleepBetweenRetriesMs'],
  ] as const) {
    const v = conf[setting];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new CliError(`${setting} must be a whole number`);
    out[option] = v;
  }
  return out as Partial<WorkerOptions>;
}

export const workerCmd: Command = {
  summary: 'run a Node worker from a module that exports its tasks',
  help: `Usage: celery-sign worker MODULE [options]

Runs a celery-sign worker (like \`celery -A app worker\`) for the tasks MODULE
exports: \`export const tasks = { 'app.add': (args, kwargs, ctx) => ... }\`, a
default export of such an object, or the module's exported functions (named by
their export names). MODULE may be ESM or CommonJS.

Broker, backend and security come from Celery's settings: the options below,
else --config/--env-file, else the environment (CELERY_BROKER_URL,
CELERY_RESULT_BACKEND, CELERY_TASK_SERIALIZER=auth, CELERY_ACCEPT_CONTENT=auth,
CELERY_SECURITY_KEY, CELERY_SECURITY_KEY_PASSWORD, CELERY_SECURITY_CERTIFICATE,
CELERY_SECURITY_CERT_STORE, CELERY_SECURITY_DIGEST, CELERY_BROKER_TRANSPORT_OPTIONS and
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS, CELERY_BROKER_USE_SSL and CELERY_REDIS_BACKEND_USE_SSL
as JSON, CELERY_RESULT_BACKEND_ALWAYS_RETRY, CELERY_RESULT_BACKEND_MAX_RETRIES,
CELERY_RESULT_BACKEND_BASE_SLEEP_BETWEEN_RETRIES_MS and
CELERY_RESULT_BACKEND_MAX_SLEEP_BETWEEN_RETRIES_MS; see check-config --help).
Per-signer authorization comes from MODULE, as createWorker's options of these
names: \`export const authorize = [{ signer, tasks }]\` (rules, a map or a
function; it needs \`export const requireHeaderBinding = true\`) and
\`export const authorizeControl = [{ signer, commands }]\`.
SIGTERM or SIGINT: warm shutdown (running tasks finish, the rest go back to the
queue); a second signal exits at once.

Options:
  -b, --broker URL          broker_url (redis://... or amqp://...)
      --backend URL         result_backend (redis://..., rpc://)
      --config FILE.json    Celery's settings as JSON
      --env-file FILE       Celery's settings as a .env file of CELERY_ variables
  -Q, --queues LIST         queues, comma-separated (default celery)
  -c, --concurrency N       handlers running at once (default 16)
  -n, --hostname NAME       the worker's name (default celery-sign@<host>)
      --stop-timeout SECS   how long a warm shutdown waits for running tasks (default 30)
  -h, --help                this text`,
  options: {
    broker: { type: 'string', short: 'b' },
    backend: { type: 'string' },
    config: { type: 'string' },
    'env-file': { type: 'string' },
    queues: { type: 'string', short: 'Q' },
    concurrency: { type: 'string', short: 'c' },
    hostname: { type: 'string', short: 'n' },
    'stop-timeout': { type: 'string' },
  },
  allowPositionals: true,
  async run(p, io) {
    if (p.positionals.length !== 1) throw new UsageError('give the module that exports the tasks');
    const { conf } = loadSettings({ config: str(p, 'config'), envFile: str(p, 'env-file') }, io.env);
    const broker = str(p, 'broker') ?? (conf.broker_url as string | undefined);
    if (!broker) throw new UsageError('no broker: pass --broker URL or set CELERY_BROKER_URL');
    const backend = str(p, 'backend') ?? (conf.result_backend as string | undefined);
    const problems = checkConfig(conf).filter((c) => c.status === 'problem');
    if (problems.length > 0) {
      const c = problems[0]!;
      throw new CliError(`security settings: ${c.check}: ${c.detail}${problems.length > 1 ? ` (and ${problems.length - 1} more: run celery-sign check-config)` : ''}`);
    }
    const modPath = resolve(p.positionals[0]!);
    let mod: Record<string, unknown>;
    try {
      mod = await importModule(pathToFileURL(modPath).href);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ERR_MODULE_NOT_FOUND' && String((e as Error).message).includes(modPath)) throw new CliError(`cannot load ${modPath}: no such module`);
      throw new CliError(`cannot load ${modPath}: ${(e as Error).message.split('\n')[0]}`);
    }
    const tasks = tasksOf(mod);
    const names = Object.keys(tasks);
    if (names.length === 0) throw new CliError(`${modPath} exports no task (export const tasks = { 'name': handler })`);
    const queues = (str(p, 'queues') ?? 'celery').split(',').map((q) => q.trim()).filter((q) => q);
    const name = str(p, 'hostname') ?? `celery-sign@${hostname()}`;
    const stopTimeout = int(p, 'stop-timeout', 30) * 1000;
    const objectOf = (v: unknown, name: string): Record<string, unknown> | undefined => {
      if (v === undefined || v === null) return undefined;
      if (typeof v !== 'object' || Array.isArray(v)) throw new CliError(`${name} must be an object`);
      return v as Record<string, unknown>;
    };
    const transportOptions = objectOf(conf.broker_transport_options, 'broker_transport_options');
    const backendTransportOptions = objectOf(conf.result_backend_transport_options, 'result_backend_transport_options');
    // broker_use_ssl / redis_backend_use_ssl: Celery's TLS settings, the same keys (checked by the transports).
    const brokerUseSsl = objectOf(conf.broker_use_ssl, 'broker_use_ssl') as BrokerUseSsl | undefined;
    const redisBackendUseSsl = objectOf(conf.redis_backend_use_ssl, 'redis_backend_use_ssl') as RedisSslOptions | undefined;
    const retry = storeRetryOptions(conf);
    const fromModule = moduleOptions(mod);
    let worker: ReturnType<typeof createWorker>;
    try {
      worker = createWorker({
        broker,
        ...(backend ? { backend } : {}),
        ...(transportOptions ? { transportOptions } : {}),
        ...(backendTransportOptions ? { backendTransportOptions } : {}),
        ...(brokerUseSsl ? { brokerUseSsl } : {}),
        ...(redisBackendUseSsl ? { redisBackendUseSsl } : {}),
        security: conf,
        tasks,
        queues,
        concurrency: int(p, 'concurrency', 16),
        hostname: name,
        ...retry,
        ...fromModule,
      });
    } catch (e) {
      throw new CliError(`cannot make the worker: ${(e as Error).message.split('\n')[0]}`);
    }
    worker.on('error', (e: unknown) => io.stderr.write(`celery-sign worker: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}\n`));
    worker.on('security', (e: { code: string; reason: string; taskId: string | null }) =>
      io.stderr.write(`celery-sign worker: refused ${e.taskId ?? 'a message'}: ${e.code}: ${e.reason}\n`),
    );
    try {
      await worker.start();
    } catch (e) {
      throw new CliError(`cannot start the worker: ${(e as Error).message.split('\n')[0]}`, EXIT.RUNTIME);
    }
    io.stdout.write(`${name} ready: ${names.length} task${names.length === 1 ? '' : 's'} (${names.join(', ')}), queues ${queues.join(',')}\n`);
    await new Promise<void>((done) => {
      let stopping = false;
      const onSignal = (sig: NodeJS.Signals) => {
        if (stopping) {
          io.stderr.write(`celery-sign worker: ${sig} again: cold shutdown\n`);
          process.exit(EXIT.RUNTIME);
        }
        stopping = true;
        io.stdout.write(`${sig}: warm shutdown (waiting for running tasks)\n`);
        worker
          .stop({ timeout: stopTimeout })
          .catch((e: unknown) => io.stderr.write(`celery-sign worker: ${(e as Error).message.split('\n')[0]}\n`))
          .finally(() => {
            process.off('SIGTERM', onSignal);
            process.off('SIGINT', onSignal);
            done();
          });
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
    });
    io.stdout.write(`${name} stopped\n`);
    return EXIT.OK;
  },
};
