"""Method Management: the list of methods, "Add New Method" and "Delete" (seed 000)."""

from __future__ import annotations

import asyncio
import html
from pathlib import Path

import ipywidgets as w

from .. import config, deployments, envs, methods, store
from ..config import Lifecycle, StageName
from ..errors import DeepeError
from ..kernels import installed_kernels
from ..names import check_name
from .common import close_tree, stylesheet
from .feedback import ConnectionNote, Status, action, confirm_row
from .labels import humanize
from .polling import PollingView
from .state import ADMIN_ONLY, resolve_admin
from .tables import GridTable

# the stage rows' columns keep their widths (only the file box gives way), so the rows line up at any width;
# a dict, not a Layout: each label gets its own (closing one closes no other)
LABEL = {"width": "230px", "flex": "0 0 230px"}
FORM = {"style": {"description_width": "130px"}, "layout": {"width": "480px"}}
LIFECYCLE_WORDS = [("Customized Model", Lifecycle.CUSTOMIZED), ("Complete Model", Lifecycle.COMPLETE),
                   ("Live Model", Lifecycle.LIVE)]
# Seed 000: a Live Model method chooses its deployment environment
DEPLOY_ENVS = [("built-in vLLM (OpenAI-compatible server)", "vllm"), ("custom deployment file + kernel", "custom")]
STAGE_WORDS = {StageName.TRAINING: "training code file", StageName.SAVING: "saving code file",
               StageName.INFERENCE_CUSTOMIZED: "Customized Model inference file",
               StageName.INFERENCE_COMPLETE: "Complete Model inference file",
               StageName.DEPLOYMENT: "deployment code file"}
NAME_LABEL = "Training Name"  # seed 000's word for the method's name; its errors say it too
# what a lifecycle does with a training, for the list
LIFECYCLE_DOES = {Lifecycle.CUSTOMIZED: "trains a Customized Model (an adapter)",
                  Lifecycle.COMPLETE: "trains, then saves to a Complete Model",
                  Lifecycle.LIVE: "trains, saves to a Complete Model, then deploys it as a Live Model"}
TYPE_WORDS = {"image-generation": "image generation"}  # the others read as they are spelled
# the stages' short words in the list's Stages column
STAGE_SHORT = {StageName.TRAINING: "training", StageName.SAVING: "saving",
               StageName.INFERENCE_CUSTOMIZED: "inference of the Customized Model",
               StageName.INFERENCE_COMPLETE: "inference of the Complete Model",
               StageName.DEPLOYMENT: "deployment", StageName.EVALUATION: "evaluation"}


def _error(text: str) -> str:
    return f'<span class="deepe-field-error">{html.escape(text)}</span>' if text else ""


def _in_form_words(key: str, message: str) -> str:
    """A core message as the form says it: the name field is the "Training Name", capitalised."""
    if key == "name" and message.lower().startswith("method name"):
        message = NAME_LABEL + message[len("method name"):]
    return message[:1].upper() + message[1:]


def deployment_kernels() -> set[str]:
    """The kernels of the deployment environments (`deepe-vllm` …): for a deployment stage only."""
    return {envs.kernel_name(engine) for engine in envs.ENGINES}


def stage_kernels(stage: str) -> list[str]:
    """The installed kernels a stage may run in (a serving engine's kernel only for deployment)."""
    kernels = sorted(installed_kernels())
    if stage == StageName.DEPLOYMENT:
        return kernels
    return [k for k in kernels if k not in deployment_kernels()]


