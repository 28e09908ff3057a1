"""What every top-level view does: carry the stylesheet (`style.css`, a file of this package), and
close its whole widget tree when it goes."""

from __future__ import annotations

import functools
from importlib import resources

import ipywidgets as w


@functools.cache
def css() -> str:
    """The rules of `style.css`, the one stylesheet of every view."""
    return resources.files(__package__).joinpath("style.css").read_text(encoding="utf-8")


def stylesheet() -> w.HTML:
    """The views' stylesheet: put one in each top-level view (two copies do no harm); a <style> in an
    HTML widget applies to the whole page."""
    sheet = w.HTML(f"<style>{css()}</style>", layout=w.Layout(display="none"))
    sheet.add_class("deepe-stylesheet")
    return sheet


def _held(widget: w.Widget):
    """The widgets `widget` refers to in its synced state: children, layout, style, marks, axes, scales …"""
    for name in widget.keys:
        value = getattr(widget, name, None)
        values = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else (value,)
        yield from (v for v in values if isinstance(v, w.Widget))


def close_tree(root: w.Widget) -> None:
    """Close `root` and every widget under it, so a closed view leaves nothing in the kernel.

    A view found inside is closed by its own `close()` (which also stops its poller)."""
    found, stack = {id(root): root}, [root]
    while stack:
        for held in _held(stack.pop()):
            if id(held) not in found:
                found[id(held)] = held
                stack.append(held)
    w.Widget.close(root)
    for widget in found.values():
        if widget is not root:
            widget.close()
