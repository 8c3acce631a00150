"""schemathesis against every service's OpenAPI through the gateway: no 5xx, no schema violations."""

import subprocess
import sys
import uuid

import pytest

from tests.e2e.conftest import APPS, Suite
from tests.support import make_token

pytestmark = pytest.mark.e2e

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)
# Operations whose side effects would end the fuzzing session itself (revoking its token).
EXCLUDED_PATHS = r"^/auth/v1/jwt/logout$"


@pytest.mark.parametrize("prefix", list(APPS))
def test_openapi_fuzzing_finds_nothing(suite: Suite, prefix: str) -> None:
    token = make_token(uuid.uuid4(), email="fuzz@example.com", verified=True)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{suite.gateway}/{prefix}/openapi.json",
            "--url",
            suite.gateway,
            "--checks",
            CHECKS,
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            "20",
            "--seed",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
            "--exclude-path-regex",
            EXCLUDED_PATHS,
            "--request-timeout",
            "10",
            # One worker: CPython 3.11.7 can fail compiling schemathesis' generated code in
            # two threads at once ("AST constructor recursion depth mismatch").
            "--workers",
            "1",
            "--no-color",
            "--generation-database",
            "none",
            "--suppress-health-check",
            "all",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
