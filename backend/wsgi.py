"""WSGI entry point: ``gunicorn --config backend/gunicorn_conf.py backend.wsgi:app``.

Importing this module builds the app and loads the CNN once (per gunicorn worker process).
"""

from __future__ import annotations

from .app import create_app

app = create_app()
