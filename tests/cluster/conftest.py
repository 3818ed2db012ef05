"""Real servers on 127.0.0.1 for the cluster tier: a Spark standalone master + worker from the
pip pyspark, a Ray head from ``ray start --head`` and an ``mlflow server`` with a sqlite backend
and proxied artifacts. Each runs as a subprocess in its own session on free ports, is polled
until ready (bounded), and is stopped by process id at teardown, whatever the tests did.

Every server process gets a marker variable in its environment, inherited by everything it
spawns (Ray workers, Spark executors, uvicorn workers); teardown kills whatever still carries
the marker, so nothing outlives the session. ``ray stop`` is deliberately not used: it stops
every Ray on the machine, including another test session's embedded one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
MARKER = "GEN_PIPELINE_CLUSTER_TEST"
CLIENT_VARS = ("SPARK_MASTER", "RAY_ADDRESS", "MLFLOW_TRACKING_URI")


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http_get(url: str, headers: dict | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    log: Path


@dataclass
class LocalServers:
    """Where each server listens, and the environment a client process needs to reach them."""

    spark_master: str  # spark://127.0.0.1:P (SPARK_MASTER)
    spark_ui: str  # the master's web UI, whose /json/ lists workers and applications
    ray_gcs: str  # 127.0.0.1:P (RAY_ADDRESS for a driver on this machine)
    ray_dashboard: str  # http://127.0.0.1:Q (ray job submit --address)
    ray_token: str
    mlflow: str  # http://127.0.0.1:P (MLFLOW_TRACKING_URI)
    mlflow_artifacts: Path
    marker: str
    startup_s: float = 0.0
    servers: list[Server] = field(default_factory=list)

    def client_env(self, **extra: str) -> dict[str, str]:
        """The test's environment without any engine address, plus Ray's token and ``extra``."""
        env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARS}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.ray_token, RAY_USAGE_STATS_ENABLED="0",
                   MLFLOW_DISABLE_TELEMETRY="true", **{MARKER: self.marker}, **extra)
        return env

    def pids(self) -> list[int]:
        """Every live process that carries this session's marker (servers and what they spawned)."""
        needle = f"{MARKER}={self.marker}".encode()
        found = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                try:
                    if needle in (d / "environ").read_bytes().split(b"\0"):
                        found.append(int(d.name))
                except OSError:  # gone, or not ours to read
                    pass
        return found

    def listeners(self) -> set[tuple[str, str, int]]:
        return listening_sockets(self.pids())

    def get(self, url: str, headers: dict | None = None) -> tuple[int, bytes]:
        return http_get(url, headers)

    @property
    def ray_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.ray_token}"}


