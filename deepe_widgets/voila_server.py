"""The dashboard's Voila server: `python -m deepe_widgets.voila_server <voila options>`.

Voila as it is, plus what our page template (`share/voila/templates/deepe`, the front end built from
`voila_apps/frontend`) needs: that template on Jupyter's data path, and the classic-notebook bundles
of third-party widget libraries (bqplot's, bqscales') at `/deepe/nbextensions/<name>/index.js`; the
page loads one the first time it draws one of its widgets."""

from __future__ import annotations

import os
from pathlib import Path

SHARE = Path(__file__).resolve().parent / "share"
TEMPLATE = "deepe"


def frontend_built() -> bool:
    """Whether our page's script was built (`scripts/setup.sh` runs `npm run build`)."""
    return (SHARE / "voila" / "templates" / TEMPLATE / "static" / "app.js").is_file()


def main() -> None:
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(SHARE), os.environ.get("JUPYTER_PATH")]))
    # The token comes in the environment (a command line is readable by every local user); the
    # kernels this server starts run other code, so they do not inherit it.
    token = os.environ.pop("DEEPE_APP_TOKEN", None)
    from jupyter_core.paths import jupyter_path
    from jupyter_server.base.handlers import FileFindHandler
    from jupyter_server.utils import url_path_join
    from tornado import web
    from traitlets.config import Config
    from voila.app import Voila

    class BundleHandler(FileFindHandler):
        """The widget libraries' bundles, to visitors with the token only (as every other page)."""

        @web.authenticated
        def head(self, path):
            return super().head(path)

        @web.authenticated
        def get(self, path, include_body=True):
            return super().get(path, include_body)

    class DashboardVoila(Voila):
        def init_handlers(self):
            return [(url_path_join(self.server_url, r"/deepe/nbextensions/(.*)"), BundleHandler,
                     {"path": jupyter_path("nbextensions")}), *super().init_handlers()]

    config = Config()
    if token:
        config.Voila.token = token
    DashboardVoila.launch_instance(config=config)


if __name__ == "__main__":
    main()
