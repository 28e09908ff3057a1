"""What a stage kernel imports: the metrics callback, event logging, dataset helpers
and the platform's train-and-save step.

Imports nothing from ipywidgets, voila or bqplot; transformers is imported only
when a callback is made, so the module loads in any training environment.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

# Rows are written as soon as they arrive, but at most once per this many seconds,
# so a trainer logging every few milliseconds still costs one small write per interval.
FLUSH_SECONDS = float(os.environ.get("DEEPE_METRIC_FLUSH_SECONDS", "0.2"))
# At the end of training, how long rows the database did not take yet (a restart) are tried again
# before the stage goes on without them.
FINAL_FLUSH_SECONDS = float(os.environ.get("DEEPE_METRIC_FINAL_FLUSH_SECONDS", "60"))

# A stopping worker writes this file into the run folder: the training saves a checkpoint at
# the end of its current step and stops; the job goes back to the queue and resumes from there.
STOP_FILE = ".deepe-stop-requested"


class HandedBack(Exception):
    """The worker running this job is stopping: a checkpoint was saved, the job will resume."""


# Deprecations one library raises about another's call (peft and TRL read transformers'
# `is_gradient_checkpointing`): nothing a method's author can act on. Their own warnings still show.
LIBRARY_DEPRECATIONS = (r"`is_gradient_checkpointing` is deprecated",)


def quiet_library_warnings() -> None:
    """Hide `LIBRARY_DEPRECATIONS` in this kernel (the built-ins call it first); nothing else."""
    import warnings

    for message in LIBRARY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)


def trackers(report_to: str) -> list[str] | str:
    """A method's `REPORT_TO` parameter as a trainer's `report_to`: "none", or trackers by name
    ("mlflow", "tensorboard,wandb" …) to log to live, beside the workbench. Their settings (tracking
    URI, experiment, keys) come from the kernel's environment only (MLFLOW_TRACKING_URI,
    TENSORBOARD_LOGGING_DIR, WANDB_API_KEY …), never from a parameter: parameters are kept in records."""
    names = [name.strip().lower() for name in str(report_to or "").split(",") if name.strip()]
    if not names or names == ["none"]:
        return "none"
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    unknown = [name for name in names if name not in INTEGRATION_TO_CALLBACK]
    if unknown:
        raise ValueError(f"REPORT_TO: no tracker named {', '.join(unknown)}; transformers reports to "
                         f"{', '.join(sorted(INTEGRATION_TO_CALLBACK))} (comma-separated), or none")
    return names


def config_fields(config_class) -> list[str]:
    """The fields a trainer's config dataclass takes (SFTConfig: `packing`, `max_length`, …)."""
    import dataclasses

    return sorted(f.name for f in dataclasses.fields(config_class) if f.init)


def unknown_extra_args(config_class, extra_args: dict) -> dict[str, str | None]:
    """The keys of `extra_args` that `config_class` has no field for, each with its closest field
    (difflib) or None. The workbench checks a submit with it, and `config_with_extras` the kernel."""
    import difflib

    fields = config_fields(config_class)
    return {key: next(iter(difflib.get_close_matches(key, fields, n=1, cutoff=0.6)), None)
            for key in extra_args if key not in fields}


def unknown_extra_arg_message(key: str, closest: str | None, config_class) -> str:
    """One sentence for an extra argument the trainer's config has no field for: the closest field, else
    its fields (a few) or where to read them (many)."""
    fields = config_fields(config_class)
    hint = f"did you mean {closest!r}?" if closest else f"its fields: {', '.join(fields)}" if len(fields) <= 30 \
        else f"see {config_class.__name__}'s fields in its library's documentation"
    return f"unknown extra argument {key!r}: {config_class.__name__} has no such field; {hint}"


