"""Real servers on loopback for the registry tests: PostgreSQL clusters made with Debian's
postgresql binaries, `mlflow server` processes backed by SQLite or PostgreSQL, and `mlflow models
serve` of a registered version in a torch-free environment. Each is
stopped (and its data removed with the test's temporary directory) when its context ends."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MLFLOW = Path(sys.executable).with_name("mlflow")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian layout), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


@contextmanager
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with a database ``mlflow``; yields its URI.
    PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` user, in a
    directory of its own (pytest's temporary directories are private to root)."""
    bin_dir = postgres_bin()
    assert bin_dir is not None, "PostgreSQL is not installed (scripts/test.sh installs Debian's postgresql)"
    root = Path(tempfile.mkdtemp(prefix="packager-postgres-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = root / "data"
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
                    "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True,
                   capture_output=True)
    try:
        subprocess.run([*as_user, str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                        "mlflow"], check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def mlflow_server(root: Path, backend_uri: str | None = None, *, artifacts: Path | None = None) -> Iterator[str]:
    """``mlflow server`` on a free loopback port, serving its artifacts itself (uploads go
    through it); yields its URL once /health answers."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    backend_uri = backend_uri or f"sqlite:///{root / 'mlflow.db'}"
    command = [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
               "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts or root / "artifacts")]
    with _serving(command, f"http://127.0.0.1:{port}", "/health", root / "server.log") as url:
        yield url


@contextmanager
def model_server(python: Path, model_uri: str, tracking_uri: str, log: Path) -> Iterator[str]:
    """``mlflow models serve`` of ``model_uri`` with the ``mlflow`` of ``python``'s environment
    (``--env-manager local``: that environment is the service's), on a free loopback port;
    yields its URL once /ping answers."""
    port = free_port()
    command = [str(python.with_name("mlflow")), "models", "serve", "-m", model_uri, "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # As if the environment were activated: the server runs its uvicorn from PATH.
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": "",
           "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with _serving(command, f"http://127.0.0.1:{port}", "/ping", log, env=env) as url:
        yield url


@contextmanager
def gateway(endpoints: dict[str, str], root: Path) -> Iterator[str]:
    """MLflow's AI Gateway (``mlflow gateway start``, this environment's ``mlflow[gateway]``) on a
    free loopback port, with one ``llm/v1/embeddings`` endpoint per name, each the
    ``mlflow-model-serving`` provider in front of a model server's URL; yields its URL once
    /health answers."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    config = root / "gateway.yaml"
    config.write_text(yaml.safe_dump({"endpoints": [
        {"name": name, "endpoint_type": "llm/v1/embeddings",
         "model": {"provider": "mlflow-model-serving", "name": name, "config": {"model_server_url": url}}}
        for name, url in endpoints.items()]}))
    port = free_port()
    command = [str(MLFLOW), "gateway", "start", "--config-path", str(config), "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
    with _serving(command, f"http://127.0.0.1:{port}", "/health", root / "gateway.log") as url:
        yield url


@contextmanager
def _serving(command: list[str], url: str, health: str, log_path: Path, *,
             env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``command`` in its own process group until the context ends; yield ``url`` once
    ``health`` answers (2 minutes at most)."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    urllib.request.urlopen(f"{url}{health}", timeout=2).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{' '.join(command[:3])} did not start:\n{log_path.read_text()[-3000:]}") \
                            from None
                    time.sleep(0.5)
            yield url
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def have_postgres() -> bool:
    return postgres_bin() is not None and (os.geteuid() != 0 or shutil.which("runuser") is not None)
