"""The comparison view as a local web app (Flask), bound to 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from captum_mamba.compare.page import render_page
from captum_mamba.compare.payload import DEFAULT_COMPARE_METHODS, check_methods, compare_text
from captum_mamba.compare.text_model import ComparisonInputError, TextModel
from captum_mamba.errors import MissingDependencyError


def create_app(
    text_model: TextModel,
    examples: Sequence[dict[str, Any]] = (),
    methods: Sequence[str] = DEFAULT_COMPARE_METHODS,
) -> Any:
    r"""
    The Flask app: ``/`` the page, ``POST /api/explain`` ``{"text", "methods", "label"}`` one
    more example (400 with ``{"error": message}`` on bad input), ``GET /api/methods``.

    Args:
        text_model (TextModel): the model to explain.
        examples (Sequence[dict], optional): examples explained beforehand (shown first).
        methods (Sequence[str], optional): methods shown at first and used when a request names
                    none. Default: :data:`~captum_mamba.compare.DEFAULT_COMPARE_METHODS`

    Returns:
        *flask.Flask*.
    """
    try:
        from flask import Flask, jsonify, request
    except ImportError as error:
        raise MissingDependencyError("flask", "The comparison web app", "compare") from error

    methods = check_methods(methods)
    explained = list(examples)
    lock = threading.Lock()  # one explanation at a time: the model is patched while it runs
    app = Flask("captum_mamba.compare")

    @app.get("/")
    def index():
        with lock:
            page = render_page(
                explained,
                methods,
                text_model.name,
                text_model.max_tokens,
                live=True,
                input_hint=text_model.input_hint,
                about=text_model.about,
            )
        return page, 200, {"Content-Type": "text/html; charset=utf-8"}

    @app.get("/api/methods")
    def list_methods():
        from captum_mamba.compare.payload import method_catalogue

        return jsonify(method_catalogue())

    @app.post("/api/explain")
    def explain():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return jsonify(error='send a JSON object {"text": ..., "methods": [...]}'), 400
        text = body.get("text", "")
        requested = body.get("methods") or methods
        if not isinstance(requested, list) or not all(isinstance(m, str) for m in requested):
            return jsonify(error="methods must be a list of method names"), 400
        try:
            with lock:
                example = compare_text(text_model, text, requested, label=body.get("label"))
                explained.append(example)
        except ComparisonInputError as error:
            return jsonify(error=str(error)), 400
        return jsonify(example)

    return app


class ComparisonServer:
    r"""
    A running comparison app on ``127.0.0.1`` in a background thread.

    Args:
        app (flask.Flask): from :func:`create_app`.
        port (int, optional): 0 picks a free port. Default: 0

    Example::

        >>> server = ComparisonServer(create_app(TextModel.default())).start()
        >>> print(server.url)
        >>> server.stop()
    """

    def __init__(self, app: Any, port: int = 0) -> None:
        from werkzeug.serving import make_server

        self._server = make_server("127.0.0.1", port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The page's address, e.g. ``http://127.0.0.1:8765/``."""
        return f"http://127.0.0.1:{self._server.server_port}/"

    def start(self) -> ComparisonServer:
        """Start serving in the background; returns ``self``."""
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
