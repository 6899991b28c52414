/**
 * Chooses the backend this process runs on: the napi binding where its
 * binary loads, else the `node:crypto` fallback (`./js/`), which implements
 * the same interface ({@link Binding}) in TypeScript: correct everywhere Node
 * runs, slower.
 *
 * `CELERY_SIGN_BACKEND=native` makes a missing binary an error (with the
 * message below, not npm's), `CELERY_SIGN_BACKEND=js` forces the fallback;
 * unset, a missing binary falls back with one warning.
 *
 * @internal
 * @module
 */
import loadNative from '../../native/load.cjs';
import { ImproperlyConfigured } from '../errors.js';
import { jsBinding } from './js/index.js';
import type { BackendName, Binding } from './types.js';

/** The npm package that carries the prebuilt binary for a platform (the napi CLI's naming). */
export function platformPackage(platform: string = process.platform, arch: string = process.arch): string {
  return `celery-sign-${platformSuffix(platform, arch)}`;
}

function platformSuffix(platform: string, arch: string): string {
  if (platform === 'linux') return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`;
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

function isMusl(): boolean {
  try {
    const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
    return !header?.glibcVersionRuntime;
  } catch {
    return false;
  }
}

/** The platforms a binary is published for, as `platform-arch[-abi]` (package.json `napi.targets`). */
export const PREBUILT_PLATFORMS: readonly string[] = [
  'linux-x64-gnu',
  'linux-arm64-gnu',
  'linux-x64-musl',
  'linux-arm64-musl',
  'darwin-x64',
  'darwin-arm64',
  'win32-x64-msvc',
];

/** The most telling of the loader's nested causes: a binary that exists and would not load beats "not found". */
function rootCause(err: unknown): string {
  const seen: string[] = [];
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 16; e = e.cause, depth++) {
    seen.push(e.message.split('\n')[0]!);
  }
  const loaded = seen.find((m) => !/Cannot find module|MODULE_NOT_FOUND|npm has a bug|wasm32-wasi/i.test(m));
  return loaded ?? 'the binary is not installed';
}

/** What to tell a user whose process has no native binary. */
export function missingBinaryMessage(err: unknown): string {
  const suffix = platformSuffix(process.platform, process.arch);
  const pkg = `celery-sign-${suffix}`;
  const where = `${process.platform}-${process.arch}${process.platform === 'linux' ? (isMusl() ? ' (musl)' : ' (glibc)') : ''}`;
  const hint = PREBUILT_PLATFORMS.includes(suffix)
    ? `its binary comes in the optional dependency ${pkg}: reinstall without --omit=optional / --no-optional, or run \`npm install ${pkg}\``
    : `no prebuilt binary is published for this platform (${pkg} does not exist)`;
  return `celery-sign: the native binary did not load on ${where}; ${hint}. Cause: ${rootCause(err)}`;
}

function choose(): { name: BackendName; binding: Binding } {
  const wanted = process.env.CELERY_SIGN_BACKEND ?? '';
  if (wanted !== '' && wanted !== 'native' && wanted !== 'js') {
    throw new ImproperlyConfigured(`CELERY_SIGN_BACKEND must be 'native', 'js' or unset, not ${JSON.stringify(wanted)}`);
  }
  if (wanted === 'js') return { name: 'js', binding: jsBinding };
  const loaded = loadNative();
  if (loaded.binding !== null) return { name: 'native', binding: loaded.binding };
  const message = missingBinaryMessage(loaded.error);
  if (wanted === 'native') {
    // The loader's own chain (npm's optional-dependencies text first) stays
    // reachable for debugging, but out of what Node prints.
    const err = new Error(message);
    Object.defineProperty(err, 'loadError', { value: loaded.error, enumerable: false });
    throw err;
  }
  process.emitWarning(`${message}. Using the node:crypto fallback: correct, slower (see the README's install section).`, {
    type: 'CelerySignWarning',
    code: 'CELERY_SIGN_FALLBACK',
  });
  return { name: 'js', binding: jsBinding };
}

const chosen = choose();

/** The backend this process runs on. */
export const backend: BackendName = chosen.name;

/** The binding of that backend. */
export const binding: Binding = chosen.binding;

export type { BackendName, Binding } from './types.js';
