/**
 * The built addon, read as a file: on Linux, the ELF's version needs
 * (.gnu.version_r) and DT_NEEDED entries, parsed here without binutils.
 *
 * - Linux gnu: no GLIBC_x.y above the floor (2.17, what napi-rs's build
 *   images give and scripts/build-native.mjs builds against), so the binary
 *   loads on RHEL 7, Amazon Linux 2, Ubuntu 18.04, Debian 9 and later;
 * - no system libssl / libcrypto (AWS-LC is linked in) and no libstdc++;
 * - the file is a shared object for this machine's architecture.
 *
 * A missing binary fails the test: `npm run build:native` first. macOS and
 * Windows binaries are not ELF; there the test only checks that the file is
 * there. CELERY_SIGN_BINARY=<path> checks another file (a binary built
 * elsewhere) instead of native/celery-sign.<platform>.node.
 */
import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const GLIBC_FLOOR = '2.17';
const FORBIDDEN_NEEDED = /^lib(ssl|crypto|stdc\+\+)\.so/;

function isMusl(): boolean {
  const header = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header;
  return !header?.glibcVersionRuntime;
}

function platformSuffix(): string {
  const { platform, arch } = process;
  if (platform === 'linux') return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`;
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

interface VersionNeed {
  /** The library the versions come from (vn_file), e.g. libc.so.6. */
  file: string;
  /** Version names needed from it (vna_name), e.g. GLIBC_2.14. */
  versions: string[];
}

interface ElfDeps {
  machine: number;
  type: number;
  needed: string[];
  versionNeeds: VersionNeed[];
}

const SHT_DYNAMIC = 6;
const SHT_GNU_VERNEED = 0x6ffffffe;
const DT_NULL = 0;
const DT_NEEDED = 1;

/** Reads the dynamic dependencies of a 64-bit little-endian ELF file. */
function readElfDeps(buf: Buffer): ElfDeps {
  if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46) throw new Error('not an ELF file');
  if (buf[4] !== 2 || buf[5] !== 1) throw new Error('not a 64-bit little-endian ELF file');
  const type = buf.readUInt16LE(16);
  const machine = buf.readUInt16LE(18);
  const shoff = Number(buf.readBigUInt64LE(40));
  const shentsize = buf.readUInt16LE(58);
  const shnum = buf.readUInt16LE(60);
  if (shoff === 0 || shnum === 0) throw new Error('ELF file without section headers');
  if (shoff + shnum * shentsize > buf.length) throw new Error('ELF section headers past the end of the file');
  const sections = Array.from({ length: shnum }, (_, i) => {
    const o = shoff + i * shentsize;
    return {
      type: buf.readUInt32LE(o + 4),
      offset: Number(buf.readBigUInt64LE(o + 24)),
      size: Number(buf.readBigUInt64LE(o + 32)),
      link: buf.readUInt32LE(o + 40),
      info: buf.readUInt32LE(o + 44),
    };
  });
  const section = (i: number) => {
    const s = sections[i];
    if (!s || s.offset + s.size > buf.length) throw new Error(`ELF section ${i} is out of range`);
    return s;
  };
  const cstr = (strtab: number, off: number): string => {
    const s = section(strtab);
    if (off >= s.size) throw new Error('ELF string offset out of range');
    const start = s.offset + off;
    const end = buf.indexOf(0, start);
    if (end < 0 || end >= s.offset + s.size) throw new Error('unterminated ELF string');
    return buf.toString('latin1', start, end);
  };

  const needed: string[] = [];
  const dynamic = sections.findIndex((s) => s.type === SHT_DYNAMIC);
  if (dynamic < 0) throw new Error('no .dynamic section: not a shared object');
  {
    const d = section(dynamic);
    for (let o = d.offset; o + 16 <= d.offset + d.size; o += 16) {
      const tag = buf.readBigInt64LE(o);
      if (tag === BigInt(DT_NULL)) break;
      if (tag === BigInt(DT_NEEDED)) needed.push(cstr(d.link, Number(buf.readBigUInt64LE(o + 8))));
    }
  }

  const versionNeeds: VersionNeed[] = [];
  const verneed = sections.findIndex((s) => s.type === SHT_GNU_VERNEED);
  if (verneed >= 0) {
    const v = section(verneed);
    // Elf64_Verneed { u16 vn_version, u16 vn_cnt, u32 vn_file, u32 vn_aux, u32 vn_next }
    // Elf64_Vernaux { u32 vna_hash, u16 vna_flags, u16 vna_other, u32 vna_name, u32 vna_next }
    let entry = v.offset;
    for (let n = 0; n < v.info; n++) {
      if (entry + 16 > v.offset + v.size) throw new Error('.gnu.version_r entry out of range');
      const cnt = buf.readUInt16LE(entry + 2);
      const need: VersionNeed = { file: cstr(v.link, buf.readUInt32LE(entry + 4)), versions: [] };
      let aux = entry + buf.readUInt32LE(entry + 8);
      for (let k = 0; k < cnt; k++) {
        if (aux + 16 > v.offset + v.size) throw new Error('.gnu.version_r aux entry out of range');
        need.versions.push(cstr(v.link, buf.readUInt32LE(aux + 8)));
        const next = buf.readUInt32LE(aux + 12);
        if (next === 0) break;
        aux += next;
      }
      versionNeeds.push(need);
      const next = buf.readUInt32LE(entry + 12);
      if (next === 0) break;
      entry += next;
    }
  }
  return { machine, type, needed, versionNeeds };
}

/** [major, minor, patch] of `GLIBC_2.3.4`, or null for other version names (GLIBC_PRIVATE). */
function glibcVersion(name: string): number[] | null {
  const m = /^GLIBC_(\d+(?:\.\d+)*)$/.exec(name);
  return m ? m[1]!.split('.').map(Number) : null;
}

function compareVersions(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

const binaryPath = process.env.CELERY_SIGN_BINARY || join(ROOT, 'native', `celery-sign.${platformSuffix()}.node`);

test('the built addon is there', (t) => {
  t.true(existsSync(binaryPath), `${binaryPath} is missing: run \`npm run build:native\` first`);
});

