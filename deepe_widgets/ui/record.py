"""The Record tab: a stage run's executed notebook (its auditable record) shown as HTML, with a
download of the `.ipynb`.

The notebook is rendered by nbconvert's HTMLExporter and then sanitised: outputs are whatever the
run printed, so no script, frame, form, event handler or `javascript:` link reaches the page
(scripts and styles are dropped with their content, then bleach keeps only the tags and
attributes listed here). It follows a running stage: re-rendered when the file changes.
"""

from __future__ import annotations

import base64
import functools
import html
import threading
from pathlib import Path

import ipywidgets as w
import nbformat

from .common import error_text, run_in_background

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl", "dt", "em", "h1", "h2",
    "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "ol", "p", "pre", "q", "s", "samp", "small",
    "span", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u",
    "ul", "var", "figure", "figcaption", "caption", "colgroup", "col",
}
ALLOWED_ATTRIBUTES = {"*": ["class", "title", "style", "id"], "a": ["href", "title", "class"],
                      "img": ["src", "alt", "width", "height", "class"], "td": ["colspan", "rowspan", "class", "style"],
                      "th": ["colspan", "rowspan", "class", "style"]}
ALLOWED_CSS = ["color", "background-color", "font-weight", "font-style", "text-align", "text-decoration",
               "white-space", "width", "max-width", "border", "padding", "margin", "vertical-align"]
DROPPED_WITH_CONTENT = ("script", "style", "iframe", "object", "embed", "noscript", "template", "form", "svg",
                        "math", "link", "meta", "base")
MAX_DOWNLOAD_BYTES = 25 * 2**20  # a larger record is downloaded from JupyterLab or the run folder

_export_lock = threading.Lock()


@functools.cache
def _exporter():
    from nbconvert import HTMLExporter  # heavy (jinja, pygments): only when a record is first shown

    return HTMLExporter(template_name="basic", exclude_input_prompt=False, exclude_output_prompt=True)


@functools.cache
def _cleaner():
    import bleach  # with bs4 and nbconvert: loaded when a record is first shown, not with the dashboard
    from bleach.css_sanitizer import CSSSanitizer

    return bleach.Cleaner(tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES,
                          protocols=["http", "https", "data", "mailto"], strip=True, strip_comments=True,
                          css_sanitizer=CSSSanitizer(allowed_css_properties=ALLOWED_CSS))


@functools.cache
def code_css() -> str:
    """Pygments colours for the code cells (our CSS, scoped to the record)."""
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(style="default").get_style_defs(".deepe-record .highlight")