class MethodForm(w.VBox):
    """Seed 000's fields; the stages each lifecycle needs appear (and are required) as it changes.

    It checks itself as the user types (every problem at once, by its field, gone once fixed);
    "Save Method" is enabled only without problems. A field shows its problem once touched."""

    def __init__(self, on_saved=None):
        self.on_saved = on_saved
        self.problems: dict[str, str] = {}
        self._touched: set[str] = set()
        self._server_errors: dict[str, str] = {}  # what only saving could tell, until that field changes
        self.name = w.Text(description=f"{NAME_LABEL} *", placeholder="the method's name, e.g. my-sft", **FORM)
        self.display = w.Text(description="Display Name", **FORM)
        self.ttype = w.Dropdown(options=list(config.TRAINING_TYPES), description="Training Type *", **FORM)
        self.lifecycle = w.Dropdown(options=LIFECYCLE_WORDS, description="Lifecycle *", **FORM)
        self.description = w.Textarea(description="Description", **FORM)
        self.deploy_env = w.Dropdown(options=DEPLOY_ENVS, value="vllm", description="Deployment *",
                                     style={"description_width": "130px"}, layout=w.Layout(width="480px"))
        self.errors = {key: w.HTML() for key in ("name", "training_type", "lifecycle", "deploy_env", *config.STAGES)}
        for key, box in self.errors.items():  # under the input, past its label
            box.add_class("deepe-field-message")
            box.layout.margin = "0 0 2px 138px" if key in ("name", "training_type", "lifecycle", "deploy_env") \
                else "0 0 2px 236px"
        self.deploy_box = w.VBox([self.deploy_env, self.errors["deploy_env"]])
        self.stage_rows = {}
        self.files, self.kernels, self.enabled = {}, {}, {}
        for stage in config.STAGES:
            self.files[stage] = w.Text(placeholder="notebook or .py file",
                                       layout=w.Layout(width="auto", flex="0 1 340px", min_width="140px"))
            self.kernels[stage] = w.Dropdown(layout=w.Layout(width="160px", flex="0 0 160px"))
            self.enabled[stage] = w.Checkbox(description="enable", indent=False,
                                             layout=w.Layout(width="80px", flex="0 0 80px"))
            self.stage_rows[stage] = w.VBox([
                w.HBox([w.Label(f"{stage}", layout=w.Layout(**LABEL)), self.files[stage], self.kernels[stage],
                        self.enabled[stage]]), self.errors[stage]])
        self.save = w.Button(description="Save Method", button_style="primary", icon="check")
        self.cancel = w.Button(description="Close")
        self.status = Status()
        self.summary = w.HTML()
        self._just_saved = False  # "registered" is shown: no "Still needed" until the user types again
        self.refresh_kernels()
        self.lifecycle.observe(self._choice_changed, "value")
        self.deploy_env.observe(self._choice_changed, "value")
        self._watch(self.name, "name")
        for stage in config.STAGES:
            self._watch(self.files[stage], stage)
            self._watch(self.kernels[stage], stage)
            self._watch(self.enabled[stage], stage)
        action(self.save, self.status, "checking and saving …", ready=lambda: not self.problems)(self._save)
        self.cancel.on_click(lambda _b: setattr(self.layout, "display", "none"))
        super().__init__([w.HTML("<b>Add New Method</b>"), self.name, self.errors["name"], self.display,
                          self.ttype, self.lifecycle, self.deploy_box, self.description,
                          w.HTML("<b>Stages</b> (file + kernel)"),
                          *self.stage_rows.values(), w.HBox([self.save, self.cancel, self.status]), self.summary],
                         layout=w.Layout(border="1px solid #ddd", padding="8px", display="none"))
        self._show_stages()
        self.validate()

    def _choice_changed(self, _change=None) -> None:
        self._just_saved = False
        self._show_stages()
        self.validate()

    def refresh_kernels(self) -> None:
        """Offer the kernels installed now (a deployment environment's only for the deployment stage);
        a chosen kernel that is still there stays chosen."""
        for stage, dropdown in self.kernels.items():
            offered = stage_kernels(stage)
            keep = dropdown.value if dropdown.value in offered else (
                config.DEFAULT_KERNEL if config.DEFAULT_KERNEL in offered else None)
            if list(dropdown.options) != offered:
                dropdown.options = offered
            dropdown.value = keep

    def show_form(self) -> None:
        """Show the form, with the kernels installed by now."""
        self.refresh_kernels()
        self.layout.display = None

    def _watch(self, widget: w.Widget, key: str) -> None:
        def changed(_change):
            self._just_saved = False
            self._touched.add(key)
            self._server_errors.pop(key, None)
            self.status.clear()
            self.validate()
        widget.observe(changed, "value")

    def check(self) -> dict[str, str]:
        """Every problem the form has now, by field, in the form's words (saving may find more:
        a notebook without a `parameters` cell, a kernel without its packages)."""
        errors = {}
        name = self.name.value.strip()
        if not name:
            errors["name"] = f"Give the method a {NAME_LABEL}."
        else:
            try:
                check_name(name, "method")
            except DeepeError as exc:
                errors["name"] = _in_form_words("name", exc.message)
            else:
                if store.get_one(store.Method, name=name) is not None:
                    errors["name"] = f"A method named {name!r} already exists: choose another name."
        lifecycle = self.lifecycle.value
        if self.builtin_deployment:
            kernel = envs.kernel_name("vllm")
            if kernel not in installed_kernels():
                errors["deploy_env"] = (f"The built-in vLLM environment is not built yet (no kernel {kernel}): "
                                        "run `deepe envs create vllm` once, then save.")
        for stage in config.STAGES:
            if stage == StageName.DEPLOYMENT and self.builtin_deployment:
                continue
            required = stage in methods.MANDATORY[lifecycle]
            if not (required or (stage in methods.OPTIONAL[lifecycle] and self.enabled[stage].value)):
                continue
            file = self.files[stage].value.strip()
            words = STAGE_WORDS[stage]
            if not file:
                errors[stage] = f"Give the {words} (a .ipynb notebook or a .py file)."
            elif Path(file).suffix.lower() not in (".ipynb", ".py"):
                errors[stage] = f"The {words} must be a .ipynb notebook or a .py file."
            elif not Path(file).expanduser().is_file():
                errors[stage] = f"There is no file at {file}."
            elif not self.kernels[stage].value:
                errors[stage] = "Choose the kernel it runs in."
        return errors

    def validate(self) -> dict[str, str]:
        """Show the problems of the fields touched so far (all of them after a Save attempt);
        Save stays disabled while there is any."""
        errors = self.check()
        self.problems = errors
        for key, box in self.errors.items():
            text = self._server_errors.get(key) or (errors.get(key, "") if key in self._touched else "")
            box.value = _error(text)
        self.save.disabled = bool(errors)
        untouched = [k for k in errors if k not in self._touched]
        words = {"name": NAME_LABEL, "deploy_env": "the vLLM environment", **STAGE_WORDS}
        needed = "" if self._just_saved else ", ".join(words[k] for k in untouched)
        self.summary.value = f"<span style='color:#555'>Still needed: {html.escape(needed)}</span>" if needed else ""
        return errors

    def reset(self) -> None:
        """An empty form (after a method was registered, or to start over)."""
        self._touched.clear()
        self._server_errors.clear()
        self.name.value = self.display.value = self.description.value = ""
        for stage in config.STAGES:
            self.files[stage].value = ""
            self.enabled[stage].value = False
        self._touched.clear()
        self.validate()

    @property
    def builtin_deployment(self) -> bool:
        """A Live Model method deployed by the built-in vLLM stage (no deployment file of its own)."""
        return self.lifecycle.value == Lifecycle.LIVE and self.deploy_env.value == "vllm"

    def _show_stages(self) -> None:
        lifecycle = self.lifecycle.value
        mandatory, optional = methods.MANDATORY[lifecycle], methods.OPTIONAL[lifecycle]
        self.deploy_box.layout.display = None if lifecycle == Lifecycle.LIVE else "none"
        for stage, row in self.stage_rows.items():
            row.layout.display = None if stage in mandatory or stage in optional else "none"
            if stage == StageName.DEPLOYMENT and self.builtin_deployment:
                row.layout.display = "none"
            self.enabled[stage].layout.display = None if stage in optional else "none"
            label = row.children[0].children[0]
            label.value = f"{stage} *" if stage in mandatory else f"{stage} (optional)"

    def stage_values(self) -> dict:
        lifecycle = self.lifecycle.value
        out = {}
        for stage in methods.MANDATORY[lifecycle]:
            out[stage] = (self.files[stage].value.strip(), self.kernels[stage].value)
        if self.builtin_deployment:
            builtin = deployments.builtin_stage()
            out[StageName.DEPLOYMENT] = (builtin.file, builtin.kernel)
        for stage in methods.OPTIONAL[lifecycle]:
            if self.enabled[stage].value:
                out[stage] = (self.files[stage].value.strip(), self.kernels[stage].value)
        return out

    def _save(self) -> None:
        self._touched.update(self.errors)
        if self.validate():
            raise DeepeError("the form has problems: see the messages under the fields")
        try:
            method = methods.register_method(
                self.name.value.strip(), self.stage_values(), training_type=self.ttype.value,
                lifecycle=self.lifecycle.value, display_name=self.display.value.strip(),
                description=self.description.value.strip())
        except DeepeError as exc:
            message = _in_form_words(exc.field, humanize(exc.message))
            if exc.field in self.errors:
                self._server_errors[exc.field] = message
                self.validate()
            raise DeepeError(message, field=exc.field) from None
        if self.on_saved:  # the table first, then the message that points at it
            self.on_saved(method)
        self.reset()
        self._just_saved = True  # what is needed next is said once the user starts the next one
        self.validate()
        self.status.show(f"method {method.name} registered: it is in the list below", "ok")


