"""The Record tab: a stage run's executed notebook (its auditable record) shown as HTML, with a
download of the `.ipynb`.

The notebook is rendered by nbconvert's HTMLExporter and sanitised: outputs are whatever the
run printed, so no script, frame, form, event handler or `javascript:` link reaches the page
(scripts and styles are dropped with their content, then bleach keeps only the tags and
attributes listed here). Each output and each markdown cell is sanitised on its own, so an
unclosed `<style>` or `<script>` in one never swallows the cells after it; pictures come only
from `data:` URLs (a remote `src` would tell a server that someone opened the tab), and no
element keeps an `id` (the page's own ids are the widgets').

Work is bounded: at most RECORD_BUDGET bytes of the file are read and drawn (a larger record shows
its first cells and says where the whole one is), and one output shows at most OUTPUT_CHARS
characters. It follows a running stage: re-rendered when the file changes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import re
import threading
from pathlib import Path

import ipywidgets as w
import nbformat
from nbformat.v4.rwbase import rejoin_lines

from .feedback import error_text
from .polling import run_in_background
from .state import in_voila_app

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl", "dt", "em", "h1", "h2",
    "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "ol", "p", "pre", "q", "s", "samp", "small",
    "span", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u",
    "ul", "var", "figure", "figcaption", "caption", "colgroup", "col",
}
ALLOWED_ATTRIBUTES = {"*": ["class", "title", "style"], "a": ["href", "title", "class"],
                      "img": ["src", "alt", "width", "height", "class"], "td": ["colspan", "rowspan", "class", "style"],
                      "th": ["colspan", "rowspan", "class", "style"]}
ALLOWED_CSS = ["color", "background-color", "font-weight", "font-style", "text-align", "text-decoration",
               "white-space", "width", "max-width", "border", "padding", "margin", "vertical-align"]
DROPPED_WITH_CONTENT = ("script", "style", "iframe", "object", "embed", "noscript", "template", "form", "svg",
                        "math", "link", "meta", "base")
MAX_DOWNLOAD_BYTES = 25 * 2**20  # a larger record is downloaded from JupyterLab or the run folder
RECORD_BUDGET = 2 * 2**20  # bytes of a record read and drawn; a larger one shows its first cells
OUTPUT_CHARS = 50_000  # characters of one output drawn (its start and its end)
# a style that could fetch something (url(), image-set(), CSS escapes that spell them) is dropped whole
FETCHING_STYLE = re.compile(r"url|image|\\|@import", re.IGNORECASE)
DROPPED_TAG = re.compile(r"<\s*(" + "|".join(DROPPED_WITH_CONTENT) + r")\b", re.IGNORECASE)
NEEDS_LOOK = re.compile(r"<(a|img)\b|style=", re.IGNORECASE)  # what the checks after bleach look at
JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')  # strings whole, brackets one by one
DATA_URL = re.compile(r"data:[^\"'\s)>]*")
NOTEBOOK_START = re.compile(rb'\s*\{\s*"cells"\s*:\s*\[')

_export_lock = threading.Lock()


@functools.cache
def _exporter():
    from nbconvert import HTMLExporter  # heavy (jinja, pygments): only when a record is first shown

    # sanitize_html: the template runs its `clean_html` filter on each HTML output and each markdown
    # cell by itself; ours replaces nbconvert's, so every piece is made inert before it is joined
    return HTMLExporter(template_name="basic", exclude_input_prompt=False, exclude_output_prompt=True,
                        sanitize_html=True, filters={"clean_html": sanitize})


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


def sanitize(markup) -> str:
    """Only inert HTML: no script (nor its text), frame, form, style sheet, event handler, script URL,
    remote picture or `id`."""
    from bs4 import BeautifulSoup

    markup = markup.decode() if isinstance(markup, bytes) else str(markup)
    if DROPPED_TAG.search(markup):  # parsed twice only where there is something to drop
        soup = BeautifulSoup(markup, "html.parser")
        for tag in soup(DROPPED_WITH_CONTENT):
            tag.decompose()
        markup = str(soup)
    clean = _cleaner().clean(markup)
    if not NEEDS_LOOK.search(clean):
        return clean
    soup = BeautifulSoup(clean, "html.parser")
    # data: URLs are for pictures only (an <a href="data:text/html,…"> would open a page of its own)
    for link in soup("a"):
        if link.get("href", "").strip().lower().startswith("data:"):
            del link["href"]
    # a picture from anywhere but the record itself (http, //host, a relative path) is a request
    # the reader's browser makes when the tab opens
    for image in soup("img"):
        if not image.get("src", "").strip().lower().startswith("data:image/"):
            image.attrs.pop("src", None)
    for styled in soup(style=True):
        if FETCHING_STYLE.search(styled["style"]):
            del styled["style"]
    return str(soup)


def _clip(text: str, limit: int = OUTPUT_CHARS) -> str:
    """At most `limit` characters: the start and the end (where a run's last words are), and how much is left out."""
    if len(text) <= limit:
        return text
    head, tail = limit // 3, limit - limit // 3
    return (f"{text[:head]}\n… {len(text) - limit:,} characters left out here (the notebook holds them all) …\n"
            f"{text[-tail:]}")


def _bound_outputs(nb) -> None:
    """Each output drawn within OUTPUT_CHARS; what only a browser with the widget state or a script
    could use is left out."""
    for cell in nb.cells:
        if cell.cell_type == "markdown" and len(DATA_URL.sub("", cell.source)) > OUTPUT_CHARS:
            cell.source = _clip(cell.source)
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                output["text"] = _clip("".join(output.get("text", "")))
            elif output.get("output_type") == "error":
                output["traceback"] = _clip("\n".join(output.get("traceback", []))).split("\n")
            data = output.get("data")
            if not data:
                continue
            data.pop("application/vnd.jupyter.widget-view+json", None)
            data.pop("application/javascript", None)
            for mime in list(data):
                value = data[mime]
                if not isinstance(value, str) and isinstance(value, list):
                    value = data[mime] = "".join(value)
                if not isinstance(value, str) or len(value) <= OUTPUT_CHARS:
                    continue
                if mime == "text/plain":
                    data[mime] = _clip(value)
                elif mime.startswith("image/") and mime != "image/svg+xml":
                    continue  # a picture: the record's budget bounds it
                elif len(DATA_URL.sub("", value)) > OUTPUT_CHARS:  # pictures inside count as pictures
                    # markup cut in two is no markup: left out whole
                    del data[mime]
                    data.setdefault("text/plain", f"({mime} output of {len(value):,} characters: too large "
                                                  "to draw here; the notebook holds it)")


def read_record(path: str | Path, budget: int = RECORD_BUDGET) -> tuple[nbformat.NotebookNode, int | None]:
    """The record at `path`, reading at most `budget` bytes: (notebook, None) when it is whole, else
    (its first cells, the file's size in bytes). A record being written may be cut short: ValueError."""
    with open(path, "rb") as handle:
        data = handle.read(budget + 1)
        size = max(len(data), Path(path).stat().st_size)
    if len(data) <= budget:
        return nbformat.reads(data.decode("utf-8"), as_version=4), None
    start = NOTEBOOK_START.match(data)
    if start is None:  # not the layout nbformat writes ("cells" first): no cell can be read on its own
        return nbformat.v4.new_notebook(), size
    text = data[start.end():budget].decode("utf-8", errors="ignore")  # the last character may be cut
    decoder, position, cells = json.JSONDecoder(), 0, []
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text) or text[position] == "]":
            break
        try:
            cell, position = decoder.raw_decode(text, position)
        except ValueError:  # this cell runs past the budget: its start is what is shown of it
            cell = _salvage_cell(text[position:])
            if cell is not None:
                cells.append(cell)
            break
        cells.append(nbformat.from_dict(cell))
    nb = nbformat.v4.new_notebook(cells=cells, metadata={"language_info": {"name": "python",
                                                                           "pygments_lexer": "ipython3"}})
    return rejoin_lines(nb), size  # on disk a text is a list of lines: joined, as nbformat.reads does


