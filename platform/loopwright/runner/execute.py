"""The RQ job function ``execute(run_id)``: take the run's lease, replay, run, commit.

The job is generic platform code and the skill is data loaded by version from Redis, which is
why a worker started before a skill existed can run it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from types import FrameType
from typing import Any

from redis.exceptions import RedisError

from loopwright.errors import SkillAuthorError, SkillLoadError
from loopwright.runner.checkpoint import LeaseLostError, StorageQuotaError
from loopwright.runner.context import LocalContext
from loopwright.runner.execution import Execution
from loopwright.runner.lease import AcquireRefused, HeldLease
from loopwright.runner.lineage import Lineage
from loopwright.runner.records import Run, RunStatus, encode_json, now_ms
from loopwright.runner.redaction import NO_SECRETS, Redactor
from loopwright.runner.remote import GuestHost
from loopwright.runner.rollup import Ending
from loopwright.runner.runtime import Runtime
from loopwright.runner.signals import RunTimeoutError, Suspend
from loopwright.runner.tools import HostTools
from loopwright.runner.transitions import Declared
from loopwright.sandbox.host import GuestTimeoutError, SandboxError, run_session
from loopwright.sdk.errors import NonDeterminismError, StepFailedError, StepOutputError
from loopwright.settings import Settings

log = logging.getLogger(__name__)

_runtime: Runtime | None = None


def install_runtime(runtime: Runtime | None) -> None:
    """Set the process's runtime (worker start-up does this; tests may too)."""
    global _runtime  # noqa: PLW0603 - one runtime per worker process, set at start-up
    _runtime = runtime


def current_runtime() -> Runtime:
    """The process's runtime, made from settings on first use (e.g. under plain ``rq worker``)."""
    global _runtime  # noqa: PLW0603
    if _runtime is None:
        _runtime = Runtime(Settings())
    return _runtime


