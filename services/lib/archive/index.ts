import type { Readable } from 'node:stream';
import { openImage, type ArchiveOptions, type OpenedImage } from './image.ts';
import { streamLayer } from './layers.ts';
import type { SafeHeader } from './tar-guard.ts';

// Reading image archives safely, AFTER their digest was verified. Nothing in
// here may be pointed at unverified bytes: decompressors and tar parsers are
// exactly what an attacker wants to reach with a crafted stream.
//
//   compression.ts     magic bytes, the decompressor (zlib, xz, zstd)
//   tar-guard.ts       the admission check on every tar entry, the byte limit
//   image.ts           openImage: the one verifying pass over an archive
//   catalog.ts         what that pass recorded, for the format readers
//   oci-layout.ts      OCI image layouts
//   docker-archive.ts  `docker save` archives
//   layers.ts          walking one layer tar, to verify it or to unpack it

export { archiveMediaType, decompress, detectCompression, sniffCompression, DECOMPRESSOR_START, type Compression } from './compression.ts';
export { LayoutCheck, openImage, type ArchiveFormat, type ArchiveOptions, type ImageLayer, type OpenedImage } from './image.ts';
export { EntryGuard, walkTar, type ArchiveLimits, type Budget, type SafeHeader } from './tar-guard.ts';

/**
 * Stream the entries of one layer (by manifest order) through the guard, for
 * unpacking a rootfs. Pass the OpenedImage from openImage to skip a second
 * verification pass. What is re-checked while streaming, and what the caller
 * must do when it fails: streamLayer in layers.ts.
 */
export async function forEachLayerEntry(
  path: string,
  opts: ArchiveOptions & { image?: OpenedImage },
  layerIndex: number,
  fn: (header: SafeHeader, body: Readable) => Promise<void> | void,
): Promise<void> {
  await streamLayer(path, opts.image ?? (await openImage(path, opts)), opts, layerIndex, fn);
}
