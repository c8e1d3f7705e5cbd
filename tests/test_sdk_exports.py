"""The SDK package loads its names on first use (``sdk/__init__.py``): every exported name
resolves to the object its home module defines, whatever was imported first."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loopwright import sdk


def test_every_exported_name_resolves_to_its_definition() -> None:
    from loopwright.sdk import context, spec, triggers

    assert sdk.skill is spec.skill and callable(sdk.skill)
    assert sdk.Context is context.Context and sdk.cron is triggers.cron
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None, name
    assert set(sdk.__all__) <= set(dir(sdk))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = sdk.nope


@pytest.mark.parametrize(
    "first",
    ["import loopwright.sdk.spec", "import loopwright.sdk.errors", "import loopwright.sdk.context"],
)
def test_the_decorator_is_the_function_whichever_submodule_loaded_first(first: str) -> None:
    # A submodule named like an exported name would replace it on the package once imported.
    code = f"{first}\nfrom loopwright.sdk import skill, every\nprint(type(skill).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "function"


def test_importing_an_error_class_does_not_load_the_decorator() -> None:
    code = (
        "import sys, loopwright.sdk.errors\n"
        "print(sorted(m for m in sys.modules if m.startswith('loopwright.sdk.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "loopwright.sdk.spec" not in out.stdout and "loopwright.sdk.errors" in out.stdout
