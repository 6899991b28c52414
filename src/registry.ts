/**
 * kombu's serializer registry (`kombu.serialization.SerializerRegistry`), with
 * its semantics kept: serializers by name, decoders by content type, accept
 * lists by name or content type, trusted content, disabled content types and
 * `force`, the default serializer, `raw`, and the special cases for text and
 * bytes.
 *
 * One deliberate difference: pickle (`application/x-python-serialize`) and
 * YAML (`application/x-yaml` and its aliases) are never decodable. No decoder
 * can be registered for them, and `loads` refuses them with
 * `ERR_CONTENT_DISALLOWED` whatever the accept list, the enabled set or
 * `force` say.
 *
 * Errors: refusals are {@link SecurityError} `ERR_CONTENT_DISALLOWED` (kombu's
 * `ContentDisallowed`), decoder failures `ERR_DECODE` (kombu's `DecodeError`;
 * the original error is the `cause`, the message names only the content type).
 * A {@link SecurityError} or {@link ImproperlyConfigured} thrown by a decoder
 * (for example the `auth` serializer's) passes through unchanged. A serializer
 * name that is not installed is {@link ImproperlyConfigured} (kombu's
 * `SerializerNotInstalled`). An encoder's own error passes through as it is.
 *
 * @module
 */
import { ImproperlyConfigured, SecurityError } from './errors.js';
import { dumps as jsonDumps } from './json/dumps.js';
import { loads as jsonLoads } from './json/loads.js';
import { hintedLoads, restoreText, type ScanHints } from './json/hinted.js';

/** Turns a value into a message body. A string is sent as UTF-8. */
export type Encoder = (data: unknown) => string | Uint8Array;
/** Turns a message body (as received: bytes or a string) back into a value. */
export type Decoder = (data: Uint8Array | string) => unknown;

/** A registered encoder with the content type and encoding it produces (kombu's `codec`). */
export interface Codec {
  readonly contentType: string;
  readonly contentEncoding: string;
  readonly encoder: Encoder;
}

/** What {@link SerializerRegistry.dumps} gives: the body and how to label it. */
export interface EncodedMessage {
  contentType: string;
  contentEncoding: string;
  body: Buffer;
}

/** Options of {@link SerializerRegistry.loads}. */
export interface LoadsOptions {
  /**
   * Serializer names or content types to accept (names are mapped to content
   * types as kombu's `prepare_accept_content` does). When given, anything else
   * except the trusted content types is refused, and the disabled set is not
   * consulted. `null`/absent: everything not disabled is accepted.
   */
  accept?: Iterable<string> | null;
  /** Decode a disabled content type anyway (never pickle or YAML). */
  force?: boolean;
}

/** Content types that are always accepted (kombu's `TRUSTED_CONTENT`). */
export const TRUSTED_CONTENT: ReadonlySet<string> = new Set(['application/data', 'application/text']);
/** Content encodings whose body is returned as bytes, undecoded (kombu's `SKIP_DECODE`). */
export const SKIP_DECODE: ReadonlySet<string> = new Set(['binary', 'ascii-8bit']);
const INSECURE_TYPES: ReadonlySet<string> = new Set([
  'application/x-python-serialize',
  'application/x-yaml',
  'application/yaml',
  'text/yaml',
  'text/x-yaml',
]);
/**
 * Content types that are never decoded: pickle and YAML, compared without
 * parameters and case-insensitively. A copy for reading: changing it changes
 * nothing.
 */
export const INSECURE_CONTENT_TYPES: ReadonlySet<string> = new Set(INSECURE_TYPES);
const INSECURE_NAMES: ReadonlySet<string> = new Set(['pickle', 'yaml']);

function isInsecureType(contentType: string): boolean {
  const semi = contentType.indexOf(';');
  const base = (semi < 0 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
  return INSECURE_TYPES.has(base);
}

/** A content type for an error message: bounded, without control characters. */
function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  const clean = s.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
  return clean.length > 100 ? clean.slice(0, 100) + '...' : clean;
}

