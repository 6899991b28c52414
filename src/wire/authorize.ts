/**
 * Authorization per signer (beyond Celery, opt-in): the worker's `authorize`
 * option says which certificate may call which tasks. Once it is given,
 * everything it does not allow is refused (`ERR_NOT_AUTHORIZED`): deny by
 * default.
 *
 * A signer is named by its Celery id (`Certificate.id`, the issuer's values
 * and the serial, as the store keys it) or by its subject common name
 * (`Certificate.commonName`); tasks by exact name or by a glob pattern as
 * Python's `fnmatch.fnmatchcase` reads it (`*`, `?`, `[seq]`, `[!seq]`:
 * `billing.*`), or a `RegExp`.
 *
 * ```ts
 * authorize: [
 *   { signer: { cn: 'billing-api' }, tasks: ['billing.*'] },
 *   { signer: { id: 'NO celery-sign tests celery-sign test CA 4058...' }, tasks: ['*'] },
 * ]
 * // or, as API.md has it: signer id or common name -> patterns
 * authorize: { 'billing-api': ['billing.*'] }
 * // or a function (sync; an exception denies)
 * authorize: (signer, task) => signer.commonName === 'billing-api' && task.startsWith('billing.')
 * ```
 *
 * The task name travels in the unsigned `task` header: a message whose
 * header was changed on the broker would be authorized as the task it
 * claims to be. Authorization therefore binds only with header binding
 * (`requireHeaderBinding: true`, `./binding.ts`), which the worker checks
 * first; see {@link checkAuthorizeConfig}.
 *
 * Remote control commands (`celery inspect`, `celery control`, Flower) are
 * authorized the same way, by their own option, `authorizeControl`: rules
 * name commands instead of tasks (`{ signer, commands: ['ping', 'stats'] }`),
 * the object form maps a signer to command patterns, the function gets the
 * command name. The command travels inside the signed body, so this needs
 * no header binding. See {@link ControlAuthorizeOption}.
 *
 * @module
 */
import type { Certificate, CertStore } from '../certificate.js';
import { ImproperlyConfigured, SecurityError } from '../errors.js';

/** The signer a decision is about. */
export interface SignerInfo {
  /** The Celery id of the certificate that verified the body. */
  readonly id: string;
  /** Its subject common name, or `null` (no common name, or the certificate left the store). */
  readonly commonName: string | null;
  /** Its subject (`CN=billing-api,O=Acme`), or `null`. */
  readonly subject: string | null;
  /** The certificate, or `null` when the store no longer has it. */
  readonly certificate: Certificate | null;
}

/** Names a signer: by Celery id, or by subject common name. Exact match, no patterns. */
export type SignerSelector = { readonly id: string } | { readonly cn: string };

/** A task name pattern: an exact name or an `fnmatch` glob (`billing.*`), or a `RegExp`. */
export type TaskPattern = string | RegExp;

/** One rule: these signers may call these tasks. */
export interface AuthorizationRule {
  /** One signer or several. */
  readonly signer: SignerSelector | readonly SignerSelector[];
  /** The tasks they may call: exact names, `fnmatch` globs (`billing.*`) or regular expressions. */
  readonly tasks: readonly TaskPattern[];
}

/** One rule of `authorizeControl`: these signers may send these remote control commands. */
export interface ControlAuthorizationRule {
  /** One signer or several. */
  readonly signer: SignerSelector | readonly SignerSelector[];
  /** The commands they may send (`ping`, `stats`, `revoke`, `shutdown`, ...): exact names, `fnmatch` globs or regular expressions. */
  readonly commands: readonly TaskPattern[];
}

/** A decision function: `true` allows; anything else, or an exception, denies. */
export type AuthorizeFunction = (signer: SignerInfo, task: string) => boolean;

/**
 * The `authorize` option of `createWorker`: rules, a map from signer id or
 * common name to task patterns, or a function. Deny by default.
 */
export type AuthorizeOption =
  | readonly AuthorizationRule[]
  | Readonly<Record<string, readonly TaskPattern[]>>
  | AuthorizeFunction;

/**
 * The `authorizeControl` option of `createWorker`: rules, a map from signer
 * id or common name to command patterns, or a function of the signer and the
 * command name. Deny by default once given.
 */
export type ControlAuthorizeOption =
  | readonly ControlAuthorizationRule[]
  | Readonly<Record<string, readonly TaskPattern[]>>
  | ((signer: SignerInfo, command: string) => boolean);

