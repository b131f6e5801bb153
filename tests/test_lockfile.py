"""Issue 15, finding 16: the runtime dependencies are locked with hashes.

``requirements.lock`` (``uv pip compile --generate-hashes``, see the README's
"Auditing the dependencies") pins every runtime dependency of pyproject.toml
and its transitive ones to one version each, every one with sha256 hashes,
within the ranges pyproject.toml allows; the Containerfile installs from it
with ``--require-hashes``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[1]


def locked() -> dict[str, tuple[str, list[str]]]:
    text = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    out: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9_.\-\[\]]+)==([^\s\\;]+)", block)
        if not m:
            continue
        name = canonicalize_name(m.group(1).split("[")[0])
        out[name] = (m.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return out


def test_every_runtime_dependency_is_pinned_with_hashes_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = locked()
    assert len(pins) > len(project["dependencies"])  # transitive ones too
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements.lock"
        version, hashes = pins[name]
        assert req.specifier.contains(version, prereleases=True), (spec, version)
    for name, (version, hashes) in pins.items():
        assert hashes, f"{name}=={version} has no hash"


def test_the_lock_says_how_it_was_made_and_the_image_uses_it():
    text = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    assert "--generate-hashes" in text.splitlines()[1]
    containerfile = (ROOT / "Containerfile").read_text(encoding="utf-8")
    assert "--require-hashes" in containerfile and "requirements.lock" in containerfile