def _catalog(listed) -> list[tuple[str, float]]:
    """What the table shows, to tell whether it must be redrawn."""
    return [(m.name, m.updated_at) for m in listed]


def _muted(text: str) -> str:
    return f"<span class='deepe-muted'>{text}</span>"


def method_cell(method) -> str:
    """The Method column: the display name, the unique name under it when they differ, and what kind
    of method it is (a built-in, a template)."""
    display = method.display_name or method.name
    out = f"<b>{html.escape(display)}</b>"
    if display != method.name:
        out += "<br>" + _muted(html.escape(method.name))
    tags = (["template"] if methods.is_template(method) else []) + (["built in"] if method.builtin else [])
    if tags:
        out += "<br>" + "".join(f"<span class='deepe-tag'>{tag}</span>" for tag in tags)
    return out


def does_cell(method) -> str:
    """The "What it does" column: its description, then its training type and lifecycle in words."""
    description = methods.description_of(method) or "(no description)"
    kind = (f"{TYPE_WORDS.get(method.training_type, method.training_type)} · "
            f"{LIFECYCLE_DOES.get(method.lifecycle, method.lifecycle)}")
    return f"{html.escape(description)}<br>{_muted(html.escape(kind))}"


def _stage_file_words(stage) -> str:
    """A stage's file as the list names it: a built-in's path under method_templates/, else the user's file."""
    source = Path(stage.source or stage.file)
    templates = config.package_templates_dir()
    return source.relative_to(templates).as_posix() if source.is_relative_to(templates) else stage.source_name


