"""The packaging spec: a release in one TOML file, checked against the shipped JSON Schema before
any work, with the build's flags overriding its keys."""

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from packager.builder.packaging_toml import SCHEMA_FILE, read_spec, schema
from packager.cli import main
from packager.cli.parser import parser
from packager.runtime.enums import Format, Precision
from packager.validators.gates import METRICS

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "texts.jsonl").write_text('{"text": "hello"}\n')
    spec = tmp_path / "packaging.toml"
    spec.write_text(text)
    return spec


FULL = """
[source]
path = "model"
trust_remote_code = false
allow_pickle = false

[build]
formats = ["onnx", "openvino"]
precisions = ["fp32", "int8"]
recipe = "onnx-int8-static-qdq"
out = "out"
name = "release"
token_embeddings = true
allow_parity_failure = false

[validation]
data = "texts.jsonl"

[validation.gates.int8]
mean_cosine = 0.99
min_cosine = 0.97

[calibration]
data = "texts.jsonl"

[registry]
name = "my-model"
tracking_uri = "http://127.0.0.1:5000"
alias = "staging"
force_new_version = true

[reports]
dir = "reports"
"""


def test_the_schema_ships_with_the_package_and_is_a_valid_schema():
    assert SCHEMA_FILE.is_file() and SCHEMA_FILE.is_relative_to(REPO / "packager")
    Draft202012Validator.check_schema(schema())
    # The metric names a gate may use are the parity metrics, no more, no fewer.
    assert set(schema()["$defs"]["gate"]["propertyNames"]["enum"]) == set().union(*METRICS.values())


def test_every_key_becomes_the_flag_of_the_same_meaning(tmp_path):
    flags = read_spec(_write(tmp_path, FULL))
    assert flags == {
        "source": str(tmp_path / "model"), "trust_remote_code": False, "allow_pickle": False,
        "format": "onnx,openvino", "precision": "fp32,int8", "recipe": "onnx-int8-static-qdq",
        "out": tmp_path / "out", "name": "release", "token_embeddings": True, "allow_parity_failure": False,
        "validation_data": tmp_path / "texts.jsonl", "calibration_data": tmp_path / "texts.jsonl",
        "gate": ["int8.mean_cosine=0.99", "int8.min_cosine=0.97"], "register": "my-model",
        "tracking_uri": "http://127.0.0.1:5000", "alias": "staging", "force_new_version": True,
        "reports": tmp_path / "reports",
    }
    build = parser(flags).parse_args(["build"])
    for dest, value in flags.items():  # each is a destination of `packager build`
        assert getattr(build, dest) == value, dest


def test_flags_override_the_spec(tmp_path):
    spec = _write(tmp_path, FULL)
    argv = ["build", "--spec", str(spec), "elsewhere", "--name", "flag-name", "--precision", "fp32",
            "--no-token-embeddings", "--no-register", "--gate", "int8.mean_cosine=0.5", "--alias", "candidate"]
    args = parser(read_spec(spec)).parse_args(argv)
    assert (args.source, args.name, args.precision, args.token_embeddings, args.register, args.alias) == (
        "elsewhere", "flag-name", "fp32", False, None, "candidate")
    assert args.format == "onnx,openvino" and args.out == tmp_path / "out"  # not given: from the spec
    assert args.gate[-1] == "int8.mean_cosine=0.5"  # a later --gate wins over the spec's


def test_the_example_release_spec_is_valid(tmp_path):
    """release/packaging.toml, with the model folder the workflow puts beside it."""
    spec = tmp_path / "release" / "packaging.toml"
    spec.parent.mkdir()
    for name in ("packaging.toml", "validation.jsonl", "calibration.txt"):
        (spec.parent / name).write_bytes((REPO / "release" / name).read_bytes())
    (tmp_path / "models" / "all-MiniLM-L6-v2").mkdir(parents=True)
    flags = read_spec(spec)
    assert flags["precision"] == "auto" and flags["register"] == "all-MiniLM-L6-v2"