function notInstalled(what: string, name: string): ImproperlyConfigured {
  return new ImproperlyConfigured(`No ${what} installed for ${printable(name)}`);
}

function toBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/** Encoders, decoders and content-type policy, as kombu keeps them. */
export class SerializerRegistry {
  private readonly _encoders = new Map<string, Codec>();
  private readonly _decoders = new Map<string, Decoder>();
  private readonly disabled = new Set<string>();
  private readonly _typeToName = new Map<string, string>();
  private readonly _nameToType = new Map<string, string>();
  private defaultName: string | null = null;
  private defaultCodec: Codec | null = null;

  /** Serializer name → encoder, with its content type and encoding. */
  get encoders(): ReadonlyMap<string, Codec> {
    return this._encoders;
  }

  /** Content type → decoder. */
  get decoders(): ReadonlyMap<string, Decoder> {
    return this._decoders;
  }

  /** Content type → serializer name (the last registered for the type). */
  get typeToName(): ReadonlyMap<string, string> {
    return this._typeToName;
  }

  /** Serializer name → content type. */
  get nameToType(): ReadonlyMap<string, string> {
    return this._nameToType;
  }

  /** The content types currently disabled. */
  get disabledContentTypes(): ReadonlySet<string> {
    return this.disabled;
  }

  /** The name given to the last successful {@link SerializerRegistry.setDefault}, or `null`. */
  get defaultSerializer(): string | null {
    return this.defaultName;
  }

  /**
   * Registers a serializer (kombu's `register`). Either side may be `null`: an
   * encoder alone can only write, a decoder alone can only read. The content
   * type is mapped to the name and back; an existing entry is replaced.
   *
   * @throws SecurityError `ERR_CONTENT_DISALLOWED` for a decoder of pickle or
   *   YAML (by content type or by name).
   */
  register(
    name: string,
    encoder: Encoder | null | undefined,
    decoder: Decoder | null | undefined,
    contentType: string,
    contentEncoding = 'utf-8',
  ): void {
    if (typeof name !== 'string' || name === '') throw new TypeError('register: the name must be a non-empty string');
    if (typeof contentType !== 'string' || contentType === '') {
      throw new TypeError('register: the content type must be a non-empty string');
    }
    if (decoder && (isInsecureType(contentType) || INSECURE_NAMES.has(name.toLowerCase()))) {
      throw new SecurityError(
        'ERR_CONTENT_DISALLOWED',
        `Refusing to register a decoder for insecure content of type ${printable(name)} (${printable(contentType)})`,
      );
    }
    if (encoder) this._encoders.set(name, { contentType, contentEncoding, encoder });
    if (decoder) this._decoders.set(contentType, decoder);
    this._typeToName.set(contentType, name);
    this._nameToType.set(name, contentType);
  }

  /**
   * Removes a serializer: its encoder, the decoder of its content type and
   * both mappings (kombu's `unregister`; the disabled set is left as it is).
   *
   * @throws ImproperlyConfigured when no serializer has that name.
   */
  unregister(name: string): void {
    const contentType = this._nameToType.get(name);
    if (contentType === undefined) throw notInstalled('encoder/decoder', name);
    this._decoders.delete(contentType);
    this._encoders.delete(name);
    this._typeToName.delete(contentType);
    this._nameToType.delete(name);
  }

  /** A content type for a name; a value with a `/` is already a content type. */
  private resolve(nameOrType: string): string {
    if (nameOrType.includes('/')) return nameOrType;
    const contentType = this._nameToType.get(nameOrType);
    if (contentType === undefined) throw notInstalled('encoder/decoder', nameOrType);
    return contentType;
  }

  /**
   * Accepts a content type again when no accept list is given (kombu's
   * `enable`). Pickle and YAML stay refused.
   *
   * @throws ImproperlyConfigured for an unknown serializer name.
   */
  enable(nameOrContentType: string): void {
    this.disabled.delete(this.resolve(nameOrContentType));
  }

