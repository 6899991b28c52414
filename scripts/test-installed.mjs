// The installed package, tested as a user gets it (issue 8, item 5).
//
//   node scripts/test-installed.mjs [--keep]        (npm run test:installed)
//
// Uses the current build (lib/ and native/celery-sign.<host>.node: run
// `npm run build` first) and, in a fresh temporary directory outside the
// repository:
//
//  1. packs the main package as it will be published: the files `npm pack`
//     takes from the repository, with the publish-time step applied to them,
//     the real one (`napi pre-publish -t npm --no-gh-release
//     --skip-optional-publish` from the pinned CLI, as `npm run
//     release:prepare` runs it), so that its package.json names every
//     platform package in `optionalDependencies` at the exact version. The
//     CLI insists on every target's binary; the host's is the real one, the
//     others are placeholders that are never packed. The host's platform
//     package is packed from npm/<host>/ (as pre-publish left it) with the
//     built binary copied in, as `napi artifacts` would;
//  2. installs both tarballs with `npm install --offline` and an empty npm
//     cache, with no Rust toolchain on PATH and no npm settings from the
//     environment or the user's .npmrc: the host's optional dependency is
//     satisfied by the platform tarball; npm skips the other platforms'
//     optional dependencies, which it cannot fetch offline, exactly as it
//     skips a platform that does not match. So celery-sign's own packages
//     never come from a registry;
//  3. there: runs the installed `celery-sign` command (npx celery-sign --help,
//     a keygen -> certgen -> id -> sign -> verify -> inspect round trip, exit
//     codes); signs and verifies from an ESM and from a CommonJS program
//     (backend 'native', no fallback warning, the binary loaded from the
//     platform package), and compiles a strict TypeScript program (nodenext,
//     strict, skipLibCheck false) with typescript and @types/node copied from
//     the repository and neither ioredis nor amqplib installed;
//  4. installs the main tarball alone in another fresh directory (npm skips
//     the optional dependency it cannot fetch: what a user on a platform
//     without a binary, or with --omit=optional, gets) and checks the
//     node:crypto fallback: backend 'js', a sign/verify round trip, exactly
//     one CELERY_SIGN_FALLBACK warning naming the platform and the platform
//     package; and that CELERY_SIGN_BACKEND=native fails with celery-sign's
//     message, not npm's "optional dependencies" text;
//  5. prints the installed sizes.
//
// Every check runs and reports; the exit status is non-zero if any failed or a
// prerequisite is missing. The temporary directory is removed on success and
// kept (its path printed) on failure or with --keep.
import { spawnSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const keep = process.argv.includes('--keep');
const keyDir = join(root, 'bench', 'keys');

// ---------------------------------------------------------------- reporting
let failures = 0;
function ok(what) {
  console.log(`ok - ${what}`);
}
function notOk(what, detail) {
  failures++;
  console.log(`not ok - ${what}`);
  if (detail) console.log(String(detail).replace(/^/gm, '    '));
}
function check(what, cond, detail) {
  if (cond) ok(what);
  else notOk(what, detail);
  return cond;
}
function fatal(what) {
  console.error(`test-installed: ${what}`);
  process.exit(1);
}

// ---------------------------------------------------------------- prerequisites
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const { readNapiConfig } = await import('@napi-rs/cli').catch((err) =>
  fatal(`@napi-rs/cli is not installed (npm ci first): ${err.message}`),
);
const { targets, binaryName, packageName } = await readNapiConfig(join(root, 'package.json'));

function hostAbi() {
  const { platform, arch } = process;
  if (platform === 'linux') {
    const glibc = process.report?.getReport()?.header?.glibcVersionRuntime;
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`;
  }
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}
const abi = hostAbi();
const hostPackage = `${packageName}-${abi}`;
const binaryFile = `${binaryName}.${abi}.node`;
const hostBinary = join(root, 'native', binaryFile);
const hostNpmDir = join(root, 'npm', abi);
const cliJs = join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js');

const missing = [];
if (!targets.some((t) => t.platformArchABI === abi)) {
  missing.push(`this host (${abi}) is not among the napi targets (${targets.map((t) => t.platformArchABI).join(', ')})`);
}
for (const [path, hint] of [
  [join(root, 'lib', 'index.js'), 'npm run build:ts'],
  [join(root, 'lib', 'index.mjs'), 'npm run build:ts'],
  [hostBinary, 'npm run build:native'],
  [join(hostNpmDir, 'package.json'), 'napi create-npm-dirs'],
  [cliJs, 'npm ci'],
  [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), 'npm ci'],
  [join(root, 'node_modules', '@types', 'node', 'package.json'), 'npm ci'],
  [join(keyDir, 'rsa2048.key.pem'), 'the repository'],
  [join(keyDir, 'rsa2048.cert.pem'), 'the repository'],
]) {
  if (!existsSync(path)) missing.push(`${relative(root, path)} is missing (${hint})`);
}
if (missing.length > 0) fatal(`missing prerequisites:\n  - ${missing.join('\n  - ')}`);

// npm itself: the one running us (npm run) or the one on PATH.
const npmCli =
  process.env.npm_execpath && /\.c?js$/.test(process.env.npm_execpath) ? process.env.npm_execpath : null;
if (!npmCli && spawnSync(process.platform === 'win32' ? 'npm.cmd' : 'npm', ['--version'], { shell: process.platform === 'win32' }).status !== 0) {
  fatal('npm is not on PATH');
}

// ---------------------------------------------------------------- environments
const work = mkdtempSync(join(tmpdir(), 'celery-sign-installed-'));
if (resolve(work).startsWith(root + sep)) fatal(`the temporary directory ${work} is inside the repository`);
console.log(`# host ${abi}, platform package ${hostPackage}, in ${work}`);

// An environment with no npm settings inherited (npm run exports npm_config_*)
// and no user or global .npmrc.
const emptyRc = join(work, 'user.npmrc');
writeFileSync(emptyRc, '');
writeFileSync(join(work, 'global.npmrc'), '');
const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
baseEnv.npm_config_userconfig = emptyRc;
baseEnv.npm_config_globalconfig = join(work, 'global.npmrc');
baseEnv.npm_config_update_notifier = 'false';
baseEnv.npm_config_fund = 'false';
baseEnv.npm_config_audit = 'false';
delete baseEnv.CELERY_SIGN_BACKEND;
delete baseEnv.NODE_OPTIONS;

// The user's environment: the same, minus every PATH entry that holds a Rust
// toolchain (cargo, rustc, rustup), plus the directory of this node.
const exe = process.platform === 'win32' ? '.exe' : '';
const pathKey = Object.keys(baseEnv).find((k) => k.toUpperCase() === 'PATH') ?? 'PATH';
const userPath = [dirname(process.execPath)]
  .concat((baseEnv[pathKey] ?? '').split(delimiter))
  .filter((d) => d && !['cargo', 'rustc', 'rustup'].some((t) => existsSync(join(d, t + exe))))
  .filter((d, i, all) => all.indexOf(d) === i);
const userEnv = { ...baseEnv, [pathKey]: userPath.join(delimiter) };
for (const k of ['CARGO_HOME', 'RUSTUP_HOME', 'RUSTUP_TOOLCHAIN', 'CARGO_TARGET_DIR', 'CARGO']) delete userEnv[k];

function run(cmd, args, { cwd, env = baseEnv, input } = {}) {
  const r = spawnSync(cmd, args, { cwd, env, input, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  return r;
}
function npm(args, opts) {
  if (npmCli) return run(process.execPath, [npmCli, ...args], opts);
  return spawnSync(process.platform === 'win32' ? 'npm.cmd' : 'npm', args, {
    cwd: opts?.cwd,
    env: opts?.env ?? baseEnv,
    encoding: 'utf8',
    shell: process.platform === 'win32',
    maxBuffer: 64 << 20,
  });
}
function must(what, r) {
  if (r.status !== 0) {
    notOk(what, `${r.stdout ?? ''}${r.stderr ?? ''}`.trim());
    finish();
  }
  return r;
}

// ---------------------------------------------------------------- 1. pack
const stage = join(work, 'stage', 'package');
const tarballs = join(work, 'tarballs');
mkdirSync(stage, { recursive: true });
mkdirSync(tarballs, { recursive: true });

// What npm pack takes from the repository...
const listed = JSON.parse(must('npm pack --dry-run (main package)', npm(['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root })).stdout);
const files = listed[0].files.map((f) => f.path).sort();
for (const f of files) {
  mkdirSync(dirname(join(stage, f)), { recursive: true });
  cpSync(join(root, f), join(stage, f));
}
// ...checked for what users need and nothing else.
const unwanted = files.filter(
  (f) =>
    f.endsWith('.map') ||
    f.endsWith('.node') ||
    /^(src|test|bench|crates|scripts|npm|target|docs|python|\.github|\.ci)\//.test(f) ||
    (/\.[cm]?ts$/.test(f) && !/\.d\.[cm]?ts$/.test(f)),
);
check('the main tarball holds no source maps, binaries, sources, tests or tooling', unwanted.length === 0, unwanted.join('\n'));
const needed = ['LICENSE', 'README.md', 'package.json', 'lib/index.js', 'lib/index.mjs', 'lib/index.d.ts', 'lib/index.d.mts', 'lib/package.json', 'native/binding.cjs', 'native/load.cjs'];
const absent = needed.filter((f) => !files.includes(f));
check('the main tarball holds LICENSE, README, both entries with their types, and the native loader', absent.length === 0, `missing: ${absent.join(', ')}`);

// The publish-time step, the real one, on the staged copy.
cpSync(join(root, 'npm'), join(stage, 'npm'), { recursive: true });
for (const t of targets) {
  const dest = join(stage, 'npm', t.platformArchABI, `${binaryName}.${t.platformArchABI}.node`);
  if (t.platformArchABI === abi) cpSync(hostBinary, dest);
  else writeFileSync(dest, 'placeholder: never packed\n');
}
must(
  'napi pre-publish -t npm --no-gh-release --skip-optional-publish (the publish-time step)',
  run(process.execPath, [cliJs, 'pre-publish', '-t', 'npm', '--no-gh-release', '--skip-optional-publish'], { cwd: stage }),
);
const staged = JSON.parse(readFileSync(join(stage, 'package.json'), 'utf8'));
const expectedOptional = Object.fromEntries(targets.map((t) => [`${packageName}-${t.platformArchABI}`, pkg.version]));
check(
  `the published package.json names every platform package at exactly ${pkg.version}`,
  JSON.stringify(Object.entries(staged.optionalDependencies ?? {}).sort()) === JSON.stringify(Object.entries(expectedOptional).sort()),
  JSON.stringify(staged.optionalDependencies),
);
const versions = run(process.execPath, [join(root, 'scripts', 'check-versions.mjs'), '--root', stage]);
check('check-versions passes on the published shape', versions.status === 0, versions.stdout + versions.stderr);

// The host's platform package, as pre-publish left it, with its binary.
const platStage = join(work, 'stage', abi);
cpSync(join(stage, 'npm', abi), platStage, { recursive: true });
rmSync(join(stage, 'npm'), { recursive: true, force: true });

function pack(dir, what) {
  const r = must(`npm pack (${what})`, npm(['pack', '--json', '--ignore-scripts', '--pack-destination', tarballs], { cwd: dir }));
  const info = JSON.parse(r.stdout)[0];
  return { file: join(tarballs, info.filename), size: info.size, unpacked: info.unpackedSize, entries: info.files.map((f) => f.path) };
}
const mainTgz = pack(stage, 'main package');
const platTgz = pack(platStage, hostPackage);
check(
  `the ${hostPackage} tarball holds its binary, package.json and README, nothing else`,
  JSON.stringify([...platTgz.entries].sort()) === JSON.stringify(['README.md', binaryFile, 'package.json'].sort()),
  platTgz.entries.join('\n'),
);
ok(`packed ${relative(work, mainTgz.file)} (${kib(mainTgz.size)} packed) and ${relative(work, platTgz.file)} (${kib(platTgz.size)} packed)`);

// ---------------------------------------------------------------- 2./3. both packages
function install(dir, tgzs) {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }, null, 2) + '\n');
  return npm(['install', '--offline', '--cache', join(work, 'npm-cache'), '--no-audit', '--no-fund', ...tgzs.map((t) => t.file)], {
    cwd: dir,
    env: userEnv,
  });
}
function node(dir, file, extraEnv = {}) {
  return run(process.execPath, [file], { cwd: dir, env: { ...userEnv, ...extraEnv } });
}

const keyPem = JSON.stringify(join(keyDir, 'rsa2048.key.pem'));
const certPem = JSON.stringify(join(keyDir, 'rsa2048.cert.pem'));
// The body of a program that signs and verifies through the installed
// package (`cs`) and prints what it saw as JSON on its last line.
const roundTrip = `
const key = new cs.PrivateKey(readFileSync(${keyPem}));
const cert = new cs.Certificate(readFileSync(${certPem}));
const auth = new cs.SecureSerializer({ key, cert, store: new cs.CertStore([cert]) });
const task = [[2, 2], {}, { callbacks: null, errbacks: null, chain: null, chord: null }];
const body = auth.serialize(task);
const one = JSON.stringify(auth.deserialize(body)) === JSON.stringify(task);
const many = await auth.deserializeMany(await auth.serializeMany([task, { n: 1 }, 'x']));
const batch = many.length === 3 && many.every((r) => r.ok) && many[2].value === 'x';
let refused = null;
try { auth.deserialize(body.slice(0, -8) + 'AAAAAAAA'); } catch (e) { refused = e instanceof cs.SecurityError ? e.code : String(e); }
`;
const esmProgram = `import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
const warnings = [];
process.on('warning', (w) => warnings.push({ name: w.name, code: w.code, message: w.message }));
const cs = await import('celery-sign');
${roundTrip}
const require = createRequire(import.meta.url);
const sameInstance = require('celery-sign').SecureSerializer === cs.SecureSerializer;
const binary = Object.keys(require.cache).find((k) => k.endsWith('.node')) ?? null;
await new Promise((r) => setImmediate(r));
console.log(JSON.stringify({ backend: cs.backend, one, batch, refused, sameInstance, binary, warnings }));
`;
const cjsProgram = `'use strict';
const { readFileSync } = require('node:fs');
const warnings = [];
process.on('warning', (w) => warnings.push({ name: w.name, code: w.code, message: w.message }));
const cs = require('celery-sign');
(async () => {
${roundTrip}
await new Promise((r) => setImmediate(r));
console.log(JSON.stringify({ backend: cs.backend, one, batch, refused, warnings }));
})().catch((e) => { console.error(e); process.exit(1); });
`;

function result(what, r) {
  const line = r.stdout.trim().split('\n').at(-1);
  try {
    if (r.status === 0 && line) return JSON.parse(line);
  } catch {}
  notOk(what, `exit ${r.status}\n${r.stdout}${r.stderr}`.trim());
  return null;
}
function roundTripChecks(label, res, wantBackend) {
  if (!res) return;
  check(`${label}: backend is '${wantBackend}'`, res.backend === wantBackend, `backend ${JSON.stringify(res.backend)}`);
  check(`${label}: serialize -> deserialize round trip`, res.one === true);
  check(`${label}: serializeMany -> deserializeMany round trip`, res.batch === true);
  check(`${label}: a tampered payload is refused with a SecurityError and its ERR_ code`, typeof res.refused === 'string' && res.refused.startsWith('ERR_'), String(res.refused));
}

const appNative = join(work, 'app-native');
const inst = install(appNative, [mainTgz, platTgz]);
if (check(`npm install --offline of both tarballs (no Rust on PATH, empty cache)`, inst.status === 0, inst.stdout + inst.stderr)) {
  const cargo = run(process.execPath, ['-e', `process.exit(require('node:child_process').spawnSync('cargo', ['--version']).error ? 0 : 1)`], { env: userEnv });
  check('no cargo reachable in the user environment', cargo.status === 0);
  const lock = JSON.parse(readFileSync(join(appNative, 'package-lock.json'), 'utf8'));
  const installed = Object.keys(lock.packages).filter((p) => p).sort();
  check(
    `only ${packageName} and ${hostPackage} were installed`,
    JSON.stringify(installed) === JSON.stringify([`node_modules/${packageName}`, `node_modules/${hostPackage}`].sort()),
    installed.join('\n'),
  );
  for (const peer of ['ioredis', 'amqplib']) {
    check(`${peer} is not installed`, !existsSync(join(appNative, 'node_modules', peer)));
  }

  writeFileSync(join(appNative, 'esm.mjs'), esmProgram);
  writeFileSync(join(appNative, 'cjs.cjs'), cjsProgram);
  const esm = result('ESM program ran', node(appNative, 'esm.mjs'));
  roundTripChecks('ESM', esm, 'native');
  if (esm) {
    check('ESM: no CELERY_SIGN_FALLBACK warning', !esm.warnings.some((w) => w.code === 'CELERY_SIGN_FALLBACK'), JSON.stringify(esm.warnings));
    check('ESM and CommonJS share one copy of the package', esm.sameInstance === true);
    check(
      `the loaded binary is node_modules/${hostPackage}/${binaryFile}`,
      typeof esm.binary === 'string' && esm.binary.endsWith(`node_modules${sep}${hostPackage}${sep}${binaryFile}`),
      String(esm.binary),
    );
  }
  const cjs = result('CommonJS program ran', node(appNative, 'cjs.cjs'));
  roundTripChecks('CommonJS', cjs, 'native');
  if (cjs) check('CommonJS: no CELERY_SIGN_FALLBACK warning', !cjs.warnings.some((w) => w.code === 'CELERY_SIGN_FALLBACK'), JSON.stringify(cjs.warnings));

  // Strict TypeScript against the installed types. typescript and
  // @types/node (with its dependencies) are copied in after npm install,
  // which would prune them as extraneous.
  const copyDep = (name, seen = new Set()) => {
    if (seen.has(name)) return;
    seen.add(name);
    const from = join(root, 'node_modules', name);
    if (!existsSync(from)) fatal(`node_modules/${name} is missing (npm ci)`);
    cpSync(from, join(appNative, 'node_modules', name), { recursive: true, dereference: true });
    const deps = JSON.parse(readFileSync(join(from, 'package.json'), 'utf8')).dependencies ?? {};
    for (const dep of Object.keys(deps)) copyDep(dep, seen);
  };
  copyDep('typescript');
  copyDep('@types/node');
  writeFileSync(
    join(appNative, 'tsconfig.json'),
    JSON.stringify(
      {
        compilerOptions: {
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          strict: true,
          skipLibCheck: false,
          noEmit: true,
          types: ['node'],
        },
        files: ['check.mts', 'check.cts'],
      },
      null,
      2,
    ) + '\n',
  );
  const tsBody = `
const key: PrivateKey = new PrivateKey(readFileSync(${keyPem}));
const cert: Certificate = new Certificate(readFileSync(${certPem}));
const auth = new SecureSerializer({ key, cert, store: new CertStore([cert]) });
const body: string = auth.serialize({ n: 1 });
const value: unknown = auth.deserialize(body);
const name: BackendName = backend;
export async function many(): Promise<string[]> {
  const results: DeserializeResult[] = await auth.deserializeMany([body]);
  return results.map((r) => (r.ok ? r.signer : r.error.code));
}
// @ts-expect-error: the types are real (not any): a number is no PEM
new PrivateKey(42);
export { value, name };
`;
  writeFileSync(
    join(appNative, 'check.mts'),
    `import { readFileSync } from 'node:fs';\nimport { PrivateKey, Certificate, CertStore, SecureSerializer, backend } from 'celery-sign';\nimport type { BackendName, DeserializeResult } from 'celery-sign';\n${tsBody}`,
  );
  writeFileSync(
    join(appNative, 'check.cts'),
    `import { readFileSync } from 'node:fs';\nimport cs = require('celery-sign');\nconst { PrivateKey, Certificate, CertStore, SecureSerializer, backend } = cs;\ntype PrivateKey = cs.PrivateKey;\ntype Certificate = cs.Certificate;\ntype BackendName = cs.BackendName;\ntype DeserializeResult = cs.DeserializeResult;\n${tsBody}`,
  );
  const tsc = node(appNative, join('node_modules', 'typescript', 'bin', 'tsc'));
  check(
    'strict TypeScript (nodenext, skipLibCheck false) compiles against the installed types, ESM and CommonJS, without ioredis or amqplib',
    tsc.status === 0,
    tsc.stdout + tsc.stderr,
  );

  cliChecks(appNative);
}

// The installed `celery-sign` command (issue 13): npx finds it, and a
// keygen -> certgen -> id -> sign -> verify -> inspect round trip runs on it.
function cliChecks(dir) {
  const npx = npm(['exec', '--offline', '--', 'celery-sign', '--help'], { cwd: dir, env: userEnv });
  check('npx celery-sign --help runs the installed command', npx.status === 0 && /^Usage: celery-sign COMMAND/m.test(npx.stdout) && /Exit codes:/.test(npx.stdout), npx.stdout + npx.stderr);
  const bin = join(dir, 'node_modules', '.bin', process.platform === 'win32' ? 'celery-sign.cmd' : 'celery-sign');
  if (!check('node_modules/.bin/celery-sign is installed', existsSync(bin))) return;
  const cs = (args, input) => run(process.platform === 'win32' ? bin : bin, args, { cwd: dir, env: userEnv, input });
  const keyPath = join(dir, 'cli.key');
  const certPath = join(dir, 'cli.pem');
  const kg = cs(['keygen', '--bits', '2048', '--out', keyPath]);
  check('celery-sign keygen writes a key, mode 0600', kg.status === 0 && (process.platform === 'win32' || (statSync(keyPath).mode & 0o777) === 0o600), kg.stdout + kg.stderr);
  const again = cs(['keygen', '--bits', '2048', '--out', keyPath]);
  check('celery-sign keygen refuses to overwrite without --force (exit 3, one line)', again.status === 3 && again.stderr.trim().split('\n').length === 1, again.stderr);
  const cg = cs(['certgen', '--key', keyPath, '--cn', 'installed', '--days', '7', '--out', certPath, '--json']);
  const made = cg.status === 0 ? JSON.parse(cg.stdout) : null;
  check('celery-sign certgen prints the signer id', made !== null && /^installed \d+$/.test(made.id), cg.stdout + cg.stderr);
  const id = cs(['id', '--json', certPath]);
  check('celery-sign id gives the same id', id.status === 0 && made !== null && JSON.parse(id.stdout)[0].id === made.id, id.stdout + id.stderr);
  const signed = cs(['sign', '--key', keyPath, '--cert', certPath], '{"n": 1}');
  const store = join(dir, 'cli-store');
  mkdirSync(store, { recursive: true });
  cpSync(certPath, join(store, 'cli.pem'));
  const verified = cs(['verify', '--store', store, '--json'], signed.stdout);
  check('celery-sign sign | verify round trip', signed.status === 0 && verified.status === 0 && JSON.stringify(JSON.parse(verified.stdout).value) === '{"n":1}', signed.stderr + verified.stdout + verified.stderr);
  const inspected = cs(['inspect', '--json', '--store', store], signed.stdout);
  const info = inspected.status === 0 ? JSON.parse(inspected.stdout) : {};
  check('celery-sign inspect shows the wire format and signer', info.wireFormat === 'celery-5.5' && made !== null && info.signer === made.id && info.verified === true, inspected.stdout + inspected.stderr);
  const raw = Buffer.from(signed.stdout.trim(), 'base64');
  raw[raw.length - 2] ^= 1;
  const bad = cs(['verify', '--store', store], raw.toString('base64'));
  check('celery-sign verify of a tampered payload: exit 1, one line with the code', bad.status === 1 && /^celery-sign verify: does not verify: ERR_BAD_SIGNATURE/.test(bad.stderr) && bad.stderr.trim().split('\n').length === 1, bad.stderr);
  const bench = cs(['bench', '--quick']);
  check('celery-sign bench in an installed package says it needs the repository (exit 3, one line)', bench.status === 3 && /needs? .*repository|runs in a clone/.test(bench.stderr) && bench.stderr.trim().split('\n').length === 1, bench.stderr);
}

// ---------------------------------------------------------------- 4. the main package alone
const appAlone = join(work, 'app-fallback');
const inst2 = install(appAlone, [mainTgz]);
if (check('npm install --offline of the main tarball alone (its optional dependencies unreachable)', inst2.status === 0, inst2.stdout + inst2.stderr)) {
  check(`${hostPackage} is not installed`, !existsSync(join(appAlone, 'node_modules', hostPackage)));
  writeFileSync(join(appAlone, 'esm.mjs'), esmProgram);
  writeFileSync(join(appAlone, 'cjs.cjs'), cjsProgram);
  const where = `${process.platform}-${process.arch}`;
  for (const [label, file] of [
    ['fallback, ESM', 'esm.mjs'],
    ['fallback, CommonJS', 'cjs.cjs'],
  ]) {
    const res = result(`${label}: program ran`, node(appAlone, file));
    roundTripChecks(label, res, 'js');
    if (!res) continue;
    const fallback = res.warnings.filter((w) => w.code === 'CELERY_SIGN_FALLBACK');
    check(`${label}: exactly one CELERY_SIGN_FALLBACK warning`, fallback.length === 1, JSON.stringify(res.warnings, null, 2));
    if (fallback.length === 1) {
      const m = fallback[0].message;
      check(`${label}: the warning names the platform (${where}) and ${hostPackage}`, m.includes(where) && m.includes(hostPackage), m);
      check(`${label}: the warning is not npm's optional-dependencies text`, !/npm has a bug/i.test(m), m);
    }
  }

  // CELERY_SIGN_BACKEND=native with no binary: celery-sign's message, from
  // require (caught) and from a static import (what `node app.mjs` prints).
  // Not a caught dynamic import(): Node 20 still reports an error thrown by a
  // CommonJS module imported from ESM as uncaught (nodejs/node#51603).
  writeFileSync(
    join(appAlone, 'native.cjs'),
    `try { require('celery-sign'); console.log(JSON.stringify({ loaded: true })); }\n` +
      `catch (e) { console.log(JSON.stringify({ loaded: false, message: String(e?.message ?? e) })); }\n`,
  );
  writeFileSync(join(appAlone, 'native.mjs'), `import 'celery-sign';\nconsole.log('loaded');\n`);
  const clear = (m) => m.includes(`celery-sign: the native binary did not load on ${where}`) && m.includes(hostPackage) && !/npm has a bug|wasm32-wasi/i.test(m);
  const forced = result('CELERY_SIGN_BACKEND=native, CommonJS: program ran', node(appAlone, 'native.cjs', { CELERY_SIGN_BACKEND: 'native' }));
  if (forced) {
    check('CELERY_SIGN_BACKEND=native without the binary: require throws', forced.loaded === false);
    const m = forced.message ?? '';
    check(`CELERY_SIGN_BACKEND=native, CommonJS: the error is celery-sign's (names ${where} and ${hostPackage}), not npm's`, m.startsWith('celery-sign:') && clear(m), m);
  }
  const forcedEsm = node(appAlone, 'native.mjs', { CELERY_SIGN_BACKEND: 'native' });
  check(
    `CELERY_SIGN_BACKEND=native, ESM: the program fails with celery-sign's message, not npm's`,
    forcedEsm.status !== 0 && !forcedEsm.stdout.includes('loaded') && clear(forcedEsm.stderr),
    `exit ${forcedEsm.status}\n${forcedEsm.stdout}${forcedEsm.stderr}`,
  );
}

// ---------------------------------------------------------------- 5. sizes
function kib(n) {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(2)} MiB` : `${(n / 1024).toFixed(1)} KiB`;
}
function apparent(dir) {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    total += e.isDirectory() ? apparent(p) : statSync(p).size;
  }
  return total;
}
function diskUsage(dir) {
  const r = spawnSync('du', ['-sk', dir], { encoding: 'utf8' });
  return r.status === 0 ? `${r.stdout.split(/\s/)[0]} KiB on disk (du -sk)` : 'du unavailable';
}
console.log('# installed sizes');
for (const [dir, label] of [
  [join(appNative, 'node_modules', packageName), packageName],
  [join(appNative, 'node_modules', hostPackage), hostPackage],
]) {
  if (existsSync(dir)) console.log(`#   node_modules/${label}: ${kib(apparent(dir))} (${apparent(dir)} bytes), ${diskUsage(dir)}`);
}
console.log(`#   tarballs: ${packageName} ${kib(mainTgz.size)} packed / ${kib(mainTgz.unpacked)} unpacked; ${hostPackage} ${kib(platTgz.size)} / ${kib(platTgz.unpacked)}`);

finish();

function finish() {
  if (failures === 0 && !keep) rmSync(work, { recursive: true, force: true });
  else console.log(`# kept ${work}`);
  console.log(failures === 0 ? '# test-installed: all checks passed' : `# test-installed: ${failures} check(s) failed`);
  process.exit(failures === 0 ? 0 : 1);
}
