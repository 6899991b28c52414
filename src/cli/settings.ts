/**
 * Celery's settings for the command line: from a JSON file, a `.env` file or
 * the environment. Celery itself reads no setting from the environment (bar
 * `CELERY_BROKER_URL`, `CELERY_RESULT_BACKEND` and `CELERY_CONFIG_MODULE`);
 * the convention here is the one of Celery's
 * `app.config_from_object(obj, namespace='CELERY')`, which Django projects
 * use: `CELERY_` and the setting's name in capitals, e.g.
 * `CELERY_SECURITY_KEY` for `security_key`. A list (`accept_content`) is
 * JSON (`["auth"]`) or comma-separated (`auth`).
 *
 * @internal
 * @module
 */
import { CliError, readInput } from './common.js';

/** The settings the CLI reads (Celery's names). */
export const SETTINGS = [
  'broker_url',
  'result_backend',
  'task_serializer',
  'result_serializer',
  'accept_content',
  'security_key',
  'security_key_password',
  'security_certificate',
  'security_cert_store',
  'security_digest',
  'broker_transport_options',
  'result_backend_transport_options',
  'broker_use_ssl',
  'redis_backend_use_ssl',
  'result_backend_always_retry',
  'result_backend_max_retries',
  'result_backend_base_sleep_between_retries_ms',
  'result_backend_max_sleep_between_retries_ms',
] as const;

const LISTS = new Set(['accept_content']);
/** Settings whose value is a boolean (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`). */
const BOOLEANS = new Set(['result_backend_always_retry']);
/** Settings whose value is a whole number. */
const INTEGERS = new Set(['result_backend_max_retries', 'result_backend_base_sleep_between_retries_ms', 'result_backend_max_sleep_between_retries_ms']);

function booleanValue(name: string, v: string): boolean {
  const t = v.trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(t)) return true;
  if (['false', '0', 'no', 'off'].includes(t)) return false;
  throw new CliError(`${envName(name)} must be true or false`);
}

function integerValue(name: string, v: string): number {
  const t = v.trim();
  if (!/^[0-9]+$/.test(t) || !Number.isSafeInteger(Number(t))) throw new CliError(`${envName(name)} must be a whole number`);
  return Number(t);
}
/** Settings whose value is a JSON object (e.g. `{"master_name": "mymaster"}`). */
const OBJECTS = new Set(['broker_transport_options', 'result_backend_transport_options', 'broker_use_ssl', 'redis_backend_use_ssl']);

function objectValue(name: string, v: string): Record<string, unknown> {
  let o: unknown;
  try {
    o = JSON.parse(v);
  } catch {
    o = undefined;
  }
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new CliError(`${envName(name)} must be a JSON object`);
  return o as Record<string, unknown>;
}

/** `security_key` -> `CELERY_SECURITY_KEY`. */
export function envName(setting: string): string {
  return 'CELERY_' + setting.toUpperCase();
}

function listValue(v: string): string[] {
  const t = v.trim();
  if (t.startsWith('[')) {
    try {
      const a = JSON.parse(t) as unknown;
      if (Array.isArray(a)) return a.map(String);
    } catch {
      // falls through to the comma-separated form
    }
  }
  return t.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

/** Settings from `KEY=value` pairs with Celery's environment names. */
export function fromEnv(env: Record<string, string | undefined>): Record<string, unknown> {
  const conf: Record<string, unknown> = {};
  for (const name of SETTINGS) {
    const v = env[envName(name)];
    if (v === undefined) continue;
    conf[name] = LISTS.has(name)
      ? listValue(v)
      : OBJECTS.has(name)
        ? objectValue(name, v)
        : BOOLEANS.has(name)
          ? booleanValue(name, v)
          : INTEGERS.has(name)
            ? integerValue(name, v)
            : v;
  }
  // Celery's own two: broker_url and result_backend fall back to these.
  if (conf.broker_url === undefined && env.CELERY_BROKER_URL !== undefined) conf.broker_url = env.CELERY_BROKER_URL;
  return conf;
}

/** Parses a `.env` file: `KEY=value` lines, `#` comments, optional `export`, quoted values. */
export function parseDotenv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/.exec(line);
    if (!m || line.trim().startsWith('#')) continue;
    let v = m[2]!;
    if ((v.startsWith('"') && v.endsWith('"') && v.length >= 2) || (v.startsWith("'") && v.endsWith("'") && v.length >= 2)) v = v.slice(1, -1);
    else v = v.replace(/\s+#.*$/, '');
    out[m[1]!] = v;
  }
  return out;
}

/** A JSON settings file: Celery's lowercase names (or the CELERY_ names). */
export function fromJsonFile(path: string): Record<string, unknown> {
  let conf: unknown;
  try {
    conf = JSON.parse(readInput(path, 'settings file').toString('utf8'));
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError(`the settings file ${path} is not JSON`);
  }
  if (conf === null || typeof conf !== 'object' || Array.isArray(conf)) throw new CliError(`the settings file ${path} is not a JSON object`);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(conf)) {
    const name = k.startsWith('CELERY_') ? k.slice(7).toLowerCase() : k;
    out[name] = v;
  }
  return out;
}

/** Where the settings come from, as the command's options say. */
export function loadSettings(opts: { config?: string | undefined; envFile?: string | undefined }, env: NodeJS.ProcessEnv): { conf: Record<string, unknown>; source: string } {
  if (opts.config !== undefined && opts.envFile !== undefined) throw new CliError('give --config or --env-file, not both', 2);
  if (opts.config !== undefined) return { conf: fromJsonFile(opts.config), source: opts.config };
  if (opts.envFile !== undefined) return { conf: fromEnv(parseDotenv(readInput(opts.envFile, 'env file').toString('utf8'))), source: opts.envFile };
  return { conf: fromEnv(env), source: 'the environment (CELERY_* variables)' };
}
