"""Start a New Train: method, base model, dataset (with a preview), parameters, "Run the Train".

The form starts filled in (SFT-Demo, the default base model, demo-sft) and checks itself as the user
types: every problem at once, under its field, in the field's own words, gone once fixed; "Run the
Train" is enabled only while there is none. The method, base model, dataset and columns are checked
by the method's training type (`deepe_widgets.trainings`), the checks `jobs.submit_training` runs;
a method brings a base model of the kind it trains and its demo dataset, unless the user chose them.
"""

from __future__ import annotations

import ast
import html
import re
from pathlib import Path

import ipywidgets as w

from .. import config, datasets, demo_data, image_data, jobs, methods, models, store, trainings, worker
from .. import params as paramlib
from ..config import StageName
from ..errors import DeepeError
from ..images import image_column, thumbnail_html
from ..names import check_name
from .common import close_tree, stylesheet
from .feedback import Status, action
from .labels import humanize, param_label, parameter_help, used_parameters
from .state import ADMIN_ONLY, resolve_admin
from .tables import html_table

# Seed 004's form, in its order (shown first; the rest go under "Advanced").
MAIN_FIELDS = ("EPOCHS", "BATCH_SIZE", "LEARNING_RATE", "MAX_SEQ_LENGTH", "MAX_STEPS", "LORA_RANK", "LORA_ALPHA",
               "LORA_DROPOUT", "SYSTEM_PROMPT", "SAVE_STEPS")
# the dataset's columns a method may read: each a chooser beside the others, shown where the method has it
COLUMN_FIELDS = ("PromptInputColumn", "PromptOutputColumn", "PromptRejectedColumn", "NegativeColumn")
# what each chooser is called, by training type where the type reads the column its own way
COLUMN_LABELS = {"PromptInputColumn": "Prompt column", "PromptOutputColumn": "Response column",
                 "PromptRejectedColumn": "Rejected column", "NegativeColumn": "Negative column (optional)"}
TYPE_COLUMN_LABELS = {"preference": {"PromptOutputColumn": "Chosen column"},
                      "reward": {"PromptOutputColumn": "Chosen column"},
                      "embedding": {"PromptInputColumn": "Query column", "PromptOutputColumn": "Passage column"}}
PREFERRED_METHOD = "SFT-Demo"  # its demo dataset (trainings.demo_dataset) comes with it
PREVIEW_CHARS = 60
# script mode's own flags: they can pass --trust_remote_code or paths outside DEEPE_ALLOWED_ROOTS
ADMIN_ONLY_PARAMS = ("ARGS_TEMPLATE", "EXTRA_ARGS")
STYLE = {"description_width": "200px"}
WIDE = {"layout": {"width": "520px"}}


def _shown(default_source: str) -> str:
    try:
        value = ast.literal_eval(default_source)
    except (ValueError, SyntaxError):
        return default_source
    return value if isinstance(value, str) else repr(value)


def _is_bool(default_source: str) -> bool:
    return isinstance(paramlib.default_value(default_source), bool)


def _is_list(default_source: str) -> bool:
    return isinstance(paramlib.default_value(default_source), (list, tuple))


def _shown_item(text: str):
    """One line of a list of numbers: the number, or the text as typed where it is none."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _lines(value) -> str:
    """A list parameter as a list box shows it: one item a line."""
    return "\n".join(str(item) for item in value)


def standard_column(standard: str, position: int) -> str:
    """What one column chooser reads when left unset, from its type's standard columns: the chosen
    column's "chosen" of "prompt/chosen/rejected", "instruction or question" of "instruction/output or
    question/answer"; the whole text where it is not such a list."""
    alternatives = [option.split("/") for option in standard.split(" or ")]
    if all(len(parts) > position and all(re.fullmatch(r"[\w.-]+", p) for p in parts) for parts in alternatives):
        return " or ".join(parts[position] for parts in alternatives)
    return standard


def typical_range(name: str, default) -> tuple[float, float] | None:
    """Seed 004's typical range of a parameter, widened to hold the method's own default (SD-Demo's
    batch of 1 is typical for SD-Demo); None where there is none."""
    if name not in paramlib.TYPICAL:
        return None
    low, high = paramlib.TYPICAL[name]
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        low, high = min(low, default), max(high, default)
    return low, high


def field_message(text: str, kind: str) -> str:
    return f"<span class='deepe-field-{kind}'>{html.escape(text)}</span>" if text else ""


