# sealkit — the two commands a new machine needs:
#   make run    build the ISO and boot it in QEMU with the bus on localhost:4222
#   make test   the whole test suite against real servers (and the QEMU boot)
# Both install what is missing first (apt-get and npm).

SHELL := /bin/bash
.DEFAULT_GOAL := help

APT_PACKAGES := nats-server containerd runc crun docker.io docker-registry skopeo \
  qemu-system-x86 linux-image-amd64 busybox-static xorriso isolinux syslinux-common \
  grub-efi-amd64-bin mtools dosfstools ovmf fsverity \
  ima-evm-utils attr keyutils gcc binutils libc6-dev cpio zstd lz4 xz-utils curl openssl ca-certificates e2fsprogs
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# not NODE: that is the fleet node's name (make iso NODE=…)
TSX := node --import tsx
# NODE is taken from make's command line only: npm and npx put NODE (the path
# of node) into the environment of everything they run, which would make
# `make run` under them a fleet node named /usr/bin/node
ifneq ($(origin NODE),command line)
NODE :=
endif
export SEALKIT_STATE ?= $(CURDIR)/state

.PHONY: help deps apt npm build typecheck schema test bench keys iso run dev hub clean

help:
	@echo "make run        build the ISO and boot it in QEMU (bus on 127.0.0.1:4222)"
	@echo "                FIRMWARE=uefi: under OVMF instead of SeaBIOS (the ISO boots on both)"
	@echo "                MEDIA=cdrom: the ISO as a CD-ROM instead of a disk (a USB stick)"
	@echo "make test       run every test (real nats-server, containerd, dockerd, registry, QEMU)"
	@echo "make dev        run nats-server and every service on this machine (state in ./state)"
	@echo "make hub        run a fleet hub on this machine for nodes to join (state in ./state/hub)"
	@echo "make bench      side-by-side benchmarks (BENCH_QUICK=1 for a short run, ROWS=a,b)"
	@echo "make iso        build build/iso/sealkit.iso offline from linuxkit.yml and Debian parts"
	@echo "                KERNEL=6.1: with bookworm's 6.1 instead of the newest installed (6.12)"
	@echo "                NODE=n1 [HUB=host:7422]: fleet node n1's image (build/iso-n1), as enrolled"
	@echo "make keys       create the admin key and bus credentials in ./state (once)"

deps: apt npm

# Installs only what is missing, so a second run costs a few dpkg queries.
# On Debian 12 the node kernel is bookworm-backports' 6.12 (IPE, fs-verity
# with IPE properties; see docs on the enforcement tiers), installed beside
# bookworm's 6.1, which stays (make iso KERNEL=6.1 builds with it); the
# backports suite is added to the apt sources for it and for virt-fw-vars.
BACKPORTS_SOURCES := /etc/apt/sources.list.d/sealkit-backports.sources
BACKPORTS_PACKAGES := python3-virt-firmware
KERNEL_612 := linux-image-6.12.*+deb12-amd64-unsigned
apt:
	@bookworm=$$(. /etc/os-release 2>/dev/null; [ "$${VERSION_CODENAME:-}" = bookworm ] && echo yes); \
	update=; \
	if [ -n "$$bookworm" ] && ! grep -rqs --include='*.list' --include='*.sources' -e 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d; then \
	  echo "adding bookworm-backports to the apt sources ($(BACKPORTS_SOURCES))"; \
	  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' | $(SUDO) tee $(BACKPORTS_SOURCES) >/dev/null; \
	  update=yes; \
	fi; \
	wanted="$(APT_PACKAGES)"; [ -n "$$bookworm" ] && wanted="$$wanted $(BACKPORTS_PACKAGES)"; \
	missing=$$(for p in $$wanted; do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	kernel=; [ -n "$$bookworm" ] && ! ls /boot/vmlinuz-6.12.*-amd64 >/dev/null 2>&1 && kernel=yes; \
	if [ -n "$$missing$$kernel" ]; then \
	  $(SUDO) apt-get -o DPkg::Lock::Timeout=600 update -q; \
	  if [ -n "$$kernel" ]; then \
	    k=$$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$$' | cut -d' ' -f1 | sort -V | tail -1); \
	    [ -n "$$k" ] || { echo "make deps: no $(KERNEL_612) in the apt sources (bookworm-backports); the ISO falls back to 6.1" >&2; }; \
	    missing="$$missing $$k"; \
	  fi; \
	  echo "installing:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $$missing; \
	elif [ -n "$$update" ]; then $(SUDO) apt-get -o DPkg::Lock::Timeout=600 update -q; fi

npm: node_modules/.package-lock.json
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

# under the ISO build lock: an ISO build copies dist/ into the image; the
# same compile step as the ISO build's (tsc, then the C helpers beside their
# modules, each changed file moved into dist/ by rename)
build: npm
	@mkdir -p build
	flock build/iso-build.lock $(TSX) iso/build.ts --compile-only

typecheck: npm
	npx tsc -p tsconfig.json --noEmit

# after editing services/lib/policy.schema.json: regenerate the validator the
# node runs (test/policy-schema.test.ts fails until then)
schema: npm
	$(TSX) iso/policy-validator.ts

# The whole suite; the closing line "ava: N passed, N failed" is what CI reads,
# and a run in which no test executed fails.
test: deps build
	node test/helpers/run-ava.mjs $(TESTS)

# Fuzz every parser that reads hostile bytes (not part of make test): each
# target replays test/fuzz/corpus/<target>, then runs generated inputs for
# FUZZ_SECONDS; exits 1 with the inputs under build/fuzz when anything is found.
.PHONY: fuzz
FUZZ_SECONDS ?= 25
fuzz: npm
	nice -n 10 $(TSX) test/fuzz/run.ts --seconds $(FUZZ_SECONDS) --jobs 2 --out build/fuzz $(FUZZ_TARGETS)

bench: deps build
	$(TSX) bench/run.ts $(if $(ROWS),--rows $(ROWS)) $(if $(MARKDOWN),--markdown)

keys: npm
	$(TSX) iso/keys.ts

# one ISO build at a time in this checkout (make run and the tests build too)
iso: deps keys
	@mkdir -p build
	flock build/iso-build.lock $(TSX) iso/build.ts $(if $(KERNEL),--kernel $(KERNEL)) $(if $(NODE),--node $(NODE)) $(if $(HUB),--hub $(HUB)) $(if $(BUNDLE),--bundle $(BUNDLE))

run: deps
	$(TSX) iso/run.ts $(if $(FIRMWARE),--firmware $(FIRMWARE)) $(if $(MEDIA),--media $(MEDIA)) $(if $(KERNEL),--kernel $(KERNEL)) $(if $(NODE),--node $(NODE)) $(if $(HUB),--hub $(HUB)) $(if $(BUNDLE),--bundle $(BUNDLE))

dev: deps keys build
	$(TSX) services/cli/dev.ts

hub: deps build
	$(TSX) services/cli/hub.ts

clean:
	rm -rf dist build
