"""Tables: a grid of widgets that stays aligned at any width (GridTable), and a plain HTML table."""

from __future__ import annotations

import html

import ipywidgets as w


class GridTable(w.Box):
    """A table of widgets that stays aligned at any width: header and rows are cells of one CSS grid
    (a row of HBoxes aligns only while every box fits); the header sticks while the rows scroll.

    `columns` is [(title, CSS grid track)], e.g. ("Name", "minmax(110px, 1.5fr)")."""

    def __init__(self, columns: list[tuple[str, str]], max_height: str | None = None, **kwargs):
        self.head = [self.cell(w.HTML(f"<span title='{html.escape(title, quote=True)}'>{html.escape(title)}</span>"),
                               "deepe-head") for title, _track in columns]
        self.grid = w.GridBox(self.head, layout=w.Layout(
            grid_template_columns=" ".join(track for _title, track in columns), width="100%"))
        self.grid.add_class("deepe-grid")
        self.rows: list[list[w.Widget]] = []
        super().__init__([self.grid], layout=w.Layout(max_height=max_height, width="100%", **kwargs))
        self.add_class("deepe-grid-scroll")

    @staticmethod
    def cell(widget: w.Widget, *classes: str) -> w.Widget:
        widget.add_class("deepe-cell")
        for name in classes:
            widget.add_class(name)
        return widget

    @staticmethod
    def text_cells(cells: list[str]) -> w.HTML:
        """One widget drawing several read-only cells of a row (HTML strings, escaped by the caller):
        a table of text costs one widget model per row instead of three per cell."""
        widget = w.HTML("".join(f"<div class='deepe-subcell'>{cell}</div>" for cell in cells))
        widget.add_class("deepe-cells")
        return widget

    def set_rows(self, rows: list[list[w.Widget]]) -> None:
        """Show these rows (lists of cell widgets, as many as columns, `text_cells` counting for as
        many as it draws); unchanged leading rows keep their views in the page."""
        for row in rows:
            for widget in row:
                if not {"deepe-cell", "deepe-cells"} & set(widget._dom_classes):
                    self.cell(widget)
        self.rows = rows
        children = tuple(self.head) + tuple(widget for row in rows for widget in row)
        if tuple(self.grid.children) != children:
            self.grid.children = children


def html_table(headers: list[str], rows: list[list], css_class: str = "deepe-table") -> str:
    """A plain HTML table; cells are HTML (escape what you put in), headers are text."""
    head = "".join(f"<th style='text-align:left;padding:2px 10px'>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 10px'>{c}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table class='{css_class}' style='border-collapse:collapse'><thead><tr>{head}</tr></thead>" \
           f"<tbody>{body}</tbody></table>"
