import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../lib/atomic.ts';

// Which tag the importer gave each image it put into Docker, by its digest
// tag (`name:sha256-<hex>` → tag). A Docker image carries no labels of ours,
// so this record is how collection tells sealkit's `name:tag` from a tag
// someone else put on the same image.

export class DockerTags {
  private readonly tags = new Map<string, string>();

  constructor(private readonly file: string) {}

  async load(): Promise<void> {
    try {
      for (const [k, v] of Object.entries(JSON.parse(await readFile(this.file, 'utf8')) as Record<string, string>)) this.tags.set(k, v);
    } catch {
      // none yet: only digest tags are recognised until the next import
    }
  }

  get map(): Map<string, string> {
    return this.tags;
  }

  async record(digestTag: string, tag: string): Promise<void> {
    if (this.tags.get(digestTag) === tag) return;
    this.tags.set(digestTag, tag);
    await this.save();
  }

  async save(): Promise<void> {
    await writeFileAtomic(this.file, JSON.stringify(Object.fromEntries(this.tags)));
  }
}