@pytest.mark.parametrize("text, key, reason", [
    ('[source]\npath = "model"\n[build]\nfromats = ["onnx"]', "build.fromats", "unknown key"),
    ('[source]\npath = "model"\n[build]\nformats = ["onnx", "tflite"]', "build.formats[1]", "'tflite' is not one of"),
    ('[source]\npath = "model"\n[build]\nformats = "onnx"', "build.formats", "is not of type 'array'"),
    ('[source]\npath = "model"\n[build]\nprecisions = []', "build.precisions", "should be non-empty"),
    ('[source]\npath = "model"\n[build]\nprecisions = ["auto", "fp32"]', "build.precisions", '"auto" picks'),
    ('[source]\npath = "model"\n[build]\nname = "../escape"', "build.name", "does not match"),
    ('[source]\npath = "model"\n[validation.gates.int8]\nmean_cosin = 0.99', "validation.gates.int8.mean_cosin",
     "unknown metric"),
    ('[source]\npath = "model"\n[validation.gates.int4]\nmean_cosine = 0.99', "validation.gates.int4", "unknown key"),
    ('[source]\npath = "model"\n[validation.gates.int8]\nmean_cosine = "high"', "validation.gates.int8.mean_cosine",
     "is not of type 'number'"),
    ('[source]\npath = "model"\n[validation]\ndata = "missing.jsonl"', "validation.data", "no such file"),
    ('[source]\npath = "model"\n[calibration]\ndata = "missing.txt"', "calibration.data", "no such file"),
    ('[source]\npath = "model"\n[registry]\nalias = "champion"', "registry", "'name' is a required property"),
    ('[source]\npath = "model"\n[registry]\nname = "m"\nalias = "bad alias"', "registry.alias", "does not match"),
    ('[source]\npath = "model"\n[registry]\nname = "m"\nforce_new_version = "yes"', "registry.force_new_version",
     "is not of type 'boolean'"),
    ('[source]\npath = "model"\nid = "org/name"', "source", "exactly one of path"),
    ('[source]\npath = "no-such-folder"', "source.path", "no such folder"),
    ('[source]\npath = "model"\nrevision = "main"', "source.revision", "only a model id"),
    ('[source]\nid = "not a model id"', "source.id", "does not match"),
    ('[build]\nformats = ["onnx"]', "(top level)", "'source' is a required property"),
    ('[reports]\ndir = 3\n[source]\npath = "model"', "reports.dir", "is not of type 'string'"),
    ('[source]\npath = "model"\n[extra]\nx = 1', "extra", "unknown key"),
    ('[source\npath = "model"', "not valid TOML", "line 1"),
    ('[source]\npath = "model"\nx = ' + "[" * 3000 + "]" * 3000, "not valid TOML", "RecursionError"),
    ('[source]\npath = "model"\nx = ' + "9" * 5000, "not valid TOML", "ValueError"),
])
def test_an_invalid_spec_is_refused_with_its_key_before_any_work(tmp_path, capsys, text, key, reason):
    spec = _write(tmp_path, text)
    assert main(["build", "--spec", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    line = next((line for line in err.splitlines() if key in line), None)
    assert line is not None and reason in line, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_every_problem_is_listed_at_once(tmp_path, capsys):
    spec = _write(tmp_path, '[source]\npath = "model"\n[build]\nformats = ["x"]\nout = 1\n[registry]\nnam = "m"')
    assert main(["build", "--spec", str(spec)]) == 2
    err = capsys.readouterr().err
    for key in ("build.formats[0]", "build.out", "registry.nam", "registry:"):
        assert key in err, (key, err)


def test_a_missing_spec_and_no_source_are_usage_errors(tmp_path, capsys):
    assert main(["build", "--spec", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read it" in capsys.readouterr().err
    assert main(["build"]) == 2
    assert "give SOURCE, or --spec" in capsys.readouterr().err


def test_the_report_schema_is_a_valid_schema():
    Draft202012Validator.check_schema(json.loads((REPO / "packager" / "schemas" / "report.schema.json").read_text()))


def test_the_schemas_name_every_precision_and_format():
    packaging = json.loads((REPO / "packager" / "schemas" / "packaging.schema.json").read_text())
    report = json.loads((REPO / "packager" / "schemas" / "report.schema.json").read_text())
    build = packaging["properties"]["build"]["properties"]
    variant = report["$defs"]["variant"]["properties"]
    precisions = [p.value for p in Precision]
    assert build["precisions"]["items"]["enum"] == [*precisions, "auto"]
    assert list(packaging["properties"]["validation"]["properties"]["gates"]["properties"]) == precisions
    assert variant["precision"]["enum"] == precisions
    assert build["formats"]["items"]["enum"] == variant["format"]["enum"] == [f.value for f in Format]
