"""What the image needs beyond the Python package: the Kibana objects (``abusewatch kibana import`` in a container),
found through ``ABW_KIBANA_ASSETS``; and a build-system floor that can build the package's metadata."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path, PurePosixPath

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def dockerfile_instructions() -> list[tuple[str, list[str]]]:
    """(instruction, arguments) per Dockerfile instruction, continuation lines joined."""
    joined = (ROOT / "deploy" / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), shlex.split(line.split(None, 1)[1])) for line in lines]


def image_env() -> dict[str, str]:
    return dict(
        argument.split("=", 1)
        for name, arguments in dockerfile_instructions()
        if name == "ENV"
        for argument in arguments
    )


def test_the_image_holds_the_kibana_objects_where_abw_kibana_assets_points() -> None:
    assets = PurePosixPath(image_env()["ABW_KIBANA_ASSETS"])
    copies = [(args[0], PurePosixPath(args[-1])) for name, args in dockerfile_instructions() if name == "COPY"]
    sources = [ROOT / source / assets.relative_to(target) for source, target in copies if assets.is_relative_to(target)]
    assert len(sources) == 1 and sources[0].is_file(), (assets, copies)


def test_compose_imports_the_kibana_objects_once_kibana_is_healthy() -> None:
    services = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())["services"]
    setup = services["kibana-setup"]
    assert setup["command"][:2] == ["kibana", "import"]
    assert setup["command"][setup["command"].index("--url") + 1] == "http://kibana:5601"
    assert setup["depends_on"]["kibana"]["condition"] == "service_healthy"
    assert setup["build"] == services["worker"]["build"]  # the same image


def test_the_build_backend_floor_supports_the_license_string() -> None:
    """``license = "Apache-2.0"`` (PEP 639) needs setuptools 77; an older one fails in metadata generation when
    builds run without isolation (air-gapped, distro, ``--no-build-isolation``)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(pyproject["project"]["license"], str)
    setuptools = next(
        Requirement(r) for r in pyproject["build-system"]["requires"] if Requirement(r).name == "setuptools"
    )
    assert not setuptools.specifier.contains("76.1.0")
    assert setuptools.specifier.contains("77.0.0")
