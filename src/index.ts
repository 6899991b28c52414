/**
 * celery-sign: Python Celery's message signing (the `auth` serializer,
 * `celery.security`) for Node.js, byte-compatible with Celery, on a native
 * Rust core.
 *
 * This module is the whole public API. The wire layer's internals (message
 * framing, envelopes, header binding, the replay guard, the concrete Redis
 * and AMQP transports) are not exported: they change without notice. The
 * checked-in report `etc/celery-sign.api.md` (`npm run api`) pins what is.
 *
 * @packageDocumentation
 */

// Signing and verifying: keys, certificates, stores, the serializer.
export { SecurityError, ImproperlyConfigured, ERROR_CODES } from './errors.js';
export type { ErrorCode, SecurityErrorCode } from './errors.js';
export type { Bytes, Digest } from './bytes.js';
export type { WireFormat } from './options.js';
export { PrivateKey } from './keys.js';
export { Certificate, CertStore, FSCertStore } from './certificate.js';
export type {
  CertExpiredEvent,
  CertStoreOptions,
  CertStoreReload,
  CertStoreWatch,
  FSCertStoreEvents,
  FSCertStoreOptions,
  FSCertStoreWatchOptions,
  OnExpired,
} from './certificate.js';
export type { CaSource, CertChainOptions, CrlSource } from './chain.js';
export { SecureSerializer, DEFAULT_MAX_PAYLOAD_SIZE } from './serializer.js';
export type { SecureSerializerOptions, DeserializeResult } from './serializer.js';

// kombu's serializer registry and JSON values; Celery's setup.
export { registry, SerializerRegistry, disableInsecureSerializers, enableInsecureSerializers } from './registry.js';
export type { Encoder, Decoder, Codec, EncodedMessage, LoadsOptions } from './registry.js';
export * as json from './json/index.js';
export { registerAuth, setupSecurity, disableUntrustedSerializers } from './setup.js';
export type { RegisterAuthOptions, SetupSecurityOverrides } from './setup.js';

// The backend this process runs on and its thread pool.
export { setThreads, simdKernel, threadCount, backend } from './native.js';
export type { BackendName } from './backend/types.js';

// The Celery wire layer: client, worker, their options, events and errors.
export { createClient, CeleryClient, AsyncResult, GroupResult } from './wire/client.js';
export { signature, chain, group, chord, Signature, Chain, Group, Chord, Canvas, CanvasError } from './wire/canvas.js';
export type { SignatureOptions, SignatureDict, CanvasSenderHost } from './wire/canvas.js';
export type { ClientOptions, GetOptions } from './wire/client.js';
export type { TaskOptions, TaskEmbed } from './wire/protocol.js';
export type { ResultMeta, TaskState, ResultSerializer } from './wire/results.js';
export type { SecurityOption } from './wire/security.js';
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
export type { EventOptions } from './wire/events.js';
export type { SecurityLogOption, SecurityLogOptions, SecurityLogSink, SecurityLogEntry } from './wire/securitylog.js';
export type {
  AuthorizeOption,
  AuthorizationRule,
  AuthorizeFunction,
  ControlAuthorizeOption,
  ControlAuthorizationRule,
  SignerSelector,
  SignerInfo,
  TaskPattern,
} from './wire/authorize.js';
export { Retry, MaxRetriesExceededError } from './wire/retry.js';
export type { RetryOptions, TaskDefinition, TaskRetryOptions, ErrorMatcher, TaskRetriedEvent } from './wire/retry.js';
export type { ShutdownEvent } from './wire/shutdown.js';
export type { RemoteControlOptions, ControlEvent, RequestInfo, BroadcastSpec, BroadcastListener } from './wire/control.js';
export type { RateLimit } from './wire/ratelimit.js';
export { TaskFailedError, ResultTimeoutError, TaskError, WireError } from './wire/errors.js';
export type { SerializedException } from './wire/errors.js';

// Registration points for other brokers and result backends, and the
// interfaces they implement; the options the built-in ones read.
export { registerTransport, registerBackend } from './wire/transport.js';
export type {
  BrokerTransport,
  BrokerConsumer,
  Delivery,
  OutgoingMessage,
  EventMessage,
  ConsumeOptions,
  ResultBackend,
  StoredResult,
  ChordPart,
  ChordJoin,
  TransportOptions,
  BackendOptions,
  TransportFactory,
  BackendFactory,
  BackendTraits,
  ReplyMessage,
} from './wire/transport.js';
export type { RedisTransportOptions } from './wire/redis.js';
export type { SentinelTransportOptions } from './wire/sentinel.js';
export type { AmqpTransportOptions } from './wire/amqp.js';
export type { BrokerUseSsl, RedisSslOptions, AmqpSslOptions, CertReqs } from './wire/tls.js';
