"""A Python client of the sidecar service (used by the CLI and the builder agent).

Failures become the platform's errors with one readable message: ``InfrastructureError`` when
the service cannot be reached or is busy, ``NotFoundError``/``UserError`` for what it refused.
The service needs a platform token; local callers get theirs from
:func:`loopwright.auth.local.sidecar_credential`. The server records the token's author: the
``author`` a caller passes to :meth:`SidecarClient.submit` is ignored by current servers.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from loopwright.errors import InfrastructureError, NotFoundError, UserError
from loopwright.sidecar.verdict import Verdict


class SidecarClient:
    """HTTP client of ``loopwright sidecar``; one connection pool per client."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 300.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> SidecarClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise InfrastructureError(
                f"cannot reach the sidecar at {self.base_url}: {exc or type(exc).__name__}; "
                f"start it with 'loopwright sidecar' or unset LOOPWRIGHT_SIDECAR_URL"
            ) from None
        if resp.status_code < 400:
            return resp.json()
        try:
            detail = resp.json().get("detail", resp.text)
        except ValueError:
            detail = resp.text
        if not isinstance(detail, str):
            detail = str(detail)
        if resp.status_code == 404:
            raise NotFoundError(detail)
        if resp.status_code in (401, 403):
            raise UserError(
                f"the sidecar refused the request: {detail} (the token comes from "
                "LOOPWRIGHT_SIDECAR_TOKEN, else the local token file in the data dir)"
            )
        if resp.status_code == 421:
            raise UserError(f"the sidecar at {self.base_url} refused its own address: {detail}")
        if resp.status_code < 500:
            raise UserError(detail)
        raise InfrastructureError(f"the sidecar failed ({resp.status_code}): {detail}")

    def health(self) -> dict[str, Any]:
        """Service status: approval mode and sandbox protections."""
        return dict(self._call("GET", "/v1/health"))

    def submit(
        self,
        source: str,
        tests: str | list[Any] | None,
        author: str = "agent",
        *,
        dry_run: bool = False,
    ) -> Verdict:
        """Run the pipeline on ``source`` with its test cases; the verdict, accepted or not."""
        body = {"source": source, "tests": tests, "author": author, "dry_run": dry_run}
        return Verdict.model_validate(self._call("POST", "/v1/skills", json=body))

    def skills(self) -> list[dict[str, Any]]:
        """Every registered skill."""
        return list(self._call("GET", "/v1/skills"))

    def skill(self, name: str, version: str | None = None) -> dict[str, Any]:
        """A skill with one version (the active one by default), its manifest and source."""
        params = {"version": version} if version else None
        return dict(self._call("GET", f"/v1/skills/{name}", params=params))

    def versions(self, name: str) -> list[dict[str, Any]]:
        """A skill's versions, oldest first."""
        return list(self._call("GET", f"/v1/skills/{name}/versions"))

    def diff(self, name: str, a: str, b: str) -> dict[str, Any]:
        """What changed from version ``a`` to ``b``."""
        return dict(self._call("GET", f"/v1/skills/{name}/diff", params={"a": a, "b": b}))

    def watch(self) -> dict[str, Any]:
        """The folder watch's latest report per file (404 when not watching)."""
        return dict(self._call("GET", "/v1/watch"))

    def _action(self, name: str, action: str, version: str | None = None) -> dict[str, Any]:
        body = {"version": version} if version else {}
        return dict(self._call("POST", f"/v1/skills/{name}/{action}", json=body))

    def approve(self, name: str, version: str) -> dict[str, Any]:
        """Approve a pending version and make it active."""
        return self._action(name, "approve", version)

    def rollback(self, name: str, version: str) -> dict[str, Any]:
        """Make an earlier version active again."""
        return self._action(name, "rollback", version)

    def pause(self, name: str) -> dict[str, Any]:
        """Stop new runs of a skill."""
        return self._action(name, "pause")

    def resume(self, name: str) -> dict[str, Any]:
        """Let a paused skill run again."""
        return self._action(name, "resume")

    def retire(self, name: str) -> dict[str, Any]:
        """Take a skill out of service."""
        return self._action(name, "retire")
