#!/usr/bin/env bash
# Build the Loopwright guest image in the local Docker engine, without any registry:
#
#   sandbox/image/build.sh [TAG] [--rebuild] [--rebuild-base]     (TAG: loopwright-guest:local)
#
# 1. once per machine, as root: a Debian bookworm rootfs by debootstrap (minbase + Python 3.11),
#    `docker import`ed as loopwright-guest-base:bookworm (about 30 s; needs the Debian mirror,
#    $DEBOOTSTRAP_MIRROR, default http://deb.debian.org/debian);
# 2. on top of it, with no network: only the pure-Python code the guest imports
#    (RestrictedPython, loopwright.sdk, loopwright.sandbox) under /opt/loopwright, compiled,
#    run as uid 65534. The image is labelled with a hash of that code and rebuilt when it
#    changes; an up-to-date image is left alone.
#
# The steps live in loopwright.sandbox.docker_image.ensure_image, which the docker backend and the
# tests call too, so there is one definition of the image. Python: $PYTHON, else the repo's
# .venv, else python3 (Loopwright must be installed in it).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
fi
bash "$REPO/scripts/start-dockerd.sh"
exec "$PY" -m loopwright.sandbox.docker build "$@"