def _breakable(path_words: str) -> str:
    """Escaped, with a line-break chance after each "/" (a narrow column breaks a path there, not mid-word)."""
    return html.escape(path_words).replace("/", "/<wbr>")


def stages_cell(method) -> str:
    """The Stages column: the stages this method has, its training file and kernel(s); each stage's
    file and kernel in the tooltip."""
    stages = methods.stages_of(method)
    words = [STAGE_SHORT.get(name, name) for name in config.STAGES if name in stages]
    if StageName.INFERENCE_CUSTOMIZED in stages and StageName.INFERENCE_COMPLETE in stages:
        both = "inference (Customized, Complete)"
        words = [both if w == STAGE_SHORT[StageName.INFERENCE_CUSTOMIZED] else w for w in words
                 if w != STAGE_SHORT[StageName.INFERENCE_COMPLETE]]
    kernels = sorted({stage.kernel for stage in stages.values()})
    details = []
    if StageName.TRAINING in stages:
        details.append(f"trains with {_breakable(_stage_file_words(stages[StageName.TRAINING]))}")
    details.append(html.escape(("kernel " if len(kernels) == 1 else "kernels ") + ", ".join(kernels)))
    tooltip = "\n".join(f"{name}: {_stage_file_words(stage)} (kernel {stage.kernel})" for name, stage in stages.items())
    return (f"<span title='{html.escape(tooltip, quote=True)}'>{html.escape(', '.join(words))}<br>"
            f"{_muted(' · '.join(details))}</span>")


