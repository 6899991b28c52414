/**
 * The guide in docs/: the English pages (docs/*.md) and the Simplified
 * Chinese ones (docs/zh-CN/*.md) are the same guide, and its TypeScript
 * samples compile against the package's types.
 *
 * - Same files in both languages; per file, the same headings (level and
 *   count, in order) and the same code blocks, byte for byte (info string
 *   and content, in order): code, commands and their output are not
 *   translated, only the prose is.
 * - Every relative link (file and `#anchor`) resolves, in both languages
 *   and in README.md.
 * - Every ```ts block of the English guide (so of both) and of README.md is type-checked,
 *   each as its own ES module, with `strict` and `nodenext`, against the
 *   built package (`celery-sign` resolves to this repository's package.json
 *   and lib/, as an installed package does) and a small declared prelude
 *   (PRELUDE below: the key, certificate, store, broker URL... a sample
 *   uses without making them). A block marked ```ts no-check is not
 *   compiled; there may be at most MAX_NO_CHECK of them.
 *
 * - The API reference builds with TypeDoc (typedoc.json: `npm run docs:api`)
 *   without a warning: every `{@link}` resolves, every type the API names
 *   is exported (treatWarningsAsErrors); run with `--emit none`.
 *
 * Needs the built package: `npm run build:ts` first.
 */
import test from 'ava';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import ts from 'typescript';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const EN = join(ROOT, 'docs');
const ZH = join(ROOT, 'docs', 'zh-CN');
const MAX_NO_CHECK = 2;

/** Declarations samples may use without making them (a global script, so a sample's own `const key` shadows it). */
const PRELUDE = `
type CS = typeof import('celery-sign');
declare const key: import('celery-sign').PrivateKey;
declare const cert: import('celery-sign').Certificate;
declare const otherCert: import('celery-sign').Certificate;
declare const store: import('celery-sign').CertStore;
declare const security: import('celery-sign').SecureSerializer;
declare const auth: import('celery-sign').SecureSerializer;
declare const worker: import('celery-sign').Worker;
declare const broker: string;
declare const backend: string;
declare const bodies: string[];
declare const payload: string;
declare function run(value: unknown, signer: string): void;
declare function log(code: string, message: string): void;
declare function fetchJson(url: string): Promise<unknown>;
declare const flaky: import('celery-sign').TaskHandler;
`;

interface Heading {
  level: number;
  text: string;
  line: number;
}
interface CodeBlock {
  info: string;
  body: string;
  line: number;
}
interface Page {
  headings: Heading[];
  blocks: CodeBlock[];
  links: { target: string; line: number }[];
}