def cell_text(value) -> str:
    """A dataset cell as a person reads it: a chat (a list of messages) as "user: … → assistant: …",
    not a Python list."""
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        return " → ".join(f"{m.get('role', '?')}: {cell_text(m['content'])}" for m in value)
    if isinstance(value, list) and all(isinstance(part, dict) for part in value):  # content parts (text, image)
        return " ".join(str(part.get("text", f"[{part.get('type', '?')}]")) for part in value)
    return str(value)


def clip(text, limit: int = PREVIEW_CHARS) -> str:
    """A preview cell: at most `limit` characters, "…" where it was cut, the whole text on hover."""
    full = cell_text(text)
    if len(full) <= limit:
        return html.escape(full)
    return f"<span title='{html.escape(full, quote=True)}'>{html.escape(full[:limit - 1].rstrip())}…</span>"


class TrainingLauncher(w.VBox):
    """The "Start a New Train" form; `on_submitted(job)` is called after "Run the Train".

    `start_worker=False` only queues (a worker started elsewhere, or none in a test). Without `admin`
    (`state.page_is_admin` decides when not given) a script method's ARGS_TEMPLATE and EXTRA_ARGS get
    no field, and a submit that sets them is refused."""

    def __init__(self, on_submitted=None, start_worker: bool = True, admin: bool | None = None):
        methods.ensure_builtins()
        demo_data.ensure_demo_datasets()
        self.on_submitted, self.start_worker = on_submitted, start_worker
        self.admin = resolve_admin(admin)
        self.method = w.Dropdown(description="Training Method", style=STYLE, **WIDE)
        self.base_model = w.Dropdown(description="Base Model", style=STYLE, **WIDE)
        self.dataset = w.Dropdown(description="Dataset", style=STYLE, **WIDE)
        self.train_name = w.Text(description="Train Name (optional)", style=STYLE, **WIDE,
                                 placeholder="e.g. capitals-lr-5e-4 (default: train<id>)")
        self.preview = w.HTML()
        self.columns = {name: w.Dropdown(description=label, style=STYLE, **WIDE)
                        for name, label in COLUMN_LABELS.items()}
        self.input_column = self.columns["PromptInputColumn"]
        self.output_column = self.columns["PromptOutputColumn"]
        self.fields: dict[str, w.Text | w.Textarea | w.Checkbox] = {}
        self.extra_args: w.Textarea | None = None  # Advanced's "Extra arguments" box, where the method takes them
        self.field_errors: dict[str, w.HTML] = {}  # under each parameter: its error, else its warning
        # under each chooser above the parameters: its error
        self.choice_errors = {key: self._message_box() for key in ("method", "base_model", "dataset", "name",
                                                                    *COLUMN_FIELDS)}
        self.problems: dict[str, str] = {}
        self.copied_from: int | None = None
        self._fields_for = None
        self._dataset_record = None
        self._picked_dataset: str | None = None  # the dataset the user chose by hand, if any
        self._picked_model: str | None = None  # the base model the user chose by hand, if any
        self._following = False  # the form is choosing the method's base model and demo dataset itself
        self._registry_checked: tuple | None = None  # (the choices checked, the registry's problems)
        self.dataset_note = ""  # said under Dataset while nothing is wrong there (a demo not registered)
        self.defaults: dict[str, str] = {}
        self.main_box, self.advanced_box = w.VBox(), w.VBox()
        self.advanced = w.Accordion(children=[self.advanced_box], titles=("Advanced",))
        self.advanced.selected_index = None
        self.summary = w.HTML()   # "Fix these 2 fields to run: Batch Size, Learning Rate"
        self.run = w.Button(description="Run the Train", button_style="primary", icon="play")
        self.status = Status()
        self._quiet = False
        self.method.observe(lambda _c: self._on_method(), "value")
        self.dataset.observe(self._on_dataset, "value")
        self.base_model.observe(self._on_base_model, "value")
        for chooser in (self.train_name, *self.columns.values()):
            chooser.observe(lambda _c: None if self._quiet else self.validate(), "value")
        action(self.run, self.status, "queueing …", ready=lambda: not self.problems)(self._submit)
        err = self.choice_errors
        choosers = [widget for name in COLUMN_FIELDS for widget in (self.columns[name], err[name])]
        super().__init__([stylesheet(), w.HTML("<h3>Start a New Train</h3>"), self.method, err["method"],
                          self.base_model, err["base_model"], self.dataset, err["dataset"], self.train_name,
                          err["name"], w.HTML("<b>Dataset preview</b>"), self.preview, *choosers,
                          w.HTML("<b>Parameters</b>"), self.main_box, self.advanced,
                          w.HBox([self.run, self.status]), self.summary])
        self.reload()

    def close(self) -> None:
        """Close every widget of the form."""
        close_tree(self)

    @staticmethod
    def _message_box() -> w.HTML:
        box = w.HTML(layout=w.Layout(margin="0 0 2px 208px"))  # under the input, past the labels
        box.add_class("deepe-field-message")
        return box

    # --- choices ------------------------------------------------------------------------------

    def reload(self) -> None:
        """Refresh the choices (methods, models, datasets may have changed), keeping what is chosen
        and typed; a first load picks SFT-Demo, the default base model and demo-sft."""
        bases = [m.name for m in models.list_models("base")]
        if models.DEFAULT_BASE_MODEL not in bases:
            bases.append(models.DEFAULT_BASE_MODEL)  # imported on first use
        trainable = [m.name for m in methods.list_methods() if StageName.TRAINING in m.stages]
        choices = ((self.method, trainable, PREFERRED_METHOD),
                   (self.base_model, bases, models.DEFAULT_BASE_MODEL),
                   (self.dataset, [d.name for d in datasets.list_datasets()], None))
        self._quiet = True  # re-assigning options selects the first one for a moment: no rebuild for that
        try:
            for widget, options, preferred in choices:
                keep = widget.value
                if list(widget.options) != options:
                    widget.options = options
                if preferred is None:  # the dataset: the chosen method's demo data first
                    preferred = trainings.demo_dataset(self.method.value) or trainings.demo_dataset(PREFERRED_METHOD)
                widget.value = keep if keep in options else \
                    (preferred if preferred in options else (options[0] if options else None))
        finally:
            self._quiet = False
        self._registry_checked = None  # a model or dataset may have changed on disk: ask again
        if not self.fields or self._fields_for != self.method.value:  # else keep what the user typed
            self._build_fields()
            self._follow_method()
        self._show_dataset()
        self.validate()

    def _on_method(self) -> None:
        if self._quiet:
            return
        self._build_fields()
        self._follow_method()
        self._show_dataset()  # the column choosers' words follow the method's training type
        self.validate()

    def _on_base_model(self, change) -> None:
        if self._quiet:
            return
        if not self._following:
            self._picked_model = change["new"]
        self.validate()

    def _on_dataset(self, change) -> None:
        if self._quiet:
            return
        if not self._following:
            self._picked_dataset = change["new"]
        self._show_dataset()
        self.validate()

    def _training(self) -> trainings.TrainingType | None:
        method = store.get_one(store.Method, name=self.method.value) if self.method.value else None
        return trainings.for_method(method) if method else None

    def _follow_method(self) -> None:
        """A method comes with a base model of the kind it trains (`TrainingType.base_models`) and, for a
        built-in, its demo dataset (`trainings.demo_dataset`): the form follows them, except where the
        user chose the base model or dataset by hand."""
        training = self._training()
        if training is None:
            return
        fitting = training.base_models()
        model = next((name for name in fitting if name in self.base_model.options), None)
        demo = trainings.demo_dataset(self.method.value)
        self.dataset_note = "" if demo is None or demo in self.dataset.options else \
            (f"{self.method.value}'s demo dataset {demo} is not registered here; choose a dataset with "
             f"{training.standard_columns} columns")
        self._following = True
        try:
            if model and (self.base_model.value is None or self.base_model.value != self._picked_model):
                self.base_model.value = model
            if demo in self.dataset.options and \
                    (self.dataset.value is None or self.dataset.value != self._picked_dataset):
                self.dataset.value = demo
        finally:
            self._following = False

    def _build_fields(self) -> None:
        if not self.method.value:
            return
        method = methods.get_method(self.method.value)
        defaults = method.default_params
        self.defaults = defaults
        self._fields_for = self.method.value
        used = used_parameters(method)  # None: every parameter (a script gets them all as flags)
        helps = parameter_help(method)
        self.fields, self.field_errors, self.extra_args = {}, {}, None
        main, advanced = [], []
        for name, source in defaults.items():
            if name in paramlib.PLATFORM_SET or name in COLUMN_FIELDS:
                continue
            if name in self._admin_only() and not self.admin:
                continue  # the method's own value stands
            if used is not None and name not in used:
                continue  # e.g. SFT-Demo never reads NUM_GENERATIONS, Embedding-Demo no LoRA: no field
            tip = helps.get(name) or ""
            if name == paramlib.EXTRA_ARGS:  # fields of the trainer's config the form does not show
                field = self.extra_args = w.Textarea(
                    value=paramlib.extra_args_lines(paramlib.default_value(source)), description=param_label(name),
                    placeholder="one key=value a line, e.g. weight_decay=0.01", tooltip=tip, style=STYLE,
                    layout=w.Layout(width="520px", height="64px"))
            elif _is_bool(source):
                field = w.Checkbox(value=bool(paramlib.default_value(source)), description=param_label(name),
                                   indent=False, tooltip=tip, layout=w.Layout(width="520px", margin="2px 0 2px 208px"))
            elif _is_list(source):  # one item a line, not a Python list
                field = w.Textarea(value=_lines(paramlib.default_value(source)),
                                   description=param_label(name) + " (one a line)", style=STYLE,
                                   layout=w.Layout(width="520px", height="64px"), tooltip=tip)
            else:
                field = w.Text(value=str(_shown(source)), description=param_label(name), style=STYLE,
                               layout=w.Layout(width="520px"), tooltip=tip, placeholder=tip)
            field.observe(lambda _c: self.validate(), "value")
            self.fields[name] = field
            self.field_errors[name] = self._message_box()
            (main if name in MAIN_FIELDS else advanced).append((name, w.VBox([field, self.field_errors[name]])))
        main.sort(key=lambda item: MAIN_FIELDS.index(item[0]))
        old = (*self.main_box.children, *self.advanced_box.children)
        self.main_box.children = [box for _n, box in main]
        self.advanced_box.children = [box for _n, box in advanced]
        for box in old:  # the previous method's fields: nothing of them is left in the kernel
            close_tree(box)
        has_columns = all(c in defaults for c in COLUMN_FIELDS[:2])
        labels = {**COLUMN_LABELS, **TYPE_COLUMN_LABELS.get(trainings.for_method(method).name, {})}
        for name, widget in self.columns.items():
            widget.layout.display = None if has_columns and name in defaults else "none"
            widget.description = labels[name]

    def _show_dataset(self) -> None:
        self._dataset_record = None
        if not self.dataset.value:
            self.preview.value = ""
            return
        try:
            self._dataset_record = datasets.get_dataset(self.dataset.value)
            columns, rows = datasets.preview(self.dataset.value, rows=3)
        except DeepeError as exc:
            self.preview.value = f"<span style='color:#cf222e'>{html.escape(exc.message)}</span>"
            return
        pictures = image_column(columns)  # a vision-language dataset: a thumbnail per row
        cells = [[thumbnail_html(self._dataset_record.path, r.get(c)) if c == pictures else clip(r.get(c, ""))
                  for c in columns] for r in rows]
        if not pictures and image_data.image_column(columns):  # captioned images: their pictures first
            thumbs = image_data.thumbnails(Path(self._dataset_record.path), rows, size=64)
            columns = ["picture", *columns]
            cells = [[f"<img src='data:image/png;base64,{t}' width='64'>" if t else "(unreadable)", *row]
                     for t, row in zip(thumbs, cells)]
        self.preview.value = html_table(columns, cells)
        # what the column choosers read when left unset: the method's training type says
        standard = (self._training() or trainings.TrainingType).standard_columns
        choices = [(c, c) for c in columns]
        for position, (name, widget) in enumerate(self.columns.items()):
            keep = widget.value
            unset = "(none, or negative where the dataset has it)" if name == "NegativeColumn" else \
                f"(standard: {standard_column(standard, position)})"
            widget.options = [(unset, ""), *choices]
            widget.value = keep if keep in columns else ""  # an unset dropdown shows blank

    # --- checking -----------------------------------------------------------------------------

    def overrides(self) -> dict:
        """The parameters the user changed, keyed by their names."""
        out = {}
        for name, field in self.fields.items():
            default = paramlib.default_value(self.defaults[name])
            if field is self.extra_args:
                try:
                    extras = paramlib.parse_extra_args(field.value, "Extra arguments:")
                except DeepeError:
                    continue  # `check` says what is wrong
                if extras != (default or {}):
                    out[name] = extras
            elif isinstance(field, w.Checkbox):
                if field.value != default:
                    out[name] = field.value
            elif isinstance(field, w.Textarea):
                items = [line.strip() for line in field.value.splitlines() if line.strip()]
                if default and not any(isinstance(item, str) for item in default):  # a list of numbers
                    items = [_shown_item(item) for item in items]
                if items != list(default):
                    out[name] = items
            elif field.value != str(_shown(self.defaults[name])):
                out[name] = field.value
        shown = [name for name, widget in self.columns.items() if widget.layout.display != "none"]
        pair = [name for name in shown if name in COLUMN_FIELDS[:2]]
        if any(self.columns[name].value for name in pair):  # both, so that one left unset is said
            out.update({name: self.columns[name].value or "" for name in pair})
        out.update({name: self.columns[name].value for name in shown if name not in pair and self.columns[name].value})
        return out

    def _column_words(self, message: str) -> str:
        """A core message in the form's words, each column field called by its chooser's name."""
        for name, widget in self.columns.items():
            message = re.sub(rf"\b{name}\b", widget.description, message)
        return humanize(message)

    def _registry_problems(self) -> dict[str, str]:
        """What the training-type registry refuses in the choices (method, base model, dataset, columns),
        keyed by the field that shows it: the checks `jobs.submit_training` runs, made as the choices
        change (asked once per combination: a dataset check reads the file)."""
        columns = {name: self.columns[name].value or "" for name in COLUMN_FIELDS
                   if self.columns[name].layout.display != "none"}
        key = (self.method.value, self.base_model.value, self.dataset.value, tuple(sorted(columns.items())))
        if self._registry_checked is not None and self._registry_checked[0] == key:
            return self._registry_checked[1]
        found: dict[str, str] = {}
        method = store.get_one(store.Method, name=self.method.value) if self.method.value else None
        if method is not None:
            training = trainings.for_method(method)
            try:
                training.check_available(method.name)
            except DeepeError as exc:
                found["method"] = self._column_words(exc.message)
            model = store.get_one(store.ModelRecord, name=self.base_model.value) if self.base_model.value else None
            if model is None and self.base_model.value == models.DEFAULT_BASE_MODEL:  # imported at submit: chat
                model = store.ModelRecord(name=models.DEFAULT_BASE_MODEL, kind=store.ModelKind.BASE,
                                          path=str(config.workspace_dir("models") / models.DEFAULT_BASE_MODEL))
            if self._dataset_record is not None and not training.checks_data(method) and \
                    any(columns.get(name) for name in COLUMN_FIELDS[:2]):  # a user's method: the columns named
                try:
                    datasets.check_columns(self._dataset_record, columns.get("PromptInputColumn", ""),
                                           columns.get("PromptOutputColumn", ""))
                except DeepeError as exc:
                    found[exc.field if exc.field in COLUMN_FIELDS else "PromptInputColumn"] = \
                        self._column_words(exc.message)
            for exc in training.problems(method, model, self._dataset_record, columns):
                field = exc.field if exc.field in self.choice_errors else "dataset"
                if field in COLUMN_FIELDS and not columns.get(field):
                    field = "dataset"  # a column the user did not choose: the dataset is what is wrong
                found.setdefault(field, self._column_words(exc.message))
        self._registry_checked = (key, found)
        return found

    def check(self) -> tuple[dict[str, str], dict[str, str]]:
        """(errors, warnings), each keyed by field, in the words the form shows; every field is
        checked on its own, so all problems show at once."""
        errors, warnings = {}, {}
        for key, chooser, what in (("method", self.method, "a training method"),
                                   ("base_model", self.base_model, "a base model"),
                                   ("dataset", self.dataset, "a dataset")):
            if not chooser.value:
                errors[key] = f"Choose {what}."
        name = self.train_name.value.strip()
        if name:
            try:
                check_name(name, "train")
            except DeepeError as exc:
                errors["name"] = exc.message[0].upper() + exc.message[1:]
        values = self.overrides()
        for field_name in self.fields:
            raw = values.get(field_name, paramlib.default_value(self.defaults[field_name]))
            try:
                value = paramlib.resolve({field_name: raw}, self.defaults)[field_name]
            except DeepeError as exc:
                errors[field_name] = humanize(exc.message)
                continue
            bounds = typical_range(field_name, paramlib.default_value(self.defaults[field_name]))
            if bounds and isinstance(value, (int, float)) and not bounds[0] <= value <= bounds[1]:
                warnings[field_name] = (f"{value:g} is outside the typical range {bounds[0]:g}–{bounds[1]:g} "
                                        "(allowed, but check it)")
        for field_name, message in self._registry_problems().items():
            errors.setdefault(field_name, message[0].upper() + message[1:])
        if self.extra_args is not None and paramlib.EXTRA_ARGS not in errors:
            message = self._extra_args_problem()
            if message:
                errors[paramlib.EXTRA_ARGS] = message[0].upper() + message[1:]
        return errors, warnings

    def _extra_args_problem(self) -> str:
        """What the training type refuses in the Extra arguments box (an unknown key, with the closest one
        its config class has), as `jobs.submit_training` would; "" when nothing."""
        try:
            extras = paramlib.parse_extra_args(self.extra_args.value, "Extra arguments:")
            method = store.get_one(store.Method, name=self.method.value) if self.method.value else None
            if method is not None and extras:
                trainings.for_method(method).check_extra_args(method, {paramlib.EXTRA_ARGS: extras})
        except DeepeError as exc:
            return exc.message
        return ""

    def _admin_only(self) -> tuple[str, ...]:
        """The parameters only an admin page may set: a script's own flags (a built-in's extra arguments
        are fields of its trainer's config, checked against it)."""
        return ADMIN_ONLY_PARAMS if "ARGS_TEMPLATE" in self.defaults else ()

    def validate(self) -> dict[str, str]:
        """Check the form and show the result: each problem under its field, the rest cleared,
        Run enabled only without errors. Returns the errors."""
        errors, warnings = self.check()
        self.problems = errors
        for key, box in self.choice_errors.items():
            box.value = field_message(errors.get(key, ""), "error")
        for key, box in self.field_errors.items():
            box.value = field_message(errors[key], "error") if key in errors else \
                field_message(warnings.get(key, ""), "warning")
        if self.dataset_note:  # e.g. no demo dataset registered for the method: said beside any error
            box = self.choice_errors["dataset"]
            box.value = "<br>".join(filter(None, (box.value, field_message(self.dataset_note, "warning"))))
        self.run.disabled = bool(errors)
        if errors:
            names = [self.columns[k].description if k in self.columns else param_label(k) if k in self.fields else
                     {"method": "Training Method", "base_model": "Base Model", "dataset": "Dataset",
                      "name": "Train Name"}[k] for k in errors]
            self.summary.value = field_message(
                f"Fix {'this field' if len(names) == 1 else f'these {len(names)} fields'} to run: "
                + ", ".join(names), "error")
        else:
            self.summary.value = ""
        return errors

    # --- running ------------------------------------------------------------------------------

    def _submit(self) -> None:
        if self.validate():  # a click that raced a keystroke: the messages say what to fix
            raise DeepeError("the form has problems: see the messages under the fields")
        params = self.overrides()
        refused = [name for name in self._admin_only() if name in params]
        if refused and not self.admin:  # no field offers them here; refused all the same
            raise DeepeError(f"{' and '.join(refused)} (a script's own flags): {ADMIN_ONLY}")
        try:
            job = jobs.submit_training(self.method.value, self.base_model.value, self.dataset.value,
                                       name=self.train_name.value.strip() or None, params=params,
                                       copied_from=self.copied_from)
            if self.start_worker:
                worker.ensure_worker()
        except DeepeError as exc:  # checks only the server can make (a kernel gone, a file moved)
            box = self.field_errors.get(exc.field or "") or self.choice_errors.get(exc.field or "")
            if box is not None:
                box.value = field_message(self._column_words(exc.message), "error")
            raise DeepeError(self._column_words(exc.message), field=exc.field) from None
        copy = f", a copy of job {self.copied_from}" if self.copied_from else ""
        self.copied_from = None
        self.status.show(f"Training {job.name} (job {job.id}{copy}) is queued: follow it under Trainings.", "ok")
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
        for name, field in self.fields.items():  # each field set once: the job's value, else the default
            if field is self.extra_args:
                field.value = paramlib.extra_args_lines(job.params.get(name, paramlib.default_value(
                    self.defaults[name])))
            elif isinstance(field, w.Checkbox):
                field.value = bool(job.params.get(name, paramlib.default_value(self.defaults[name])))
            elif isinstance(field, w.Textarea):
                field.value = _lines(job.params.get(name, paramlib.default_value(self.defaults[name])))
            else:
                field.value = str(job.params[name]) if name in job.params else str(_shown(self.defaults[name]))
        for name, widget in self.columns.items():
            if job.params.get(name) in dict(widget.options).values():
                widget.value = job.params[name]
        self.train_name.value = ""
        self.copied_from = job.id
        self.validate()
        self.status.show(f"Copied from job {job.id} ({job.name}): change what you want, then Run the Train.", "info")