class MethodManager(PollingView, w.VBox):
    """The methods table with "Add New Method" and "Delete" (registering runs code: admin only).

    Each row says what its method does (description, training type, lifecycle, template or not)
    and which stages it has. Follows methods added or deleted elsewhere (the CLI, another
    dashboard) within a few seconds."""

    poll_seconds = 3.0

    def __init__(self, admin: bool | None = None):
        methods.ensure_builtins()
        self.admin = resolve_admin(admin)
        admin = self.admin
        self.status = Status()
        self.connection = ConnectionNote()
        columns = [("Method", "minmax(120px, 1.1fr)"), ("What it does", "minmax(200px, 3fr)"),
                   ("Stages", "minmax(150px, 1.6fr)")]
        self.table = GridTable(columns + ([("", "90px")] if admin else []))
        self.table.add_class("deepe-wrap-rows")  # descriptions and stage lists wrap instead of being cut
        self.rows: dict[str, list[w.Widget]] = {}
        self.delete_buttons: dict[str, w.Button] = {}
        self.form = self.add_button = None  # without admin: no form and no button, not hidden ones
        if admin:
            self.form = MethodForm(on_saved=lambda _m: self.refresh())
            self.add_button = w.Button(description="Add New Method", icon="plus", button_style="primary")
            self.add_button.on_click(lambda _b: self.form.show_form())
            header, form = [self.add_button], [self.form]
        else:
            header, form = [w.HTML("<i>Method registration and deletion are off in this app "
                                   "(start it with --allow-method-admin).</i>")], []
        # "Delete?" is asked in the table, on a line of its own (all columns wide) under the row it deletes
        self.confirm = confirm_row(w.HTML(), "Yes, delete", self._delete_asked)
        self.confirm.yes.on_click(lambda _b: self._place_confirm())
        self.confirm.no.on_click(lambda _b: self._no_delete())
        self._asked: str | None = None
        super().__init__([stylesheet(), w.HTML("<h3>Training Method Management</h3>"),
                          w.HBox(header + [self.status, self.connection]), *form, self.table])
        self._shown = None
        self.refresh()
        self.start_polling()

    async def poll_once(self) -> bool:
        """One poll: the methods read in a thread (the kernel's loop stays free), the table redrawn here."""
        self._redraw_if_changed(await asyncio.to_thread(methods.list_methods))
        return False

    def refresh_if_changed(self) -> bool:
        """Redraw the table if a method was added, changed or deleted since it was drawn."""
        return self._redraw_if_changed(methods.list_methods())

    def _redraw_if_changed(self, listed) -> bool:
        if _catalog(listed) == self._shown:
            return False
        self._draw(listed)
        if self.form is not None:
            self.form.validate()
        return True

    def refresh(self) -> None:
        self._draw(methods.list_methods())
        if self.form is not None:  # "already exists" may no longer hold, or start to
            self.form.validate()

    def _draw(self, listed) -> None:
        self._shown = _catalog(listed)
        old = [c for row in self.table.rows for c in row if c is not self.confirm]
        self.rows, self.delete_buttons = {}, {}
        # the built-in methods, then the templates to start one's own from, then the user's methods
        for method in sorted(listed, key=lambda m: (not m.builtin, methods.is_template(m))):
            cells = [GridTable.text_cells([method_cell(method), does_cell(method), stages_cell(method)])]
            if self.admin:
                cells.append(self._delete_control(method.name) if not method.builtin else w.HTML(""))
            self.rows[method.name] = cells
        self._place_confirm()
        for cell in old:  # nothing of the old table is left in the kernel
            close_tree(cell)

    def close(self) -> None:
        """Close the view and its "Delete?" line, which sits in no row while nothing is asked."""
        close_tree(self.confirm)
        super().close()

    def _place_confirm(self) -> None:
        """The rows, with the open "Delete?" line right under the row it asks about."""
        if self._asked not in self.rows:  # deleted elsewhere, or nothing asked
            self._asked = None
            self.confirm.hide()
        rows = []
        for name, cells in self.rows.items():
            rows.append(cells)
            if name == self._asked:
                rows.append([self.confirm])
        self.table.set_rows(rows)

    def _delete_control(self, name: str) -> w.Widget:
        delete = w.Button(description="Delete", button_style="danger", layout=w.Layout(width="80px"),
                          tooltip=f"delete method {name}")
        delete.on_click(lambda _b: self.ask_delete(name))
        self.delete_buttons[name] = delete
        return w.Box([delete])  # a cell as tall as its row, so the row's line runs under the button too

    def ask_delete(self, name: str) -> None:
        """Seed 000's "Delete", asked first: the question and its buttons under the method's row."""
        self._asked = name
        if self.form is not None:
            self.form.status.clear()
        self.status.clear()
        self.confirm.ask(f"Delete method {name}? It will no longer be selectable for new trainings.")
        self._place_confirm()

    def _no_delete(self) -> None:
        self._asked = None
        self._place_confirm()

    def _delete_asked(self) -> None:
        name, self._asked = self._asked, None
        if name is None:
            return
        if not self.admin:  # no button offers it; refused all the same
            self.status.show(ADMIN_ONLY, "error")
            return
        try:
            methods.delete_method(name)
        except DeepeError as exc:
            self.status.show(exc.message, "error")
            return
        self.status.show(f"method {name} deleted", "ok")
        self.refresh()
