"""The WSGI entry point for production servers: app = create_app()."""

from webapp import create_app

app = create_app()
