"""The release flow of .github/workflows/release-model.yml, run here through the CLI: every `run:`
step of both jobs, in order, with GitHub's expressions resolved as a runner resolves them and a
local MLflow registry as the tracking server. The Install steps are skipped (this checkout's
.venv is what they make); the approval gate is GitHub's, so the test checks it is declared."""

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "release-model.yml"
SKIPPED = {"Install"}


def _expand(text: str, context: dict[str, str]) -> str:
    """Replace each ${{ a || 'b' }} with the first non-empty operand: a context value or a quoted
    literal. An expression this does not know fails the test rather than running half-resolved."""

    def value(match: re.Match) -> str:
        for operand in (o.strip() for o in match.group(1).split("||")):
            found = operand[1:-1] if operand.startswith("'") else context[operand]
            if found:
                return found
        return ""

    return re.sub(r"\$\{\{\s*(.*?)\s*\}\}", value, text)


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line) if path.exists() else {}


@pytest.mark.slow  # the whole workflow through the CLI, every step in turn (25-34 s): run by .ci/run
def test_the_release_workflow_builds_reports_registers_and_promotes(tmp_path, tiny_chains):
    workflow = yaml.safe_load(WORKFLOW.read_text())
    jobs = workflow["jobs"]
    assert jobs["promote"]["needs"] == "build" and jobs["promote"]["environment"] == "production"

    checkout = tmp_path / "checkout"
    (checkout / "release").mkdir(parents=True)
    (checkout / ".venv").symlink_to(REPO / ".venv")
    # The release spec, for a tiny model (the workflow_dispatch input `spec` names it).
    (checkout / "release" / "tiny.toml").write_text(f"""
[source]
path = "{tiny_chains['mean']}"
[build]
formats = ["onnx"]
precisions = ["fp32"]
out = "../dist"
name = "tiny"
[registry]
name = "tiny-release"
""")
    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    context = {"inputs.spec": "release/tiny.toml", "secrets.MLFLOW_TRACKING_URI": registry,
               "secrets.MLFLOW_TRACKING_TOKEN": ""}
    summary = tmp_path / "step-summary.md"
    env = {**os.environ, **{k: _expand(v, context) for k, v in workflow["env"].items()},
           "GITHUB_STEP_SUMMARY": str(summary)}

    uploaded = []
    for name in ("build", "promote"):
        for step in jobs[name]["steps"]:
            if "uses" in step:
                if step["uses"].startswith("actions/upload-artifact"):
                    uploaded.append(checkout / step["with"]["path"])
                continue
            if step["name"] in SKIPPED:
                continue
            output = tmp_path / f"output-{step.get('id', 'none')}"
            run = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                                  _expand(step["run"], context)], cwd=checkout, capture_output=True, text=True,
                                 env={**env, "GITHUB_OUTPUT": str(output)}, timeout=600)
            assert run.returncode == 0, (step["name"], run.stdout, run.stderr)
            if name == "build" and step["name"].startswith("Build"):  # CI's log: plain lines, no bars
                assert "\x1b[" not in run.stderr and "parity gate, " in run.stderr and "Traceback" not in run.stderr
            context.update({f"steps.{step['id']}.outputs.{k}": v for k, v in _outputs(output).items()})
        context.update({f"needs.{name}.outputs.{k}": _expand(v, context)
                        for k, v in jobs[name].get("outputs", {}).items()})

    assert context["needs.build.outputs.model"] == "tiny-release"
    version = context["needs.build.outputs.version"]
    client = MlflowClient(registry, registry_uri=registry)
    model = client.get_registered_model("tiny-release")
    aliases = {alias: str(number) for alias, number in model.aliases.items()}
    assert aliases == {"candidate": version, "champion": version}
    # The reports: uploaded by the job, in its summary, and logged with the registered version.
    (reports,) = uploaded
    assert sorted(p.name for p in reports.iterdir()) == ["report.html", "report.json", "report.md"]
    assert summary.read_text() == (reports / "report.md").read_text()
    run_id = client.get_model_version("tiny-release", version).run_id
    logged = {Path(f.path).name for f in client.list_artifacts(run_id, "reports")}
    assert {"report.json", "report.md", "report.html", "parity.json", "README.md"} <= logged
