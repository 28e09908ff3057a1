"""Method Management: the list of methods, "Add New Method" and "Delete" (seed 000)."""

from __future__ import annotations

import asyncio
import html

import ipywidgets as w

from .. import config, methods
from ..errors import DeepeError
from ..kernels import installed_kernels
from .common import ConnectionNote, Status, action, close_tree, poll_forever, start_poller

LABEL = {"width": "240px"}  # a dict, not a Layout: each label gets its own (closing one closes no other)
FORM = {"style": {"description_width": "130px"}, "layout": {"width": "480px"}}


class MethodForm(w.VBox):
    """Seed 000's fields; the stages each lifecycle needs appear (and are required) as it changes."""

    def __init__(self, on_saved=None):
        self.on_saved = on_saved
        self.name = w.Text(description="Training Name *", **FORM)
        self.display = w.Text(description="Display Name", **FORM)
        self.ttype = w.Dropdown(options=list(config.TRAINING_TYPES), description="Training Type *", **FORM)
        self.lifecycle = w.Dropdown(options=[("Customized Model", "customized"), ("Complete Model", "complete"),
                                             ("Live Model", "live")], description="Lifecycle *", **FORM)
        self.description = w.Textarea(description="Description", **FORM)
        kernels = sorted(installed_kernels())
        self.errors = {key: w.HTML() for key in ("name", "training_type", "lifecycle", *config.STAGES)}
        self.stage_rows = {}
        self.files, self.kernels, self.enabled = {}, {}, {}
        for stage in config.STAGES:
            self.files[stage] = w.Text(placeholder="notebook or .py file", layout=w.Layout(width="340px"))
            self.kernels[stage] = w.Dropdown(options=kernels, value=config.DEFAULT_KERNEL
                                             if config.DEFAULT_KERNEL in kernels else None,
                                             layout=w.Layout(width="160px"))
            self.enabled[stage] = w.Checkbox(description="enable", indent=False, layout=w.Layout(width="80px"))
            self.stage_rows[stage] = w.VBox([
                w.HBox([w.Label(f"{stage}", layout=w.Layout(**LABEL)), self.files[stage], self.kernels[stage],
                        self.enabled[stage]]), self.errors[stage]])
        self.save = w.Button(description="Save Method", button_style="primary", icon="check")
        self.cancel = w.Button(description="Cancel")
        self.status = Status()
        self.lifecycle.observe(lambda _c: self._show_stages(), "value")
        action(self.save, self.status, "checking and saving …")(self._save)
        self.cancel.on_click(lambda _b: setattr(self.layout, "display", "none"))
        super().__init__([w.HTML("<b>Add New Method</b>"), self.name, self.errors["name"], self.display,
                          self.ttype, self.lifecycle, self.description, w.HTML("<b>Stages</b> (file + kernel)"),
                          *self.stage_rows.values(), w.HBox([self.save, self.cancel, self.status])],
                         layout=w.Layout(border="1px solid #ddd", padding="8px", display="none"))
        self._show_stages()

    def _show_stages(self) -> None:
        lifecycle = self.lifecycle.value
        mandatory, optional = methods.MANDATORY[lifecycle], methods.OPTIONAL[lifecycle]
        for stage, row in self.stage_rows.items():
            row.layout.display = None if stage in mandatory or stage in optional else "none"
            self.enabled[stage].layout.display = None if stage in optional else "none"
            label = row.children[0].children[0]
            label.value = f"{stage} *" if stage in mandatory else f"{stage} (optional)"

    def stage_values(self) -> dict:
        lifecycle = self.lifecycle.value
        out = {}
        for stage in methods.MANDATORY[lifecycle]:
            out[stage] = (self.files[stage].value.strip(), self.kernels[stage].value)
        for stage in methods.OPTIONAL[lifecycle]:
            if self.enabled[stage].value:
                out[stage] = (self.files[stage].value.strip(), self.kernels[stage].value)
        return out

    def _save(self) -> None:
        for box in self.errors.values():
            box.value = ""
        try:
            method = methods.register_method(
                self.name.value.strip(), self.stage_values(), training_type=self.ttype.value,
                lifecycle=self.lifecycle.value, display_name=self.display.value.strip(),
                description=self.description.value.strip())
        except DeepeError as exc:
            box = self.errors.get(exc.field or "", None)
            if box is not None:
                box.value = f'<span class="deepe-field-error" style="color:#cf222e">{html.escape(exc.message)}</span>'
            raise
        if self.on_saved:  # the table first, then the message that points at it
            self.on_saved(method)
        self.status.show(f"method {method.name} registered", "ok")


