/**
 * AMQP helpers of the wire suite: the Python side configured for a RabbitMQ
 * broker (pyamqp) with results in Redis, and a raw amqplib connection for
 * looking at queues.
 */
import amqp, { type ChannelModel } from 'amqplib';
import { runScript, wireEnv, type Pki } from './celery.js';
import type { RabbitServer } from './rabbitmq-server.js';

/** The WIRE_* environment of wire_app.py for a RabbitMQ broker and a Redis result backend. */
export function amqpEnv(
  pki: Pki,
  rabbit: RabbitServer,
  backend: string,
  which: 'good' | 'wrong-key' | 'unknown' = 'good',
  extra: Record<string, string> = {},
): NodeJS.ProcessEnv {
  return wireEnv(pki, rabbit.pyUrl, which, { WIRE_BACKEND: backend, ...extra });
}

/** Runs test/py/wire_amqp_oracle.py (kombu's view of the broker) once. */
export function amqpOracle<T>(pki: Pki, rabbit: RabbitServer, backend: string, request: object): Promise<T> {
  return runScript<T>('wire_amqp_oracle.py', request, { processEnv: amqpEnv(pki, rabbit, backend) });
}

/** Runs test/py/wire_producer.py (Celery's send_task) against the RabbitMQ broker. */
export function amqpProducer<T = { ids: string[]; results: { ok: boolean; value?: unknown; type?: string; module?: string; message?: string; traceback?: string | null; status?: string }[]; elapsed?: number }>(
  pki: Pki,
  rabbit: RabbitServer,
  backend: string,
  request: object,
  o: { signer?: 'good' | 'wrong-key' | 'unknown'; timeoutMs?: number } = {},
): Promise<T> {
  return runScript<T>('wire_producer.py', request, {
    processEnv: amqpEnv(pki, rabbit, backend, o.signer ?? 'good'),
    ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
  });
}

/** A raw amqplib connection (closed by the caller). */
export async function rawConnection(rabbit: RabbitServer): Promise<ChannelModel> {
  const c = await amqp.connect(rabbit.url);
  c.on('error', () => undefined);
  return c;
}

/** Messages ready in a queue (0 when the queue does not exist). */
export async function queueDepth(rabbit: RabbitServer, queue: string): Promise<number> {
  const c = await rawConnection(rabbit);
  try {
    const ch = await c.createChannel();
    ch.on('error', () => undefined);
    try {
      return (await ch.checkQueue(queue)).messageCount;
    } catch {
      return 0;
    }
  } finally {
    await c.close().catch(() => undefined);
  }
}

/** Polls `read` until it returns `want` or `ms` pass; returns the last value read. */
export async function until<T>(read: () => Promise<T>, want: T, ms = 30000): Promise<T> {
  const deadline = Date.now() + ms;
  let v = await read();
  while (v !== want && Date.now() < deadline) {
    await new Promise((res) => setTimeout(res, 100));
    v = await read();
  }
  return v;
}
