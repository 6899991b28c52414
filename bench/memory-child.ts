/**
 * The memory measurement in a fresh process (spawned by extras.ts), so that the
 * benchmark's other phases leave nothing in the heap: RSS while `total`
 * payloads go through deserializeMany in chunks.
 *
 *   node --import tsx bench/memory-child.ts TOTAL CHUNK THREADS
 * prints `progress N` lines, then `result {json}`.
 */
import { SecureSerializer, setThreads } from 'celery-sign';
import { memoryGrowth } from './extras.js';
import { HEADLINE_BODY, loadKeys, makeValues } from './workloads.js';

const [total, chunk, threads] = process.argv.slice(2).map(Number);
if (!total || !chunk || !threads) throw new Error('usage: memory-child.ts TOTAL CHUNK THREADS');
setThreads(threads);
const keys = loadKeys();
const k = keys.get(2048);
const serializer = new SecureSerializer({ key: k.key, cert: k.cert, store: keys.store, digest: 'sha256' });
const payloads = await serializer.serializeMany(makeValues(HEADLINE_BODY, chunk));
const result = await memoryGrowth(serializer, payloads, total, (done) => process.stdout.write(`progress ${done}\n`));
process.stdout.write(`result ${JSON.stringify(result)}\n`);