  /**
   * Refuses a content type when no accept list is given, unless `force`
   * (kombu's `disable`).
   *
   * @throws ImproperlyConfigured for an unknown serializer name.
   */
  disable(nameOrContentType: string): void {
    this.disabled.add(this.resolve(nameOrContentType));
  }

  /**
   * Makes a registered encoder the one {@link SerializerRegistry.dumps} uses when no serializer is
   * named (kombu's `_set_default_serializer`). Like kombu, the encoder is
   * captured now: unregistering it later does not change the default.
   *
   * @throws ImproperlyConfigured when no encoder has that name.
   */
  setDefault(name: string): void {
    const codec = this._encoders.get(name);
    if (codec === undefined) throw notInstalled('encoder', name);
    this.defaultName = name;
    this.defaultCodec = codec;
  }

  /**
   * Serializer names and content types → the set of content types (kombu's
   * `prepare_accept_content`).
   *
   * @throws ImproperlyConfigured for an unknown serializer name.
   */
  prepareAccept(accept: Iterable<string>): Set<string> {
    const out = new Set<string>();
    for (const n of accept) out.add(this.resolve(n));
    return out;
  }

  /**
   * Encodes a value (kombu's `dumps`):
   * - `serializer === 'raw'`: a string is sent as UTF-8, bytes as they are,
   *   both as `application/data` (encodings `utf-8` and `binary`);
   * - no serializer and bytes: `application/data`, `binary`, unchanged;
   * - no serializer and a string: `text/plain`, `utf-8`;
   * - otherwise the named serializer, or the default one.
   *
   * The body is always a `Buffer` (a string result is encoded as UTF-8, as
   * Celery's `ensure_bytes` does).
   *
   * @throws ImproperlyConfigured when the serializer is not installed or no
   *   default is set.
   */
  dumps(data: unknown, serializer?: string | null): EncodedMessage {
    if (serializer === 'raw') {
      if (typeof data === 'string') {
        return { contentType: 'application/data', contentEncoding: 'utf-8', body: Buffer.from(data, 'utf8') };
      }
      if (data instanceof Uint8Array) return { contentType: 'application/data', contentEncoding: 'binary', body: toBuffer(data) };
      throw new TypeError('The raw serializer takes a string or bytes');
    }
    let codec: Codec | null;
    if (serializer) {
      codec = this._encoders.get(serializer) ?? null;
      if (codec === null) throw notInstalled('encoder', serializer);
    } else {
      if (data instanceof Uint8Array) return { contentType: 'application/data', contentEncoding: 'binary', body: toBuffer(data) };
      if (typeof data === 'string') return { contentType: 'text/plain', contentEncoding: 'utf-8', body: Buffer.from(data, 'utf8') };
      codec = this.defaultCodec;
      if (codec === null) throw new ImproperlyConfigured('No default serializer is set');
    }
    const payload = codec.encoder(data);
    const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : toBuffer(payload);
    return { contentType: codec.contentType, contentEncoding: codec.contentEncoding, body };
  }

  /**
   * Decodes a message body (kombu's `loads`):
   * 1. a missing content type means `application/data`;
   * 2. pickle and YAML are refused, always;
   * 3. with `accept`, a type neither accepted nor trusted is refused; without
   *    it, a disabled type is refused unless `force`;
   * 4. empty data is returned as it is;
   * 5. the decoder registered for the content type decodes the body;
   * 6. with no decoder, bytes are decoded to a string with the content
   *    encoding (default `utf-8`), except for `binary`/`ascii-8bit`, whose
   *    bytes are returned as they are; a string is returned as it is.
   *
   * @throws SecurityError `ERR_CONTENT_DISALLOWED` when the content type is
   *   refused, `ERR_DECODE` when decoding fails.
   */
  loads(
    data: Uint8Array | string,
    contentType: string | Uint8Array | null | undefined,
    contentEncoding?: string | null,
    opts: LoadsOptions = {},
  ): unknown {
    return loadsFrom(this, this._decoders, data, contentType, contentEncoding, opts, null);
  }
}

