"""One of the concurrent trainings of the ingest benchmark (4; 1 with --tiny): prints its mean step time.

Usage: ingest_worker.py MODEL_DIR STEPS JOB_ID BARRIER_DIR TRAININGS   (JOB_ID 0: no metrics callback)

The trainings start their steps together (a file barrier in BARRIER_DIR), so each one's
steps overlap the others' the same way with and without the callback.
"""

import json
import os
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from deepe_widgets.runtime import make_callback

model_dir, steps, job_id, barrier = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
trainings = int(sys.argv[5])
torch.set_num_threads(1)
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir)
data = Dataset.from_dict({"text": [f"CAPITAL CARD | country: {i} | verified: yes" for i in range(64)]})
data = data.map(lambda r: tokenizer(r["text"]), remove_columns=["text"])


class StepClock(TrainerCallback):
    """Wall time from the end of the warm-up steps to the end of training: every
    callback's own work (ours included) and its flush thread's share of the CPU count."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, *args, **kwargs):
        self.end = time.perf_counter()


warmup = max(1, steps // 10)  # the first steps warm up
clock = StepClock(warmup)
callbacks = ([make_callback(job_id)] if job_id else []) + [clock]
trainer = Trainer(model=model, train_dataset=data, data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
                  args=TrainingArguments(output_dir="/tmp/deepe-ingest-bench", max_steps=steps, logging_steps=1,
                                         per_device_train_batch_size=4, save_strategy="no", report_to="none",
                                         disable_tqdm=True),
                  callbacks=callbacks)
(barrier / f"ready-{os.getpid()}").touch()
while len(list(barrier.glob("ready-*"))) < trainings:
    time.sleep(0.01)
trainer.train()
print(json.dumps({"step_seconds": (clock.end - clock.start) / (steps - warmup)}))
