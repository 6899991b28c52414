/**
 * What every `celery-sign` command shares: exit codes, the one-line error,
 * argument parsing on `node:util`'s `parseArgs`, reading files, passwords
 * and stdin, writing files safely.
 *
 * @internal
 * @module
 */
import { chmodSync, closeSync, existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** The exit codes, documented in `celery-sign --help`. */
export const EXIT = {
  /** Done; a verdict that holds (verifies, configuration fine). */
  OK: 0,
  /** A negative verdict: a payload that does not verify, a configuration with problems, an expired certificate. */
  VERDICT: 1,
  /** A usage error: an unknown command or option, a missing or bad argument. */
  USAGE: 2,
  /** An input error: a file missing or unreadable, a key or certificate that does not load, a wrong password, a file that would be overwritten. */
  INPUT: 3,
  /** A runtime failure: the broker cannot be reached, a benchmark or worker failed. */
  RUNTIME: 4,
} as const;

export const EXIT_CODES_HELP = `Exit codes:
  0  done (the payload verifies, the configuration is fine)
  1  a negative verdict (a payload that does not verify, configuration problems, an expired certificate)
  2  usage error (unknown command or option, a missing or bad argument)
  3  input error (a file missing or unreadable, a key or certificate that does not load,
     a wrong password, a file that exists without --force)
  4  runtime failure (broker unreachable, the benchmark or the worker failed)`;

/** An error the command reports as one line with its exit code. */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number = EXIT.INPUT) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** A usage error (exit 2). */
export class UsageError extends CliError {
  constructor(message: string) {
    super(message, EXIT.USAGE);
  }
}

/** The streams and environment a command runs with (tests call the CLI as a process). */
export interface Io {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  stdin: NodeJS.ReadStream;
  env: NodeJS.ProcessEnv;
}

/** A command: its one-line summary, its help text and its run. */
export interface Command {
  summary: string;
  help: string;
  options: NonNullable<ParseArgsConfig['options']>;
  allowPositionals?: boolean;
  run(args: Parsed, io: Io): Promise<number> | number;
}

/** What `parseArgs` returns, loosely typed. */
export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

/** parseArgs with its errors turned into one-line usage errors. */
export function parse(cmd: Command, argv: string[]): Parsed {
  try {
    const r = parseArgs({ args: argv, options: cmd.options, allowPositionals: cmd.allowPositionals ?? false, strict: true });
    return { values: r.values as Parsed['values'], positionals: r.positionals };
  } catch (e) {
    const msg = (e as Error).message.split('\n')[0]!.replace(/\. To specify a positional argument.*$/, '');
    throw new UsageError(msg);
  }
}

export function str(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === 'string' ? v : undefined;
}

export function need(p: Parsed, name: string): string {
  const v = str(p, name);
  if (v === undefined || v === '') throw new UsageError(`--${name} is required`);
  return v;
}

export function flag(p: Parsed, name: string): boolean {
  return p.values[name] === true;
}

export function int(p: Parsed, name: string, dflt: number): number {
  const v = str(p, name);
  if (v === undefined) return dflt;
  if (!/^\d+$/.test(v)) throw new UsageError(`--${name} must be a whole number, not ${JSON.stringify(v)}`);
  return Number(v);
}

/** Reads a file, or fails with one line naming it (never its contents). */
export function readInput(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (code ?? 'unreadable');
    throw new CliError(`cannot read ${what} ${path}: ${why}`);
  }
}

/** The payload argument: a file, or stdin when it is absent or `-`. */
export async function readPayload(path: string | undefined, io: Io): Promise<Buffer> {
  if (path !== undefined && path !== '-') return readInput(path, 'payload');
  if (io.stdin.isTTY) throw new UsageError('no payload: give a file, or pipe one on stdin');
  const chunks: Buffer[] = [];
  for await (const c of io.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** A password file's first line (as `openssl -passin file:` reads it). */
export function readPasswordFile(path: string): string {
  const text = readInput(path, 'password file').toString('utf8');
  const pw = text.split(/\r?\n/)[0]!;
  if (pw === '') throw new CliError(`the password file ${path} is empty`);
  return pw;
}

/** Asks for a password on the terminal, without echo. */
export async function promptPassword(io: Io, prompt: string, confirm: boolean): Promise<string> {
  const stdin = io.stdin;
  if (!stdin.isTTY || typeof stdin.setRawMode !== 'function') {
    throw new UsageError('a password prompt needs a terminal: use --password-file FILE');
  }
  const ask = (text: string) =>
    new Promise<string>((resolve, reject) => {
      // Raw mode (no echo) before the prompt shows: nothing typed after it is echoed.
      stdin.setRawMode(true);
      stdin.resume();
      io.stderr.write(text);
      let buf = '';
      const onData = (d: Buffer) => {
        for (const ch of d.toString('utf8')) {
          if (ch === '\r' || ch === '\n') {
            done();
            io.stderr.write('\n');
            resolve(buf);
            return;
          }
          if (ch === '\u0003') {
            done();
            io.stderr.write('\n');
            reject(new CliError('interrupted', 130));
            return;
          }
          if (ch === '\u007f' || ch === '\b') buf = buf.slice(0, -1);
          else buf += ch;
        }
      };
      const done = () => {
        stdin.off('data', onData);
        stdin.setRawMode(false);
        stdin.pause();
      };
      stdin.on('data', onData);
    });
  const pw = await ask(prompt);
  if (pw === '') throw new CliError('empty password');
  if (confirm && (await ask('Again: ')) !== pw) throw new CliError('the passwords do not match');
  return pw;
}

/** Writes a new file with `mode`, refusing to replace one unless `force`. */
export function writeNew(path: string, data: string | Buffer, mode: number, force: boolean): void {
  if (!force && existsSync(path)) throw new CliError(`${path} exists: pass --force to overwrite it`);
  let fd: number;
  try {
    fd = openSync(path, force ? 'w' : 'wx', mode);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new CliError(`${path} exists: pass --force to overwrite it`);
    throw new CliError(`cannot write ${path}: ${code ?? 'failed'}`);
  }
  try {
    // openSync's mode applies only to a new file (and through the umask): set it exactly.
    writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
  } finally {
    closeSync(fd);
  }
  chmodSync(path, mode);
}

/** Prints JSON on stdout. */
export function printJson(io: Io, value: unknown): void {
  io.stdout.write(JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2) + '\n');
}

/** The first line of an error's message, for the one-line report. */
export function oneLine(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.split('\n')[0]!.trim() || 'failed';
}
