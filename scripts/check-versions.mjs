// Checks that the root package and the per-platform packages in npm/ move in
// lockstep and describe exactly the napi targets (package.json `napi.targets`,
// read with the pinned @napi-rs/cli so that the names are napi's own):
//
//   - one version: the root's, every npm/<platform>/package.json's and the
//     Cargo workspace's ([workspace.package] in Cargo.toml);
//   - one npm/<platform>/ per target and none besides, each named
//     `<name>-<platform>` with the os / cpu / libc and the `main` napi gives it;
//   - `optionalDependencies`, when present, name exactly those packages, each at
//     exactly the root's version (no ranges: a range would let npm pair this
//     facade with a binary of another release).
//
// The optionalDependencies are written at publish time (`npm run release:prepare`,
// i.e. `napi pre-publish`), not kept in the repository. With --release the
// script checks the state just before `npm publish`: the optionalDependencies
// must be there, every platform package must hold its binary, and every
// platform package must carry the root's `repository` (npm's provenance
// check compares it with the repository the workflow runs in).
//
//   node scripts/check-versions.mjs [--release] [--root <dir>]
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const release = args.includes('--release');
const rootArg = args.indexOf('--root');
const root = rootArg >= 0 ? resolve(args[rootArg + 1]) : join(fileURLToPath(new URL('..', import.meta.url)));

const { readNapiConfig } = await import('@napi-rs/cli').catch((err) => {
  console.error('check-versions: @napi-rs/cli is not installed (npm ci first):', err.message);
  process.exit(1);
});

const problems = [];
const rootJsonPath = join(root, 'package.json');
const pkg = JSON.parse(readFileSync(rootJsonPath, 'utf8'));
const { targets, packageName, binaryName } = await readNapiConfig(rootJsonPath);
const version = pkg.version;

if (typeof version !== 'string' || !/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/.test(version)) {
  problems.push(`package.json: version ${JSON.stringify(version)} is not a plain semver version`);
}
if (targets.length === 0) problems.push('package.json: napi.targets is empty');

// The Rust workspace carries the same version (the crates are not published,
// but a binary should not claim another release than its package).
const cargoToml = join(root, 'Cargo.toml');
if (existsSync(cargoToml)) {
  const section = /^\[workspace\.package\]\s*$([\s\S]*?)(?=^\[|(?![\s\S]))/m.exec(readFileSync(cargoToml, 'utf8'));
  const cargoVersion = section && /^version\s*=\s*"([^"]*)"/m.exec(section[1])?.[1];
  if (cargoVersion && cargoVersion !== version) {
    problems.push(`Cargo.toml: [workspace.package] version ${JSON.stringify(cargoVersion)}, package.json has ${JSON.stringify(version)}`);
  }
}

const expected = new Map(); // platform package name -> target
for (const target of targets) {
  const name = `${packageName}-${target.platformArchABI}`;
  if (expected.has(name)) problems.push(`package.json: napi.targets names ${target.triple} twice`);
  expected.set(name, target);
}

// npm/<platform>/ for every target, and nothing else.
const npmDir = join(root, 'npm');
const dirs = existsSync(npmDir)
  ? readdirSync(npmDir).filter((d) => statSync(join(npmDir, d)).isDirectory())
  : [];
const wanted = new Set(targets.map((t) => t.platformArchABI));
for (const dir of dirs) {
  if (!wanted.has(dir)) problems.push(`npm/${dir}/: no napi target has this platform (stale directory?)`);
}
for (const target of targets) {
  const abi = target.platformArchABI;
  const where = `npm/${abi}/package.json`;
  const path = join(npmDir, abi, 'package.json');
  if (!existsSync(path)) {
    problems.push(`${where}: missing (run \`napi create-npm-dirs\`) for target ${target.triple}`);
    continue;
  }
  const sub = JSON.parse(readFileSync(path, 'utf8'));
  const name = `${packageName}-${abi}`;
  const main = `${binaryName}.${abi}.node`;
  if (sub.name !== name) problems.push(`${where}: name ${JSON.stringify(sub.name)}, expected ${JSON.stringify(name)}`);
  if (sub.version !== version) {
    problems.push(`${where}: version ${JSON.stringify(sub.version)}, the root package is ${JSON.stringify(version)}`);
  }
  if (!isDeepStrictEqual(sub.os, [target.platform])) {
    problems.push(`${where}: os ${JSON.stringify(sub.os)}, expected ${JSON.stringify([target.platform])}`);
  }
  if (!isDeepStrictEqual(sub.cpu, [target.arch])) {
    problems.push(`${where}: cpu ${JSON.stringify(sub.cpu)}, expected ${JSON.stringify([target.arch])}`);
  }
  if (target.platform === 'linux' && (target.abi === 'gnu' || target.abi === 'musl')) {
    const libc = [target.abi === 'gnu' ? 'glibc' : 'musl'];
    if (!isDeepStrictEqual(sub.libc, libc)) {
      problems.push(`${where}: libc ${JSON.stringify(sub.libc)}, expected ${JSON.stringify(libc)}`);
    }
  }
  if (sub.main !== main) problems.push(`${where}: main ${JSON.stringify(sub.main)}, expected ${JSON.stringify(main)}`);
  if (!Array.isArray(sub.files) || !sub.files.includes(main)) {
    problems.push(`${where}: files must list ${main}`);
  }
  if (release) {
    if (!existsSync(join(npmDir, abi, main))) {
      problems.push(`npm/${abi}/${main}: the binary is missing (the release needs every target's artifact)`);
    }
    if (!isDeepStrictEqual(sub.repository, pkg.repository)) {
      problems.push(
        `${where}: repository ${JSON.stringify(sub.repository)} differs from the root's ${JSON.stringify(pkg.repository)} ` +
          '(npm --provenance refuses it; regenerate with `napi create-npm-dirs`)',
      );
    }
  }
}

// optionalDependencies: exactly the platform packages, each at exactly `version`.
const optional = pkg.optionalDependencies;
if (optional === undefined) {
  if (release) problems.push('package.json: no optionalDependencies (run `npm run release:prepare` first)');
} else {
  for (const [name, spec] of Object.entries(optional)) {
    if (!expected.has(name)) problems.push(`package.json: optionalDependencies names ${name}, which no napi target builds`);
    else if (spec !== version) {
      problems.push(`package.json: optionalDependencies.${name} is ${JSON.stringify(spec)}, expected exactly ${JSON.stringify(version)}`);
    }
  }
  for (const name of expected.keys()) {
    if (!(name in optional)) problems.push(`package.json: optionalDependencies lacks ${name}`);
  }
}
if (release && !pkg.repository) problems.push('package.json: no repository (npm --provenance needs it)');

if (problems.length > 0) {
  console.error(`check-versions: ${problems.length} problem(s):\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  process.exit(1);
}
console.log(
  `check-versions: ${packageName}@${version} and ${targets.length} platform packages in lockstep ` +
    `(${targets.map((t) => t.platformArchABI).join(', ')})` +
    (optional === undefined ? '; optionalDependencies are written at publish time' : '; optionalDependencies exact') +
    (release ? '; every binary present' : ''),
);