/** Headings, fenced code blocks and inline links of a Markdown page (CommonMark's fences: ``` or ~~~, 3 or more). */
function parse(text: string): Page {
  const page: Page = { headings: [], blocks: [], links: [] };
  const lines = text.split('\n');
  let fence: { marker: string; info: string; start: number; body: string[] } | null = null;
  lines.forEach((line, i) => {
    if (fence) {
      if (line.trim().startsWith(fence.marker) && line.trim().replace(/[`~]/g, '') === '') {
        page.blocks.push({ info: fence.info, body: fence.body.join('\n'), line: fence.start + 1 });
        fence = null;
      } else {
        fence.body.push(line);
      }
      return;
    }
    const open = /^\s{0,3}(`{3,}|~{3,})(.*)$/.exec(line);
    if (open) {
      fence = { marker: open[1]!, info: open[2]!.trim(), start: i, body: [] };
      return;
    }
    const h = /^(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
    if (h) page.headings.push({ level: h[1]!.length, text: h[2]!, line: i + 1 });
    const noCode = line.replace(/`[^`]*`/g, '');
    for (const m of noCode.matchAll(/\]\(([^)\s]+)\)/g)) page.links.push({ target: m[1]!, line: i + 1 });
  });
  if (fence) throw new Error(`unclosed code fence at line ${(fence as { start: number }).start + 1}`);
  return page;
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to '-'. */
function slug(heading: string): string {
  return heading
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\p{M}\s_-]/gu, '')
    .replace(/ /g, '-');
}

function anchors(page: Page): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const h of page.headings) {
    const base = slug(h.text);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

const mdFiles = (dir: string): string[] =>
  readdirSync(dir)
    .filter((f) => f.endsWith('.md'))
    .sort();

function load(dir: string): Map<string, Page> {
  return new Map(mdFiles(dir).map((f) => [f, parse(readFileSync(join(dir, f), 'utf8'))]));
}

test('the English and Chinese guides have the same files', (t) => {
  const en = mdFiles(EN);
  t.true(en.length >= 10, `docs/ has ${en.length} pages`);
  t.deepEqual(mdFiles(ZH), en);
});

test('each Chinese page has the English page\'s headings (levels, count, order) and its code blocks byte for byte', (t) => {
  const en = load(EN);
  const zh = load(ZH);
  for (const [file, page] of en) {
    const other = zh.get(file);
    if (!other) {
      t.fail(`docs/zh-CN/${file} is missing`);
      continue;
    }
    t.deepEqual(
      other.headings.map((h) => h.level),
      page.headings.map((h) => h.level),
      `${file}: heading levels differ\n en: ${page.headings.map((h) => `${'#'.repeat(h.level)} ${h.text}`).join(' | ')}\n zh: ${other.headings.map((h) => `${'#'.repeat(h.level)} ${h.text}`).join(' | ')}`,
    );
    t.is(other.blocks.length, page.blocks.length, `${file}: number of code blocks`);
    page.blocks.forEach((b, i) => {
      const o = other.blocks[i];
      t.deepEqual(
        o && { info: o.info, body: o.body },
        { info: b.info, body: b.body },
        `${file}: code block ${i + 1} (en line ${b.line}, zh line ${o?.line}) differs`,
      );
    });
    t.true(
      page.headings.filter((h) => h.level === 1).length === 1 && page.headings[0]?.level === 1,
      `${file}: one title, first`,
    );
  }
});

test('every relative link of the guide (both languages) and of the README resolves, file and anchor', (t) => {
  const readme = new Map([['README.md', parse(readFileSync(join(ROOT, 'README.md'), 'utf8'))]]);
  for (const dir of [EN, ZH, ROOT]) {
    const pages = dir === ROOT ? readme : load(dir);
    for (const [file, page] of pages) {
      for (const { target, line } of page.links) {
        if (/^[a-z]+:/i.test(target)) continue;
        const [path, anchor] = target.split('#') as [string, string | undefined];
        const abs = path === '' ? join(dir, file) : resolve(dir, path);
        const where = `${dir === ZH ? 'docs/zh-CN/' : dir === EN ? 'docs/' : ''}${file}:${line}: ${target}`;
        if (!existsSync(abs)) {
          t.fail(`${where}: no such file`);
          continue;
        }
        if (anchor !== undefined && abs.endsWith('.md')) {
          const targetPage = parse(readFileSync(abs, 'utf8'));
          t.true(anchors(targetPage).has(anchor), `${where}: no such anchor`);
        } else {
          t.pass();
        }
      }
    }
  }
});

test('every ```ts sample of the guide compiles against the package\'s types (strict, nodenext)', (t) => {
  t.true(existsSync(join(ROOT, 'lib', 'index.d.ts')), 'the package is built (npm run build:ts)');
  const dir = mkdtempSync(join(tmpdir(), 'celery-sign-docs-'));
  try {
    mkdirSync(join(dir, 'node_modules'));
    symlinkSync(ROOT, join(dir, 'node_modules', 'celery-sign'), 'dir');
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
    writeFileSync(join(dir, 'prelude.d.ts'), PRELUDE);
    const origin = new Map<string, string>();
    let noCheck = 0;
    // The guide's samples, and the README's (its Quick start).
    const sources: [string, Page][] = [...load(EN)].map(([file, page]): [string, Page] => [`docs/${file}`, page]);
    sources.push(['README.md', parse(readFileSync(join(ROOT, 'README.md'), 'utf8'))]);
    for (const [file, page] of sources) {
      page.blocks.forEach((b, i) => {
        const lang = b.info.split(/\s+/);
        if (lang[0] !== 'ts' && lang[0] !== 'typescript') return;
        if (lang.includes('no-check')) {
          noCheck++;
          return;
        }
        const name = join(dir, `${file.replace(/\.md$/, '').replace(/\//g, '_')}-${i + 1}.ts`);
        // `export {}` makes each sample a module of its own, with or without imports.
        writeFileSync(name, `${b.body}\nexport {};\n`);
        origin.set(name, `${file} code block ${i + 1} (line ${b.line})`);
      });
    }
    t.true(origin.size >= 10, `${origin.size} samples compiled`);
    t.true(noCheck <= MAX_NO_CHECK, `${noCheck} samples marked no-check`);
    const program = ts.createProgram([join(dir, 'prelude.d.ts'), ...origin.keys()], {
      strict: true,
      target: ts.ScriptTarget.ES2022,
      lib: ['lib.es2022.d.ts'],
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      types: ['node'],
      typeRoots: [join(ROOT, 'node_modules', '@types')],
      skipLibCheck: true,
      noEmit: true,
    });
    const messages = ts.getPreEmitDiagnostics(program).map((d) => {
      const text = ts.flattenDiagnosticMessageText(d.messageText, '\n');
      if (!d.file || d.start === undefined) return text;
      const { line } = d.file.getLineAndCharacterOfPosition(d.start);
      return `${origin.get(d.file.fileName) ?? d.file.fileName}, sample line ${line + 1}: ${text}`;
    });
    t.deepEqual(messages, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the API reference builds with TypeDoc from the doc comments without a warning', async (t) => {
  t.timeout(120_000);
  const bin = join(ROOT, 'node_modules', 'typedoc', 'bin', 'typedoc');
  const { stdout, stderr } = await promisify(execFile)(process.execPath, [bin, '--emit', 'none'], {
    cwd: ROOT,
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
  });
  const out = `${stdout}${stderr}`;
  t.notRegex(out, /warning|error/i, out);
});
