"""Models: the Customized, Complete and Live Models trainings made (seed 000's lifecycle).

Each model's card (base, method, dataset, date, its evaluation scores beside its base model's, the
training's final metrics), and what can be done with it: **Evaluate** (a suite on a dataset, as
`deepe evaluate` queues it), **Save** a Customized Model as a Complete Model (merge the adapter, in a chosen precision),
**Try it** (a prompt answered by the model and by its base model, side by side), **Delete**
(asked first; refused as `deepe models delete` refuses: a model another was made from, a live one,
one a queued or running job uses). Delete, Deploy and Stop are admin actions (`state.page_is_admin`):
a page without admin gets no button for them, and refuses them if asked all the same.
"""

from __future__ import annotations

import asyncio
import base64
import html
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ipywidgets as w

from .. import config, datasets, deployments, evaluations, inference, jobs, methods, metrics, models, trainings, worker
from ..config import StageName
from ..envs import ENGINES, require_env
from ..errors import DeepeError
from ..jobs import format_time as when
from ..models import LiveState
from ..store import FINISHED, JobStatus, ModelKind
from ..trainings.chat import CHAT
from .common import close_tree, stylesheet
from .evaluation_view import EvaluationSection, score_names, score_text, suite_label
from .feedback import ConnectionNote, Status, confirm_row, error_text
from .labels import metric_label, metric_order, short_label, show_value
from .polling import PollingView, run_in_background
from .record import RecordView
from .state import ADMIN_ONLY, in_voila_app, resolve_admin
from .tables import GridTable, html_table
from .training_list import short_time

KINDS = (("Base", ModelKind.BASE), ("Customized", ModelKind.CUSTOMIZED), ("Complete", ModelKind.COMPLETE),
         ("Live", ModelKind.LIVE))
KIND_WORDS = {ModelKind.CUSTOMIZED: "Customized Model", ModelKind.COMPLETE: "Complete Model",
              ModelKind.LIVE: "Live Model", ModelKind.BASE: "Base Model"}
DTYPES = (("auto (the base model's own)", "auto"), ("float32 (exact, largest)", "float32"),
          ("bfloat16 (half the size)", "bfloat16"), ("float16 (half the size)", "float16"))
# Fits 800 px without a scroll bar; a cut name shows whole on hover
COLUMNS = (("Name", "minmax(120px, 2.2fr)"), ("Base model", "minmax(64px, 1.2fr)"),
           ("Method", "minmax(64px, 1fr)"), ("Dataset", "minmax(64px, 1fr)"), ("Created", "96px"),
           ("Final", "96px"), ("Evaluation", "110px"), ("", "90px"))

BENCHMARK_PARAM, JUDGE_PARAM = "BENCHMARK_FILE", "JUDGE"  # the evaluation notebook's parameters

log = logging.getLogger("deepe.ui")


def who_asks() -> str:
    """Who an admin action is logged as: the account, and whether from the app or JupyterLab."""
    return f"{models.current_user()} from {'the dashboard app' if in_voila_app() else 'JupyterLab'}"


def model_card(record) -> dict:
    """What a person asks of a model: base, method, dataset, job, date, parameters, final metrics
    (a Complete Model inherits them from the Customized Model it merged)."""
    chain = models.lineage(record)
    card = next((dict(m.meta) for m in chain if m.meta.get("metrics") is not None or m.meta.get("dataset")), {})
    base = next((m.name for m in chain if m.kind == ModelKind.BASE), card.get("base_model") or record.parent)
    return {"name": record.name, "kind": record.kind, "base_model": base, "method": record.method or card.get("method"),
            "dataset": card.get("dataset"), "job_id": card.get("job_id") or record.job_id,
            "made_by_job": record.job_id, "created_at": record.created_at, "parameters": card.get("parameters") or {},
            "metrics": card.get("metrics") or {}, "dtype": record.meta.get("dtype"),
            "merged_from": record.parent if record.kind == ModelKind.COMPLETE else None}


def key_score(record) -> str:
    """"ROUGE-L 0.2222": the first score of its newest evaluation with its type's default suite
    (generation, retrieval, images …), or "-"."""
    found = evaluations.latest(record.name, trainings.for_model(record).default_suite)
    names = score_names((found or {}).get("metrics") or {})
    return f"{metric_label(names[0])} {score_text(found['metrics'][names[0]])}" if names else "-"


def key_metric(card: dict) -> str:
    """"loss 0.0036" (or the reward, for an RL method): the one number a list can show."""
    found = card["metrics"]
    for name in ("loss", "reward", "eval_loss"):
        if name in found and found[name].get("final") is not None:
            return f"{name} {found[name]['final']:.4g}"
    return "-"


