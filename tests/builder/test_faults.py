"""Faults that must lose nothing: a real `packager build` process killed at each stage, a write
refused by the kernel (file size limit, permissions), a registry that goes away mid-build."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from packager.cli import main
from packager.failpoints import ENV
from packager.runtime.integrity import verify_artifact
from packager.runtime.manifest import read_manifest
from packager.scratch import PREFIX as SCRATCH_PREFIX

NAME = "mean-onnx-fp32"
REPORTS = "mean-report"  # every build that got past its checks leaves its reports
# failpoint -> which artifact the output directory holds right after the kill
KILLS = {
    "build.reference_loaded": "previous",
    "build.exported": "previous",
    "build.validated": "previous",
    "artifact.exchanged": "new",
    "build.published": "new",
    "artifact.set_aside": "set aside",  # only where no atomic exchange exists (forced here)
}


def _build(chain: Path, out: Path, *, env: dict[str, str] | None = None, prefix: tuple[str, ...] = (),
           preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "packager.cli", "build", str(chain), "--out", str(out),
                           "--name", "mean", "-q"], env={**os.environ, **(env or {})}, preexec_fn=preexec_fn,
                          capture_output=True, text=True, timeout=300)


def _previous(tiny_artifacts, out: Path) -> str:
    """A complete artifact already in ``out``; returns its seal."""
    shutil.copytree(tiny_artifacts["mean"], out / NAME)
    return read_manifest(out / NAME).sealed_sha256


def _complete(artifact: Path) -> str:
    manifest = read_manifest(artifact)
    verify_artifact(artifact, manifest)
    return manifest.sealed_sha256


@pytest.mark.slow
@pytest.mark.parametrize("point", KILLS)
def test_a_build_killed_at_any_stage_leaves_a_complete_artifact(point, tiny_chains, tiny_artifacts, tmp_path,
                                                               monkeypatch):
    out, scratch = tmp_path / "dist", tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # this process's and the killed one's temporary folder
    previous = _previous(tiny_artifacts, out)
    env = {ENV: point, "TMPDIR": str(scratch)}
    if point == "artifact.set_aside":
        env["PACKAGER_NO_EXCHANGE"] = "1"
    killed = _build(tiny_chains["mean"], out, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = list(scratch.glob(f"{SCRATCH_PREFIX}*"))  # the dead build's scratch: its export, from then on
    assert bool(left) == (point != "build.reference_loaded"), left
    if KILLS[point] == "set aside":  # the fallback's one window: the next build puts it back
        (aside,) = out.glob(f".old-*-{NAME}-*")
        assert _complete(aside) == previous and not (out / NAME).exists()
    else:
        assert (_complete(out / NAME) == previous) == (KILLS[point] == "previous")
    # The next build removes what the dead one left (its stage, the set-aside copy) and publishes.
    assert main(["build", str(tiny_chains["mean"]), "--out", str(out), "--name", "mean", "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [NAME, REPORTS]
    assert _complete(out / NAME) != previous
    assert not any(path.exists() for path in left)


@pytest.mark.slow
def test_a_full_disk_fails_clearly_and_keeps_the_previous_artifact(tiny_chains, tiny_artifacts, tmp_path):
    """The kernel refuses writes past 100 kB (RLIMIT_FSIZE; Python ignores SIGXFSZ, so the write
    fails with EFBIG as it would with ENOSPC): the graph's weights do not fit."""
    out = tmp_path / "dist"
    previous = _previous(tiny_artifacts, out)

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    run = _build(tiny_chains["mean"], out, preexec_fn=limit_file_size)
    assert run.returncode == 5, run.stderr
    assert "is the disk full or the directory not writable" in run.stderr and "Traceback" not in run.stderr
    assert sorted(p.name for p in out.iterdir()) == [NAME, REPORTS] and _complete(out / NAME) == previous


@pytest.mark.slow
def test_an_unwritable_output_directory_fails_clearly_and_keeps_the_previous_artifact(tiny_chains, tiny_artifacts,
                                                                                       tmp_path):
    out = tmp_path / "dist"
    previous = _previous(tiny_artifacts, out)
    out.chmod(0o555)
    # Root ignores permission bits unless it gives up CAP_DAC_OVERRIDE (util-linux's setpriv).
    drop = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--") if os.geteuid() == 0 else ()
    try:
        run = _build(tiny_chains["mean"], out, prefix=drop)
    finally:
        out.chmod(0o755)
    assert run.returncode == 5, run.stderr
    assert "Permission denied" in run.stderr and "Traceback" not in run.stderr
    assert [p.name for p in out.iterdir()] == [NAME] and _complete(out / NAME) == previous


class _GoneAfterHealth(BaseHTTPRequestHandler):
    """A tracking server that answers the build's first check, then goes away."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 503)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")
        if self.path == "/health":  # stop serving and close the port: later calls are refused
            threading.Thread(target=lambda: (self.server.shutdown(), self.server.server_close())).start()

    def log_message(self, *args) -> None:
        pass


def test_a_registry_gone_mid_build_keeps_the_artifact_and_says_how_to_register_it(tiny_chains, tmp_path,
                                                                                   monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GoneAfterHealth)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    out = tmp_path / "dist"
    code = main(["build", str(tiny_chains["mean"]), "--out", str(out), "--name", "mean", "-q",
                 "--register", "mean", "--tracking-uri", uri])
    thread.join(timeout=10)
    err = capsys.readouterr().err
    assert code == 7, err
    assert f"kept at {out / NAME}; register it later with `packager register" in err and "Traceback" not in err
    _complete(out / NAME)