def config_with_extras(config_class, extra_args: dict | None, **fields):
    """`config_class(**fields)`, with the EXTRA_ARGS parameter's fields on top (they win): the one line
    by which a training notebook takes the Extra arguments of the form and `--extra` of the CLI.
    The fields it set are logged as the config holds them, so the record shows what was applied."""
    extras = dict(extra_args or {})
    unknown = unknown_extra_args(config_class, extras)
    if unknown:
        key, closest = next(iter(unknown.items()))
        raise ValueError(unknown_extra_arg_message(key, closest, config_class))
    config = config_class(**{**fields, **extras})
    if extras:
        applied = {key: getattr(getattr(config, key), "value", getattr(config, key)) for key in extras}
        log_event(f"extra arguments in {config_class.__name__}: {json.dumps(applied, default=str)}")
    return config


HELD_OUT_SPLITS = ("test", "heldout", "held-out", "validation", "eval")


def held_out_rows(raw, columns, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) row indices: rows whose `split` names a held-out split, or without a
    `split` column `eval_fraction` of them drawn with `seed`. Refuses a split that leaves nothing to train on."""
    import random

    if "split" in columns:
        held = [i for i, s in enumerate(raw["split"]) if str(s).lower() in HELD_OUT_SPLITS]
    else:
        count = max(1, round(len(raw) * eval_fraction)) if eval_fraction > 0 and len(raw) > 1 else 0
        held = sorted(random.Random(seed).sample(range(len(raw)), count))
    held_set = set(held)
    train = [i for i in range(len(raw)) if i not in held_set]
    if not train:
        raise ValueError("every row is held out: nothing is left to train on")
    return train, held


def split_held_out(dataset, eval_fraction: float = 0.1, seed: int = 42):
    """(training rows, held-out rows) of a `datasets.Dataset`, by `held_out_rows`. The training
    notebooks and the evaluation stage both call it, so an evaluation scores exactly the rows its
    training never saw. Split before MAX_SAMPLES caps the training rows."""
    train, held = held_out_rows(dataset, dataset.column_names, eval_fraction, seed)
    return dataset.select(train), dataset.select(held)


def held_out_note(train_rows: int, held_rows: int, eval_fraction: float, has_split_column: bool) -> str:
    """The log line that says which rows a training holds out, or that it evaluates nothing."""
    if held_rows:
        how = "the `split` column" if has_split_column else f"EVAL_FRACTION {eval_fraction:g}"
        return f"{held_rows} held-out rows ({how}), {train_rows} training rows: evaluation while training"
    why = ("the `split` column marks no row as validation or test" if has_split_column
           else "EVAL_FRACTION is 0" if eval_fraction <= 0 else f"{train_rows} rows are too few to hold any out")
    return f"no held-out rows ({why}): no evaluation"


def evaluation_arguments(eval_steps: float = 0, batch_size: int = 8, loss_only: bool = True) -> dict:
    """The `TrainingArguments` of an evaluation on the held-out rows: before the first step and every
    `eval_steps` steps (0: every tenth of the run, about 10 evaluations, from the run's total steps), in
    batches of `batch_size`, moving results off the accelerator every few batches so a long held-out
    set cannot fill its memory. `loss_only`: keep no logits (nothing is generated or scored from them)."""
    return {"eval_strategy": "steps",
            # below 1, transformers reads eval_steps as a share of the run's total steps
            "eval_steps": eval_steps if eval_steps and eval_steps > 0 else 0.1,
            "eval_on_start": True, "per_device_eval_batch_size": max(1, int(batch_size)),
            "eval_accumulation_steps": 4, "prediction_loss_only": bool(loss_only)}


def log_event(message: str, level: str = "INFO") -> None:
    """One line in the stage log: `[deepe] <time> <LEVEL> <message>`."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"[deepe] {stamp} {level:<7} {message}", flush=True)


class MetricSink:
    """Buffers metric rows and writes them in batches from a thread (at most every FLUSH_SECONDS).

    Rows are unique per (job, step, name): a retried step never duplicates a row. Rows the
    database does not take (a restart, a blip) stay buffered and go with the next flush.
    With `job_id` 0 (a local test run) metrics only go to the log.
    """

    def __init__(self, job_id: int):
        self.job_id = int(job_id or 0)
        self._rows: list[dict] = []
        self._progress: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # one flush at a time: a row in flight is never missed by another
        self._stop = threading.Event()
        self._pending = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing_since: float | None = None  # the database has not taken a flush since then
        self._last_error: Exception | None = None
        if self.job_id:
            self._thread = threading.Thread(target=self._loop, name="deepe-metrics", daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def add(self, step: int, values: dict[str, Any], epoch: float | None) -> None:
        wall = time.time()
        rows = [{"job_id": self.job_id, "step": int(step), "name": str(name), "value": float(value),
                 "epoch": epoch, "wall_time": wall}
                for name, value in values.items()
                if isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(float(value))]
        if self.job_id and rows:
            with self._lock:
                self._rows.extend(rows)
            self._pending.set()

    def set_progress(self, step: int, total: int) -> None:
        with self._lock:
            self._progress = (int(step), int(total))

    def _loop(self) -> None:
        from .. import store

        try:  # open (and migrate) the database now, not when the first rows wait on it
            store.get_engine()
        except Exception as exc:
            print(f"[deepe] metrics database not reachable yet: {exc}", file=sys.stderr, flush=True)
        while not self._stop.is_set():
            self._pending.wait(timeout=1.0)  # progress alone is written once a second
            self._pending.clear()
            self.flush()
            failing = self._failing_since
            # while the database does not answer, try less often (up to every 5 s)
            self._stop.wait(FLUSH_SECONDS if failing is None else min(5.0, max(FLUSH_SECONDS,
                                                                                (time.monotonic() - failing) / 4)))

    def flush(self) -> bool:
        """Write the buffered rows; False when the database did not take them (they stay buffered)."""
        with self._writing:
            return self._flush()

    def _flush(self) -> bool:
        with self._lock:
            rows, self._rows = self._rows, []
            progress, self._progress = self._progress, None
        if not (rows or progress) or not self.job_id:
            return True
        from sqlalchemy import update

        from .. import store

        try:
            engine = store.get_engine()
            with engine.begin() as conn:
                if rows:
                    conn.execute(_insert_ignore(engine, store.Metric.__table__), rows)
                if progress:
                    conn.execute(update(store.Job.__table__)
                                 .where(store.Job.__table__.c.id == self.job_id)
                                 .values(progress_step=progress[0], progress_total=progress[1]))
        except Exception as exc:  # keep training; put the rows back for the next flush
            self._last_error = exc
            with self._lock:
                self._rows[:0] = rows
                self._progress = self._progress or progress
                first = self._failing_since is None
                if first:
                    self._failing_since = time.monotonic()
            if first:  # once per outage, not once per flush
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                print(f"[deepe] metrics write failed, keeping the rows to try again: {reason}", file=sys.stderr,
                      flush=True)
            return False
        with self._lock:
            failing, self._failing_since = self._failing_since, None
        if failing is not None:
            log_event(f"metrics written again after {time.monotonic() - failing:.1f} s; no row lost")
        return True

    def drain(self, timeout: float = FINAL_FLUSH_SECONDS) -> bool:
        """Flush until every buffered row is written, trying again for up to `timeout` seconds."""
        from sqlalchemy.exc import InterfaceError, OperationalError

        from ..errors import DatabaseUnavailable

        deadline = time.monotonic() + timeout
        wait = 0.25
        while not self.flush():
            # only a database that does not answer is worth waiting for (not a refused row)
            transient = isinstance(self._last_error, (OperationalError, InterfaceError, DatabaseUnavailable))
            if not transient or time.monotonic() + wait > deadline:
                with self._lock:
                    lost = len(self._rows)
                why = f"the database did not answer for {timeout:g} s" if transient else str(self._last_error)
                log_event(f"{lost} metric rows could not be written: {why}", "WARNING")
                return False
            time.sleep(wait)
            wait = min(5.0, wait * 2)
        return True

    def close(self) -> None:
        self._stop.set()
        self._pending.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=5)
        self.drain()


def _insert_ignore(engine, table):
    """INSERT … ON CONFLICT DO NOTHING for SQLite and PostgreSQL."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing(index_elements=["job_id", "step", "name"])


_callback_class = None


def _make_callback_class():
    global _callback_class
    if _callback_class is not None:
        return _callback_class
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        """Streams every value the trainer logs (loss, learning_rate, reward, eval_* …)."""

        def __init__(self, job_id: int = 0, progress_every: int = 1, eval_perplexity: bool = False):
            self.sink = MetricSink(job_id)
            # log exp(eval_loss) as eval_perplexity: only where eval_loss is a token cross-entropy (SFT,
            # a causal LM), so the method says so; computed here, as no trainer reports it
            self.eval_perplexity = eval_perplexity
            self.progress_every = max(1, progress_every)
            self._last_progress_print = 0.0
            self.stop_file = Path.cwd() / STOP_FILE  # the run folder the stage started in
            self.stopped_for_hand_back = False
            # set by script mode for a script whose own flags could not say it: log every step
            # (a live curve) and stop at the form's MAX_STEPS
            self.log_every_step = False
            self.stop_at_step: int | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.sink.set_progress(state.global_step, state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            logs.pop("epoch", None)
            if self.eval_perplexity and isinstance(logs.get("eval_loss"), (int, float)):
                logs["eval_perplexity"] = math.exp(min(float(logs["eval_loss"]), 700.0))  # 700: no overflow
            self.sink.add(state.global_step, logs, state.epoch)
            shown = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in logs.items()}
            if state.epoch is not None:  # the trainer's own print of the step (dropped) showed it too
                shown["epoch"] = round(state.epoch, 4)
            print(f"[deepe] step {state.global_step}/{state.max_steps} {json.dumps(shown)}", flush=True)

        def on_step_end(self, args, state, control, **kwargs):
            self.sink.set_progress(state.global_step, state.max_steps)
            if self.log_every_step:
                control.should_log = True
            if self.stop_at_step and state.global_step >= self.stop_at_step:
                control.should_training_stop = True
            if not self.stopped_for_hand_back and self.stop_file.exists():
                self.stopped_for_hand_back = True
                control.should_save = True  # a checkpoint the next attempt resumes from
                control.should_training_stop = True
                log_event(f"the worker is stopping: saving a checkpoint at step {state.global_step} "
                          f"and handing the job back to the queue", "WARNING")
            now = time.monotonic()
            if now - self._last_progress_print > 10:
                self._last_progress_print = now
                log_event(f"progress {state.global_step}/{state.max_steps}")

        def on_train_end(self, args, state, control, **kwargs):
            self.sink.set_progress(state.global_step, state.max_steps)
            self.sink.drain()

    _callback_class = MetricsCallback
    return MetricsCallback


def make_callback(job_id: int = 0, eval_perplexity: bool = False):
    """The `callback` a trainer gets in `callbacks=[callback]`; `eval_perplexity`: also log
    exp(eval_loss) as `eval_perplexity` (for a causal LM's token loss)."""
    return _make_callback_class()(job_id, eval_perplexity=eval_perplexity)


def __getattr__(name: str):
    if name == "MetricsCallback":
        return _make_callback_class()
    raise AttributeError(name)


def newest_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest `checkpoint-N` holding a trainer state, so a resume skips half-written ones."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = []
    for child in root.glob("checkpoint-*"):
        suffix = child.name.rsplit("-", 1)[-1]
        if suffix.isdigit() and (child / "trainer_state.json").is_file():
            found.append((int(suffix), child))
    return str(max(found)[1]) if found else None


def train_and_save(trainer, model, tokenizer, output_dir: str) -> None:
    """The platform's step: train (resuming from a complete checkpoint), then save model and tokenizer."""
    resume = newest_complete_checkpoint(getattr(trainer.args, "output_dir", output_dir))
    if resume:
        log_event(f"resuming from {resume}")
    log_event("training started")
    _drop_duplicate_printer(trainer)
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    except BaseException as exc:
        log_event(f"training failed: {type(exc).__name__}: {exc}", "ERROR")
        raise
    finally:
        _flush_sinks(trainer)
    if any(getattr(c, "stopped_for_hand_back", False) for c in _callbacks(trainer)):
        raise HandedBack(f"stopped at step {trainer.state.global_step} with a checkpoint; the job resumes "
                         f"from it on the next worker")
    log_event(f"training succeeded: {getattr(result, 'global_step', '?')} steps, "
              f"train loss {getattr(result, 'training_loss', float('nan')):.4f}")
    log_event("saving")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    trained = _trained_model(trainer, model)
    trained.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    log_event(f"saved to {output_dir}")


def _drop_duplicate_printer(trainer) -> None:
    """A trainer with our MetricsCallback logs each step as a `[deepe] step` line already: its own
    PrinterCallback (disable_tqdm=True) would print the same values again, as a dict of strings."""
    callbacks = _callbacks(trainer)
    if not any(isinstance(c, _make_callback_class()) for c in callbacks):
        return
    from transformers.trainer_callback import PrinterCallback

    for callback in callbacks:
        if isinstance(callback, PrinterCallback):
            trainer.remove_callback(callback)


def _callbacks(trainer) -> list:
    return list(getattr(getattr(trainer, "callback_handler", None), "callbacks", []))


def _flush_sinks(trainer) -> None:
    for callback in _callbacks(trainer):
        sink = getattr(callback, "sink", None)
        if isinstance(sink, MetricSink):
            sink.drain()


def _trained_model(trainer, model):
    """Save what was trained: the trainer's PEFT-wrapped model when it wrapped the user's."""
    inner = getattr(trainer, "model", None)
    if inner is not None and inner is not model and type(inner).__name__.startswith("Peft"):
        return inner
    return model


def load_dataset_file(path: str):
    """A `datasets.Dataset` from a jsonl, json, csv or parquet file."""
    from datasets import load_dataset

    suffix = Path(path).suffix.lower()
    builder = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(suffix)
    if builder is None:
        raise ValueError(f"unsupported dataset file {path!r}: use jsonl, json, csv or parquet")
    return load_dataset(builder, data_files=str(path), split="train")


def prompt_completion_pairs(dataset, input_column: str = "", output_column: str = "", max_samples: int = 0):
    """A dataset of `prompt` / `completion` strings.

    With both columns named, those two; otherwise `instruction` (+ `input`) and `output`,
    or `question` and `answer`.
    """
    columns = set(dataset.column_names)
    if input_column or output_column:
        missing = [c for c in (input_column, output_column) if c not in columns]
        if missing:
            raise ValueError(f"dataset has no column {missing[0]!r}; columns: {sorted(columns)}")

        def pick(row):
            return {"prompt": str(row[input_column]), "completion": str(row[output_column])}
    elif {"instruction", "output"} <= columns:
        def pick(row):
            extra = row.get("input") or ""
            prompt = row["instruction"] + (f"\n\n{extra}" if extra else "")
            return {"prompt": prompt, "completion": str(row["output"])}
    elif {"question", "answer"} <= columns:
        def pick(row):
            return {"prompt": str(row["question"]), "completion": str(row["answer"])}
    else:
        raise ValueError("set PromptInputColumn and PromptOutputColumn: the dataset has no "
                         f"instruction/output columns (columns: {sorted(columns)})")
    if max_samples and max_samples > 0:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    return dataset.map(pick, remove_columns=dataset.column_names)
