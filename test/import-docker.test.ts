import test from 'ava';
import { buildImage, type BuiltImage } from './helpers/images.ts';
import { startImportRig, outcomeOf, NS, type ImportRig } from './helpers/importer.ts';
import { startDocker, type DockerServer } from './helpers/docker.ts';

// Docker as the second runtime, through dockerode against a real dockerd:
// the image is loaded, tagged name:tag, and the verified archive digest is
// recorded as the tag name:sha256-<hex> (Docker image labels are immutable).

let rig: ImportRig;
let dockerd: DockerServer;
let legacy: BuiltImage;
let onlyDocker: BuiltImage;
let oci: BuiltImage;

test.before(async () => {
  [legacy, onlyDocker, oci] = await Promise.all([
    buildImage({ name: 'sealkit/legacy', tag: '2015', format: 'docker', compression: 'xz' }),
    buildImage({ name: 'sealkit/dockeronly', tag: 'v2', format: 'docker', layers: [{ 'etc/role': 'docker\n' }] }),
    buildImage({ name: 'sealkit/modern', tag: 'v1', format: 'oci' }),
  ]);
  rig = await startImportRig();
  dockerd = await startDocker({ containerd: rig.containerd });
  for (const img of [legacy, onlyDocker, oci]) await rig.cache(img);
  await rig.setPolicy([{ img: legacy, docker: true }, { img: onlyDocker, namespace: false, docker: true }, { img: oci, docker: true }]);
  await rig.startImporter({ SEALKIT_DOCKER_SOCK: dockerd.sock });
});

test.after.always(async () => {
  await rig?.importer?.stop();
  await dockerd?.cleanup();
  await rig?.cleanup();
});

test.serial('a docker-archive goes into containerd and Docker, tagged name:tag and name:sha256-<archive digest>', async (t) => {
  await rig.verified(legacy);
  const ev = await outcomeOf(rig, legacy, 'image.imported');
  const [ctd, dkr] = ev.data.targets;
  t.is(ctd.runtime, 'containerd');
  t.is(ctd.ref, 'docker.io/sealkit/legacy:2015');
  t.deepEqual(dkr, { runtime: 'docker', ref: 'sealkit/legacy:2015', id: legacy.configDigest });

  const images = await dockerd.docker.listImages();
  const tags = images.find((i) => i.Id === legacy.configDigest)?.RepoTags ?? [];
  t.deepEqual(tags.sort(), ['sealkit/legacy:2015', `sealkit/legacy:sha256-${legacy.sha256}`]);
});

test.serial('an image already in Docker with the verified digest is not loaded again', async (t) => {
  const again = await rig.verified(legacy);
  const ev = await rig.events.wait((e) => e.type === 'image.imported' && e.id === `${again.id}.imported`);
  t.true(ev.data.skipped);
  t.is(ev.data.targets[1].id, legacy.configDigest);
  t.is(rig.importer!.logs().filter((r) => r.msg === 'importing into docker' && r.image === 'sealkit/legacy:2015').length, 1);
});

test.serial('an image the policy sends only to Docker is not imported into containerd', async (t) => {
  await rig.verified(onlyDocker);
  const ev = await outcomeOf(rig, onlyDocker, 'image.imported');
  t.deepEqual(ev.data.targets, [{ runtime: 'docker', ref: 'sealkit/dockeronly:v2', id: onlyDocker.configDigest }]);
  t.false((await rig.ctrImages(NS)).some((i) => i.ref.includes('dockeronly')));
  t.is((await dockerd.docker.getImage('sealkit/dockeronly:v2').inspect()).Id, onlyDocker.configDigest);
});

test.serial('an OCI archive that this Docker cannot load is reported per runtime while containerd keeps it', async (t) => {
  const { Version } = await dockerd.docker.version();
  await rig.verified(oci);
  const imported = await outcomeOf(rig, oci, 'image.imported');
  t.is(imported.data.targets[0].digest, oci.manifestDigest);
  if (Number.parseInt(Version, 10) >= 25) {
    t.is(imported.data.targets[1].runtime, 'docker');
    return;
  }
  // Docker before 25 loads docker-archives only
  const failed = await outcomeOf(rig, oci, 'image.import_failed');
  t.is(failed.data.code, 'SEALKIT_IMPORT_FAILED');
  t.is(failed.data.runtime, 'docker');
  t.is(imported.data.targets.length, 1);
  await t.throwsAsync(dockerd.docker.getImage('sealkit/modern:v1').inspect());
});
