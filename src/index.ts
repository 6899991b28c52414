/**
 * celery-sign: Python Celery's message signing (the `auth` serializer,
 * `celery.security`) for Node.js, byte-compatible with Celery, on a native
 * Rust core.
 *
 * @packageDocumentation
 */
export { SecurityError, ImproperlyConfigured, ERROR_CODES } from './errors.js';
export type { ErrorCode, SecurityErrorCode } from './errors.js';
export type { Bytes, Digest } from './bytes.js';
export type { WireFormat } from './options.js';
export { PrivateKey } from './keys.js';
export { Certificate, CertStore, FSCertStore } from './certificate.js';
export { SecureSerializer, DEFAULT_MAX_PAYLOAD_SIZE } from './serializer.js';
export type { SecureSerializerOptions, DeserializeResult } from './serializer.js';
export { registry, SerializerRegistry, disableInsecureSerializers, enableInsecureSerializers } from './registry.js';
export type { Encoder, Decoder, EncodedMessage, LoadsOptions } from './registry.js';
export { registerAuth, setupSecurity, disableUntrustedSerializers } from './setup.js';
export type { RegisterAuthOptions, SetupSecurityOverrides } from './setup.js';
export { setThreads, threadCount, backend } from './native.js';
export type { BackendName } from './backend/types.js';
export * as json from './json.js';
export { createClient, CeleryClient, AsyncResult } from './wire/client.js';
export type { ClientOptions, GetOptions } from './wire/client.js';
export { createWorker, Worker } from './wire/worker.js';
export type {
  WorkerOptions,
  StopOptions,
  TaskHandler,
  TaskContext,
  SecurityEvent,
  TaskSucceededEvent,
  TaskFailedEvent,
  TaskRefusedEvent,
} from './wire/worker.js';
export { TaskFailedError, ResultTimeoutError, TaskError, WireError } from './wire/errors.js';
export type { SerializedException } from './wire/errors.js';
export { buildTaskMessage, encodeTaskMessages, parseTaskBody, isoformat, anonNodename } from './wire/protocol.js';
export type { TaskOptions, TaskMessage, TaskEmbed, TaskBody } from './wire/protocol.js';
export { saferepr } from './wire/saferepr.js';
export { READY_STATES, buildMeta, decodeMeta } from './wire/results.js';
export type { ResultMeta, TaskState, ResultSerializer } from './wire/results.js';
export { registerTransport, registerBackend, openTransport, openBackend } from './wire/transport.js';
export type {
  BrokerTransport,
  BrokerConsumer,
  Delivery,
  OutgoingMessage,
  ResultBackend,
  StoredResult,
  TransportOptions,
  BackendOptions,
  TransportFactory,
  BackendFactory,
  ConsumeOptions,
} from './wire/transport.js';
export { RedisTransport, RedisBackend, redisEnvelope, parseEnvelope, queueForPriority, PRIORITY_STEPS } from './wire/redis.js';
export type { RedisTransportOptions } from './wire/redis.js';
export type { SecurityOption } from './wire/security.js';
export type { EventMessage } from './wire/transport.js';
export { AmqpTransport, amqpOptionsFromUrl } from './wire/amqp.js';
export type { AmqpTransportOptions } from './wire/amqp.js';
export { redisEventEnvelope } from './wire/redis.js';
export { EventDispatcher, utcoffset, loadAverage, SW_IDENT, SW_VERSION } from './wire/events.js';
export type { EventOptions, CeleryEvent } from './wire/events.js';
export { bindHeaders, makeBinding, bindingDigest, checkBinding, BINDING_KEY, BOUND_HEADERS } from './wire/binding.js';
export type { HeaderBinding } from './wire/binding.js';
export { ReplayGuard } from './wire/replay.js';