if (process.platform === 'linux') {
  const EM = { x64: 62, arm64: 183 } as Record<string, number>;

  const deps = (): ElfDeps => {
    if (!existsSync(binaryPath)) throw new Error(`${binaryPath} is missing: run \`npm run build:native\` first`);
    return readElfDeps(readFileSync(binaryPath));
  };

  test('the addon is a shared object for this architecture', (t) => {
    const d = deps();
    t.is(d.type, 3, 'ET_DYN');
    const machine = EM[process.arch];
    if (machine !== undefined) t.is(d.machine, machine, `e_machine for ${process.arch}`);
  });

  test('the addon needs no system libssl, libcrypto or libstdc++', (t) => {
    const { needed } = deps();
    t.log(`DT_NEEDED: ${needed.join(', ')}`);
    t.true(needed.length > 0, 'a Node addon needs at least libc');
    t.deepEqual(
      needed.filter((n) => FORBIDDEN_NEEDED.test(n)),
      [],
    );
  });

  if (!isMusl()) {
    test(`the addon needs no glibc above ${GLIBC_FLOOR}`, (t) => {
      const { versionNeeds } = deps();
      const glibc = versionNeeds.flatMap((n) =>
        n.versions.flatMap((name) => {
          const v = glibcVersion(name);
          return v ? [{ name, v, file: n.file }] : [];
        }),
      );
      t.true(glibc.length > 0, 'a glibc binary has GLIBC_ version needs');
      glibc.sort((a, b) => compareVersions(a.v, b.v));
      const max = glibc[glibc.length - 1]!;
      t.log(`glibc floor of ${binaryPath} as read from the binary: ${max.name.slice('GLIBC_'.length)} (${max.file})`);
      const floor = GLIBC_FLOOR.split('.').map(Number);
      const above = glibc.filter((g) => compareVersions(g.v, floor) > 0).map((g) => `${g.name} (${g.file})`);
      t.deepEqual([...new Set(above)], [], `needs above GLIBC_${GLIBC_FLOOR}: rebuild with \`npm run build:native\``);
      t.deepEqual(
        versionNeeds.flatMap((n) => n.versions).filter((n) => n === 'GLIBC_PRIVATE'),
        [],
        'GLIBC_PRIVATE',
      );
    });
  }
}
