"""Start a New Train: method, base model, dataset (with a preview), parameters, "Run the Train"."""

from __future__ import annotations

import ast
import html

import ipywidgets as w

from .. import datasets, demo_data, jobs, methods, models, worker
from .. import params as paramlib
from ..errors import DeepeError
from .common import Status, action, close_tree, html_table

# Seed 004's form: label -> parameter name (shown first; the rest go under "Advanced").
MAIN_FIELDS = [("Epochs", "EPOCHS"), ("Batch Size", "BATCH_SIZE"), ("Learning Rate", "LEARNING_RATE"),
               ("Max Tokens", "MAX_SEQ_LENGTH"), ("Max Steps (-1: use epochs)", "MAX_STEPS"),
               ("LoRA Rank", "LORA_RANK"), ("LoRA Alpha", "LORA_ALPHA"), ("LoRA Dropout", "LORA_DROPOUT"),
               ("System Prompt", "SYSTEM_PROMPT"), ("Save Frequency (steps)", "SAVE_STEPS")]
COLUMN_FIELDS = ("PromptInputColumn", "PromptOutputColumn")
STYLE = {"description_width": "200px"}
WIDE = {"layout": {"width": "520px"}}


def _shown(default_source: str) -> str:
    try:
        value = ast.literal_eval(default_source)
    except (ValueError, SyntaxError):
        return default_source
    return value if isinstance(value, str) else repr(value)


