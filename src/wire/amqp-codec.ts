/**
 * A tolerant reader of AMQP basic properties, installed under amqplib.
 *
 * amqplib 0.10 reads every field-table type RabbitMQ writes but one: `L`,
 * the 64-bit integer py-amqp writes for any Python `int` beyond 32 bits (a
 * header such as `{'x': 2**40}` from a stock Celery producer). Meeting it,
 * amqplib throws inside its frame parser and drops the whole connection; the
 * broker then redelivers the message, and the consumer never gets past it.
 * A single header value must not stop a worker.
 *
 * So amqplib's frame reader is wrapped ({@link makeFramesTolerant}): when
 * amqplib's own reading of a `basic` content header fails, this module reads
 * it again: every type amqplib reads, read the same way, plus `L`
 * (signed 64-bit, as py-amqp reads it; a JavaScript number when it fits
 * exactly, else a bigint). When even that fails (an unknown type tag: the
 * table cannot be read past it), the headers are replaced by
 * `{[UNDECODABLE_HEADERS]: reason}`, and the transport hands the message over
 * marked malformed, so the worker refuses and drops it and goes on.
 *
 * @module
 */

/** Marks headers that could not be read at all; the value says why. */
export const UNDECODABLE_HEADERS = Symbol.for('celery-sign.undecodableHeaders');

/** The class id of AMQP's `basic` class: its content headers carry the message properties. */
const BASIC_CLASS = 60;