def execute(run_id: str) -> str:
    """RQ entry point: execute ``run_id`` until it ends or parks. Returns what happened."""
    return Executor(current_runtime()).execute(run_id)


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Interrupt a stuck step body with ``RunTimeoutError`` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise RunTimeoutError()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(0.001, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def safe_text(text: str) -> str:
    """``text`` as valid UTF-8: lone surrogates (from a skill or a guest) become ``\\udXXX``
    escapes, so recording an error can never fail on the text it records."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _error_text(exc: BaseException, filename: str) -> str:
    """``Type: message`` plus the innermost line of the skill's own code, for the author."""
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    where = f" (skill line {lines[-1]})" if lines else ""
    return f"{type(exc).__name__}: {exc}{where}"


class Executor:
    """Runs one execution of a run on behalf of a worker."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.redactor: Redactor = NO_SECRETS  # set once the run's skill is known

    def execute(self, run_id: str) -> str:
        """Take the lease and run; returns the outcome (completed, failed, parked, skipped...)."""
        rt = self.rt
        asked = time.monotonic()
        acq = rt.leases.acquire(run_id, rt.instance_id)
        if isinstance(acq, AcquireRefused):
            log.debug("run %s not taken: %s %s", run_id, acq.reason, acq.status or "")
            return f"skipped:{acq.reason}"
        started = time.monotonic()
        log.info("run %s (%s): started", run_id, acq.run.get("skill", ""))
        lease = rt.keeper.hold(run_id, acq.token, asked, acq.slot)
        run: Run | None = None
        try:
            run = Run.from_hash(acq.run)
            return self._run(run_id, acq.token, run, acq.steps, lease, started)
        except LeaseLostError:
            log.info("run %s: lease lost; another executor or a cancel took over", run_id)
            return "lease-lost"
        except RedisError:
            raise  # infrastructure: the run is reaped and retried by another executor
        except Exception as exc:
            # A defect in platform code, or input it could not handle (bad text): the run
            # fails once, with the reason; it is never left running to be re-executed.
            log.exception("run %s: unexpected error outside the skill", run_id)
            reason = f"platform error: {type(exc).__name__}: {exc}"
            if run is not None:
                return self._fail(run, acq.token, started, reason, origin="platform")
            text = safe_text(reason)[:8000]
            res = rt.transitions.finish(
                run_id, acq.token, RunStatus.FAILED.value, "", text,
                self._active_ms(started), Declared.of(acq.run), Ending("platform", text),
            )  # fmt: skip
            parent = acq.run.get("parent")
            if res.job_id and parent:
                rt.dispatcher.enqueue(parent, res.job_id)
            return "failed" if res.ok else "lease-lost"
        finally:
            rt.keeper.release(run_id)

    def _active_ms(self, started: float) -> int:
        return int((time.monotonic() - started) * 1000)

    def _finish(
        self,
        run: Run,
        token: str,
        started: float,
        status: RunStatus,
        output: str,
        error: str,
        origin: str = "skill",
        step: str = "",
    ) -> str:
        """End the run (secret values redacted); its end resolves a waiting parent in the same
        script (``run_ended``), and the resumed parent is enqueued here, after it. ``origin``
        (``skill``/``platform``) and the failing ``step`` go to the run's rollup with the
        error's signature (``runner/rollup.py``)."""
        rt = self.rt
        output = self.redactor.json_text(output) if output else output
        error = safe_text(self.redactor.text(error))[:8000] if error else error
        active = self._active_ms(started)
        ending = Ending(origin, error, self.redactor.text(step) if step else "")
        res = rt.transitions.finish(
            run.id, token, status.value, output, error, active, Declared.of(run.raw), ending
        )
        if res.job_id and run.parent:
            rt.dispatcher.enqueue(run.parent, res.job_id)
        if res.ok and status is RunStatus.FAILED:  # one line per outcome (``worker -v``)
            log.warning("run %s (%s): failed (%s): %r", run.id, run.skill, origin, error[:300])
        elif res.ok:
            log.info("run %s (%s): %s", run.id, run.skill, status.value)
        return status.value if res.ok else "lease-lost"

    def _fail(
        self,
        run: Run,
        token: str,
        started: float,
        error: str,
        origin: str = "skill",
        step: str = "",
    ) -> str:
        """Fail the run: ``origin`` ``platform`` for the platform's own failures (the sandbox's
        infrastructure, a skill the registry cannot load, a defect outside the skill), else
        the skill's (its exceptions, timeouts, quota, non-determinism)."""
        return self._finish(run, token, started, RunStatus.FAILED, "", error[:8000], origin, step)

    def _run(
        self,
        run_id: str,
        token: str,
        run: Run,
        steps: dict[str, str],
        lease: HeldLease,
        started: float,
    ) -> str:
        rt = self.rt
        try:
            if run.trusted:
                skill = rt.sources.load(run.version, run.skill)
                spec, source, filename = skill.spec, "", skill.filename
            else:
                source, spec = rt.sources.declaration(run.version, run.skill)
                filename = "<skill>"
        except SkillLoadError as exc:
            return self._fail(run, token, started, f"skill cannot be loaded: {exc}", "platform")
        self.redactor = Redactor.for_skill(rt.settings, spec)
        budget = run.timeout or spec.timeout or rt.settings.default_run_timeout
        remaining = budget - run.active_ms / 1000.0
        if remaining <= 0:
            return self._fail(run, token, started, f"run exceeded its {budget:g}s timeout")
        ex = Execution(
            rt, run_id, token, spec, steps, lease, time.monotonic() + remaining, run.trusted
        )
        ex.lineage = Lineage.of_event(run.event, f"run:{run_id}")
        params = {**spec.params, **run.params}
        try:
            if run.trusted:
                ctx = LocalContext(ex, run.event, params, HostTools(ex))
                with _alarm(remaining):
                    value: Any = skill.fn(ctx)
                output = encode_json(
                    value,
                    what="the skill's return value",
                    max_bytes=rt.settings.step_output_max_bytes,
                )
            else:
                output = self._run_sandboxed(ex, run, source, params, remaining)
        except Suspend as s:
            return self._park(run, token, started, s)
        except StorageQuotaError as exc:
            return self._fail(run, token, started, str(exc), step=ex.failed_step)
        except (RunTimeoutError, GuestTimeoutError):
            msg = f"run exceeded its {budget:g}s timeout (at step #{ex.seq})"
            return self._fail(run, token, started, msg, step=ex.failed_step)
        except (NonDeterminismError, StepFailedError, StepOutputError, GuestFailedError) as exc:
            return self._fail(run, token, started, str(exc), step=ex.failed_step)
        except SandboxError as exc:
            return self._fail(run, token, started, f"sandbox: {exc}", "platform", ex.failed_step)
        except LeaseLostError:
            raise
        except (Exception, SystemExit) as exc:
            text = _error_text(exc, filename)
            return self._fail(run, token, started, text, step=ex.failed_step)
        return self._finish(run, token, started, RunStatus.COMPLETED, output, "")

    def _park(self, run: Run, token: str, started: float, s: Suspend) -> str:
        rt = self.rt
        active = self._active_ms(started)
        slot = run.raw.get("conc_slot") or None
        if not s.waiting:
            ok = rt.transitions.park(
                run.id, token, RunStatus.SLEEPING.value, s.wake_ms or 0, active, slot
            )
            return "parked" if ok else "lease-lost"
        # A child that ended before this park is resolved by the park script itself.
        res = rt.transitions.park_waiting(
            run.id, token, s.wake_ms, active, s.waiter, child=s.child, slot=slot
        )
        if res.job_id:
            rt.dispatcher.enqueue(run.id, res.job_id)
        return "waiting" if res.ok else "lease-lost"

    def _run_sandboxed(
        self, ex: Execution, run: Run, source: str, params: dict[str, Any], remaining: float
    ) -> str:
        """Run the skill in a guest; returns the encoded output or raises why it did not end."""
        guest = self.rt.sandbox.acquire()
        start = {
            "source": source,
            "run_id": run.id,
            "event": run.event,
            "params": params,
            "max_output_bytes": self.rt.settings.step_output_max_bytes,
        }
        end = run_session(guest, start, GuestHost(ex).handle, time.monotonic() + remaining)
        if "error" in end:
            raise GuestFailedError(str(end["error"])[:8000])
        text = end.get("output_json")
        cap = self.rt.settings.step_output_max_bytes
        if not isinstance(text, str):
            raise GuestFailedError("the guest ended without an output")
        if len(text.encode("utf-8")) > cap:
            raise StepOutputError(f"the skill's return value is over the {cap}-byte cap")
        try:
            json.loads(text)
        except ValueError:
            raise GuestFailedError("the guest returned an output that is not JSON") from None
        return text


def child_outcome(child: Run) -> tuple[str, str, str]:
    """(status, output JSON, error) that a finished child hands its parent's invoke step."""
    if child.status is RunStatus.COMPLETED:
        return "done", json.dumps(child.output, separators=(",", ":")), ""
    reason = child.error or child.status.value
    return "failed", "", f"child run {child.id} ({child.skill}) {child.status.value}: {reason}"


def wake_parent(
    rt: Runtime, child: Run, status: str, output_json: str = "", error: str = ""
) -> None:
    """Resolve the parent's pending invoke step with this ended child's result (CAS,
    idempotent). Every terminal path does this inside its own script (``run_ended``); this is
    for the scheduler's pass over runs parked by earlier versions."""
    if not child.parent or child.parent_seq is None:
        return
    if status == "failed" and not error:
        error = child_outcome(child)[2]
    jid = rt.transitions.resolve(
        child.parent,
        child.parent_seq,
        status=status,
        output_json=output_json,
        error=error,
        check=("child", child.id),
        ended_at=now_ms(),
    )
    if jid:
        rt.dispatcher.enqueue(child.parent, jid)


class GuestFailedError(SkillAuthorError):
    """The sandboxed skill ended with an error (its message is for the skill's author)."""
