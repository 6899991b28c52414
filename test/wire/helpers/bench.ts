/** What bench-redis.ts and bench-amqp.ts share: arguments, statistics, reading results back. */
import type { Redis } from 'ioredis';
import { json } from 'celery-sign';

/** `[N] [--rounds R]` from the command line (defaults 5000 and 3). */
export function benchArgs(argv: readonly string[] = process.argv.slice(2)): { n: number; rounds: number } {
  const n = Number(argv.find((a, i) => /^\d+$/.test(a) && argv[i - 1] !== '--rounds') ?? 5000);
  const at = argv.indexOf('--rounds');
  const rounds = at >= 0 ? Math.max(1, Number(argv[at + 1]) || 1) : 3;
  return { n, rounds };
}

export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
export const sleep = (ms: number): Promise<void> => new Promise((res) => setTimeout(res, ms));

/** Seconds between the first and the last `date_done` of these tasks' results (all must have succeeded). */
export async function doneSpread(r: Redis, ids: string[]): Promise<number> {
  const values = await r.mget(...ids.map((id) => `celery-task-meta-${id}`));
  const times = values.map((v) => {
    if (v === null) throw new Error('a result is missing');
    const meta = json.loads(v) as { status: string; date_done: string };
    if (meta.status !== 'SUCCESS') throw new Error(`a task ended ${meta.status}`);
    return Date.parse(meta.date_done.replace(/(\.\d{3})\d+/, '$1'));
  });
  return (Math.max(...times) - Math.min(...times)) / 1000;
}

/** Waits until every one of these tasks has a stored result. */
export async function waitAll(r: Redis, ids: string[], ms = 300000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    let missing = 0;
    for (let i = 0; i < ids.length; i += 1000) {
      const v = await r.mget(...ids.slice(i, i + 1000).map((id) => `celery-task-meta-${id}`));
      missing += v.filter((x) => x === null).length;
    }
    if (missing === 0) return;
    if (Date.now() > deadline) throw new Error(`${missing} results missing`);
    await sleep(100);
  }
}
