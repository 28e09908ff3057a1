"""First use of a fresh workspace: the built-in methods and demo datasets, made once."""

import subprocess
import sys


def test_two_first_uses_at_once_both_succeed(home):
    setup = "from deepe_widgets import demo_data, methods; methods.ensure_builtins(); demo_data.ensure_demo_datasets()"
    procs = [subprocess.Popen([sys.executable, "-c", setup], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, text=True) for _ in range(3)]
    outputs = [(proc.wait(timeout=300), proc.stdout.read()) for proc in procs]
    assert [code for code, _ in outputs] == [0, 0, 0], outputs
    from deepe_widgets import datasets, methods

    names = [d.name for d in datasets.list_datasets()]
    assert len(names) == len(set(names)) and {"demo-sft", "demo-dpo", "demo-sd"} <= set(names)
    assert "SFT-Demo" in {m.name for m in methods.list_methods()}
    for name in ("demo-sft", "demo-sd"):
        assert datasets.preview(name, rows=2)[1], f"{name} reads back"