def _salvage_cell(text: str) -> nbformat.NotebookNode | None:
    """The start of a cell whose JSON was cut: everything up to its last whole line of output
    (nbformat writes texts as lists of lines), the open brackets closed; None if nothing is whole."""
    stack, cut = [], None
    for token in JSON_TOKEN.finditer(text):
        kind = token.group()[0]
        if kind in "{[":
            stack.append(kind)
        elif kind in "}]":
            if not stack:
                return None
            stack.pop()
        if stack and stack[-1] == "[" and kind in '"}]':  # a whole element of a list ends here
            cut = (token.end(), "".join("]" if b == "[" else "}" for b in reversed(stack)))
    if cut is None:
        return None
    try:
        cell = json.loads(text[:cut[0]] + cut[1])
    except ValueError:
        return None
    if not isinstance(cell, dict):
        return None
    cell.setdefault("cell_type", "code")
    cell.setdefault("metadata", {})
    cell.setdefault("source", "")
    if cell["cell_type"] == "code":
        cell.setdefault("outputs", [])
        cell.setdefault("execution_count", None)
        for output in cell["outputs"]:  # its last output was cut short: say so where it ends
            if output.get("output_type") == "stream":
                output.setdefault("name", "stdout")
        cell["outputs"].append({"output_type": "stream", "name": "stdout",
                                "text": "… this cell is cut here: the rest of the record is not shown …\n"})
    return nbformat.from_dict(cell)