def _catalog(listed) -> list[tuple[str, float]]:
    """What the table shows, to tell whether it must be redrawn."""
    return [(m.name, m.updated_at) for m in listed]


class MethodManager(w.VBox):
    """The methods table with "Add New Method" and "Delete" (registering runs code: admin only).

    Follows methods added or deleted elsewhere (the CLI, another dashboard) within a few seconds."""

    poll_seconds = 3.0

    def __init__(self, admin: bool = True):
        methods.ensure_builtins()
        self.admin = admin
        self.status = Status()
        self.connection = ConnectionNote()
        self.table = w.VBox()
        self.form = self.add_button = None  # without admin: no form and no button, not hidden ones
        if admin:
            self.form = MethodForm(on_saved=lambda _m: self.refresh())
            self.add_button = w.Button(description="Add New Method", icon="plus", button_style="primary")
            self.add_button.on_click(lambda _b: setattr(self.form.layout, "display", None))
            header, form = [self.add_button], [self.form]
        else:
            header, form = [w.HTML("<i>Method registration and deletion are off in this app "
                                   "(start it with --allow-method-admin).</i>")], []
        super().__init__([w.HTML("<h3>Training Method Management</h3>"),
                          w.HBox(header + [self.status, self.connection]), *form, self.table])
        self._shown = None
        self.refresh()
        self._task = start_poller(lambda: poll_forever(self.poll_once, self.connection, self.poll_seconds))

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
        return True

    def close(self) -> None:
        """Stop polling and close every widget of the view."""
        if self._task is not None:
            self._task.cancel()
        close_tree(self)

    def refresh(self) -> None:
        self._draw(methods.list_methods())

    def _draw(self, listed) -> None:
        head = w.HBox([w.HTML(f"<b>{h}</b>", layout=w.Layout(width=wd)) for h, wd in
                       (("Name", "150px"), ("Type", "90px"), ("Lifecycle", "100px"), ("Built-in", "70px"),
                        ("Stages (kernel)", "420px"), ("", "160px"))])
        rows = [head]
        self._shown = _catalog(listed)
        for method in listed:
            stages = ", ".join(f"{s} ({i['kernel']})" for s, i in method.stages.items())
            cells = [w.HTML(html.escape(method.name), layout=w.Layout(width="150px")),
                     w.HTML(method.training_type, layout=w.Layout(width="90px")),
                     w.HTML(method.lifecycle, layout=w.Layout(width="100px")),
                     w.HTML("yes" if method.builtin else "no", layout=w.Layout(width="70px")),
                     w.HTML(html.escape(stages), layout=w.Layout(width="420px"))]
            if self.admin and not method.builtin:
                cells.append(self._delete_control(method.name))
            rows.append(w.HBox(cells, layout=w.Layout(border_bottom="1px solid #eee")))
        old, self.table.children = self.table.children, rows
        for row in old:  # nothing of the old table is left in the kernel
            close_tree(row)

    def _delete_control(self, name: str) -> w.Widget:
        delete = w.Button(description="Delete", button_style="danger", layout=w.Layout(width="80px"),
                          tooltip=f"delete method {name}")
        confirm = w.Button(description="Yes, delete", button_style="danger", layout=w.Layout(width="100px",
                                                                                             display="none"))
        cancel = w.Button(description="Cancel", layout=w.Layout(width="70px", display="none"))

        def ask(_b):
            delete.layout.display = "none"
            confirm.layout.display = cancel.layout.display = None
            self.status.show(f"Delete method {name}? It will no longer be selectable.", "warn")

        def back(_b):
            delete.layout.display = None
            confirm.layout.display = cancel.layout.display = "none"
            self.status.clear()

        def do(_b):
            try:
                methods.delete_method(name)
            except DeepeError as exc:
                self.status.show(exc.message, "error")
                return
            self.status.show(f"method {name} deleted", "ok")
            self.refresh()

        delete.on_click(ask)
        cancel.on_click(back)
        confirm.on_click(do)
        return w.HBox([delete, confirm, cancel])