class ModelsView(PollingView, w.VBox):
    """The models list by kind, and the card of the one opened, with Save, Try it and Delete.

    `on_job(job_id)` opens a job's details (the training that made a model, a save just queued).
    Follows models added or deleted elsewhere within a few seconds."""

    poll_seconds = 3.0

    def __init__(self, on_job=None, start_worker: bool = True, admin: bool | None = None):
        self.on_job, self.start_worker = on_job, start_worker
        self.admin = resolve_admin(admin)
        self.kind = w.ToggleButtons(options=KINDS, value=ModelKind.CUSTOMIZED, style={"button_width": "110px"})
        self.kind.observe(lambda _c: self._on_kind(), "value")
        self.table = GridTable(list(COLUMNS), max_height="300px")
        self.table.add_class("deepe-models")
        self.empty = w.HTML()
        self.status = Status()
        self.connection = ConnectionNote()
        self.card_area = w.VBox()
        self.card: ModelCard | None = None
        self.rows: dict[str, list[w.Widget]] = {}
        self._shown = None
        super().__init__([stylesheet(), w.HTML("<h3>Models</h3><div style='color:#57606a'>A training that succeeds "
                                               "makes a <b>Customized Model</b> (its adapter); <b>Save</b> merges one "
                                               "into its base as a <b>Complete Model</b>. <b>Base</b> models are what "
                                               "trainings start from: open one to try it first.</div>"),
                          w.HBox([self.kind, self.status, self.connection], layout=w.Layout(align_items="center")),
                          self.table, self.empty, self.card_area])
        self.refresh()
        self.start_polling()

    async def poll_once(self) -> bool:
        """One poll: the models of the shown kind read in a thread, the table redrawn only if they changed."""
        kind = self.kind.value
        listed, scored = await asyncio.to_thread(lambda: (models.list_models(kind), evaluations.newest_id()))
        if kind == self.kind.value:
            self._redraw_if_changed(listed, scored)
        card = self.card
        if card is not None and not card.save_settled:  # its save job: the note follows it to its end
            read = await asyncio.to_thread(card.read_save)
            if card is self.card and read is not None:
                card.show_save(*read)
        if card is not None and not card.evaluation.settled:  # an evaluate job of it is queued or running
            read = await asyncio.to_thread(card.evaluation.read)
            if card is self.card:
                card.evaluation.show(read)
                if card.evaluation.settled:  # its state line says how the jobs ended: "is queued" is stale
                    card.evaluate_note.value = ""
        return False

    def refresh(self) -> None:
        self._draw(models.list_models(self.kind.value), evaluations.newest_id())

    def _on_kind(self) -> None:
        if self.card is not None and self.card.kind != self.kind.value:
            self._close_card()  # a card beside a list of other models reads as one of them
        self.refresh()

    def refresh_if_changed(self) -> bool:
        return self._redraw_if_changed(models.list_models(self.kind.value), evaluations.newest_id())

    def _redraw_if_changed(self, listed, scored: int | None = None) -> bool:
        """Redraw when a model came or went, or an evaluation finished (its Evaluation column)."""
        if ([(m.name, m.created_at) for m in listed], scored) == self._shown:
            return False
        self._draw(listed, scored)
        return True

    def _draw(self, listed, scored: int | None = None) -> None:
        self._shown = ([(m.name, m.created_at) for m in listed], scored)
        rows, self.rows = [], {}
        for record in listed:
            card = model_card(record)
            open_button = w.Button(description="Open", icon="folder-open", layout=w.Layout(width="84px"),
                                   tooltip=f"the card of {record.name}: " + ("try, evaluate" if record.kind ==
                                                                             ModelKind.BASE else "save, try, delete"))
            open_button.on_click(lambda _b, name=record.name: self.open_model(name))
            cells = [w.HTML(f"<span title='{html.escape(record.name, quote=True)}'>{html.escape(record.name)}</span>"),
                     *(w.HTML(f"<span title='{html.escape(text, quote=True)}'>{html.escape(text)}</span>")
                       for text in ("-" if record.kind == ModelKind.BASE else card["base_model"] or "-",
                                    card["method"] or "-", card["dataset"] or "-")),
                     w.HTML(short_time(record.created_at)),
                     w.HTML(html.escape(key_metric(card) if record.kind != ModelKind.LIVE
                                        else str(LiveState.from_meta(record.meta).status or "-"))),
                     w.HTML(html.escape(key_score(record) if record.kind != ModelKind.LIVE else "-")),
                     open_button]
            rows.append(cells)
            self.rows[record.name] = cells
        old = [c for row in self.table.rows for c in row]
        self.table.set_rows(rows)
        for cell in old:
            close_tree(cell)
        kind_words = KIND_WORDS[self.kind.value]
        if listed:
            self.empty.value = ""
        elif self.kind.value == ModelKind.LIVE:
            self.empty.value = ("<i>No Live Models yet: open a Complete or Customized Model and Deploy it "
                                "(the vLLM environment comes first: <code>deepe envs create vllm</code>).</i>")
        elif self.kind.value == ModelKind.COMPLETE:
            self.empty.value = "<i>No Complete Models yet: open a Customized Model and Save it.</i>"
        elif self.kind.value == ModelKind.BASE:
            self.empty.value = ("<i>No base models registered: <code>deepe init</code> adds SmolLM2, "
                                "<code>deepe models add NAME FOLDER</code> one of yours.</i>")
        else:
            self.empty.value = f"<i>No {kind_words}s yet: a training that succeeds makes one.</i>"
        if self.card is not None and self.card.name not in self.rows and self.card.kind == self.kind.value:
            self._close_card()  # deleted elsewhere

    def open_model(self, name: str) -> None:
        """Show a model's card (below the list)."""
        self._close_card()
        self.card = ModelCard(models.get_model(name), on_job=self.on_job, on_deleted=self._deleted,
                              start_worker=self.start_worker, admin=self.admin)
        self.card_area.children = [self.card]
        for row_name, cells in self.rows.items():
            for cell in cells:
                (cell.add_class if row_name == name else cell.remove_class)("deepe-chosen")

    def _close_card(self) -> None:
        old, self.card = self.card, None
        self.card_area.children = []
        if old is not None:
            old.close()

    def _deleted(self, name: str, words: str | None = None) -> None:
        self._close_card()
        self.refresh()
        self.status.show(words or f"model {name} deleted", "ok")


