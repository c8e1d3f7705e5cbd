"""The docker sandbox's guest image, built locally without a registry.

A minimal Debian (debootstrap ``minbase`` with Python 3.11, imported as a base image once) plus
only the pure-Python code the guest imports: ``RestrictedPython``, ``loopwright.sdk`` and
``loopwright.sandbox``. The image is labelled with the hash of that code and its Dockerfile, so
:func:`ensure_image` rebuilds only when the code changed; builds on one machine are serialised
by a file lock. Command line: ``python -m loopwright.sandbox.docker build`` (see
``sandbox/image/build.sh``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import requests
from docker.errors import APIError, BuildError, DockerException, ImageNotFound

from loopwright.sandbox.host import SandboxError
from loopwright.sandbox.process import GUEST_MODULE

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "loopwright-guest:local"
BASE_IMAGE = "loopwright-guest-base:bookworm"
SUITE = "bookworm"
# python3-minimal alone lacks json, decimal, fractions, statistics, dataclasses and more that
# the guest, its policy and RestrictedPython import.
BASE_PACKAGES = ("python3-minimal", "libpython3.11-stdlib")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# The image carries the hash of the code it was built from.
IMAGE_HASH_LABEL = "loopwright.guest-image.hash"
API_TIMEOUT = 60
GUEST_USER = "65534:65534"
GUEST_COMMAND = ["python3", "-I", "-m", GUEST_MODULE]
NETWORK_ERRORS = (DockerException, requests.RequestException, OSError)


# ---------------------------------------------------------------------------------------
# The guest image


def guest_files() -> dict[str, bytes]:
    """The code the guest imports, keyed by its path in the build context.

    ``loopwright`` is a namespace package: the image gets ``loopwright/sdk`` and
    ``loopwright/sandbox`` and no ``loopwright/__init__.py``.
    """
    import RestrictedPython

    import loopwright.sandbox
    import loopwright.sdk

    roots = {
        "opt/loopwright/RestrictedPython": Path(RestrictedPython.__file__).resolve().parent,
        "opt/loopwright/loopwright/sdk": Path(loopwright.sdk.__file__).resolve().parent,
        "opt/loopwright/loopwright/sandbox": Path(loopwright.sandbox.__file__).resolve().parent,
    }
    files: dict[str, bytes] = {}
    for dest, src in roots.items():
        for path in sorted(src.rglob("*")):
            rel = path.relative_to(src)
            # Python sources only: no caches, and no stray files (editor backups, notes).
            if path.suffix == ".py" and "__pycache__" not in rel.parts and path.is_file():
                files[f"{dest}/{rel.as_posix()}"] = path.read_bytes()
    return files


def dockerfile(base: str = BASE_IMAGE) -> str:
    """The guest image's Dockerfile, built on the locally imported Debian base."""
    # `python3 -I` ignores PYTHONPATH, so a .pth file in the system site directory is what
    # puts /opt/loopwright on the guest's path; PYTHONPATH is only for debugging by hand.
    # The sources are compiled at build time because the guest's root is read-only; the
    # last import proves the stdlib in the base has everything the guest needs.
    return f"""\
FROM {base}
COPY opt/loopwright /opt/loopwright
RUN python3 -I -c "import os, site; d = site.getsitepackages()[0]; os.makedirs(d, exist_ok=True); \
open(os.path.join(d, 'loopwright.pth'), 'w').write('/opt/loopwright\\n')" \\
 && python3 -m compileall -q /opt/loopwright \\
 && python3 -I -c "import loopwright.sandbox.guest, loopwright.sdk"
ENV PYTHONPATH=/opt/loopwright LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1
WORKDIR /tmp
USER {GUEST_USER}
CMD {_json_list(GUEST_COMMAND)}
"""