def sanitize(markup: str) -> str:
    """Only inert HTML: no script (nor its text), frame, form, style sheet, event handler or script URL."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(DROPPED_WITH_CONTENT):
        tag.decompose()
    clean = _cleaner().clean(str(soup))
    # data: URLs are for pictures only (an <a href="data:text/html,…"> would open a page of its own)
    soup = BeautifulSoup(clean, "html.parser")
    for link in soup("a"):
        if link.get("href", "").strip().lower().startswith("data:"):
            del link["href"]
    for image in soup("img"):
        if image.get("src", "").strip().lower().startswith("data:") and \
                not image["src"].strip().lower().startswith("data:image/"):
            del image["src"]
    return str(soup)


def render_notebook(path: str | Path) -> str:
    """The executed notebook at `path` as sanitised HTML (blocking: run it off the kernel's loop)."""
    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:  # a widget's saved state is no output a reader can use
        for output in cell.get("outputs", []):
            if output.get("data"):
                output["data"].pop("application/vnd.jupyter.widget-view+json", None)
                output["data"].pop("application/javascript", None)
    nb.metadata.pop("widgets", None)
    with _export_lock:
        body, _resources = _exporter().from_notebook_node(nb)
    return sanitize(body)


def download_link(path: str | Path, download_name: str) -> str:
    """A link that saves the `.ipynb` (the app serves no files: the bytes travel in the link)."""
    data = Path(path).read_bytes()
    size = f"{len(data) / 1024:,.0f} KB" if len(data) < 2**20 else f"{len(data) / 2**20:,.1f} MB"
    if len(data) > MAX_DOWNLOAD_BYTES:
        return f"<span>The notebook is {size}: too large to download here; open it in JupyterLab.</span>"
    encoded = base64.b64encode(data).decode("ascii")
    return (f"<a class='deepe-download' download='{html.escape(download_name, quote=True)}' "
            f"href='data:application/x-ipynb+json;base64,{encoded}'>⬇ Download the notebook "
            f"({html.escape(download_name)}, {size})</a>")


def record_label(path: str) -> str:
    name = Path(path).name
    if ".attempt" in name:
        return f"{name} (an earlier attempt)"
    return name


class RecordView(w.VBox):
    """The executed notebooks of one run: pick one (a retried job has one per attempt), read it here,
    download it. `read_if_changed()` (blocking) and `show()` (on the loop) let a poller keep it
    current while the stage runs; `refresh()` does both, off the loop."""

    def __init__(self, download_prefix: str = ""):
        self.download_prefix = download_prefix
        self.choice = w.Dropdown(description="Record", layout=w.Layout(width="420px", display="none"))
        self.note = w.HTML("<i>No record yet: the executed notebook appears here once the stage starts.</i>")
        self.download = w.HTML()
        self.body = w.HTML()
        self.body.add_class("deepe-record")
        self.body.layout.display = "none"
        self._rendered: tuple | None = None  # (path, mtime, size) shown now
        self.choice.observe(lambda _c: self.refresh(), "value")
        super().__init__([w.HTML(f"<style>{code_css()}</style>", layout=w.Layout(display="none")),
                          w.HBox([self.choice, self.download], layout=w.Layout(align_items="center")),
                          self.note, self.body])

    def set_paths(self, paths: list[str]) -> None:
        """The records there are now (the current run's first in the chooser, earlier attempts after)."""
        ordered = sorted(paths, key=lambda p: (".attempt" in Path(p).name, Path(p).name))
        options = [(record_label(p), p) for p in ordered]
        if list(self.choice.options) != options:
            keep = self.choice.value
            self.choice.options = options
            self.choice.value = keep if keep in ordered else (ordered[0] if ordered else None)
        self.choice.layout.display = None if len(ordered) > 1 else "none"

    def read_if_changed(self, paths: list[str] | None = None) -> dict | None:
        """The chosen record (or, before one is chosen, the current run's among `paths`) rendered
        again if its file changed since it was shown. Blocking, and it touches no widget: a
        poller calls it in a thread, then `set_paths` and `show` on the loop."""
        path = self.choice.value
        if paths and path not in paths:
            path = sorted(paths, key=lambda p: (".attempt" in Path(p).name, Path(p).name))[0]
        if not path:
            return None
        try:
            stat = Path(path).stat()
        except OSError:
            return None
        key = (path, stat.st_mtime, stat.st_size)
        if key == self._rendered:
            return None
        try:
            body = render_notebook(path)
            link = download_link(path, f"{self.download_prefix}{Path(path).name}")
        except Exception as exc:  # a record being written right now may be cut short: next poll
            return {"key": None, "error": error_text(exc)}
        return {"key": key, "body": body, "download": link}

    def show(self, read: dict | None) -> None:
        if read is None:
            return
        if read.get("error"):
            if self._rendered is None:
                self.note.value = f"<i>The record cannot be shown yet ({html.escape(read['error'])}).</i>"
            return
        self._rendered = read["key"]
        self.body.value = read["body"]
        self.download.value = read["download"]
        self.body.layout.display = None
        self.note.value = ""

    def refresh(self) -> None:
        """Render the chosen record again if it changed, off the kernel's loop."""
        run_in_background(self.read_if_changed, self.show,
                          lambda exc: self.show({"key": None, "error": error_text(exc)}))
