"""Kafka + Elasticsearch for the benches that need real services (``bench_e2e``, ``bench_soak``).

Either the services ``ABW_KAFKA_BOOTSTRAP`` / ``ABW_ES_URL`` point at, when both answer and the bench allows it, or a
private copy of ``deploy/local/services.sh`` (own run directory and free ports, the shared download cache), started
for the bench and stopped afterwards, so the default local services and their users are never disturbed. Only a
private copy may be driven further (``stop-kafka`` / ``start-kafka``): restarting someone else's broker is not ours.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.workload import ROOT

SERVICES_SCRIPT = ROOT / "deploy" / "local" / "services.sh"
PORT_VARIABLES = ("ABW_KAFKA_PORT", "ABW_KAFKA_CONTROLLER_PORT", "ABW_ES_PORT", "ABW_ES_TRANSPORT_PORT")


class SkipError(Exception):
    """The run needing services cannot happen here; the message says why."""


@dataclass
class Services:
    """Where the services answer; ``script`` and ``env`` drive a private copy (None and empty for shared ones)."""

    kafka: str
    es: str
    script: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    def command(self, name: str) -> None:
        """``services.sh NAME`` (e.g. ``stop-kafka``, ``start-kafka``) on the private copy; SkipError if it fails."""
        if self.script is None:
            raise SkipError(f"services.sh {name}: the services are not this bench's own copy")
        done = subprocess.run([str(self.script), name], env=self.env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SkipError(f"services.sh {name} failed: {(done.stderr or done.stdout).strip().splitlines()[-3:]}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(kafka: str, es: str) -> bool:
    host, _, port = kafka.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        with urllib.request.urlopen(f"{es}/_cluster/health", timeout=5) as response:
            return b'"status":"red"' not in response.read()
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def services(private: bool = False) -> Iterator[Services]:
    """Running services when configured (unless ``private``), else a private local copy for the run."""
    kafka, es = os.environ.get("ABW_KAFKA_BOOTSTRAP"), os.environ.get("ABW_ES_URL")
    if not private and kafka and es and _answers(kafka, es):
        yield Services(kafka, es)
        return
    if not SERVICES_SCRIPT.exists():
        raise SkipError(
            f"no {SERVICES_SCRIPT.relative_to(ROOT)} and no running services (ABW_KAFKA_BOOTSTRAP/ABW_ES_URL)"
        )
    home = Path(tempfile.mkdtemp(prefix="abw-bench-services-")) / "local"
    home.mkdir()
    for name in ("services.sh", "pom.xml"):
        shutil.copy2(SERVICES_SCRIPT.parent / name, home / name)
    shutil.copytree(SERVICES_SCRIPT.parent / "lib", home / "lib")
    (SERVICES_SCRIPT.parent / ".cache").mkdir(exist_ok=True)
    (home / ".cache").symlink_to(SERVICES_SCRIPT.parent / ".cache")
    ports = {name: str(free_port()) for name in PORT_VARIABLES}
    env = {**os.environ, **ports}
    up = subprocess.run([str(home / "services.sh"), "up"], env=env, capture_output=True, text=True, check=False)
    try:
        if up.returncode != 0:
            raise SkipError(f"services.sh up failed: {(up.stderr or up.stdout).strip().splitlines()[-3:]}")
        kafka, es = f"127.0.0.1:{ports['ABW_KAFKA_PORT']}", f"http://127.0.0.1:{ports['ABW_ES_PORT']}"
        yield Services(kafka, es, home / "services.sh", env)
    finally:
        subprocess.run([str(home / "services.sh"), "down"], env=env, capture_output=True, check=False)
        shutil.rmtree(home.parent, ignore_errors=True)
