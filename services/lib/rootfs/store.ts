import { join } from 'node:path';
import { stateDir } from '../config.ts';
import { SealkitError } from '../errors.ts';
import { manifestPath } from '../manifest.ts';
import { CONTAINER_NAME } from './names.ts';

// Where labelled rootfs trees and their label manifests live on a node:
//
//   <store>/<container>/rootfs       the tree unpacked from the verified image
//                                    ($SEALKIT_CONTAINER_STORE; <state>/containers
//                                    by default, /var/lib/containerd/sealkit on the ISO)
//   <state>/ima/manifests/<c>.json   its signed label manifest
//   <state>/ima/manifest-key.pub     the key that manifest must verify with
//
// The ima service writes all of it; the auditor and whatever starts a
// container read it, and trust a rootfs only through its manifest.

export interface StoreLayout {
  store: string;
  manifests: string;
  manifestKey: string;
}

export function storeLayout(state = stateDir()): StoreLayout {
  const ima = join(state, 'ima');
  return {
    store: process.env.SEALKIT_CONTAINER_STORE ?? join(state, 'containers'),
    manifests: join(ima, 'manifests'),
    manifestKey: join(ima, 'manifest-key.pub'),
  };
}

export interface ContainerPaths {
  dir: string; // <store>/<container>: the rootfs and its unfinished stagings
  rootfs: string;
  manifest: string;
}

// container: a name from containerName() (names.ts), one path component.
export function containerPaths(l: Pick<StoreLayout, 'store' | 'manifests'>, container: string): ContainerPaths {
  if (!CONTAINER_NAME.test(container)) {
    throw new SealkitError('SEALKIT_BAD_REQUEST', `"${container}" is not a container name (one path component matching ${CONTAINER_NAME}); derive it from the image with containerName(name, tag)`);
  }
  const dir = join(l.store, container);
  return { dir, rootfs: join(dir, 'rootfs'), manifest: manifestPath(l.manifests, container) };
}