def deploy_unavailable(engine: str = "vllm") -> str | None:
    """Why Deploy cannot work on this machine (its deployment environment is missing), or None."""
    try:
        require_env(engine)
    except DeepeError:
        size = ENGINES[engine].size_note
        return (f"Not available yet: this machine has no {engine} deployment environment. Create it once with "
                f"deepe envs create {engine}" + (f" ({size})" if size else "") + ".")
    return None


def _training_type(record) -> trainings.TrainingType:
    """The model's training type; a model whose method is gone reads as a chat model (its card says the
    method no longer exists)."""
    try:
        return trainings.for_model(record)
    except DeepeError:
        return CHAT


def _takes_image(name: str) -> bool:
    try:
        return inference.takes_image(name)
    except DeepeError:  # its base model was deleted: no picture to offer
        return False


class ModelCard(w.VBox):
    """One model: its card, Save (Customized only), Try it; with admin, Deploy (or Stop) and Delete."""

    def __init__(self, record, on_job=None, on_deleted=None, start_worker: bool = True, admin: bool | None = None):
        self.admin = resolve_admin(admin)
        self.record, self.name, self.kind = record, record.name, record.kind
        self.on_job, self.on_deleted, self.start_worker = on_job, on_deleted, start_worker
        self.info = model_card(record)
        self.training_type = _training_type(record)
        self.status = Status()
        made_by = self.info["made_by_job"]
        self.job_button = w.Button(description=f"View job {made_by}" if made_by else "", icon="search",
                                   layout=w.Layout(width="150px", display=None if made_by and on_job else "none"))
        self.job_button.on_click(lambda _b: self.on_job and made_by and self.on_job(made_by))
        # Save: merge to a Complete Model
        self.dtype = w.Dropdown(options=DTYPES, value="auto", description="Precision",
                                layout=w.Layout(width="300px"))
        self.save = w.Button(description="Save as Complete Model", icon="save", button_style="primary",
                             layout=w.Layout(width="210px"))
        self.save.on_click(lambda _b: self._save())
        self.save_note = w.HTML()
        save_box = w.VBox([w.HTML("<h4>Save</h4><div style='color:#57606a'>Merges the adapter into the base model: "
                                  "one folder that loads without PEFT (a new Complete Model).</div>"),
                           w.HBox([self.dtype, self.save], layout=w.Layout(align_items="center")), self.save_note])
        save_box.layout.display = None if self.kind == ModelKind.CUSTOMIZED else "none"
        self.save_box = save_box
        self._explain_save()
        # Try it: a prompt, answered by this model and by its base model; a reward model scores an answer
        # given beside the prompt, alone (its base model has no score head)
        scores = self.training_type.scores_answers
        self.prompt = w.Textarea(placeholder=("The prompt, e.g. " if scores else "Ask something, e.g. ")
                                 + "Give the capital card for this country: France",
                                 layout=w.Layout(flex="1 1 0", min_width="0", height="70px"))
        self.answer_given = w.Textarea(placeholder="The answer to score, e.g. CAPITAL CARD | France | Paris",
                                       layout=w.Layout(flex="1 1 0", min_width="0", height="70px",
                                                       display=None if scores else "none"))
        self.ask = w.Button(description="Try it", icon="play", button_style="primary")
        self.ask.on_click(lambda _b: self.try_it())
        # a vision-language model answers about a picture the user uploads
        self.image = w.FileUpload(accept="image/*", multiple=False, description="Image")
        self.image.layout.display = None if _takes_image(self.name) else "none"
        self.try_status = Status()
        self.settings = self._answer_settings()
        self.answer = w.HTML(self._answer_box("", ""))
        self.base_answer = w.HTML(self._answer_box("", ""))
        self.answer_title = w.HTML(f"<b>{html.escape(self.name)}</b>")
        has_base = bool(self.info["base_model"]) and self.info["base_model"] != self.name and not scores
        self.base_title = w.HTML(f"<b>{html.escape(self.info['base_model'] or '-')}</b> "
                                 "<span style='color:#57606a'>(the base model, before training)</span>")
        self.try_record = RecordView(download_prefix=f"{self.name}-")
        self.try_record_box = w.Accordion(children=[self.try_record], titles=("Record of this answer",))
        self.try_record_box.selected_index = None
        self.try_record_box.layout.display = "none"
        self.try_record_box.observe(self._on_record_open, "selected_index")
        self.last_try: dict | None = None
        # two columns that share the card's width (never wider: at 800 px they stay inside its border)
        columns = w.Layout(flex="1 1 0", min_width="0", padding="0 8px 0 0")
        # a base model answers alone: no second column of itself
        self.base_column = w.VBox([self.base_title, self.base_answer], layout=w.Layout(
            flex="1 1 0", min_width="0", padding="0 8px 0 0", display=None if has_base else "none"))
        try_box = w.VBox([w.HTML("<h4>Try it</h4>" + ("<div style='color:#57606a'>It scores the "
                                                      "answer as a reply to the prompt.</div>" if scores else "")),
                          # one text box unless it scores answers (a page's lone textarea stays the prompt)
                          self.image, w.HBox([self.prompt, *([self.answer_given] if scores else [])],
                                             layout=w.Layout(width="100%", grid_gap="8px")), self.settings,
                          w.HBox([self.ask, self.try_status], layout=w.Layout(align_items="center",
                                                                             flex_flow="row wrap")),
                          w.HBox([w.VBox([self.answer_title, self.answer], layout=columns), self.base_column],
                                 layout=w.Layout(width="100%")),
                          self.try_record_box], layout=w.Layout(max_width="100%", overflow="hidden"))
        try_box.add_class("deepe-try-it")
        # Delete, asked first (admin only: without it, no button, not a hidden one)
        self.delete = self.confirm = None
        delete_box = []
        if self.admin and self.kind != ModelKind.BASE:  # a base model is removed with `deepe models delete`
            self.delete = w.Button(description="Delete…", icon="trash", layout=w.Layout(width="110px"))
            self.delete.on_click(lambda _b: self._ask_delete())
            self.confirm = confirm_row(w.HTML(), "Yes, delete it", self._delete_asked)
            delete_box = [w.HTML("<h4>Delete</h4>"), w.HBox([self.delete, self.status],
                                                             layout=w.Layout(align_items="center")), self.confirm]
        self.live_box = self._live_box()
        # its evaluation: scores beside its base model's, predictions, records; and Evaluate
        self.evaluation = EvaluationSection(model=self.name, on_job=on_job, predictions_open=False)
        self.evaluation.refresh()
        self.evaluate_box = self._evaluate_box()
        super().__init__([w.HBox([w.HTML(f"<h3 style='margin:4px 0'>{html.escape(self.name)} "
                                         f"<span style='color:#57606a;font-weight:normal'>"
                                         f"{KIND_WORDS.get(self.kind, self.kind)}</span></h3>"), self.job_button],
                                 layout=w.Layout(justify_content="space-between", align_items="center")),
                          w.HTML(self._card_html()), self.evaluation, self.evaluate_box,
                          w.HTML(self._metrics_html()), save_box, self.live_box, try_box, *delete_box,
                          *([] if self.delete else [self.status])],
                         layout=w.Layout(border="1px solid #d0d7de", padding="4px 12px 12px", margin="12px 0 0 0"))
        self.add_class("deepe-model-card")

    def close(self) -> None:
        close_tree(self)

    # --- the card ------------------------------------------------------------------------

    def _card_html(self) -> str:
        info = self.info
        rows = [["Base Model", html.escape(info["base_model"] or "-")],
                ["Training Method", html.escape(info["method"] or "-")],
                ["Dataset", html.escape(info["dataset"] or "-")], ["Created", when(info["created_at"])]]
        if info["job_id"]:
            rows.append(["Trained by", f"job {info['job_id']}"])
        if info["merged_from"]:
            rows.append(["Merged from", html.escape(info["merged_from"])])
        if info["dtype"]:
            rows.append(["Precision", html.escape(str(info["dtype"]))])
        changed = ", ".join(f"{short_label(k)} {show_value(v)}" for k, v in sorted(info["parameters"].items())
                            if k not in ("MODEL_PATH", "ADAPTER_PATH", "DTYPE"))
        if self.kind != ModelKind.BASE:
            rows.append(["Parameters changed", html.escape(changed or "none (the method's defaults)")])
        else:
            rows.append(["Folder", html.escape(self.record.path)])
        return html_table(["", ""], rows)

    def _metrics_html(self) -> str:
        """The training's own metrics (final and best): how it trained, not how well it answers."""
        info = self.info
        metric_rows = []
        declared = metrics.declared_directions([info["job_id"]]) if info["job_id"] else {}
        for name in metric_order(info["metrics"]):
            stats = info["metrics"][name]
            direction = None if name.startswith("train_") else metrics.direction(name, declared)  # one value: no best
            best = f"{stats['best']:.5g}" if direction and stats.get("best") is not None else "-"
            metric_rows.append([html.escape(metric_label(name)), f"{stats['final']:.5g}", best])
        if not metric_rows:
            return "" if self.kind == ModelKind.BASE else "<h4>Training metrics</h4><i>No metrics recorded for " \
                                                           "this model's training.</i>"
        return ("<h4>Training metrics <span style='color:#57606a;font-weight:normal'>(of its training run; the "
                "scores above are of its answers)</span></h4>" + html_table(["metric", "final", "best"], metric_rows))

    # --- Evaluate ------------------------------------------------------------------------

    def _evaluate_box(self) -> w.VBox:
        """Evaluate: a suite on a dataset (the training's by default); a benchmark file, or a judge."""
        names = [d.name for d in datasets.list_datasets()]
        default = self.info["dataset"] if self.info["dataset"] in names else (names[0] if names else None)
        training_type = self.training_type  # its suites: a chat model's are not an embedder's
        suites = [s for s in training_type.suites if s in evaluations.SUITES]
        self.eval_suite = w.Dropdown(options=[(suite_label(s), s) for s in suites], description="Suite",
                                     value=training_type.default_suite if training_type.default_suite in suites
                                     else (suites[0] if suites else None), layout=w.Layout(width="420px"))
        self.eval_dataset = w.Dropdown(options=names, value=default, description="Dataset",
                                       layout=w.Layout(width="420px"))
        self.eval_benchmark = w.Text(description="Benchmark file", placeholder="/path/to/questions.jsonl or task.yaml",
                                     layout=w.Layout(width="560px"), style={"description_width": "110px"})
        lives = [m.name for m in models.list_models(ModelKind.LIVE)]
        self.eval_judge = w.Dropdown(options=lives, value=lives[0] if lives else None, description="Judge",
                                     layout=w.Layout(width="420px"))
        self.eval_with_base = w.Checkbox(value=True, indent=False, layout=w.Layout(width="auto"),
                                         description=f"and its base model {self.info['base_model'] or ''} on the "
                                                     "same rows, unless it was already (to compare with)")
        self.evaluate_button = w.Button(description="Evaluate", icon="check-square-o", button_style="primary",
                                        layout=w.Layout(width="130px"))
        self.evaluate_button.on_click(lambda _b: self.submit_evaluation())
        self.evaluate_note = w.HTML()
        self.evaluate_job_button = w.Button(description="View the job", icon="search", layout=w.Layout(
            width="130px", display="none"))
        self.evaluate_job_button.on_click(lambda _b: self.on_job and self.last_evaluation and
                                          self.on_job(self.last_evaluation.id))
        self.last_evaluation = None
        self.eval_suite.observe(lambda _c: self._show_suite_fields(), "value")
        self._show_suite_fields()
        if not suites:
            words = (f"It has no evaluation suite: {training_type.evaluated_while_training}."
                     if training_type.evaluated_while_training
                     else f"{training_type.name} models have no evaluation suite yet.")
            return w.VBox([w.HTML(f"<h4>Evaluate</h4><div style='color:#57606a'>{html.escape(words)}</div>")])
        return w.VBox([w.HTML("<h4>Evaluate</h4><div style='color:#57606a'>Runs a suite on this model as an evaluate "
                              "job (a re-runnable record); its scores appear above, beside its base model's.</div>"),
                       self.eval_suite, self.eval_dataset, self.eval_benchmark, self.eval_judge, self.eval_with_base,
                       w.HBox([self.evaluate_button, self.evaluate_note, self.evaluate_job_button],
                              layout=w.Layout(align_items="center"))])

    def _show_suite_fields(self) -> None:
        suite = self.eval_suite.value
        self.eval_benchmark.layout.display = None if suite == "benchmark" else "none"
        self.eval_judge.layout.display = None if suite == "judge" else "none"
        self.eval_dataset.layout.display = "none" if suite == "benchmark" else None
        # the judge compares this model's answers with its base model's itself
        has_base = bool(self.info["base_model"]) and self.info["base_model"] != self.name
        self.eval_with_base.layout.display = None if suite != "judge" and has_base else "none"
        if suite == "judge" and not self.eval_judge.options:
            self.evaluate_note.value = ("<span style='color:#9a6700'>No Live Model to judge with: deploy one first "
                                        "(or set DEEPE_JUDGE_URL where the worker runs).</span>")
        else:
            self.evaluate_note.value = ""

    def submit_evaluation(self):
        """Queue an evaluate job of this model, and of its base on the same rows (`evaluations.evaluate`),
        and show them."""
        suite = self.eval_suite.value
        params = {}
        if suite == "benchmark":
            if not self.eval_benchmark.value.strip():
                self.evaluate_note.value = "<span class='deepe-field-error'>Give the benchmark file's path.</span>"
                return None
            params[BENCHMARK_PARAM] = self.eval_benchmark.value.strip()
        if suite == "judge" and self.eval_judge.value:
            params[JUDGE_PARAM] = self.eval_judge.value
        self.evaluate_button.disabled = True
        try:
            with_base = self.eval_with_base.value and self.eval_with_base.layout.display != "none"
            *before, job = evaluations.evaluate(self.name, dataset=None if suite == "benchmark" else
                                                self.eval_dataset.value, suite=suite, params=params or None,
                                                with_base=with_base)
            base_job = before[0] if before else None
            if self.start_worker:
                worker.ensure_worker()
        except DeepeError as exc:
            self.evaluate_note.value = f"<span class='deepe-field-error'>{html.escape(exc.message)}</span>"
            return None
        finally:
            self.evaluate_button.disabled = False
        self.last_evaluation, self.last_base_evaluation = job, base_job
        which = (f"Evaluate jobs {job.id} (this model) and {base_job.id} (its base model) are queued"
                 if base_job else f"Evaluate job {job.id} is queued")
        self.evaluate_note.value = (f"<span class='deepe-status deepe-ok' style='color:#1a7f37'>{which} "
                                    f"({html.escape(suite)} suite): the scores appear above when they finish.</span>")
        self.evaluate_job_button.layout.display = None if self.on_job else "none"
        self.evaluation.refresh()  # the queued job shows in the state line; the Models view's poll follows it
        return job

    # --- Save ----------------------------------------------------------------------------

    def _explain_save(self) -> None:
        if self.kind != ModelKind.CUSTOMIZED:
            return
        try:
            method = methods.get_method(self.record.method)
        except DeepeError:
            method = None
        if method is None or StageName.SAVING not in method.stages:
            self.save.disabled = True
            why = (f"its method {self.record.method} has no saving stage (a Customized Model lifecycle)"
                   if method else f"its method {self.record.method} no longer exists")
            self.save_note.value = f"<span style='color:#57606a'>Cannot be saved: {html.escape(why)}.</span>"

    def _save(self) -> None:
        self.save.disabled = True
        try:
            job = jobs.submit_save(self.name, dtype=self.dtype.value)
            if self.start_worker:
                worker.ensure_worker()
        except DeepeError as exc:
            self.save_note.value = f"<span class='deepe-field-error'>{html.escape(exc.message)}</span>"
            self.save.disabled = False
            return
        self.save.disabled = False
        self.last_save_job = job
        self.show_save(job, [])

    @property
    def save_settled(self) -> bool:
        """True when no save job of this card is queued or running (nothing for the poller to follow)."""
        job = getattr(self, "last_save_job", None)
        return job is None or job.status in FINISHED

    def read_save(self) -> tuple | None:
        """(the save job as it is now, the models it made): blocking, no widget touched; None without one."""
        job = getattr(self, "last_save_job", None)
        if job is None:
            return None
        job = jobs.get_job(job.id)
        return job, (models.models_of_job(job.id) if job.status == JobStatus.SUCCEEDED else [])

    def follow_save(self) -> None:
        """Show where the save job is now (the Models view's poller calls `read_save` in a thread)."""
        read = self.read_save()
        if read is not None:
            self.show_save(*read)

    def show_save(self, job, made) -> None:
        """The save note follows its job: queued, running, then the Complete Model's name or why it failed."""
        self.last_save_job = job
        what = f"Save job {job.id} ({html.escape(job.name)})"
        if job.status == JobStatus.SUCCEEDED:
            names = ", ".join(f"<b>{html.escape(m.name)}</b>" for m in made) or "its Complete Model"
            text, colour = f"Saved: {names} is under Complete ({what.lower()}).", "#1a7f37"
        elif job.status == JobStatus.FAILED:
            why = html.escape((job.error or "no reason was recorded").rstrip("."))
            text, colour = f"{what} failed: {why}. Its log: job {job.id} under Trainings, Train Log.", "#cf222e"
        elif job.status == JobStatus.CANCELLED:
            text, colour = f"{what} was cancelled; nothing was saved.", "#57606a"
        elif job.status == JobStatus.CANCELLING:
            text, colour = f"{what} is being cancelled…", "#9a6700"
        elif job.status == JobStatus.RUNNING:
            text, colour = f"{what} is running: merging the adapter into the base model…", "#0969da"
        else:
            text, colour = (f"{what} is queued: the Complete Model appears under Complete when it "
                            "finishes."), "#1a7f37"
        value = f"<span class='deepe-status deepe-save-{job.status}' style='color:{colour}'>{text}</span>"
        if self.save_note.value != value:
            self.save_note.value = value

    # --- Try it --------------------------------------------------------------------------

    @staticmethod
    def _answer_box(text: str, kind: str) -> str:
        css = {"error": "color:#cf222e", "wait": "color:#57606a;font-style:italic"}.get(kind, "")
        return f"<div class='deepe-answer' style='{css}'>{html.escape(text)}</div>"

    @staticmethod
    def _picture_box(path: str, seed) -> str:
        try:
            data = base64.b64encode(Path(path).read_bytes()).decode()
        except OSError as exc:
            return f"<div class='deepe-answer' style='color:#cf222e'>{html.escape(str(exc))}</div>"
        return (f"<div class='deepe-answer'><img src='data:image/png;base64,{data}' style='width:256px'>"
                f"<br><small>seed {html.escape(str(seed))}</small></div>")

    def try_it(self):
        """Ask the prompt of both models, off the kernel's loop; the button is busy meanwhile."""
        prompt = self.prompt.value.strip()
        if not prompt:
            self.try_status.show("Write a prompt first.", "warn")
            return None
        base = None if self.training_type.scores_answers else self.info["base_model"]
        answer = self.answer_given.value.strip() if self.training_type.scores_answers else None
        if self.training_type.scores_answers and not answer:
            self.try_status.show("Write the answer to score too: this model scores a prompt with its answer.",
                                 "warn")
            return None
        image = self._uploaded_image()
        if self.image.layout.display != "none" and image is None:
            self.try_status.show("Choose an image first: this model answers about a picture.", "warn")
            return None
        self.ask.disabled = True
        self.ask.description = "Answering…"
        self.try_status.show("each model answers in a kernel of its own (starting it and loading the model "
                             "takes a few seconds)", "info")
        wait = self._answer_box("answering…", "wait")
        self.answer.value = wait
        self.base_answer.value = wait if base and base != self.name else self._answer_box("(no base model)", "wait")
        started = time.monotonic()
        settings = self._settings_given()

        def work() -> dict:
            names = [self.name] + ([base] if base and base != self.name else [])
            with ThreadPoolExecutor(len(names)) as pool:
                futures = {n: pool.submit(self._infer_one, n, prompt, image, settings, answer) for n in names}
                return {n: f.result() for n, f in futures.items()}

        def done(results: dict) -> None:
            self._finish_try()
            self.last_try = results
            mine = results[self.name]
            self.answer.value = self._answer_of(mine)
            if base in results and base != self.name:
                self.base_answer.value = self._answer_of(results[base])
            self.try_status.show(f"answered in {time.monotonic() - started:.0f} s", "ok")
            if mine.get("record"):
                self.try_record.set_paths([mine["record"]])  # rendered when the record is opened
                self.try_record_box.layout.display = None

        def failed(exc: Exception) -> None:
            self._finish_try()
            self.answer.value = self._answer_box(error_text(exc), "error")
            self.base_answer.value = self._answer_box("", "")
            self.try_status.show("could not answer", "error")

        return run_in_background(work, done, failed)

    def _answer_settings(self) -> w.HBox:
        """Max new tokens and Temperature, where this model's inference stage takes them (its defaults)."""
        try:
            found = inference.answer_settings(self.name)
        except DeepeError:  # no inference stage: Try it says so when asked
            found = {}
        self.max_new_tokens = w.BoundedIntText(value=found.get("MAX_NEW_TOKENS", 64), min=1, max=4096,
                                               description="Max new tokens", style={"description_width": "110px"},
                                               layout=w.Layout(width="210px"),
                                               tooltip="the longest answer, in tokens (about ¾ of a word each)")
        self.temperature = w.BoundedFloatText(value=found.get("TEMPERATURE", 0.0), min=0.0, max=2.0, step=0.1,
                                              description="Temperature", style={"description_width": "90px"},
                                              layout=w.Layout(width="190px"),
                                              tooltip="0: the same answer each time; higher: more varied answers")
        self.max_new_tokens.layout.display = None if "MAX_NEW_TOKENS" in found else "none"
        self.temperature.layout.display = None if "TEMPERATURE" in found else "none"
        hint = w.HTML("<span style='color:#57606a'>Temperature 0 answers the same each time.</span>",
                      layout=w.Layout(display=None if "TEMPERATURE" in found else "none"))
        return w.HBox([self.max_new_tokens, self.temperature, hint],
                      layout=w.Layout(align_items="center", flex_flow="row wrap"))

    def _settings_given(self) -> dict:
        """The answer settings shown, as the user set them (those a model takes are passed to it)."""
        given = {}
        if self.max_new_tokens.layout.display != "none":
            given["MAX_NEW_TOKENS"] = int(self.max_new_tokens.value)
        if self.temperature.layout.display != "none":
            given["TEMPERATURE"] = float(self.temperature.value)
        return given

    def _uploaded_image(self) -> str | None:
        """The uploaded picture, written under the workspace (the stage kernel reads a file)."""
        if not self.image.value:
            return None
        upload = self.image.value[0]
        folder = config.workspace_dir("inference", "uploads")
        path = folder / f"{int(time.time() * 1000)}-{Path(upload['name']).name or 'image'}"
        path.write_bytes(bytes(upload["content"]))
        return str(path)

    @staticmethod
    def _infer_one(name: str, prompt: str, image: str | None = None, settings: dict | None = None,
                   answer: str | None = None) -> dict:
        """`name`'s answer to `prompt` (or, given `answer`, its score of that answer: a reward model)."""
        try:
            takes = inference.answer_settings(name) if settings else {}
            overrides = {k: v for k, v in (settings or {}).items() if k in takes}
            if answer is not None:
                overrides["ANSWERS"] = [answer]
            return inference.infer(name, [prompt], image=image, overrides=overrides)
        except DeepeError as exc:
            return {"responses": [], "error": exc.message, "record": None}

    def _answer_of(self, result: dict) -> str:
        if result.get("error"):
            return self._answer_box(f"could not answer: {result['error']}", "error")
        responses = result.get("responses") or []
        if not responses:
            return self._answer_box("(no answer)", "")
        first = responses[0]
        if isinstance(first, dict) and first.get("images"):  # a text-to-image model: its picture (same seed)
            return self._picture_box(first["images"][0], first.get("seed"))
        if isinstance(first, dict) and isinstance(first.get("score"), (int, float)):  # a reward model's score
            meaning = self.training_type.score_meaning
            return self._answer_box(f"score {first['score']:.2f}" + (f": {meaning}" if meaning else ""), "")
        text = str(first.get("response", "")) if isinstance(first, dict) else str(first)
        if text.strip():
            return self._answer_box(text, "")
        why = inference.empty_answer_words(first) if isinstance(first, dict) else "the model's answer is empty"
        return self._answer_box(f"(an empty answer: {why})", "wait")

    def _finish_try(self) -> None:
        self.ask.disabled = False
        self.ask.description = "Try it"

    def _on_record_open(self, change) -> None:
        if change["new"] == 0:
            self.try_record.refresh()

    # --- Delete --------------------------------------------------------------------------

    @staticmethod
    def _refusal_words(message: str) -> str:
        """A refusal of Delete as the page says it: no CLI flag the page does not offer."""
        return message.replace(" or pass --force", "").replace("or pass --force", "").rstrip(" ;,")

    def _ask_delete(self) -> None:
        """Say why the model cannot go, when it cannot, before "for good?" is asked at all."""
        self.status.clear()
        self.confirm.hide()
        try:
            models.check_deletable(models.get_model(self.name))
        except DeepeError as exc:
            self.status.show(self._refusal_words(exc.message), "error")
            return
        if models.is_owned(self.record):
            self.confirm.ask(f"Delete {self.name} and its folder for good?")
        else:
            self.confirm.ask(f"Unregister {self.name}? Its folder is yours and stays on disk.")

    def _delete_asked(self) -> None:
        """Delete the model, through the same checks as `deepe models delete` (admin only)."""
        if not self.admin:  # no button offers it here; refused all the same
            self.status.show(f"Deleting a model: {ADMIN_ONLY}.", "error")
            return
        if self.kind == ModelKind.BASE:
            self.status.show(f"{self.name} is a base model: it is not deleted here (deepe models delete "
                             f"{self.name} does it, once no model is made from it).", "error")
            return
        try:
            kept = models.delete_model(self.name, asked_by=who_asks())
        except DeepeError as exc:
            self.status.show(self._refusal_words(exc.message), "error")
            return
        if self.on_deleted:
            self.on_deleted(self.name, models.deleted_words(self.name, kept))

    # --- Deploy / Live -------------------------------------------------------------------

    def _live_box(self) -> w.VBox:
        """Deploy (a Customized or Complete Model) or, for a Live Model, its status, URL and Stop;
        Deploy and Stop are admin actions (without admin: no button)."""
        self.deploy_note = w.HTML()
        self.deploy_button = self.stop_button = None
        if self.kind == ModelKind.LIVE:
            state = LiveState.from_meta(self.record.meta)
            self.live_info = w.HTML(html_table(["", ""], [
                ["Status", html.escape(str(state.status))],
                ["URL", html.escape(f"{state.url}/v1" if state.url else "(its port is chosen when it starts)")],
                ["Model name", html.escape(str(state.served_name))],
                ["Serves", html.escape(str(self.record.parent))]] + (
                [["Error", html.escape(str(state.error))]] if state.error else [])))
            if not self.admin:
                return w.VBox([w.HTML("<h4>Server</h4>"), self.live_info, self.deploy_note])
            self.stop_button = w.Button(description="Stop", icon="stop", layout=w.Layout(width="110px"),
                                        disabled=not state.serving)
            self.stop_button.on_click(lambda _b: self.stop_live())
            return w.VBox([w.HTML("<h4>Server</h4>"), self.live_info, w.HBox([self.stop_button, self.deploy_note])])
        try:
            deployments.check_generates(self.record)
        except DeepeError as exc:  # a reward model generates nothing: no Deploy, and why
            self.deploy_note.value = f"<span style='color:#57606a'>{html.escape(exc.message)}.</span>"
            return w.VBox([w.HTML("<h4>Deploy</h4>"), self.deploy_note])
        if not self.admin:
            return w.VBox([self.deploy_note])
        self.deploy_button = w.Button(description="Deploy on vLLM", icon="rocket",
                                      layout=w.Layout(width="170px", flex="0 0 auto"))  # never cut by its note
        self.deploy_button.on_click(lambda _b: self.deploy())
        missing = deploy_unavailable()
        if missing:  # offered, but disabled with the reason: an admin learns what to do
            self.deploy_button.disabled = True
            self.deploy_button.tooltip = missing
            self.deploy_note.value = (f"<span class='deepe-deploy-missing' style='color:#57606a'>"
                                      f"{html.escape(missing)}</span>")
        box = w.VBox([w.HTML("<h4>Deploy</h4><div style='color:#57606a'>Serves the model as an OpenAI-compatible "
                             "endpoint on 127.0.0.1 (a new <b>Live Model</b>).</div>"),
                      w.HBox([self.deploy_button, self.deploy_note], layout=w.Layout(align_items="center"))])
        box.layout.display = None if self.kind in (ModelKind.CUSTOMIZED, ModelKind.COMPLETE) else "none"
        return box

    def deploy(self) -> None:
        """Deploy this model as a Live Model (admin only)."""
        if not self.admin:  # no button offers it here; refused all the same
            self.deploy_note.value = f"<span class='deepe-field-error'>Deploying: {html.escape(ADMIN_ONLY)}.</span>"
            return
        try:
            job, live = deployments.submit_deploy(self.name)
            log.info("model %s deployed as %s (job %s) by %s", self.name, live.name, job.id, who_asks())
            if self.start_worker:
                worker.ensure_worker()
        except DeepeError as exc:
            self.deploy_note.value = f"<span class='deepe-field-error'>{html.escape(exc.message)}</span>"
            return
        self.deploy_note.value = (f"<span style='color:#1a7f37'>Deploying as {html.escape(live.name)} (job {job.id}): "
                                  "it shows under Live, starting, then live with its URL."
                                  "</span>")

    def stop_live(self):
        """Stop this Live Model's server, off the kernel's loop (admin only)."""
        if not self.admin:  # no button offers it here; refused all the same
            self.deploy_note.value = f"<span class='deepe-field-error'>Stopping: {html.escape(ADMIN_ONLY)}.</span>"
            return None
        log.info("live model %s stopped by %s", self.name, who_asks())
        self.stop_button.disabled = True
        self.deploy_note.value = "<i>stopping…</i>"

        def done(stopped: list) -> None:
            self.deploy_note.value = f"<span style='color:#1a7f37'>stopped: {html.escape(', '.join(stopped))}</span>"

        def failed(exc: Exception) -> None:
            self.stop_button.disabled = False
            self.deploy_note.value = f"<span class='deepe-field-error'>{html.escape(error_text(exc))}</span>"

        return run_in_background(lambda: deployments.stop(self.name), done, failed)
