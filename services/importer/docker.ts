import type Docker from 'dockerode';
import { request } from 'node:http';
import type { Readable } from 'node:stream';
import { SealkitError } from '../lib/errors.ts';

// Docker through dockerode. Labels of a Docker image are fixed when it is
// built, so the verified archive digest is recorded as a second tag on the
// same image, `name:sha256-<archive hex>`; `docker images` then shows both
// the policy tag and the digest it was imported from, and "already present"
// means both tags name the same image ID.

export class DockerTarget {
  private client?: Promise<Docker>;

  constructor(readonly sock: string) {}

  // dockerode brings ssh2, gRPC and protobufjs (about 15 MB resident): loaded
  // on the first Docker call, not by an importer that never makes one.
  private get docker(): Promise<Docker> {
    return (this.client ??= import('dockerode').then((m) => new m.default({ socketPath: this.sock })));
  }

  static digestTag(sha256: string): string {
    return `sha256-${sha256}`;
  }

  // The image ID when name:tag and name:sha256-<hex> are the same image.
  async present(name: string, tag: string, sha256: string): Promise<string | undefined> {
    const [a, b] = await Promise.all([this.inspect(`${name}:${tag}`), this.inspect(`${name}:${DockerTarget.digestTag(sha256)}`)]);
    return a && b && a === b ? a : undefined;
  }

  // Images carrying a digest tag: the ones sealkit put there.
  async sealkitImages(): Promise<Array<{ id: string; digestTag: string; name: string; sha256: string }>> {
    let images: Docker.ImageInfo[];
    try {
      images = await (await this.docker).listImages();
    } catch (err) {
      throw this.wrap(err, 'list images');
    }
    return images.flatMap((i) =>
      (i.RepoTags ?? []).flatMap((t) => {
        const m = /^(.+):sha256-([0-9a-f]{64})$/.exec(t);
        return m ? [{ id: i.Id, digestTag: t, name: m[1], sha256: m[2] }] : [];
      }),
    );
  }

  idOf(ref: string): Promise<string | undefined> {
    return this.inspect(ref);
  }

  // Remove names; the image goes with its last one.
  async untag(refs: string[]): Promise<void> {
    for (const ref of refs) {
      try {
        await (await this.docker).getImage(ref).remove();
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode !== 404) throw this.wrap(err, `remove ${ref}`);
      }
    }
  }

  private async inspect(ref: string): Promise<string | undefined> {
    try {
      return (await (await this.docker).getImage(ref).inspect()).Id;
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return undefined;
      throw this.wrap(err, `inspect ${ref}`);
    }
  }

  // `docker load` of the archive (names already stripped); returns the ID.
  async load(tar: Readable, what: string, signal?: AbortSignal): Promise<string> {
    let res: NodeJS.ReadableStream;
    try {
      res = await (await this.docker).loadImage(tar, { quiet: true, abortSignal: signal });
    } catch (err) {
      throw this.wrap(err, `load ${what}`);
    }
    return this.loaded(res, what);
  }

  // The same, the body written by `send` (which waits for each write, so
  // that it can reuse its buffers) straight onto the request.
  async loadWritten(send: (write: (b: Buffer) => Promise<void>) => Promise<void>, what: string): Promise<string> {
    const req = request({ socketPath: this.sock, method: 'POST', path: '/images/load?quiet=1', headers: { 'content-type': 'application/x-tar', 'transfer-encoding': 'chunked' } });
    const response = new Promise<NodeJS.ReadableStream>((resolve, reject) => {
      req.once('response', resolve);
      req.once('error', reject);
    });
    response.catch(() => {});
    const write = (b: Buffer) => new Promise<void>((resolve, reject) => req.write(b, (err) => (err ? reject(err) : resolve())));
    let res: NodeJS.ReadableStream & { statusCode?: number };
    try {
      await send(write);
      req.end();
      res = await response;
    } catch (err) {
      req.destroy();
      throw err instanceof SealkitError ? err : this.wrap(err, `load ${what}`);
    }
    if (res.statusCode !== 200) {
      let body = '';
      for await (const chunk of res as AsyncIterable<Buffer>) body += chunk.toString();
      throw new SealkitError('SEALKIT_IMPORT_FAILED', `docker could not load ${what}: HTTP ${res.statusCode} ${body.trim().slice(0, 300)}`, { runtime: 'docker' });
    }
    return this.loaded(res, what);
  }

  private async loaded(res: NodeJS.ReadableStream, what: string): Promise<string> {
    let text = '';
    for await (const chunk of res as AsyncIterable<Buffer>) text += chunk.toString();
    let id: string | undefined;
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      let msg: { stream?: string; error?: string };
      try {
        msg = JSON.parse(line) as typeof msg;
      } catch {
        continue;
      }
      if (msg.error) throw new SealkitError('SEALKIT_IMPORT_FAILED', `docker could not load ${what}: ${msg.error}`, { runtime: 'docker' });
      const m = /Loaded image ID: (sha256:[0-9a-f]{64})/.exec(msg.stream ?? '');
      if (m) id = m[1];
    }
    if (!id) throw new SealkitError('SEALKIT_IMPORT_FAILED', `docker loaded ${what} but reported no image ID (${text.trim().slice(0, 300)}); a docker-archive with exactly one image is expected`, { runtime: 'docker' });
    return id;
  }

  async tag(id: string, repo: string, tag: string): Promise<void> {
    try {
      await (await this.docker).getImage(id).tag({ repo, tag });
    } catch (err) {
      throw this.wrap(err, `tag ${id} as ${repo}:${tag}`);
    }
  }

  private wrap(err: unknown, what: string): SealkitError {
    const e = err as { code?: string; statusCode?: number; message?: string };
    if (e.code === 'ECONNREFUSED' || e.code === 'ENOENT' || e.code === 'ECONNRESET' || e.code === 'EPIPE') {
      return new SealkitError('SEALKIT_UNAVAILABLE', `docker at ${this.sock} is not answering (${e.code}); the import is retried when it is back`, { sock: this.sock });
    }
    return new SealkitError('SEALKIT_IMPORT_FAILED', `docker ${what} failed: ${e.message ?? String(err)}`, { runtime: 'docker' });
  }
}
