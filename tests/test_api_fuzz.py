"""Property-based fuzzing of the API's own OpenAPI schema (issue 13) with schemathesis, against
a real `loopwright serve`: bounded (fixed seed, the examples, coverage and fuzzing phases with a
few examples per operation), with a token holding every scope and real path parameters (a
skill, a run, a timed skill, a review, a chat session); the event stream (SSE, never ends) and
the webhooks (signed by senders) are left out. Passes when no generated request gets a server
error (5xx)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from loopwright.review.store import save_review
from test_api import OK_SKILL, Api, api  # noqa: F401  (the served-API fixture)
from test_review_report import sample_review
from test_schedules import EVERY_10M

EXCLUDED = r"^/(api/v1/stream|hooks/)"
EXAMPLES = 4
SEED = 13


def test_generated_requests_from_the_schema_get_no_server_error(
    api: Api,  # noqa: F811
    tmp_path: Path,
) -> None:
    c = api.cluster
    token = api.token("read", "operate", "approve", "admin")
    # Existing things for the path parameters, so generated requests reach past the 404s.
    c.skill(OK_SKILL)
    c.skill(EVERY_10M)
    run_id = c.start("api-ok", {"n": 1})
    save_review(c.rt.redis, c.rt.keys, sample_review("r-fuzz"), keep=10)
    sid = api.call("POST", "/api/v1/chat/sessions", token, json={}).json()["id"]
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[parameters]\n"
        + "".join(
            f"{name} = {json.dumps(value)}\n"
            for name, value in (
                ("run_id", run_id),
                ("name", "api-ok"),
                ("skill", "tenmin"),
                ("review_id", "r-fuzz"),
                ("sid", sid),
            )
        )
    )
    got = api.call("GET", "/api/v1/openapi.json", token)
    assert got.status_code == 200
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(got.json()))
    cli = Path(sys.executable).with_name("schemathesis")
    proc = subprocess.run(
        [
            str(cli), "--config-file", str(config), "run", str(schema), "--url", api.url,
            "-H", f"Authorization: Bearer {token}",
            "--checks", "not_a_server_error",
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", str(EXAMPLES), "--seed", str(SEED),
            "--exclude-path-regex", EXCLUDED,
            "--request-timeout", "30", "--workers", "1", "--no-color",
        ],
        check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )  # fmt: skip
    report = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, report
    counts = re.search(r"(\d+) generated, (\d+) passed", proc.stdout)
    assert counts is not None and counts[1] == counts[2] and int(counts[1]) >= 100, report