/** What an {@link Authorizer} decides about: tasks (`authorize`) or remote control commands (`authorizeControl`). */
export type AuthorizationKind = 'task' | 'control';

const KINDS = {
  task: { option: 'authorize', field: 'tasks', item: 'task', verb: 'call task' },
  control: { option: 'authorizeControl', field: 'commands', item: 'command', verb: 'send remote control command' },
} as const;
type KindText = (typeof KINDS)[AuthorizationKind];

/** An authorization decision. */
export interface AuthorizationDecision {
  readonly allowed: boolean;
  readonly signer: SignerInfo;
  readonly task: string;
  /** The refusal, when not allowed. */
  readonly error: SecurityError | null;
}

/** Python's `fnmatch.translate` (case-sensitive: `fnmatchcase`). */
export function globRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') {
      re += '.*';
    } else if (c === '?') {
      re += '.';
    } else if (c === '[') {
      let j = i + 1;
      if (pattern[j] === '!') j++;
      if (pattern[j] === ']') j++;
      while (j < pattern.length && pattern[j] !== ']') j++;
      if (j >= pattern.length) {
        re += '\\[';
        continue;
      }
      let body = pattern.slice(i + 1, j);
      i = j;
      body = body.replace(/\\/g, '\\\\');
      if (body.startsWith('!')) body = '^' + body.slice(1);
      else if (body.startsWith('^')) body = '\\' + body;
      re += `[${body}]`;
    } else {
      re += c.replace(/[.+^${}()|\\\]\-/]/g, '\\$&');
    }
  }
  return new RegExp(`^(?:${re})$`, 's');
}

type Matcher = (task: string) => boolean;

