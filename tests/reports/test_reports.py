"""Every build's reports: report.json against its documented schema, the Markdown summary, and
the HTML report with its plots, rendered in headless Chromium. Progress: bars on a terminal,
plain lines elsewhere."""

import io
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from packager import progress
from packager.reports import SCHEMA_FILE, html_report, markdown

# One report per chain kind; built_chains builds each tiny chain as ONNX and OpenVINO fp32.
KINDS = {"mean": "SentenceTransformer", "ce-3-labels": "CrossEncoder", "splade-max": "SparseEncoder"}
CHROMIUM = shutil.which("chromium")


def _report(built_chains: Path, name: str) -> tuple[Path, dict]:
    directory = built_chains / f"{name}-report"
    return directory, json.loads((directory / "report.json").read_text())


@pytest.mark.parametrize("name", KINDS)
def test_every_build_writes_the_three_reports(built_chains, name):
    directory, report = _report(built_chains, name)
    assert sorted(p.name for p in directory.iterdir()) == ["report.html", "report.json", "report.md"]
    errors = list(Draft202012Validator(json.loads(SCHEMA_FILE.read_text())).iter_errors(report))
    assert not errors, [e.message for e in errors]
    assert report["status"] == "ok" and report["chain_kind"] == KINDS[name]
    assert [v["name"] for v in report["variants"]] == [f"{name}-onnx-fp32", f"{name}-openvino-fp32"]
    for variant in report["variants"]:
        samples = variant["parity"]["samples"]
        assert set(samples) == set(json.loads((Path(variant["artifact"]) / "manifest.json").read_text())["verbs"])
        for sample in samples.values():  # one value per parity input (per label for cross-encoders)
            if KINDS[name] == "CrossEncoder":
                assert len(sample["reference"]) == len(sample["candidate"]) == 3 * variant["parity"]["inputs"]
            else:
                assert len(sample["cosine"]) == variant["parity"]["inputs"] and min(sample["cosine"]) > 0.99999
        assert variant["speed"]["inputs_per_second"] > 0 and variant["speed"]["latency_p50_ms"] > 0
    summary = (directory / "report.md").read_text()
    assert summary.startswith("## chain-packager build passed")
    for variant in report["variants"]:
        assert f"| `{variant['name']}` | `{variant['recipe']}` | passed |" in summary


@pytest.mark.parametrize("name", KINDS)
def test_the_model_card_states_build_parity_speed_and_loading(built_chains, name):
    _, report = _report(built_chains, name)
    for variant in report["variants"]:
        card = (Path(variant["artifact"]) / "README.md").read_text()
        for section in ("## How it was built", "## Parity with the torch reference: passed", "## Speed", "## Load it"):
            assert section in card, section
        assert f"Recipe `{variant['recipe']}`" in card
        assert f"{variant['speed']['inputs_per_second']:.1f} inputs/s" in card
        assert "from loader import load" in card and 'mlflow.pyfunc.load_model("models:/NAME@champion")' in card
        assert ("openvino" if "openvino" in variant["name"] else "onnxruntime") in card


def _images(page: str) -> list[bytes]:
    import base64

    return [base64.b64decode(data) for data in re.findall(r"src='data:image/png;base64,([^']+)'", page)]


def _pixels(png: bytes) -> tuple[tuple[int, int], bytes]:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return image.size, image.convert("RGBA").tobytes()


def _same_page(page: str, other: str) -> None:
    """The same text, and plots with the same pixels: the PNG encoder's bytes (zlib's choices)
    are not what the report says."""
    placeholder = re.compile(r"src='data:image/png;base64,[^']+'")
    assert placeholder.sub("src=PNG", page) == placeholder.sub("src=PNG", other)
    assert [_pixels(png) for png in _images(page)] == [_pixels(png) for png in _images(other)]


@pytest.mark.parametrize("name", KINDS)
def test_the_html_report_embeds_its_plots(built_chains, name):
    """Rendered from report.json alone, in whichever test process and whatever matplotlib style
    the process set before: the built report (drawn in the process that built it, maybe another
    pytest worker) is what this process draws."""
    import matplotlib

    directory, report = _report(built_chains, name)
    page = (directory / "report.html").read_text()
    _same_page(page, html_report({**report}))
    with matplotlib.rc_context({"axes.grid": True, "font.size": 14, "lines.linewidth": 3}):
        _same_page(page, html_report({**report}))
    assert (directory / "report.md").read_text() == markdown(report)
    images = _images(page)
    assert len(images) == 2 and all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in images)
    titles = re.findall(r"<figcaption>([^<]+)</figcaption>", page)
    expected = "Reference vs candidate scores" if KINDS[name] == "CrossEncoder" else "Per-input cosine"
    assert titles[0].startswith(expected) and titles[1].startswith("Speed vs accuracy")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test.sh installs it)")
@pytest.mark.parametrize("name", KINDS)
def test_the_html_report_renders_in_headless_chromium(built_chains, name, tmp_path):
    """Chromium loads the page; every plot decodes to its full size (checked by a script the test
    adds, after the load event), and a screenshot is taken."""
    directory, _ = _report(built_chains, name)
    page = (directory / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", "<script>addEventListener('load', () => document.body.dataset.images ="
                                  " JSON.stringify([...document.images].map(i => [i.complete, i.naturalWidth,"
                                  " i.naturalHeight])))</script></body>"))
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    images = json.loads(re.search(r'data-images="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    assert images == [[True, 800, 450], [True, 800, 450]]  # Figure(figsize=(8, 4.5)) at 100 dpi
    assert "chain-packager build" in dom and "passed" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, "--window-size=1200,2000", f"--screenshot={shot}", (directory / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000  # not a blank page


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_draws_bars_and_marks_failures():
    stream = _Terminal()
    progress.use_terminal(stream)
    try:
        with progress.step("export", total=3) as advance:
            for _ in range(3):
                advance()
        with pytest.raises(ValueError), progress.step("upload"):
            raise ValueError("server gone")
    finally:
        progress.stop()
    text = stream.getvalue()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # without the terminal's colour and cursor codes
    assert "\x1b[" in text and re.search(r"✓ export +━+ 3/3", plain) and "upload failed" in plain, plain


def test_progress_elsewhere_is_plain_lines(caplog):
    with caplog.at_level(logging.INFO, logger="packager"), progress.step("parity gate", total=2) as advance:
        advance()
        advance()
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert lines[0] == "parity gate ..." and re.fullmatch(r"parity gate: done in \d+\.\d s", lines[1])