def size_words(size: int) -> str:
    return f"{size / 1024:,.0f} KB" if size < 2**20 else f"{size / 2**20:,.1f} MB"


def _where_whole(path: Path) -> str:
    """Where a reader finds the whole record: its path in JupyterLab; in the app, who has the files."""
    if in_voila_app():
        return (f"open <code>{html.escape(path.name)}</code> from the run's folder in JupyterLab "
                "(<code>deepe jobs show</code> prints the folder)")
    return f"open it in JupyterLab: <code>{html.escape(str(path))}</code>"


def _cut_note(path: Path, size: int, shown: int) -> str:
    return (f"<div class='deepe-record-cut' style='color:#9a6700;margin:6px 0'>This record is "
            f"{size_words(size)}: only its first {size_words(RECORD_BUDGET)} ({shown} cell{'s' if shown != 1 else ''}) "
            f"are shown here. For the rest, {_where_whole(path)}.</div>")


def render_notebook(path: str | Path) -> str:
    """The executed notebook at `path` as sanitised HTML (blocking: run it off the kernel's loop);
    a record over RECORD_BUDGET shows its first cells and says where the whole one is."""
    path = Path(path)
    nb, cut_size = read_record(path)
    _bound_outputs(nb)
    nb.metadata.pop("widgets", None)  # a widget's saved state is no output a reader can use
    # one render at a time, sanitising included: bleach's cleaner (shared) is not thread-safe, and two
    # records read at once (Try it's answer arriving as its record is opened) broke it with an AssertionError
    with _export_lock:
        body, _resources = _exporter().from_notebook_node(nb)
        body = sanitize(body)  # the template's own markup too: nothing but inert HTML reaches the page
    if cut_size is not None:
        note = _cut_note(path, cut_size, len(nb.cells))
        body = note + body + note
    return body


def download_link(path: str | Path, download_name: str) -> str:
    """A link that saves the `.ipynb` (the app serves no files: the bytes travel in the link)."""
    length = Path(path).stat().st_size
    if length > MAX_DOWNLOAD_BYTES:  # never read: a link this large would be no link
        return (f"<span>The notebook is {size_words(length)}: too large to download here; "
                "open it in JupyterLab.</span>")
    data = Path(path).read_bytes()
    size = size_words(len(data))
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
        if stat.st_size > RECORD_BUDGET:  # only its start is shown: drawn again when that changes
            try:
                with open(path, "rb") as handle:
                    key = (path, hashlib.blake2b(handle.read(RECORD_BUDGET)).hexdigest())
            except OSError:
                return None
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
