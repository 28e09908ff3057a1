"""The Methods tab in plain Python: what each row says, where "Delete?" is asked, the form's words."""

import html
import json
import re
import sys

import nbformat
import pytest

from deepe_widgets import methods, stagefiles
from deepe_widgets.ui import MethodManager
from deepe_widgets.ui.common import css


def row_text(manager: MethodManager, name: str) -> str:
    """A row's cells as a reader sees them: the text, tags gone, entities decoded, one space apart."""
    markup = manager.rows[name][0].value
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", markup))).strip()


def stages_markup(manager: MethodManager, name: str) -> str:
    return re.findall(r"<div class='deepe-subcell'>(.*?)</div>", manager.rows[name][0].value, re.S)[2]


def notebook_with_headline(tmp_path, headline: str):
    """The template notebook whose first markdown cell starts with `headline`."""
    nb = nbformat.read(stagefiles.template_notebook_path(), as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "markdown")
    first.source = f"{headline}\n\nMore about it, on lines the list does not show."
    path = tmp_path / "mine.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def manager(workspace):
    view = MethodManager(admin=True)
    yield view
    view.close()


def test_each_built_in_says_what_it_does_its_type_and_lifecycle_and_the_templates_say_so(manager):
    for name, builtin in methods.BUILTINS.items():
        text = row_text(manager, name)
        assert builtin.description in text, name
        assert "trains, then saves to a Complete Model" in text, name
        assert ("template" in text.split(builtin.description)[0]) == (name in ("Custom01", "Custom02")), name
    assert "chat · trains, then saves to a Complete Model" in row_text(manager, "SFT-Demo")
    assert "embedding · trains" in row_text(manager, "Embedding-Demo")
    assert "image generation · trains" in row_text(manager, "SD-Demo")
    assert "copy its training notebook" in row_text(manager, "Custom01")
    # the demos first, then the templates to start from
    names = list(manager.rows)
    assert names.index("SFT-Demo") < names.index("Custom01") < names.index("Custom02")


def test_a_users_method_without_a_description_shows_its_notebooks_first_line(manager, tmp_path):
    notebook = notebook_with_headline(tmp_path, "# Recipe bot — answers cooking questions")
    methods.register_method("recipes", {"training": (notebook, "python3")})
    manager.refresh_if_changed()
    text = row_text(manager, "recipes")
    assert "Recipe bot — answers cooking questions" in text and "#" not in text.split("Recipe")[0]
    assert "More about it" not in text  # the first line only
    assert "chat · trains a Customized Model (an adapter)" in text
    assert "template" not in text.split("Recipe")[0] and "built in" not in text


def test_the_stages_text_differs_per_row_names_each_file_and_kernel_and_wraps(manager, tmp_path):
    notebook = notebook_with_headline(tmp_path, "# Mine")
    methods.register_method("mine", {"training": (notebook, "python3")})
    manager.refresh_if_changed()
    stages = {name: stages_markup(manager, name) for name in manager.rows}
    demos = [name for name in methods.BUILTINS if not methods.BUILTINS[name].template]
    assert len({stages[name] for name in demos + ["mine"]}) == len(demos) + 1  # no two rows say the same
    assert "sft_demo/training.ipynb" in stages["SFT-Demo"] and "embedding_demo" in stages["Embedding-Demo"]
    assert "saving" not in row_text(manager, "mine").split("trains a Customized")[1]  # only its training stage
    # every stage's file and kernel in the tooltip, and the cells wrap rather than cut (the table's class)
    tooltip = html.unescape(re.search(r"title='([^']*)'", stages["Embedding-Demo"]).group(1))
    assert "saving: embedding_demo/saving.ipynb (kernel python3)" in tooltip.splitlines()
    assert "deepe-wrap-rows" in manager.table._dom_classes
    rule = re.search(r"\.deepe-wrap-rows \.deepe-grid \.deepe-subcell \{([^}]*)\}", css()).group(1)
    assert "white-space:normal" in rule


