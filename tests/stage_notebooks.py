"""Small stage notebooks for queue and runner tests: "any notebook becomes a method".

They train nothing heavy: their `trainer` is plain user code honouring the
contract (train(), save_pretrained()), so a queue test runs in a second or two."""

from pathlib import Path

import nbformat

PARAMETERS = 'MODEL_PATH = ""\nDATASET_PATH = ""\nOUTPUT_DIR = "output"\nJOB_ID = 0\nSLEEP = 0.0\nFAIL = False'

PLAIN_TRAINER = '''
import os, time

class Saver:
    def __init__(self, name):
        self.name = name
    def save_pretrained(self, path):
        os.makedirs(path, exist_ok=True)
        open(os.path.join(path, self.name + ".txt"), "w").write(os.environ.get("DEEPE_KERNEL_MARKER", "default"))

class PlainTrainer:
    class args:
        output_dir = OUTPUT_DIR
    def train(self, resume_from_checkpoint=None):
        log_event(f"plain trainer running in {os.environ.get('DEEPE_KERNEL_MARKER', 'default')}")
        open(os.path.join(os.path.dirname(OUTPUT_DIR), "started.txt"), "w").write(repr(time.time()))
        deadline = time.time() + SLEEP
        while time.time() < deadline:
            time.sleep(0.1)
        if FAIL:
            raise RuntimeError("the user's training code failed on purpose")

model, tokenizer, trainer = Saver("model"), Saver("tokenizer"), PlainTrainer()
'''


def plain_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(PLAIN_TRAINER)]
    nbformat.write(nb, path)
    return path
