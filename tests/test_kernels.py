"""kernels: the installed kernelspecs a method stage may name, and what the run record says of one."""

from __future__ import annotations

import json

import pytest

from deepe_widgets import kernels
from deepe_widgets.errors import DeepeError

from helpers import deepe


def test_the_default_python3_kernel_is_installed_and_accepted():
    assert "python3" in kernels.installed_kernels()
    kernels.require_kernel("python3")  # no error


def test_an_unknown_kernel_is_refused_naming_the_installed_ones_and_the_fix():
    with pytest.raises(DeepeError) as raised:
        kernels.require_kernel("no-such-kernel-xyz", field="kernel")
    message = raised.value.message
    assert "'no-such-kernel-xyz' is not installed" in message
    assert "python3" in message  # what is there to choose instead
    assert "python -m ipykernel install --user --name" in message
    assert raised.value.field == "kernel"


def test_the_cli_refuses_an_unknown_kernel_with_one_error_line_and_exit_2(home, tmp_path):
    done = deepe("methods", "test", str(tmp_path / "t.py"), "--base-model", "x", "--dataset", "y",
                 "--kernel", "nope-kernel", check=False, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "error: kernel 'nope-kernel' is not installed" in done.stderr
    assert "Traceback" not in done.stderr


def test_kernel_environment_of_python3_lists_its_python_and_packages():
    info = kernels.kernel_environment("python3")
    assert "probe_error" not in info
    assert info["kernel"] == "python3"
    assert info["python_version"].count(".") == 2
    assert info["packages"]["transformers"]  # installed beside the workbench
    assert set(info["packages"]) >= {"torch", "peft", "trl"}


def test_kernel_environment_of_a_broken_kernel_says_why(tmp_path, monkeypatch):
    # a real kernelspec whose Python does not exist, in a Jupyter data folder of the test's own
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    folder = tmp_path / "kernels" / "gone-python"
    folder.mkdir(parents=True)
    (folder / "kernel.json").write_text(json.dumps({
        "argv": [str(tmp_path / "no" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "gone", "language": "python"}))
    assert "gone-python" in kernels.installed_kernels()
    info = kernels.kernel_environment("gone-python")
    assert "could not be started" in info["probe_error"]