def _json_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def content_hash(files: dict[str, bytes], docker_file: str) -> str:
    """A hash of everything the image is built from (except the base's own bytes)."""
    digest = hashlib.sha256()
    digest.update(docker_file.encode())
    for name in sorted(files):
        data = files[name]
        digest.update(f"\0{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def image_hash(client: docker.DockerClient, tag: str) -> str | None:
    """The code hash an image was built from; None when there is no such image."""
    try:
        labels = client.images.get(tag).labels or {}
    except ImageNotFound:
        return None
    value = labels.get(IMAGE_HASH_LABEL)
    return str(value) if value else None


def ensure_image(
    tag: str = DEFAULT_IMAGE,
    *,
    client: docker.DockerClient | None = None,
    rebuild: bool = False,
    rebuild_base: bool = False,
) -> str:
    """Build the guest image ``tag`` locally unless it exists with the current code; returns it.

    The Debian base (``loopwright-guest-base:bookworm``) is made once per machine with
    debootstrap (root, about 30 s) and ``docker import``; the image on top is rebuilt
    (a few seconds, no network) whenever the guest's code changes, so a changed sandbox
    never runs stale guests.
    """
    own = client is None
    engine = client if client is not None else connect()
    try:
        files = guest_files()
        docker_file = dockerfile()
        digest = content_hash(files, docker_file)
        if not (rebuild or rebuild_base) and image_hash(engine, tag) == digest:
            return tag
        with _build_lock():
            # Another process may have built it while this one waited for the lock.
            if not (rebuild or rebuild_base) and image_hash(engine, tag) == digest:
                return tag
            if rebuild_base or not image_exists(engine, BASE_IMAGE):
                build_base(engine)
            _build_guest_image(engine, tag, files, docker_file, digest)
        return tag
    finally:
        if own:
            engine.close()


def connect() -> docker.DockerClient:
    """A client of the local engine (DOCKER_HOST and friends apply); SandboxError if none."""
    try:
        client = docker.from_env(timeout=API_TIMEOUT)
        client.ping()
    except NETWORK_ERRORS as exc:
        raise SandboxError(
            f"no Docker engine is reachable ({exc}); start one with scripts/start-dockerd.sh"
        ) from None
    return client


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """One build at a time on this machine (a test session and a worker may race)."""
    path = Path(tempfile.gettempdir()) / "loopwright-guest-image.lock"
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _build_guest_image(
    client: docker.DockerClient, tag: str, files: dict[str, bytes], docker_file: str, digest: str
) -> None:
    log.info("building the guest image %s (code hash %s)", tag, digest[:12])
    try:
        previous: str | None = client.images.get(tag).id
    except ImageNotFound:
        previous = None
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in [("Dockerfile", docker_file.encode()), *sorted(files.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644  # world-readable: the guest runs as nobody
            info.mtime = 1_700_000_000  # fixed, so identical code gives identical layers
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    try:
        image, _ = client.images.build(
            fileobj=context,
            custom_context=True,
            tag=tag,
            rm=True,
            forcerm=True,
            pull=False,
            network_mode="none",  # the build needs nothing from outside
            labels={IMAGE_HASH_LABEL: digest},
            use_config_proxy=False,
        )
    except BuildError as exc:
        lines = [str(chunk.get("stream") or chunk.get("error") or "") for chunk in exc.build_log]
        tail = "".join(lines).strip()[-2000:]
        raise SandboxError(f"building the guest image {tag} failed: {exc.msg}\n{tail}") from None
    except APIError as exc:
        raise SandboxError(f"building the guest image {tag} failed: {exc}") from None
    if previous and previous != image.id:
        # The tag moved on: drop the stale image unless a container still uses it.
        with contextlib.suppress(APIError):
            client.api.remove_image(previous)


def build_base(
    client: docker.DockerClient, tag: str = BASE_IMAGE, *, mirror: str | None = None
) -> str:
    """Make the Debian base image with debootstrap and ``docker import`` (root only)."""
    if os.geteuid() != 0:
        raise SandboxError(
            f"the guest base image {tag} is missing and building it needs root (debootstrap): "
            f"run 'sudo sandbox/image/build.sh' once"
        )
    debootstrap = shutil.which("debootstrap") or _apt_install("debootstrap")
    mirror = mirror or os.environ.get("DEBOOTSTRAP_MIRROR") or DEFAULT_MIRROR
    repository, _, version = tag.rpartition(":")
    log.info("building the guest base image %s with debootstrap from %s", tag, mirror)
    work = Path(tempfile.mkdtemp(prefix="loopwright-rootfs-", dir="/var/tmp"))
    root = work / "rootfs"
    try:
        argv = [
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            SUITE,
            str(root),
            mirror,
        ]
        _run(argv, "debootstrap")
        _slim_rootfs(root)
        tarball = work / "rootfs.tar"
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tarball), "."], "tar")
        try:
            client.api.import_image_from_file(str(tarball), repository=repository, tag=version)
        except APIError as exc:
            raise SandboxError(f"docker import of the guest base failed: {exc}") from None
        if not image_exists(client, tag):
            raise SandboxError(f"docker import did not produce {tag}")
    finally:
        _remove_rootfs(work)
    return tag


def _apt_install(package: str) -> str:
    apt = shutil.which("apt-get")
    if apt is None:
        raise SandboxError(f"{package} is required to build the guest base image")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt, "install", "-y", "-qq", package], check=False, env=env)
    found = shutil.which(package)
    if found is None:
        _run([apt, "update", "-qq"], "apt-get update")
        _run([apt, "install", "-y", "-qq", package], f"apt-get install {package}")
        found = shutil.which(package)
    if found is None:
        raise SandboxError(f"{package} did not install")
    return found


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-2000:]
        raise SandboxError(f"{what} failed (exit code {done.returncode}):\n{tail}")


def _slim_rootfs(root: Path) -> None:
    """Drop what a guest never reads, and every setuid/setgid bit (defence in depth)."""
    for rel in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
        shutil.rmtree(root / rel, ignore_errors=True)
    for rel in ("var/cache/apt", "var/lib/apt/lists"):
        folder = root / rel
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
    for dirpath, _, filenames in os.walk(root):
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            st = os.lstat(path)
            if not os.path.islink(path) and st.st_mode & 0o6000:
                os.chmod(path, st.st_mode & 0o1777)


def _remove_rootfs(work: Path) -> None:
    """Delete the debootstrap folder, never through a mount left inside it (/proc, /sys)."""
    prefix = str(work) + "/"
    mounted = _mounts_under(prefix)
    for point in sorted(mounted, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    if _mounts_under(prefix):
        log.warning("left %s in place: something is still mounted inside it", work)
        return
    shutil.rmtree(work, ignore_errors=True)


def _mounts_under(prefix: str) -> list[str]:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[1] for line in lines if len(line.split()) > 1]
    return [p for p in points if p.startswith(prefix)]