function disallowed(reg: SerializerRegistry, ct: string, why: string): SecurityError {
  const alias = reg.typeToName.get(ct) ?? ct;
  return new SecurityError(
    'ERR_CONTENT_DISALLOWED',
    `Refusing to deserialize ${why} content of type ${printable(alias)} (${printable(ct)})`,
  );
}

/**
 * {@link SerializerRegistry.loads} with the decoders taken from `decoders`
 * (a batch's snapshot of `reg.decoders`, taken when it starts, so that a
 * registry change while it is out cannot reach it) and, for a body the native
 * pre-scan read, its `hints`. The hints apply only to kombu's own JSON
 * decoder; any other decoder gets the text as it came, lifted literals put
 * back. Everything else is `loads` exactly.
 *
 * @internal
 */
export function loadsFrom(
  reg: SerializerRegistry,
  decoders: ReadonlyMap<string, Decoder>,
  data: Uint8Array | string,
  contentType: string | Uint8Array | null | undefined,
  contentEncoding: string | null | undefined,
  opts: LoadsOptions,
  hints: ScanHints | null,
): unknown {
  let ct: string;
  if (typeof contentType === 'string') ct = contentType === '' ? 'application/data' : contentType;
  else if (contentType instanceof Uint8Array && contentType.length > 0) ct = Buffer.from(contentType).toString('utf8');
  else ct = 'application/data';

  if (isInsecureType(ct)) throw disallowed(reg, ct, 'insecure');
  const { accept, force = false } = opts;
  if (accept != null) {
    if (!TRUSTED_CONTENT.has(ct) && !reg.prepareAccept(accept).has(ct)) throw disallowed(reg, ct, 'untrusted');
  } else if (reg.disabledContentTypes.has(ct) && !force) {
    throw disallowed(reg, ct, 'disabled');
  }
  // kombu's own encodings come lowercase: those skip the case mapping (one a message).
  const encoding =
    contentEncoding === 'utf-8' || contentEncoding === 'binary' ? contentEncoding : (contentEncoding || 'utf-8').toLowerCase();

  if (hints !== null && typeof data === 'string' && hints.literals !== null && decoders.get(ct) !== jsonLoads) {
    // Never seen in practice (a batch pre-scans only the types its snapshot
    // decodes with kombu's JSON): the text as it came, for anyone else.
    data = restoreText(data, hints.literals, hints.base);
  }
  if (data.length > 0) {
    const decode = decoders.get(ct);
    if (decode) {
      try {
        return hints !== null && decode === jsonLoads && typeof data === 'string' ? hintedLoads(data, hints) : decode(data);
      } catch (err) {
        if (err instanceof SecurityError || err instanceof ImproperlyConfigured) throw err;
        throw new SecurityError('ERR_DECODE', `Unable to decode content of type ${printable(ct)}`, { cause: err });
      }
    }
    if (!SKIP_DECODE.has(encoding) && typeof data !== 'string') {
      try {
        return decodeText(data, encoding);
      } catch (err) {
        throw new SecurityError(
          'ERR_DECODE',
          `Unable to decode content of type ${printable(ct)} as ${printable(encoding)}`,
          { cause: err },
        );
      }
    }
  }
  return data;
}


// Python's codecs.decode for the encodings a message is likely to carry.
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const UTF8_SIG = new TextDecoder('utf-8', { fatal: true });
const UTF16LE = new TextDecoder('utf-16le', { fatal: true, ignoreBOM: true });
const UTF16BE = new TextDecoder('utf-16be', { fatal: true, ignoreBOM: true });
const ENCODING_ALIASES: Record<string, string> = {
  utf_8: 'utf-8',
  utf8: 'utf-8',
  u8: 'utf-8',
  utf: 'utf-8',
  cp65001: 'utf-8',
  utf_8_sig: 'utf-8-sig',
  utf8_sig: 'utf-8-sig',
  ascii: 'ascii',
  us_ascii: 'ascii',
  us: 'ascii',
  '646': 'ascii',
  'ansi_x3.4_1968': 'ascii',
  latin_1: 'latin-1',
  latin1: 'latin-1',
  latin: 'latin-1',
  l1: 'latin-1',
  iso_8859_1: 'latin-1',
  iso8859_1: 'latin-1',
  '8859': 'latin-1',
  cp819: 'latin-1',
  utf_16: 'utf-16',
  utf16: 'utf-16',
  u16: 'utf-16',
  utf_16_le: 'utf-16-le',
  utf_16le: 'utf-16-le',
  utf_16_be: 'utf-16-be',
  utf_16be: 'utf-16-be',
};

