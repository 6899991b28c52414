// Builds the addon the napi-rs v3 way, with the pinned CLI (@napi-rs/cli in
// devDependencies, node_modules/.bin/napi):
//
//   napi build --platform --release \
//     --manifest-path crates/node/Cargo.toml --package-json-path package.json \
//     --output-dir native --js binding.cjs --dts binding.d.cts -- --locked
//
// which writes native/celery-sign.<platform>.node and regenerates the loader
// (native/binding.cjs, required by native/load.cjs) and its types
// (native/binding.d.cts); both are committed, so a change to the binding's API
// is a visible diff.
//
// On Linux glibc the binary is built against glibc 2.17 (the floor napi-rs's
// own build images give: RHEL 7, Amazon Linux 2, Debian 8 and later), whatever
// glibc this machine has: `-x` (cargo-zigbuild, zig as the C compiler and
// linker, from the .venv-build that scripts/setup.sh makes) with the target
// `<host triple>.2.17`. Cargo still compiles for the host triple, so no other
// Rust target is needed; the output goes to target/<triple>/release and leaves
// target/release (cargo test, clippy) alone. test/binary.test.ts checks the
// floor in the built file.
//
//   node scripts/build-native.mjs [--debug] [--host-glibc]
//     --debug       a debug build (no --release)
//     --host-glibc  build with the host's C toolchain and glibc (plain
//                   `napi build`, no zig): the binary then needs this
//                   machine's glibc and test/binary.test.ts fails on it
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(new URL('..', import.meta.url)));
const argv = process.argv.slice(2);
const release = !argv.includes('--debug');
const hostGlibc = argv.includes('--host-glibc');
const floor = '2.17'; // test/binary.test.ts checks the same floor

function isMusl() {
  try {
    return !process.report.getReport().header.glibcVersionRuntime;
  } catch {
    return readFileSync('/usr/bin/ldd', 'utf8').includes('musl');
  }
}

const linuxGnu = process.platform === 'linux' && !isMusl();
const rustArch = { x64: 'x86_64', arm64: 'aarch64' }[process.arch];
// node_modules/.bin/napi is a link to this file; running it with this node
// avoids the .cmd shim (and a shell) on Windows.
const napi = join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js');
if (!existsSync(napi)) {
  console.error('build-native: @napi-rs/cli is not installed: run `npm ci` (or scripts/setup.sh) first');
  process.exit(1);
}

const env = { ...process.env };
// Paths are relative to --cwd. The build runs in the crate's folder rather
// than at the root: zig reports its lib folder relative to the working
// directory when it lies below it (.venv-build/...), and cargo-zigbuild hands
// that relative path to bindgen (aws-lc-sys), which runs in another folder.
const args = [
  'build',
  '--platform',
  '--cwd',
  join(root, 'crates', 'node'),
  '--manifest-path',
  'Cargo.toml',
  '--package-json-path',
  '../../package.json',
  '--output-dir',
  '../../native',
  '--js',
  'binding.cjs',
  '--dts',
  'binding.d.cts',
];
if (release) args.push('--release');

if (linuxGnu && !hostGlibc) {
  if (!rustArch) {
    console.error(`build-native: no glibc-${floor} build for ${process.arch}; use --host-glibc`);
    process.exit(1);
  }
  const venvBin = join(root, '.venv-build', 'bin');
  if (existsSync(venvBin)) env.PATH = `${venvBin}${delimiter}${env.PATH ?? ''}`;
  const zig = spawnSync('cargo-zigbuild', ['--version'], { env, stdio: 'ignore' });
  if (zig.status !== 0) {
    console.error(
      'build-native: cargo-zigbuild is not installed (it builds the glibc-' +
        floor +
        ' binary): run scripts/setup.sh, which makes .venv-build with cargo-zigbuild and ziglang; ' +
        'or pass --host-glibc to build against this machine glibc',
    );
    process.exit(1);
  }
  args.push('--cross-compile', '--target', `${rustArch}-unknown-linux-gnu.${floor}`);
}
args.push('--', '--locked');

console.log(`build-native: napi ${args.join(' ')}`);
const r = spawnSync(process.execPath, [napi, ...args], { cwd: root, env, stdio: 'inherit' });
if (r.status !== 0) {
  console.error(`build-native: napi build failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`})`);
  process.exit(1);
}