function taskMatcher(patterns: unknown, where: string, k: KindText): Matcher {
  if (!Array.isArray(patterns)) throw new ImproperlyConfigured(`${k.option}: ${where}: ${k.field} must be an array of names or patterns`);
  const exact = new Set<string>();
  const res: RegExp[] = [];
  for (const p of patterns) {
    if (p instanceof RegExp) res.push(p);
    else if (typeof p === 'string' && p !== '') {
      if (/[*?[]/.test(p)) res.push(globRegExp(p));
      else exact.add(p);
    } else throw new ImproperlyConfigured(`${k.option}: ${where}: a ${k.item} pattern must be a non-empty string or a RegExp`);
  }
  return (task) =>
    exact.has(task) ||
    res.some((r) => {
      r.lastIndex = 0; // a /g or /y RegExp keeps state between tests
      return r.test(task);
    });
}

interface CompiledRule {
  ids: Set<string>;
  cns: Set<string>;
  /** Record form: the key matches the id or the common name. */
  either: Set<string>;
  tasks: Matcher;
}

function compileRules(option: unknown, k: KindText): CompiledRule[] {
  if (Array.isArray(option)) {
    return option.map((rule: unknown, i) => {
      const where = `rule ${i}`;
      if (rule === null || typeof rule !== 'object') throw new ImproperlyConfigured(`${k.option}: ${where} must be { signer, ${k.field} }`);
      const r = rule as Record<string, unknown> & { signer?: unknown };
      const sel = (Array.isArray(r.signer) ? r.signer : [r.signer]) as unknown[];
      if (sel.length === 0) throw new ImproperlyConfigured(`${k.option}: ${where}: no signer`);
      const ids = new Set<string>();
      const cns = new Set<string>();
      for (const s of sel as unknown[]) {
        const o = (s ?? {}) as Record<string, unknown>;
        const keys = Object.keys(o);
        if (keys.length === 1 && keys[0] === 'id' && typeof o.id === 'string' && o.id !== '') ids.add(o.id);
        else if (keys.length === 1 && keys[0] === 'cn' && typeof o.cn === 'string' && o.cn !== '') cns.add(o.cn);
        else throw new ImproperlyConfigured(`${k.option}: ${where}: a signer is { id: '<Celery id>' } or { cn: '<common name>' }`);
      }
      return { ids, cns, either: new Set<string>(), tasks: taskMatcher(r[k.field], where, k) };
    });
  }
  if (option !== null && typeof option === 'object') {
    return Object.entries(option as Record<string, unknown>).map(([key, tasks]) => {
      if (key === '') throw new ImproperlyConfigured(`${k.option}: an empty signer name`);
      return { ids: new Set<string>(), cns: new Set<string>(), either: new Set([key]), tasks: taskMatcher(tasks, JSON.stringify(key), k) };
    });
  }
  throw new ImproperlyConfigured(`${k.option} must be an array of rules, an object of signer -> ${k.item} patterns, or a function`);
}

function quote(s: string): string {
  const q = JSON.stringify(s);
  return q.length > 202 ? `${q.slice(0, 200)}..."` : q;
}

/**
 * Decides, per signer and task name, from an {@link AuthorizeOption}; or,
 * of kind `'control'`, per signer and remote control command, from a
 * {@link ControlAuthorizeOption}.
 */
export class Authorizer {
  readonly #fn: AuthorizeFunction | undefined;
  readonly #rules: CompiledRule[];
  readonly #store: CertStore | undefined;
  readonly #kind: KindText;

  /** `store`: where a signer's certificate (and its common name) is looked up. */
  constructor(option: AuthorizeOption | ControlAuthorizeOption, store: CertStore | undefined, kind: AuthorizationKind = 'task') {
    this.#store = store;
    this.#kind = KINDS[kind];
    if (typeof option === 'function') {
      this.#fn = option;
      this.#rules = [];
    } else {
      this.#rules = compileRules(option, this.#kind);
    }
  }

  /** The signer's details, from the store. */
  signerInfo(id: string): SignerInfo {
    let cert: Certificate | null = null;
    try {
      cert = this.#store?.has(id) ? this.#store.get(id) : null;
    } catch {
      cert = null;
    }
    return { id, commonName: cert?.commonName ?? null, subject: cert?.subject || null, certificate: cert };
  }

  /** Whether `signerId` may call `task` (of kind `'control'`: send the command `task`). */
  decide(signerId: string, task: string): AuthorizationDecision {
    const signer = this.signerInfo(signerId);
    let allowed = false;
    let why = '';
    if (this.#fn) {
      try {
        allowed = this.#fn(signer, task) === true;
      } catch (err) {
        allowed = false;
        why = ` (the ${this.#kind.option} function threw: ${err instanceof Error ? err.name : typeof err})`;
      }
    } else {
      const cn = signer.commonName;
      allowed = this.#rules.some(
        (r) =>
          (r.ids.has(signer.id) ||
            (cn !== null && r.cns.has(cn)) ||
            r.either.has(signer.id) ||
            (cn !== null && r.either.has(cn))) &&
          r.tasks(task),
      );
    }
    const error = allowed
      ? null
      : new SecurityError(
          'ERR_NOT_AUTHORIZED',
          `Signer ${quote(signer.id)}${signer.commonName !== null ? ` (CN ${quote(signer.commonName)})` : ''} is not authorized to ${this.#kind.verb} ${quote(task)}${why}`,
        );
    return { allowed, signer, task, error };
  }
}

/**
 * What `authorize` asks of `requireHeaderBinding`. The task name is an
 * unsigned header, so a rule is only as good as the binding of that header
 * to the signed body:
 * - `requireHeaderBinding: true`: authorization binds; nothing to say;
 * - not given: refused at construction (`ImproperlyConfigured`): the secure
 *   deployment must not depend on a warning someone reads;
 * - `requireHeaderBinding: false`, given explicitly (a roll-out while
 *   producers do not bind yet): allowed, with one process warning per
 *   worker; bound messages are still checked.
 * Returns the warning to emit, or `null`.
 */
export function checkAuthorizeConfig(authorize: unknown, requireHeaderBinding: boolean | undefined): string | null {
  if (authorize === undefined || authorize === null) return null;
  if (requireHeaderBinding === true) return null;
  if (requireHeaderBinding === false) {
    return (
      'celery-sign worker: authorize is given with requireHeaderBinding: false: task names travel in unsigned headers, ' +
      'so a message whose task header was changed on the broker is authorized as the task it claims to be. ' +
      'Bind headers on every producer (headerBinding: true; Python: celery_sign_binding) and set requireHeaderBinding: true'
    );
  }
  throw new ImproperlyConfigured(
    'authorize needs requireHeaderBinding: true: task names travel in unsigned headers, and only header binding ties ' +
      'the task name to the signed body (give requireHeaderBinding: false explicitly to accept unbound messages during a roll-out)',
  );
}