class TrainingLauncher(w.VBox):
    """The "Start a New Train" form; `on_submitted(job)` is called after "Run the Train".

    `start_worker=False` only queues (a worker started elsewhere, or none in a test)."""

    def __init__(self, on_submitted=None, start_worker: bool = True):
        methods.ensure_builtins()
        demo_data.ensure_demo_datasets()
        self.on_submitted, self.start_worker = on_submitted, start_worker
        self.method = w.Dropdown(description="Training Method", style=STYLE, **WIDE)
        self.base_model = w.Dropdown(description="Base Model", style=STYLE, **WIDE)
        self.dataset = w.Dropdown(description="Dataset", style=STYLE, **WIDE)
        self.train_name = w.Text(description="Train Name (optional)", style=STYLE, **WIDE)
        self.preview = w.HTML()
        self.input_column = w.Dropdown(description="Prompt column", style=STYLE, **WIDE)
        self.output_column = w.Dropdown(description="Response column", style=STYLE, **WIDE)
        self.fields: dict[str, w.Text] = {}
        self.field_errors: dict[str, w.HTML] = {}
        # errors about the choices above the parameters, each shown under its chooser
        self.choice_errors = {key: w.HTML() for key in ("method", "base_model", "dataset", "name",
                                                         "PromptInputColumn", "PromptOutputColumn")}
        self.copied_from: int | None = None
        self._fields_for = None
        self.main_box, self.advanced_box = w.VBox(), w.VBox()
        self.advanced = w.Accordion(children=[self.advanced_box], titles=("Advanced",))
        self.advanced.selected_index = None
        self.warnings = w.HTML()
        self.run = w.Button(description="Run the Train", button_style="primary", icon="play")
        self.status = Status()
        self.method.observe(lambda _c: self._build_fields(), "value")
        self.dataset.observe(lambda _c: self._show_dataset(), "value")
        action(self.run, self.status, "queueing …")(self._submit)
        err = self.choice_errors
        super().__init__([w.HTML("<h3>Start a New Train</h3>"), self.method, err["method"], self.base_model,
                          err["base_model"], self.dataset, err["dataset"], self.train_name, err["name"],
                          w.HTML("<b>Dataset preview</b>"), self.preview, self.input_column,
                          err["PromptInputColumn"], self.output_column, err["PromptOutputColumn"],
                          w.HTML("<b>Parameters</b>"), self.main_box, self.advanced,
                          self.warnings, w.HBox([self.run, self.status])])
        self.reload()

    def reload(self) -> None:
        """Refresh the choices (methods, models, datasets may have changed)."""
        keep = (self.method.value, self.base_model.value, self.dataset.value)
        self.method.options = [m.name for m in methods.list_methods() if "training" in m.stages]
        bases = [m.name for m in models.list_models("base")]
        if models.DEFAULT_BASE_MODEL not in bases:
            bases.append(models.DEFAULT_BASE_MODEL)  # imported on first use
        self.base_model.options = bases
        self.dataset.options = [d.name for d in datasets.list_datasets()]
        for widget, value in zip((self.method, self.base_model, self.dataset), keep):
            if value in widget.options:
                widget.value = value
        if not self.fields or self._fields_for != self.method.value:  # keep what the user typed
            self._build_fields()
        self._show_dataset()

    def _build_fields(self) -> None:
        if not self.method.value:
            return
        defaults = methods.get_method(self.method.value).default_params
        self.defaults = defaults
        self._fields_for = self.method.value
        self.fields, self.field_errors = {}, {}
        main, advanced = [], []
        labels = dict((name, label) for label, name in MAIN_FIELDS)
        for name, source in defaults.items():
            if name in paramlib.PLATFORM_SET or name in COLUMN_FIELDS:
                continue
            text = w.Text(value=str(_shown(source)), description=labels.get(name, name), style=STYLE,
                          layout=w.Layout(width="520px"))
            text.observe(lambda _c: self._check_warnings(), "value")
            self.fields[name] = text
            self.field_errors[name] = w.HTML()
            (main if name in labels else advanced).append(w.VBox([text, self.field_errors[name]]))
        order = [n for _l, n in MAIN_FIELDS]
        main.sort(key=lambda box: order.index(next(n for n, t in self.fields.items() if t is box.children[0])))
        old = (*self.main_box.children, *self.advanced_box.children)
        self.main_box.children = main
        self.advanced_box.children = advanced
        for box in old:  # the previous method's fields: nothing of them is left in the kernel
            close_tree(box)
        has_columns = all(c in defaults for c in COLUMN_FIELDS)
        for widget in (self.input_column, self.output_column):
            widget.layout.display = None if has_columns else "none"

    def _show_dataset(self) -> None:
        if not self.dataset.value:
            self.preview.value = ""
            return
        try:
            columns, rows = datasets.preview(self.dataset.value, rows=3)
        except DeepeError as exc:
            self.preview.value = f"<span style='color:#cf222e'>{html.escape(exc.message)}</span>"
            return
        cells = [[html.escape(str(r.get(c, ""))[:60]) for c in columns] for r in rows]
        self.preview.value = html_table(columns, cells)
        choices = [("(standard: instruction/output or question/answer)", "")] + [(c, c) for c in columns]
        for widget in (self.input_column, self.output_column):
            keep = widget.value
            widget.options = choices
            widget.value = keep if keep in columns else ""  # an unset dropdown shows blank

    def overrides(self) -> dict:
        """The parameters the user changed, keyed by their names."""
        out = {name: text.value for name, text in self.fields.items()
               if text.value != str(_shown(self.defaults[name]))}
        if self.input_column.layout.display != "none" and (self.input_column.value or self.output_column.value):
            out["PromptInputColumn"] = self.input_column.value or ""
            out["PromptOutputColumn"] = self.output_column.value or ""
        return out

    def _check_warnings(self) -> None:
        try:
            values = paramlib.resolve({k: v for k, v in self.overrides().items() if k not in COLUMN_FIELDS},
                                      self.defaults)
        except DeepeError:
            self.warnings.value = ""
            return
        typical = paramlib.warnings_for(values)
        self.warnings.value = "".join(f"<div style='color:#9a6700'>⚠ {html.escape(t)}</div>" for t in typical)

    def _submit(self) -> None:
        for box in (*self.field_errors.values(), *self.choice_errors.values()):
            box.value = ""
        try:
            job = jobs.submit_training(self.method.value, self.base_model.value, self.dataset.value,
                                       name=self.train_name.value.strip() or None, params=self.overrides(),
                                       copied_from=self.copied_from)
            if self.start_worker:
                worker.ensure_worker()
        except DeepeError as exc:
            box = self.field_errors.get(exc.field or "") or self.choice_errors.get(exc.field or "")
            if box is not None:
                box.value = f"<span class='deepe-field-error' style='color:#cf222e'>{html.escape(exc.message)}</span>"
            raise
        copy = f", a copy of job {self.copied_from}" if self.copied_from else ""
        self.copied_from = None
        self.status.show(f"job {job.id} ({job.name}{copy}) queued — run folder {job.run_dir}; "
                         "follow it under Trainings", "ok")
        if self.on_submitted:
            self.on_submitted(job)

    def prefill(self, job) -> None:
        """"Copy the Train": the same configuration, ready to tweak and run."""
        self.reload()
        self.method.value = job.method
        if self._fields_for != job.method:
            self._build_fields()
        if job.base_model in self.base_model.options:
            self.base_model.value = job.base_model
        if job.dataset in self.dataset.options:
            self.dataset.value = job.dataset
        for name, text in self.fields.items():  # each field set once: the job's value, else the default
            text.value = str(job.params[name]) if name in job.params else str(_shown(self.defaults[name]))
        for widget, name in ((self.input_column, "PromptInputColumn"), (self.output_column, "PromptOutputColumn")):
            if job.params.get(name) in dict(widget.options).values():
                widget.value = job.params[name]
        self.train_name.value = ""
        self.copied_from = job.id
        self.status.show(f"copied from job {job.id}: change what you want, then Run the Train", "info")
