"""pixelmine serve."""

from __future__ import annotations

import click

from .common import common_options
from ..defaults import DEFAULT_BACKBONE


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. The default answers this machine only; 0.0.0.0 exposes the API to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port.")
@click.option("--token", envvar="PIXELMINE_TOKEN",
              help="Token that writing endpoints require (or set PIXELMINE_TOKEN). Default: a new random one, printed.")
@click.option("--model", metavar="NAME|PATH",
              help="Model that answers /predict: a model name, or an export folder (or its model.onnx) made by "
                   "pixelmine export (default: the most recently trained).")
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True,
              help="Backbone whose features /similar searches (the one you extracted).")
@click.option("--max-batch", type=click.IntRange(1, 256), default=32, show_default=True,
              help="Images per model call when concurrent /predict requests are batched.")
@click.option("--workers", type=click.IntRange(1, 64),
              help="Batches predicted side by side, one model session each (default: one per core, at most 4).")
@click.option("--max-upload-mb", type=click.FloatRange(min=0.001), default=20.0, show_default=True,
              help="Largest image file accepted (MB).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=50_000_000, show_default=True,
              help="Largest image accepted (width x height), checked before decoding.")
@click.option("--body-timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds a request body may stall before the server answers 408 (slow clients).")
@common_options
def serve_command(ws, out, host, port, token, model, backbone, max_batch, workers, max_upload_mb, max_pixels,
                  body_timeout):
    """Serve the HTTP API and the web UI over the workspace.

    \b
    Examples:
      pixelmine serve                         # http://127.0.0.1:8000/
      pixelmine serve --port 9000 --token s3cret
      pixelmine serve --model shipped/        # /predict answered by an exported file
      curl -F file=@photo.jpg http://127.0.0.1:8000/predict

    Reading is open to whoever reaches the port; writing (label corrections) needs the token.
    """
    from ..serve import serve
    from ..serve.security import resolve_token
    from ..uploads import UploadLimits

    token, generated = resolve_token(token)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    out.say(f"pixelmine serve: workspace {ws.root}")
    out.say(f"  web UI:   {url}/#token={token}")
    out.say(f"  API docs: {url}/docs")
    if generated:
        out.say(f"  token (for writing; set --token or PIXELMINE_TOKEN to choose one): {token}")
    root = ws.root
    ws.close()
    limits = UploadLimits(max_bytes=int(max_upload_mb * 1024 * 1024), max_pixels=max_pixels)
    serve(root, host=host, port=port, token=token, model=model, backbone=backbone, max_batch=max_batch,
          workers=workers, limits=limits, body_stall_s=body_timeout, log_level="warning" if out.quiet else "info")


COMMANDS = [serve_command]
