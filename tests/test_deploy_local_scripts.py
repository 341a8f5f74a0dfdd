"""deploy/local/services.sh, secure_kafka.sh and their shared library lib/: the parts that need no Java.

The library functions run in a real bash that sources lib/common.sh and lib/kafka.sh; starting real brokers is
left to tests/integration (test_services.py through the conftest, test_transport_security.py).
"""

from __future__ import annotations

import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest

LOCAL = Path(__file__).resolve().parents[1] / "deploy" / "local"
SCRIPTS = [LOCAL / "services.sh", LOCAL / "secure_kafka.sh", LOCAL / "lib" / "common.sh", LOCAL / "lib" / "kafka.sh"]


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, env=env, check=False
    )


def run_library(code: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``code`` in bash with both library files sourced (under ``set -euo pipefail``, as the scripts do)."""
    prelude = f'set -euo pipefail\nsource "{LOCAL}/lib/common.sh"\nsource "{LOCAL}/lib/kafka.sh"\n'
    return subprocess.run(
        ["bash", "-c", prelude + code, "lib-test"], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def properties(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return dict(pairs)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_script_parses(script: Path) -> None:
    assert run_script("-n", str(script)).returncode == 0


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_scripts_are_shellcheck_clean() -> None:
    result = subprocess.run(
        ["shellcheck", "-x", *(str(path.relative_to(LOCAL)) for path in SCRIPTS)],
        cwd=LOCAL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_kafka_configure_writes_single_node_kraft_with_given_listeners(tmp_path: Path) -> None:
    run = tmp_path / "kafka"
    result = run_library(
        f'kafka_configure "{run}" 7003 SSL=7001 SASL_SSL=7002', stdin="auto.create.topics.enable=false\nsecret=s3\n"
    )

    assert result.returncode == 0, result.stderr
    config = properties(run / "server.properties")
    assert config["listeners"] == "SSL://127.0.0.1:7001,SASL_SSL://127.0.0.1:7002,CONTROLLER://127.0.0.1:7003"
    assert config["advertised.listeners"] == "SSL://127.0.0.1:7001,SASL_SSL://127.0.0.1:7002"
    assert config["inter.broker.listener.name"] == "SSL"
    assert config["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL"
    assert config["controller.quorum.voters"] == "1@127.0.0.1:7003"
    assert config["process.roles"] == "broker,controller"
    assert config["log.dirs"] == f"{run}/data"
    assert config["offsets.topic.replication.factor"] == "1"
    assert config["auto.create.topics.enable"] == "false"
    assert config["secret"] == "s3"
    assert stat.S_IMODE((run / "server.properties").stat().st_mode) == 0o600
    assert "${kafka.logs.dir}/server.log" in (run / "log4j.properties").read_text()
    assert (run / "data").is_dir() and (run / "logs").is_dir()


def test_kafka_configure_single_plaintext_listener(tmp_path: Path) -> None:
    run = tmp_path / "kafka"
    assert run_library(f'kafka_configure "{run}" 7011 PLAINTEXT=7010', stdin="").returncode == 0

    config = properties(run / "server.properties")
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:7010,CONTROLLER://127.0.0.1:7011"
    assert config["advertised.listeners"] == "PLAINTEXT://127.0.0.1:7010"
    assert config["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"


def test_pom_property_reads_the_version_and_fails_on_a_missing_one() -> None:
    found = run_library(f'pom_property "{LOCAL}/pom.xml" kafka.version')
    missing = run_library(f'pom_property "{LOCAL}/pom.xml" no.such.version')

    assert found.returncode == 0 and found.stdout.count(".") == 2
    assert f"<kafka.version>{found.stdout}</kafka.version>" in (LOCAL / "pom.xml").read_text()
    assert missing.returncode == 1 and "property <no.such.version> not found" in missing.stderr


def test_require_free_port_names_the_setting_when_taken() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        taken = run_library(f"require_free_port {port} ABW_TEST_PORT")
    free = run_library(f"require_free_port {port} ABW_TEST_PORT")

    assert taken.returncode == 1
    assert f"port {port} is taken by another process (set ABW_TEST_PORT)" in taken.stderr
    assert free.returncode == 0


HOOKS = """
service_run_dir() {{ printf '%s' "{run}"; }}
service_healthy() {{ {healthy}; }}
service_logs() {{ printf '%s\\n' "{run}/server.log"; }}
"""


def test_wait_healthy_returns_once_healthy(tmp_path: Path) -> None:
    result = run_library(HOOKS.format(run=tmp_path, healthy="true") + "wait_healthy broker; echo done")

    assert result.returncode == 0
    assert result.stdout == "done\n"
    assert "broker: healthy after" in result.stderr


def test_wait_healthy_fails_fast_with_the_log_tail_when_the_service_is_gone(tmp_path: Path) -> None:
    (tmp_path / "server.log").write_text("line one\nfatal: cannot bind\n")
    result = run_library(HOOKS.format(run=tmp_path, healthy="false") + "wait_healthy broker; echo unreachable")

    assert result.returncode == 1
    assert "unreachable" not in result.stdout
    assert "broker exited during startup (logs above)" in result.stderr
    assert "fatal: cannot bind" in result.stderr


def test_stop_service_without_processes_is_a_no_op(tmp_path: Path) -> None:
    result = run_library(HOOKS.format(run=tmp_path, healthy="false") + "stop_service broker")

    assert result.returncode == 0
    assert "broker: not running" in result.stderr


@pytest.mark.parametrize(
    ("script", "args"),
    [("services.sh", []), ("services.sh", ["frobnicate"]), ("secure_kafka.sh", ["up"])],
)
def test_wrong_usage_prints_the_header_and_exits_2(script: str, args: list[str]) -> None:
    result = run_script(str(LOCAL / script), *args)

    assert result.returncode == 2
    assert "Usage: deploy/local/" + script in result.stderr


def test_services_env_prints_the_configured_endpoints() -> None:
    env = {"PATH": "/usr/bin:/bin", "ABW_KAFKA_PORT": "7101", "ABW_ES_PORT": "7102"}
    result = run_script(str(LOCAL / "services.sh"), "env", env=env)

    assert result.returncode == 0
    assert result.stdout == "export ABW_KAFKA_BOOTSTRAP=127.0.0.1:7101\nexport ABW_ES_URL=http://127.0.0.1:7102\n"


def test_secure_kafka_env_without_up_says_what_to_do(tmp_path: Path) -> None:
    result = run_script(str(LOCAL / "secure_kafka.sh"), "env", str(tmp_path))

    assert result.returncode == 1
    assert result.stdout == ""
    assert f"secure_kafka.sh: error: {tmp_path} holds no secure broker" in result.stderr


def test_secure_kafka_down_without_a_broker_is_a_no_op(tmp_path: Path) -> None:
    result = run_script(str(LOCAL / "secure_kafka.sh"), "down", str(tmp_path))

    assert result.returncode == 0
    assert "secure_kafka.sh: broker: not running" in result.stderr
