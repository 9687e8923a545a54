"""The lean transport's seam fits the installed LitServe, and says so loudly when it does not."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import litserve as ls
import pytest
from packaging.requirements import Requirement

from celestial_data import ImageFormat
from celestial_serve import litserve_internals
from celestial_serve.api import ClassifierAPI
from celestial_serve.errors import ServeError
from celestial_serve.litserve_internals import SUPPORTED, LeanServer, missing
from celestial_serve.project import ModelCard

CARD = ModelCard("demo", Path("model"), ("Earth", "Mars"), ImageFormat(16, "rgb"), "cd" * 32)
FIX = "Run with --transport stock"


def required_litserve() -> Requirement:
    """The package's requirement on LitServe, from its installed metadata."""
    requirements = [Requirement(text) for text in importlib.metadata.requires("celestial-serve")]
    (litserve,) = [r for r in requirements if r.name == "litserve"]
    return litserve


def test_the_package_requires_a_litserve_range_that_holds_the_installed_one() -> None:
    required = required_litserve()
    assert str(required.specifier) == str(Requirement(SUPPORTED).specifier), (
        f"packages/serve/pyproject.toml requires {required}, but litserve_internals.SUPPORTED "
        f"says {SUPPORTED}: change both together, after checking the seam on that range."
    )
    assert "==" not in str(required.specifier), "pin LitServe to a range, not one release"
    assert required.specifier.contains(ls.__version__), (
        f"LitServe {ls.__version__} is installed, outside {required}: run uv sync --locked."
    )


def test_the_installed_litserve_has_every_internal_the_lean_transport_uses() -> None:
    absent = missing()
    assert absent == [], (
        f"LitServe {ls.__version__} lacks {', '.join(absent)}, which "
        "celestial_serve/litserve_internals.py relies on: adapt that module, or pin LitServe "
        f"back into {SUPPORTED}; until then, serve with --transport stock."
    )
    server = LeanServer(ClassifierAPI(CARD), accelerator="cpu")  # checks its attributes
    assert server.takes_fast_path(server.lit_api)


def test_a_server_lacking_an_attribute_is_refused_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attributes = (*litserve_internals.SERVER_ATTRIBUTES, "renamed_buffer")
    monkeypatch.setattr(litserve_internals, "SERVER_ATTRIBUTES", attributes)
    with pytest.raises(ServeError, match=FIX) as caught:
        LeanServer(ClassifierAPI(CARD), accelerator="cpu")
    assert f"LitServe {ls.__version__} lacks" in str(caught.value)
    assert "LitServer().renamed_buffer" in str(caught.value)


def test_an_incompatible_litserve_stops_the_lean_command_naming_what_and_the_fix(
    tmp_path: Path,
) -> None:
    model = tmp_path / "demo" / "model"
    model.mkdir(parents=True)
    (model / "model.keras").write_bytes(b"not read: the error comes first")
    meta = {"classes": ["Earth", "Mars"], "image_size": 16, "color_mode": "rgb"}
    (model / "metadata.json").write_text(json.dumps({**meta, "format_version": 1}))
    code = (
        "import sys, litserve.utils\n"
        "del litserve.utils.ResponseBufferItem  # as a LitServe that renamed it\n"
        "from celestial_serve.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(model.parent), "--port", "8931"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"celestial-serve: error: LitServe {ls.__version__} lacks ")
    assert "litserve.utils:ResponseBufferItem" in last
    assert FIX in last and SUPPORTED in last
