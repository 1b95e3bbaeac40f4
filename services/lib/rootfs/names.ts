import { createHash } from 'node:crypto';

// A container (rootfs) name that is safe as one path component and a NATS
// header value: readable name and tag, plus a short hash of the exact pair so
// that "a/b:c" and "a-b:c" never share a rootfs.
export function containerName(name: string, tag: string): string {
  const readable = `${name}-${tag}`.toLowerCase().replace(/[^a-z0-9._-]+/g, '-').replace(/^[-.]+/, '').slice(0, 80);
  const h = createHash('sha256').update(`${name}:${tag}`).digest('hex').slice(0, 8);
  return `${readable || 'image'}-${h}`;
}

export const CONTAINER_NAME = /^[a-z0-9][a-z0-9._-]{0,100}$/;
