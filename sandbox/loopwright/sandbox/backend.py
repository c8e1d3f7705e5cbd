"""Choosing a sandbox backend; the interface the runner uses."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from loopwright.sandbox.host import Guest, SandboxError
from loopwright.sandbox.limits import GuestLimits

log = logging.getLogger(__name__)


class SandboxBackend(Protocol):
    """Hands out ready guests, one per run."""

    name: str

    def acquire(self) -> Guest:
        """A guest that said ``ready`` and waits for ``start``."""
        ...

    def refill(self) -> None:
        """Pre-start guests up to the warm pool size."""
        ...

    def close(self) -> None:
        """Stop pooled guests."""
        ...

    def protections(self) -> dict[str, Any]:
        """Which protections hold on this machine."""
        ...


def make_backend(
    name: str,
    limits: GuestLimits,
    *,
    pool_size: int = 1,
    require_isolation: bool = False,
    docker_image: str = "loopwright-guest:local",
) -> SandboxBackend:
    """The configured backend; loud when isolation is weaker than it should be."""
    if name == "docker":
        from loopwright.sandbox.docker import DockerBackend

        return DockerBackend(limits, image=docker_image, pool_size=pool_size)
    from loopwright.sandbox.process import ProcessBackend

    backend = ProcessBackend(
        limits, pool_size=pool_size, use_bwrap=True if require_isolation else None
    )
    if not backend.bwrap:
        log.warning(
            "bubblewrap not found: sandboxed skills run with rlimits only; NETWORK AND "
            "FILESYSTEM ISOLATION ARE MISSING (apt-get install -y bubblewrap)"
        )
    return backend


__all__ = ["SandboxBackend", "SandboxError", "make_backend"]
