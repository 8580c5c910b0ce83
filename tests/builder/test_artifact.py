"""Staging and publishing: recovery after killed builds."""

from __future__ import annotations

from packager.publish import remove_stale_stages

DEAD = "999999999"  # no such process


def test_killed_swap_puts_the_previous_artifact_back(tmp_path):
    old = tmp_path / f".old-{DEAD}-my-old-model-onnx-fp32-1a2b3c4d"
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    stage = tmp_path / f".stage-{DEAD}-my-old-model-onnx-fp32-xyz"
    stage.mkdir()
    remove_stale_stages(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-old-model-onnx-fp32"]
    assert (tmp_path / "my-old-model-onnx-fp32" / "manifest.json").exists()


def test_set_aside_copy_is_dropped_when_the_new_artifact_is_in_place(tmp_path):
    (tmp_path / "m-onnx-fp32").mkdir()
    (tmp_path / f".old-{DEAD}-m-onnx-fp32-1a2b3c4d").mkdir()
    remove_stale_stages(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-onnx-fp32"]


def test_work_of_a_live_build_is_left_alone(tmp_path):
    import os

    live = tmp_path / f".stage-{os.getpid()}-m-onnx-fp32-abc"
    live.mkdir()
    remove_stale_stages(tmp_path)
    assert live.exists()
