// Every error that sealkit reports carries a stable code from this table.
// Tests assert codes, never message text. Codes cross request/reply as
// {error: {code, message, data}} and are rebuilt on the other side.

export const codes = {
  // bus and requests
  SEALKIT_BAD_REQUEST: 'the request is malformed',
  SEALKIT_TIMEOUT: 'the request timed out',
  SEALKIT_NO_RESPONDER: 'no service answers on that subject',
  SEALKIT_UNAVAILABLE: 'a dependency is not available',
  SEALKIT_INTERNAL: 'an unexpected internal error',
  SEALKIT_CONFIG: 'configuration is missing or invalid',
  SEALKIT_STATE_LOCKED: 'the state directory is in use by another node',
  SEALKIT_DISK_FULL: 'a filesystem the node writes to is full',
  // keys and signatures
  SEALKIT_KEY_INVALID: 'a key file or key is malformed',
  SEALKIT_SIGNATURE_MISSING: 'a signature is required but absent',
  SEALKIT_SIGNATURE_INVALID: 'a signature does not verify',
  SEALKIT_KEY_UNTRUSTED: 'the signing key is not trusted',
  SEALKIT_THRESHOLD_NOT_MET: 'fewer valid signatures than the threshold',
  // policy
  SEALKIT_POLICY_TOO_LARGE: 'the policy document is too large',
  SEALKIT_POLICY_YAML: 'the policy is not valid YAML',
  SEALKIT_POLICY_SCHEMA: 'the policy does not match the schema',
  SEALKIT_POLICY_ROLLBACK: 'the policy serial does not increase',
  SEALKIT_POLICY_CORRUPT: 'the stored policy failed verification',
  SEALKIT_POLICY_NONE: 'no policy is in force',
  // fetch and verification
  SEALKIT_SOURCE_INVALID: 'the image source is not allowed or malformed',
  SEALKIT_DIGEST_MISMATCH: 'content does not match its pinned digest',
  SEALKIT_SIZE_LIMIT: 'content exceeds a size limit',
  SEALKIT_FETCH_TIMEOUT: 'a download stalled or took too long',
  SEALKIT_FETCH_FAILED: 'a download failed',
  SEALKIT_REDIRECT_REFUSED: 'a redirect was refused',
  SEALKIT_VERIFIER_DENIED: 'a verifier plugin denied the image',
  SEALKIT_VERIFIER_TIMEOUT: 'a verifier plugin did not answer in time',
  SEALKIT_VERIFIER_ABSENT: 'a required verifier plugin is not running',
  SEALKIT_ARCHIVE_INVALID: 'the archive is malformed',
  SEALKIT_ARCHIVE_UNSAFE: 'the archive has an unsafe entry',
  SEALKIT_CACHE_CORRUPT: 'a cached file no longer matches its digest',
  SEALKIT_IMAGE_UNKNOWN: 'the image is not named by the policy',
  // import
  SEALKIT_IMPORT_FAILED: 'an import into the runtime failed',
  // ima and audit
  SEALKIT_IMA_UNAVAILABLE: 'the requested IMA mechanism is not available',
  SEALKIT_LABEL_FAILED: 'writing a security.ima label failed',
  SEALKIT_MANIFEST_CORRUPT: 'a label manifest failed verification',
  SEALKIT_IPE_POLICY_REFUSED: 'the kernel refused an IPE policy (malformed, or the securityfs write failed)',
  SEALKIT_IPE_RUNTIME: 'the container runtime cannot start containers under IPE',
  SEALKIT_VERITY_FAILED: 'enabling or measuring fs-verity on a file failed',
  // runner
  SEALKIT_START_FAILED: 'the runtime could not create or start a container',
  SEALKIT_NODE_TAMPER: "the node's kernel enforcement was weakened while it ran",
} as const;

export type ErrorCode = keyof typeof codes;

export interface WireError {
  code: ErrorCode;
  message: string;
  data?: Record<string, unknown>;
}

export class SealkitError extends Error {
  readonly code: ErrorCode;
  readonly data?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, data?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SealkitError';
    this.code = code;
    this.data = data;
  }

  toWire(): WireError {
    return this.data === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, data: this.data };
  }

  static fromWire(wire: WireError): SealkitError {
    const code = wire.code in codes ? wire.code : 'SEALKIT_INTERNAL';
    return new SealkitError(code, wire.message, wire.data);
  }
}

export function isSealkitError(err: unknown, code?: ErrorCode): err is SealkitError {
  return err instanceof SealkitError && (code === undefined || err.code === code);
}

// Anything thrown becomes a SealkitError; unknown errors keep their message
// but get the internal code, so a reply is never silent.
export function asSealkitError(err: unknown): SealkitError {
  if (err instanceof SealkitError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new SealkitError('SEALKIT_INTERNAL', message, undefined, { cause: err });
}

// ENOSPC / EDQUOT, raw or already wrapped (errno in data, or the cause).
export function isDiskFull(err: unknown): boolean {
  for (let e = err as { code?: unknown; data?: { errno?: unknown }; cause?: unknown } | undefined, i = 0; e && i < 4; e = e.cause as typeof e, i++) {
    if (e.code === 'SEALKIT_DISK_FULL' || e.code === 'ENOSPC' || e.code === 'EDQUOT') return true;
    if (e.data?.errno === 'ENOSPC' || e.data?.errno === 'EDQUOT') return true;
  }
  return false;
}

// `what` says what was being written; the caller has already removed what
// it half-wrote, and retries once space is back.
export function diskFull(path: string, what: string, err?: unknown): SealkitError {
  if (err instanceof SealkitError && err.code === 'SEALKIT_DISK_FULL') return err;
  return new SealkitError(
    'SEALKIT_DISK_FULL',
    `no space left on the filesystem holding ${path} while ${what}; nothing half-written was kept — free space there (or give ${path} a larger disk), it is retried`,
    { path },
    { cause: err },
  );
}
