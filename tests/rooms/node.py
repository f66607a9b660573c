"""One Huizhen process for the cross-process tests: ``python -m tests.rooms.node PORT``.

It serves the app (Werkzeug, threaded, websockets) on 127.0.0.1:PORT on the database in
NODE_DATABASE_URL (its schema already built), with NODE_REDIS_URL as the Socket.IO message queue
and the session channel NODE_CHANNEL. Its sweeper runs once an hour, so only Redis can end its
sockets within a test.
"""

from __future__ import annotations

import os
import sys

from werkzeug.serving import make_server

from config import TestingConfig
from webapp import create_app


def main(port: int) -> None:
    app = create_app(TestingConfig, {
        "SQLALCHEMY_DATABASE_URI": os.environ["NODE_DATABASE_URL"],
        "REDIS_URL": os.environ["NODE_REDIS_URL"],
        "SESSION_CHANNEL": os.environ["NODE_CHANNEL"],
        "SESSION_SWEEP_SECONDS": 3600,
        "LOGIN_RATE_LIMIT": "1000 per minute",
        "CHAT_MESSAGES_PER_SECOND": 1000,
        "ALLOWED_ORIGINS": [os.environ["NODE_ORIGIN"]],
    })
    make_server("127.0.0.1", port, app, threaded=True).serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))