def test_a_display_name_and_description_typed_in_add_new_method_are_listed(manager, tmp_path):
    notebook = notebook_with_headline(tmp_path, "# The notebook's own line")
    form = manager.form
    manager.add_button.click()
    form.name.value = "support-bot"
    form.display.value = "Support Bot"
    form.description.value = "Answers our customers' questions in our own tone."
    form.files["training"].value = str(notebook)
    form.save.click()
    text = row_text(manager, "support-bot")
    assert text.startswith("Support Bot support-bot")  # the display name, the unique name under it
    assert "Answers our customers' questions in our own tone." in text
    assert "The notebook's own line" not in text  # the typed description wins


def test_the_delete_question_appears_under_the_row_it_deletes(manager, tmp_path):
    notebook = notebook_with_headline(tmp_path, "# Mine")
    for name in ("aa-first", "zz-last"):
        methods.register_method(name, {"training": (notebook, "python3")})
    manager.refresh_if_changed()

    def question_follows(name: str) -> bool:
        children = list(manager.table.grid.children)
        return manager.confirm in children and children.index(manager.confirm) == \
            children.index(manager.rows[name][-1]) + 1

    assert manager.confirm not in manager.table.grid.children  # nothing asked: no empty line
    manager.delete_buttons["zz-last"].click()  # the bottom row: asked there, not at the top of the list
    assert question_follows("zz-last") and manager.confirm.layout.display is None
    assert "Delete method zz-last?" in manager.confirm.children[0].value
    manager.delete_buttons["aa-first"].click()  # another row: the question moves to it
    assert question_follows("aa-first")
    manager.confirm.no.click()
    assert manager.confirm not in manager.table.grid.children
    assert {"aa-first", "zz-last"} <= {m.name for m in methods.list_methods()}
    manager.delete_buttons["zz-last"].click()
    manager.confirm.yes.click()
    assert "zz-last" not in manager.rows and manager.confirm not in manager.table.grid.children
    assert "method zz-last deleted" in manager.status.value


def test_the_name_fields_errors_call_it_by_its_label(manager):
    form = manager.form
    manager.add_button.click()
    assert form.name.description == "Training Name *"
    form.name.value = "no spaces please"
    assert "Training Name 'no spaces please' may only use letters" in html.unescape(form.errors["name"].value)
    form.name.value = ""
    assert "Training Name" in form.errors["name"].value
    assert "method name" not in form.errors["name"].value.lower()


def test_after_save_registered_is_not_shown_beside_a_stale_still_needed(manager, tmp_path):
    notebook = notebook_with_headline(tmp_path, "# Mine")
    form = manager.form
    manager.add_button.click()
    form.name.value = "saved-one"
    form.files["training"].value = str(notebook)
    form.save.click()
    assert "method saved-one registered" in form.status.value
    assert form.summary.value == "" and form.save.disabled  # an empty form, and no "Still needed" beside it
    manager.refresh()  # a redraw (the poller's, after a method changed elsewhere) does not bring it back
    assert form.summary.value == ""
    form.name.value = "next-one"  # starting the next method: the old message goes, the hint comes back
    assert form.status.value == "" and "Still needed: training code file" in form.summary.value


def test_deployment_kernels_are_offered_for_the_deployment_stage_only(workspace, tmp_path, monkeypatch):
    # kernels from this test's folders only, plus a deployment environment's
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    manager = MethodManager(admin=True)
    kernel = tmp_path / "jupyter" / "kernels" / "deepe-vllm"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "vLLM (test)", "language": "python"}))
    form = manager.form
    manager.add_button.click()  # opening the form offers the kernels installed by now
    assert "deepe-vllm" in form.kernels["deployment"].options  # a custom deployment file may run there
    for stage in ("training", "saving", "inference-customized", "inference-complete", "evaluation"):
        assert "deepe-vllm" not in form.kernels[stage].options, stage
        assert form.kernels[stage].value == "python3", stage
    manager.close()
