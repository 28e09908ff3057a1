"""Extra arguments: fields of a trainer's config the form does not show, given as `--extra key=value`
(the CLI), the Extra arguments box (the form, tests/ui/test_launcher_extras.py) or EXTRA_ARGS (the API).
Each key is checked at submit against the method's config class (SFTConfig for SFT-Demo), and the
training applies them: its record shows the config's values."""

from __future__ import annotations

import json

import nbformat
import pytest

from deepe_widgets import cli, jobs, params, trainings
from deepe_widgets.errors import DeepeError

from helpers import deepe_json


def test_extra_values_are_json_literals_where_they_parse_else_text():
    assert params.parse_extra_args(["weight_decay=0.01", "packing=true", "optim=adamw_torch", "ids=[1, 2]",
                                    "note=\"5\"", "empty="]) == \
        {"weight_decay": 0.01, "packing": True, "optim": "adamw_torch", "ids": [1, 2], "note": "5", "empty": ""}
    assert params.parse_extra_args("# a comment\n\nseed_offset = 3\n") == {"seed_offset": 3}
    for bad, words in (("packing", "key=value"), ("my-key=1", "not a field name"), ("a=1\na=2", "twice")):
        with pytest.raises(DeepeError, match=words) as caught:
            params.parse_extra_args(bad)
        assert caught.value.field == "EXTRA_ARGS"
    lines = params.extra_args_lines({"optim": "adamw_torch", "flag": "true", "n": 5})
    assert params.parse_extra_args(lines) == {"optim": "adamw_torch", "flag": "true", "n": 5}  # reads back


def test_the_api_refuses_an_unknown_key_naming_the_closest_and_keys_that_are_not_extra(workspace):
    assert trainings.config_class("SFT-Demo") == "trl.SFTConfig"
    assert trainings.config_class("DPO-Demo") == "trl.DPOConfig"
    for extras, words in (({"weight_decai": 0.01}, "unknown extra argument 'weight_decai': SFTConfig has no such "
                                                   "field; did you mean 'weight_decay'?"),
                          ({"learning_rate": 0.1}, "is the parameter LEARNING_RATE: set it with --param"),
                          ({"output_dir": "/tmp/x"}, "set by the platform"),
                          ({"hub_token": "x"}, "looks like a secret")):
        with pytest.raises(DeepeError, match=words.replace("?", r"\?")) as caught:
            jobs.submit_training("SFT-Demo", "tiny", "demo-sft", params={"EXTRA_ARGS": extras})
        assert caught.value.field == "EXTRA_ARGS"
    with pytest.raises(DeepeError, match="did you mean 'beta'"):  # DPO-Demo's own config class
        jobs.submit_training("DPO-Demo", "tiny", "demo-dpo", params={"EXTRA_ARGS": {"betta": 0.2}})
    with pytest.raises(DeepeError, match="takes no extra arguments"):  # no EXTRA_ARGS in its notebook
        jobs.submit_training("Custom01", "tiny", "demo-sft", params={"EXTRA_ARGS": {"packing": True}})
    assert jobs.list_jobs() == []


def test_the_cli_refuses_an_unknown_extra_key_in_one_line_naming_the_closest(workspace, capsys):
    argv = ["train", "--method", "SFT-Demo", "--base-model", "tiny", "--dataset", "demo-sft",
            "--extra", "weight_decay=0.01", "--extra", "lr_schedular_type=constant"]
    assert cli.main(argv) == 2  # in this process: the CLI's own refusal path, without a second trl import
    err = capsys.readouterr().err
    assert err.strip() == ("error: unknown extra argument 'lr_schedular_type': SFTConfig has no such field; did "
                           "you mean 'lr_scheduler_type'?") and "Traceback" not in err
    assert cli.main([*argv[:7], "--extra", "packing"]) == 2
    assert "error: --extra 'packing' must look like key=value" in capsys.readouterr().err
    assert jobs.list_jobs() == []


@pytest.mark.training
def test_an_extra_argument_given_on_the_cli_reaches_sft_config_in_the_record(workspace):
    train = ["train", "--method", "SFT-Demo", "--base-model", "tiny", "--dataset", "demo-sft"]
    fast = [f"--param={p}" for p in ("max_steps=2", "batch_size=4", "learning_rate=5e-3", "max_seq_length=64",
                                     "save_steps=0", "eval_fraction=0")]
    done = deepe_json(*train, *fast, "--extra", "weight_decay=0.01",
                      "--extra", "lr_scheduler_type=constant", "--wait", "--json", timeout=600)
    assert done["status"] == "succeeded", done["error"]
    assert done["params"]["EXTRA_ARGS"] == {"weight_decay": 0.01, "lr_scheduler_type": "constant"}
    [record] = [r for r in done["records"] if r.endswith("training.ipynb")]
    text = "\n".join(o.get("text", "") for c in nbformat.read(record, as_version=4).cells for o in c.get("outputs", []))
    [line] = [line for line in text.splitlines() if "extra arguments in SFTConfig" in line]
    applied = json.loads(line.split("extra arguments in SFTConfig: ", 1)[1])
    assert applied == {"weight_decay": 0.01, "lr_scheduler_type": "constant"}  # read back from the config
    # a constant schedule: the learning rate every step logged is the one asked for
    rates = [m["value"] for m in deepe_json("jobs", "metrics", str(done["id"]), "--name", "learning_rate", "--json")]
    assert rates and set(rates) == {0.005}


def test_the_kernel_applies_extras_over_the_notebooks_fields_and_refuses_unknown_ones(tmp_path, capsys):
    from deepe_widgets.runtime import config_with_extras
    from deepe_widgets.runtime.image_generation import DiffusionTrainingArguments

    config = config_with_extras(DiffusionTrainingArguments, {"learning_rate": 0.5, "snr_gamma": 5.0},
                                output_dir=str(tmp_path), learning_rate=1e-4)
    assert (config.learning_rate, config.snr_gamma, config.output_dir) == (0.5, 5.0, str(tmp_path))  # extras win
    assert 'extra arguments in DiffusionTrainingArguments: {"learning_rate": 0.5, "snr_gamma": 5.0}' in \
        capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown extra argument 'snr_gama'.*did you mean 'snr_gamma'"):
        config_with_extras(DiffusionTrainingArguments, {"snr_gama": 5.0}, output_dir=str(tmp_path))
    assert config_with_extras(DiffusionTrainingArguments, {}, max_steps=3).max_steps == 3
