/**
 * Key and certificate material made fresh for every `npm test` run by the real
 * Python `cryptography` and Celery (`test/py/make_fixtures.py`, run by the
 * `test:fixtures` script). Every expected Celery id in the manifest is what
 * Celery itself returned.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './python.js';

export const FIXTURES = process.env.CELERY_SIGN_FIXTURES ?? join(ROOT, 'test', '.fixtures');

export interface KeyItem {
  name: string;
  kind: 'private_key';
  path: string;
  key_id: string;
  algorithm: string;
  bits: number | null;
  format: string;
  password: string | null;
  celery: { ok: boolean; error: string | null };
  tags: string[];
}

export interface CertItem {
  name: string;
  kind: 'certificate';
  path: string;
  algorithm: string | null;
  bits: number | null;
  key_id: string | null;
  serial: string | null;
  not_after: string | null;
  expired: boolean | null;
  expected_id: string | null;
  expected_issuer: string | null;
  celery_error: string | null;
  celery_error_stage: string | null;
  tags: string[];
}

export interface StoreItem {
  name: string;
  kind: 'cert_store';
  path: string;
  members: string[];
  celery: { ok: boolean; error: string | null; ids: string[] | null };
}

export type Item = KeyItem | CertItem | StoreItem;

interface Manifest {
  schema: number;
  items: Item[];
}

let cached: Manifest | undefined;

function manifest(): Manifest {
  if (!cached) {
    const path = join(FIXTURES, 'manifest.json');
    try {
      cached = JSON.parse(readFileSync(path, 'utf8')) as Manifest;
    } catch (err) {
      throw new Error(`fixtures missing at ${path}: run \`npm run test:fixtures\` (${String(err)})`);
    }
  }
  return cached;
}

export function items(): Item[] {
  return manifest().items;
}

export function keys(): KeyItem[] {
  return items().filter((i): i is KeyItem => i.kind === 'private_key');
}

export function certs(): CertItem[] {
  return items().filter((i): i is CertItem => i.kind === 'certificate');
}

export function stores(): StoreItem[] {
  return items().filter((i): i is StoreItem => i.kind === 'cert_store');
}

function find<T extends Item>(list: T[], name: string): T {
  const found = list.find((i) => i.name === name);
  if (!found) throw new Error(`no fixture named ${name}`);
  return found;
}

export const key = (name: string): KeyItem => find(keys(), name);
export const cert = (name: string): CertItem => find(certs(), name);
export const store = (name: string): StoreItem => find(stores(), name);

export function pathOf(item: Item): string {
  return join(FIXTURES, item.path);
}

export function pemOf(item: KeyItem | CertItem): Buffer {
  return readFileSync(pathOf(item));
}
