"""Stage 6: the HTTP API and the web UI over a workspace (FastAPI + uvicorn, the ``serve`` extra).

    pixelmine serve --workspace ws            # http://127.0.0.1:8000/  (API docs at /docs)

    from pixelmine.serve import create_app   # an ASGI app, for any ASGI server
    app = create_app("ws", token="secret")
"""

from __future__ import annotations

from ..optional import require


def _require() -> None:
    for package in ("fastapi", "uvicorn", "python_multipart"):
        require(package, "pixelmine serve")


def create_app(root, *, token: str, **options):
    """The FastAPI app for workspace ``root``; options: model, limits, max_batch, max_wait_ms, max_request_bytes."""
    _require()
    from .app import create_app as _create

    return _create(root, token=token, **options)


def serve(root, *, host: str = "127.0.0.1", port: int = 8000, token: str, log_level: str = "warning",
          **options) -> None:
    """Run the API and UI with uvicorn until interrupted."""
    _require()
    import uvicorn

    app = create_app(root, token=token, **options)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # uvicorn waits for open responses before shutting down; an event stream never ends by itself
            app.state.event_streams.stop()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, server_header=False,
                            timeout_graceful_shutdown=10)
    _Server(config).run()


__all__ = ["create_app", "serve"]
