"""Imported first by `deepe_widgets.ui`: what makes a dashboard kernel start faster.

nbformat imports jsonschema, which imports rfc3987-syntax when it is installed and builds its Lark
grammar at import: ~2.4 s of CPU in every dashboard kernel (measured on 2 cores: `import
deepe_widgets.ui` 4.1 s of CPU with it, 1.7 s without), for an "iri" format check nothing here
uses (nbformat validates without format checkers). It is left out unless something loaded it.
"""

import sys

sys.modules.setdefault("rfc3987_syntax", None)
