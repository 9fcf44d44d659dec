"""``olv soap serve``: the SOAP application under gunicorn (threaded workers, keep-alive).

Each worker process builds its own database engine and audit writer after the fork, and
flushes its audit queue when it exits, so a graceful restart (SIGHUP, SIGTERM) loses no row.
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn.app.base import BaseApplication

from olv.config import Settings
from service.soap_app import SoapApplication


def default_workers() -> int:
    return (os.cpu_count() or 1) + 1


class SoapServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, host: str, port: int, workers: int | None = None):
        self.settings = settings
        self.bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.workers = workers or settings.soap_workers or default_workers()
        self.application = SoapApplication(settings)
        super().__init__()

    def load_config(self) -> None:
        options: dict[str, Any] = {
            "bind": self.bind,
            "workers": self.workers,
            "worker_class": "gthread",
            "threads": self.settings.soap_threads,
            "keepalive": 30,
            "timeout": 30,
            "graceful_timeout": 20,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
            "worker_exit": _worker_exit,
            "max_requests": 0,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> SoapApplication:
        return self.application


def _worker_exit(server: Any, worker: Any) -> None:
    app = worker.wsgi
    if isinstance(app, SoapApplication):
        app.close()


def serve(settings: Settings, host: str, port: int, workers: int | None = None) -> None:
    SoapServer(settings, host, port, workers).run()
