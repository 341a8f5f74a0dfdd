"""What the image needs beyond the Python package: the Kibana objects (``abusewatch kibana import`` in a container),
found through ``ABW_KIBANA_ASSETS``; and a build-system floor that can build the package's metadata."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path, PurePosixPath

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


def pinned() -> dict[str, str]:
    """Package name (normalised) -> version, from constraints.txt."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_every_dependency_is_pinned_within_what_pyproject_allows() -> None:
    """CI (make setup) and the image install within constraints.txt: each dependency must be pinned there, at a
    version its pyproject.toml range accepts, or the two would resolve differently from what was tested."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = pinned()
    for text in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in constraints.txt (make lock)"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} not in {text}"


def test_setup_and_the_image_install_within_the_constraints() -> None:
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()
    runs = [" ".join(arguments) for name, arguments in dockerfile_instructions() if name == "RUN"]
    assert any("pip install -c constraints.txt ." in run for run in runs)
    copied = [arguments for name, arguments in dockerfile_instructions() if name == "COPY"]
    assert any("constraints.txt" in arguments[:-1] for arguments in copied)