function readInt64(buf: Buffer, offset: number): number | bigint {
  const v = buf.readBigInt64BE(offset);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function readUInt64(buf: Buffer, offset: number): number | bigint {
  const v = buf.readBigUInt64BE(offset);
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** Reads a field table as amqplib does, plus `L`. Throws on an unknown tag. */
export function decodeTable(slice: Buffer): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  let offset = 0;
  const value = (): unknown => {
    const tag = String.fromCharCode(slice[offset]!);
    offset++;
    let len: number;
    let v: unknown;
    switch (tag) {
      case 'b':
        v = slice.readInt8(offset);
        offset += 1;
        return v;
      case 'B':
        v = slice.readUInt8(offset);
        offset += 1;
        return v;
      case 's':
        v = slice.readInt16BE(offset);
        offset += 2;
        return v;
      case 'u':
        v = slice.readUInt16BE(offset);
        offset += 2;
        return v;
      case 'I':
        v = slice.readInt32BE(offset);
        offset += 4;
        return v;
      case 'i':
        v = slice.readUInt32BE(offset);
        offset += 4;
        return v;
      case 'l':
      case 'L': // py-amqp writes ints beyond 32 bits as 'L' and reads it signed
        v = readInt64(slice, offset);
        offset += 8;
        return v;
      case 'f':
        v = slice.readFloatBE(offset);
        offset += 4;
        return v;
      case 'd':
        v = slice.readDoubleBE(offset);
        offset += 8;
        return v;
      case 'D': {
        const places = slice[offset]!;
        const digits = slice.readUInt32BE(offset + 1);
        offset += 5;
        return { '!': 'decimal', value: { places, digits } };
      }
      case 'T':
        v = readUInt64(slice, offset);
        offset += 8;
        return { '!': 'timestamp', value: v };
      case 't':
        v = slice[offset] !== 0;
        offset += 1;
        return v;
      case 'V':
        return null;
      case 'S':
        len = slice.readUInt32BE(offset);
        offset += 4;
        v = slice.toString('utf8', offset, offset + len);
        offset += len;
        return v;
      case 'x':
        len = slice.readUInt32BE(offset);
        offset += 4;
        v = slice.subarray(offset, offset + len);
        offset += len;
        return v;
      case 'F':
        len = slice.readUInt32BE(offset);
        offset += 4;
        v = decodeTable(slice.subarray(offset, offset + len));
        offset += len;
        return v;
      case 'A': {
        len = slice.readUInt32BE(offset);
        offset += 4;
        const end = offset + len;
        const items: unknown[] = [];
        while (offset < end) items.push(value());
        return items;
      }
      default:
        throw new TypeError(`unknown field type tag ${JSON.stringify(tag)}`);
    }
  };
  while (offset < slice.length) {
    const keyLen = slice.readUInt8(offset);
    offset++;
    const key = slice.toString('utf8', offset, offset + keyLen);
    offset += keyLen;
    fields[key] = value();
  }
  return fields;
}

/** amqplib's decodeBasicProperties with {@link decodeTable}; unreadable headers are marked, not thrown. */
export function decodeBasicProperties(buffer: Buffer): Record<string, unknown> {
  const flags = buffer.readUInt16BE(0);
  if (flags === 0) return {};
  let offset = 2;
  const fields: Record<string, unknown> = {};
  const shortstr = (): string => {
    const len = buffer.readUInt8(offset);
    offset++;
    const s = buffer.toString('utf8', offset, offset + len);
    offset += len;
    return s;
  };
  if (flags & 0x8000) fields.contentType = shortstr();
  if (flags & 0x4000) fields.contentEncoding = shortstr();
  if (flags & 0x2000) {
    const len = buffer.readUInt32BE(offset);
    offset += 4;
    try {
      fields.headers = decodeTable(buffer.subarray(offset, offset + len));
    } catch (err) {
      fields.headers = { [UNDECODABLE_HEADERS]: err instanceof Error ? err.message : String(err) };
    }
    offset += len;
  }
  if (flags & 0x1000) fields.deliveryMode = buffer[offset++];
  if (flags & 0x0800) fields.priority = buffer[offset++];
  if (flags & 0x0400) fields.correlationId = shortstr();
  if (flags & 0x0200) fields.replyTo = shortstr();
  if (flags & 0x0100) fields.expiration = shortstr();
  if (flags & 0x0080) fields.messageId = shortstr();
  if (flags & 0x0040) {
    fields.timestamp = readUInt64(buffer, offset);
    offset += 8;
  }
  if (flags & 0x0020) fields.type = shortstr();
  if (flags & 0x0010) fields.userId = shortstr();
  if (flags & 0x0008) fields.appId = shortstr();
  if (flags & 0x0004) fields.clusterId = shortstr();
  return fields;
}

/** A frame as amqplib's `parseFrame` returns it. */
interface ParsedFrame {
  type: number;
  channel: number;
  size: number;
  payload: Buffer;
  rest: Buffer;
}

/** amqplib's `lib/frame.js`. */
export interface FrameModule {
  parseFrame(bin: Buffer): ParsedFrame | false;
  decodeFrame(frame: ParsedFrame): unknown;
}

/** What amqplib's `Connection#recvFrame` works on. */
interface FrameReader {
  rest: Buffer;
  stream: { read(): Buffer | null };
  recvSinceLastCheck: boolean;
}

/** amqplib's `lib/connection.js`. */
export interface ConnectionModule {
  Connection: { prototype: { recvFrame?: (this: FrameReader) => unknown; __celerySignTolerant?: boolean } };
}

const FRAME_HEADER = 2;

/**
 * Makes amqplib's connections read content headers tolerantly: replaces
 * `Connection.prototype.recvFrame` (amqplib 0.10's loop: parse a frame from
 * the bytes read so far, reading more from the socket until one is whole,
 * then decode it) with the same loop whose decoding falls back to
 * {@link decodeBasicProperties} when amqplib's own throws on a `basic`
 * content header. A prototype method is looked up at each call, so this
 * works whenever it runs, also on connections open already. Returns whether
 * the patched reader passes a self-check (reads an `L` header). Idempotent.
 */
export function makeFramesTolerant(connection: ConnectionModule, frame: FrameModule): boolean {
  const proto = connection?.Connection?.prototype;
  if (!proto || typeof proto.recvFrame !== 'function') return false;
  if (typeof frame?.parseFrame !== 'function' || typeof frame.decodeFrame !== 'function') return false;
  if (!proto.__celerySignTolerant) {
    const decode = (f: ParsedFrame): unknown => {
      try {
        return frame.decodeFrame(f);
      } catch (err) {
        if (f.type === FRAME_HEADER && f.payload.length >= 14 && f.payload.readUInt16BE(0) === BASIC_CLASS) {
          return {
            id: BASIC_CLASS,
            channel: f.channel,
            size: Number(f.payload.readBigUInt64BE(4)),
            fields: decodeBasicProperties(f.payload.subarray(12)),
          };
        }
        throw err;
      }
    };
    proto.recvFrame = function recvFrame(this: FrameReader): unknown {
      for (;;) {
        const f = frame.parseFrame(this.rest);
        if (f) {
          this.rest = f.rest;
          return decode(f);
        }
        const incoming = this.stream.read();
        if (incoming === null) return false;
        this.recvSinceLastCheck = true;
        this.rest = Buffer.concat([this.rest, incoming]);
      }
    };
    proto.__celerySignTolerant = true;
  }
  return selfCheck(proto.recvFrame);
}

/** A whole content-header frame (channel 1) whose only property is the given header table. */
export function contentHeaderFrame(table: Buffer): Buffer {
  const payload = Buffer.alloc(18 + table.length);
  payload.writeUInt16BE(BASIC_CLASS, 0);
  payload.writeUInt16BE(0x2000, 12);
  payload.writeUInt32BE(table.length, 14);
  table.copy(payload, 18);
  const f = Buffer.alloc(7 + payload.length + 1);
  f.writeUInt8(FRAME_HEADER, 0);
  f.writeUInt16BE(1, 1);
  f.writeUInt32BE(payload.length, 3);
  payload.copy(f, 7);
  f.writeUInt8(0xce, 7 + payload.length);
  return f;
}

function selfCheck(recvFrame: (this: FrameReader) => unknown): boolean {
  const table = Buffer.concat([Buffer.from([1]), Buffer.from('xL'), Buffer.alloc(8)]);
  table.writeBigInt64BE(1n, 3);
  const reader: FrameReader = { rest: contentHeaderFrame(table), stream: { read: () => null }, recvSinceLastCheck: false };
  try {
    const f = recvFrame.call(reader) as { fields?: { headers?: Record<string, unknown> } };
    return f.fields?.headers?.x === 1;
  } catch {
    return false;
  }
}