def listening_sockets(pids: list[int]) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every TCP socket in LISTEN state owned by ``pids``."""
    inodes: dict[str, str] = {}
    for pid in pids:
        try:
            argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if not argv[0]:  # exiting (a zombie's cmdline is empty): no name to report, no sockets left
                continue
            name = " ".join([Path(argv[0]).name, *argv[1:3]])[:100]
            for fd in (Path("/proc") / str(pid) / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = name
        except OSError:  # the process ended meanwhile
            continue
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A = LISTEN
                continue
            hex_ip, hex_port = cols[1].split(":")
            raw = bytes.fromhex(hex_ip)
            words = [raw[i:i + 4][::-1] for i in range(0, len(raw), 4)]  # little-endian 32-bit words
            ip = socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, b"".join(words))
            found.add((inodes[cols[9]], ip.removeprefix("::ffff:"), int(hex_port, 16)))
    return found


def _start(name: str, cmd: list[str], env: dict, logs: Path) -> Server:
    log = logs / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # its own process group: killed as one
    return Server(name, proc, log)


def _wait_until(server: Server, ready, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"{server.name} exited ({server.proc.returncode}) before {what}:\n{_tail(server.log)}")
        try:
            if ready():
                return
        except OSError:  # connection refused while it starts
            pass
        time.sleep(0.5)
    pytest.fail(f"{server.name}: no {what} within {timeout:.0f}s:\n{_tail(server.log)}")


def _stop(cluster: LocalServers) -> None:
    for server in reversed(cluster.servers):  # SIGTERM lets `ray start --block` stop its children
        try:
            os.killpg(server.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for server in reversed(cluster.servers):
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=10)
    deadline = time.monotonic() + 10  # descendants in their own sessions (Ray workers, executors)
    while cluster.pids() and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in cluster.pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")  # stopped as soon as the cluster tests are done
def local_servers(tmp_path_factory):
    """Start the three servers (in parallel, then wait for each); yield their addresses."""
    t0 = time.monotonic()
    root = tmp_path_factory.mktemp("servers")
    logs = root / "logs"
    logs.mkdir()
    # Ray's unix socket paths must stay under 108 characters: a short temp dir of its own.
    ray_tmp = Path(tempfile.mkdtemp(prefix="gpc", dir="/tmp"))
    (spark_port, spark_ui, worker_port, worker_ui, gcs, dash, agent, agent_grpc, metrics, client_port,
     node_mgr, obj_mgr, env_agent, mlflow_port) = free_ports(14)
    marker = secrets.token_hex(8)
    cluster = LocalServers(
        spark_master=f"spark://127.0.0.1:{spark_port}", spark_ui=f"http://127.0.0.1:{spark_ui}",
        ray_gcs=f"127.0.0.1:{gcs}", ray_dashboard=f"http://127.0.0.1:{dash}", ray_token=secrets.token_hex(16),
        mlflow=f"http://127.0.0.1:{mlflow_port}", mlflow_artifacts=root / "mlartifacts", marker=marker)
    # Ray keeps token auth on: the same random token for the head and every client. (This Ray
    # defaults to RAY_AUTH_MODE=disabled; a cluster should never run that way.)
    env = cluster.client_env(SPARK_LOCAL_IP="127.0.0.1", SPARK_HOME=str(_spark_home()))
    spark_class = str(_spark_home() / "bin" / "spark-class")
    try:
        cluster.servers.append(_start("spark-master", [
            spark_class, "org.apache.spark.deploy.master.Master",
            "--host", "127.0.0.1", "--port", str(spark_port), "--webui-port", str(spark_ui)], env, logs))
        cluster.servers.append(_start("ray-head", [
            str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
            "--port", str(gcs), "--num-cpus", "4", "--object-store-memory", str(512 * 1024**2),
            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
            "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
            "--metrics-export-port", str(metrics), "--ray-client-server-port", str(client_port),
            "--node-manager-port", str(node_mgr), "--object-manager-port", str(obj_mgr),
            "--runtime-env-agent-port", str(env_agent), "--temp-dir", str(ray_tmp),
            "--disable-usage-stats"], env, logs))
        cluster.servers.append(_start("mlflow", [
            str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(cluster.mlflow_artifacts), "--host", "127.0.0.1",
            "--port", str(mlflow_port), "--workers", "1"], env, logs))
        # The worker registers with a running master, so it starts once the master answers.
        master, ray_head, mlflow = cluster.servers
        _wait_until(master, lambda: http_get(f"{cluster.spark_ui}/json/")[0] == 200, "master web UI", 90)
        cluster.servers.append(_start("spark-worker", [
            spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
            "--port", str(worker_port), "--webui-port", str(worker_ui), "--cores", "2", "--memory", "2g",
            "--work-dir", str(root / "spark-work"), cluster.spark_master], env, logs))
        _wait_until(cluster.servers[-1], lambda: json.loads(http_get(f"{cluster.spark_ui}/json/")[1])
                    .get("aliveworkers", 0) >= 1, "worker registered with the master", 90)
        _wait_until(ray_head, lambda: http_get(f"{cluster.ray_dashboard}/api/jobs/", cluster.ray_auth)[0] == 200,
                    "Ray dashboard job API", 120)
        _wait_until(mlflow, lambda: http_get(f"{cluster.mlflow}/health")[1].strip() == b"OK", "MLflow /health", 90)
        cluster.startup_s = round(time.monotonic() - t0, 1)
        yield cluster
    finally:
        _stop(cluster)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        assert not cluster.pids(), f"processes left running after teardown: {cluster.pids()}"


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


@dataclass
class MlflowServer:
    """One ``mlflow server`` on 127.0.0.1 that a test can stop (by process id) and start again
    on the same port and backing store: a tracking server that goes away for a while."""

    root: Path
    port: int
    env: dict
    server: Server | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> None:
        self.server = _start("mlflow", [
            str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "mlartifacts"), "--host", "127.0.0.1",
            "--port", str(self.port), "--workers", "1"], self.env, self.root)
        _wait_until(self.server, lambda: http_get(f"{self.uri}/health")[1].strip() == b"OK", "MLflow /health", timeout)

    def stop(self) -> None:
        """SIGKILL the server's whole process group (the server and its uvicorn worker)."""
        if self.server and self.server.proc.poll() is None:
            os.killpg(self.server.proc.pid, signal.SIGKILL)
            self.server.proc.wait(timeout=10)
        self.server = None


@pytest.fixture
def mlflow_server(tmp_path):
    marker = secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARS}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", **{MARKER: marker})
    server = MlflowServer(root=tmp_path / "mlflow", port=free_ports(1)[0], env=env)
    server.root.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()
