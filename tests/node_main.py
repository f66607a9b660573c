"""One Huizhen node for multi-node tests: ``python -m tests.node_main PORT``.

Settings come from HUIZHEN_TEST_OVERRIDES (JSON) on top of TestingConfig; the schema must already
exist (the test's app fixture built it). Served by Werkzeug's threaded server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import sys

from werkzeug.serving import make_server

from config import TestingConfig
from webapp import create_app


def main() -> None:
    """Serve the app on 127.0.0.1:PORT until terminated."""
    app = create_app(TestingConfig, json.loads(os.environ["HUIZHEN_TEST_OVERRIDES"]))
    make_server("127.0.0.1", int(sys.argv[1]), app, threaded=True).serve_forever()


if __name__ == "__main__":
    main()