/** `codecs.decode(data, encoding)` for the UTF-8, ASCII, Latin-1 and UTF-16 codecs. */
function decodeText(data: Uint8Array, encoding: string): string {
  const key = encoding.trim().replace(/[^a-z0-9.]+/g, '_');
  switch (ENCODING_ALIASES[key]) {
    case 'utf-8':
      return UTF8.decode(data);
    case 'utf-8-sig':
      return UTF8_SIG.decode(data);
    case 'ascii':
      for (const b of data) if (b > 0x7f) throw new RangeError("'ascii' codec can't decode a byte");
      return toBuffer(data).toString('latin1');
    case 'latin-1':
      return toBuffer(data).toString('latin1');
    case 'utf-16':
      if (data.length >= 2 && data[0] === 0xfe && data[1] === 0xff) return UTF16BE.decode(data.subarray(2));
      if (data.length >= 2 && data[0] === 0xff && data[1] === 0xfe) return UTF16LE.decode(data.subarray(2));
      return UTF16LE.decode(data);
    case 'utf-16-le':
      return UTF16LE.decode(data);
    case 'utf-16-be':
      return UTF16BE.decode(data);
    default:
      throw new RangeError('unknown or unsupported content encoding');
  }
}

/**
 * kombu's `disable_insecure_serializers`: disables every content type that has
 * a decoder, then enables the `allowed` ones (names or content types). `null`
 * allows nothing (Celery's `setup_security` passes that when no list is given).
 * Pickle and YAML are refused in any case.
 *
 * @throws ImproperlyConfigured for an unknown serializer name in `allowed`.
 */
export function disableInsecureSerializers(
  allowed: Iterable<string> | null = ['json'],
  target: SerializerRegistry = registry,
): void {
  for (const contentType of [...target.decoders.keys()]) target.disable(contentType);
  if (allowed != null) for (const name of allowed) target.enable(name);
}

/** The public API's name for {@link disableInsecureSerializers} (Celery's `disable_untrusted_serializers`). */
export const disableUntrustedSerializers: (allowed?: Iterable<string> | null, target?: SerializerRegistry) => void =
  disableInsecureSerializers;

/**
 * kombu's `enable_insecure_serializers`, for symmetry: enables the given names
 * or content types, skipping unknown names. Pickle and YAML still cannot be
 * decoded.
 */
export function enableInsecureSerializers(
  choices: Iterable<string> | null = ['pickle', 'yaml', 'msgpack'],
  target: SerializerRegistry = registry,
): void {
  if (choices == null) return;
  for (const choice of choices) {
    try {
      target.enable(choice);
    } catch (err) {
      if (!(err instanceof ImproperlyConfigured)) throw err;
    }
  }
}

/**
 * The process-wide registry, set up as kombu's module: `json` registered
 * (`application/json`, `utf-8`) and the default; `pickle` and `yaml` known by
 * name (so accept lists and messages can name them) but never decodable.
 */
export const registry: SerializerRegistry = new SerializerRegistry();
registry.register('json', jsonDumps, jsonLoads, 'application/json', 'utf-8');
registry.register('pickle', null, null, 'application/x-python-serialize', 'binary');
registry.register('yaml', null, null, 'application/x-yaml', 'utf-8');
registry.setDefault('json');
// kombu disables its insecure serializers on import; the state is mirrored here
// (for pickle and YAML it is moot: they are refused whatever this set says).
registry.disable('pickle');
registry.disable('yaml');
disableInsecureSerializers(['json'], registry);
