"""The FastAPI application: routes only. Each route checks its input and calls one library function.

    from pixelmine.serve import create_app
    app = create_app("pixelmine-workspace", token="secret")
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, File, Header, Path as PathParam, Query, Request, UploadFile
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from .. import browse, corrections, thumbnails
from .._version import __version__
from ..uploads import UploadLimits, accept_upload
from ..workspace import open_workspace
from . import errors
from .batching import MicroBatcher
from .events import EventStreams
from .metrics import Metrics
from .predictor import Predictor
from .security import BodyLimit, token_matches
from ..defaults import DEFAULT_BACKBONE

log = logging.getLogger("pixelmine.serve")
STATIC = Path(__file__).parent / "static"
IMAGE_ID = r"^[0-9a-f]{64}$"
MAX_FILES = 64  # files per /predict or /similar request
Files = Annotated[list[UploadFile], File(description="one or more images (repeat the field 'file')")]


@dataclass
class ServeConfig:
    root: Path
    token: str
    model: str | None = None  # a model name or an export folder; default: the most recently trained model
    limits: UploadLimits = field(default_factory=UploadLimits)
    max_request_bytes: int = 64 * 1024 * 1024
    max_batch: int = 32  # images per model call
    max_wait_ms: float = 4.0  # how long the batcher waits for more requests
    backbone: str = DEFAULT_BACKBONE  # features that /similar searches
    workers: int | None = None  # batches predicted side by side (default: one per core, at most 4)
    body_stall_s: float = 30.0  # a request body that stops arriving for this long gets 408 (slow clients)


class _Workspaces(threading.local):
    """One Workspace (one SQLite connection) per server thread."""


class ZeroShotRequest(BaseModel):
    labels: list[str] | None = Field(None, max_length=1000, description="label names (or from_labels)")
    from_labels: bool = Field(False, description="use the labels the images already carry")
    as_labels: bool = Field(False, description="record confident predictions of unlabelled images as corrections")
    min_probability: float = Field(0.5, ge=0, le=1, description="with as_labels: the top probability needed")


class LabelCorrection(BaseModel):
    action: Literal["relabel", "accept", "ignore"] = Field("relabel", description="relabel, accept or ignore")
    label: str | None = Field(None, max_length=200, description="the new label (action relabel only)")


def create_app(root, *, token: str, model: str | None = None, limits: UploadLimits | None = None,
               max_batch: int = 32, max_wait_ms: float = 4.0, max_request_bytes: int = 64 * 1024 * 1024,
               backbone: str = DEFAULT_BACKBONE, workers: int | None = None, body_stall_s: float = 30.0) -> FastAPI:
    config = ServeConfig(Path(root), token, model, limits or UploadLimits(), max_request_bytes, max_batch, max_wait_ms,
                         backbone, workers, body_stall_s)
    open_workspace(config.root).close()  # fail now, with the library's message, if the workspace is unusable
    local = _Workspaces()
    metrics = Metrics()
    predictor = Predictor(config.root, config.model, workers=config.workers)
    batcher = MicroBatcher(predictor.predict_files, predictor.executor, max_batch=config.max_batch,
                           max_wait_s=config.max_wait_ms / 1000, concurrency=predictor.workers,
                           on_batch=metrics.observe_batch)
    streams = EventStreams(lambda: ws().catalog)  # ws() is this module's per-thread workspace, defined below

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        streams.stop()
        await batcher.stop()
        predictor.close()

    app = FastAPI(title="pixelmine", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Image knowledge discovery over one workspace. Reading is open; writing needs the "
                              "server's token (Authorization: Bearer TOKEN).")
    errors.install(app)
    app.state.event_streams = streams  # serve.run() ends the streams as soon as the server is asked to stop
    app.add_middleware(BodyLimit, max_bytes=config.max_request_bytes, stall_s=config.body_stall_s)
    app.state.config, app.state.metrics = config, metrics

    def ws():
        if getattr(local, "ws", None) is None:
            local.ws = open_workspace(config.root)
        return local.ws


    def workspace_model() -> str | None:
        """The model of the routes that need a workspace model (an image's prediction, explanations,
        suggestions). Served from an export, /predict has no workspace model behind it: they use the model
        the export was made from when this workspace has it (fp32 exports equal it to 1e-4), else the
        newest, as without --model (an image's prediction names the model that made it)."""
        if predictor.export is None:
            return config.model
        from ..deploy.served import source_model

        return source_model(predictor.export, config.root)

    def require_token(authorization: Annotated[str | None, Header()] = None,
                      x_pixelmine_token: Annotated[str | None, Header()] = None) -> None:
        ok = token_matches(config.token, authorization, x_pixelmine_token)
        if ok is None:
            raise _Refused(401, "this endpoint writes to the workspace and needs the server's token: send "
                                "'Authorization: Bearer TOKEN' (the token is printed by pixelmine serve)")
        if not ok:
            raise _Refused(403, "the token is wrong; use the one printed by pixelmine serve (or $PIXELMINE_TOKEN)")

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.observe_request(request.method, getattr(route, "path", "unmatched"), response.status_code,
                                time.perf_counter() - started)
        return response

    @app.exception_handler(_Refused)
    async def _refused(request, exc: _Refused):
        return errors.error_response(exc.status, exc.message, "unauthorized" if exc.status == 401 else "forbidden",
                                     {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None)

    async def _accept(files: list[UploadFile]):
        if len(files) > MAX_FILES:
            raise _Refused(413, f"{len(files)} files in one request; send at most {MAX_FILES}")
        accepted = []
        try:
            for upload in files:
                data = await upload.read()
                accepted.append(await asyncio.to_thread(accept_upload, data, name=upload.filename or "upload",
                                                        content_type=upload.content_type, limits=config.limits))
        except BaseException:
            for item in accepted:
                item.discard()
            raise
        return accepted

    # -- prediction and search -----------------------------------------------------------------------
    @app.post("/predict", tags=["predict"], summary="Classify uploaded images (micro-batched)")
    async def predict(file: Files):
        uploads = await _accept(file)
        try:
            records = await batcher.submit([u.path for u in uploads])
        finally:
            for u in uploads:
                u.discard()
        return {"predictions": [{"file": u.name, **r, "image_id": u.sha256} for u, r in zip(uploads, records)]}

    @app.post("/similar", tags=["predict"], summary="The catalogue images most similar to an uploaded image")
    async def similar(file: Files, k: Annotated[int, Query(ge=1, le=100)] = 12):
        uploads = await _accept(file[:1])
        try:
            result = await asyncio.to_thread(_similar, uploads[0].path, k)
        finally:
            uploads[0].discard()
        return {"file": uploads[0].name, "neighbors": result}

    def _similar(path: str, k: int):
        return [n.to_dict() for n in ws().similar(path, k=k, backbone=config.backbone)]

    # -- browsing -----------------------------------------------------------------------------------
    @app.get("/images", tags=["browse"], summary="Catalogued images, filtered and paged")
    def images(label: str | None = None, split: str | None = None, status: str | None = None,
               finding: Annotated[str | None, Query(description="a finding kind, e.g. outlier")] = None,
               cluster: str | None = None, limit: Annotated[int, Query(ge=1, le=browse.MAX_PAGE)] = 60,
               offset: Annotated[int, Query(ge=0, le=10**9)] = 0):
        return browse.list_images(ws(), label=label, split=split, status=status, finding=finding, cluster=cluster,
                                  limit=limit, offset=offset)

    @app.get("/facets", tags=["browse"], summary="Values each gallery filter can take")
    def facets():
        return browse.facets(ws())

    @app.get("/images/{image_id}", tags=["browse"],
             summary="One image: properties, paths, findings, corrections, ImageNet tags, prediction")
    def image(image_id: Annotated[str, PathParam(pattern=IMAGE_ID)]):
        return browse.get_image(ws(), image_id, backbone=config.backbone, model=workspace_model())

    @app.get("/images/{image_id}/thumbnail", tags=["browse"], summary="JPEG thumbnail (cached in the workspace)",
             response_class=FileResponse)
    def thumbnail(image_id: Annotated[str, PathParam(pattern=IMAGE_ID)],
                  size: Annotated[int, Query(description="longest side: 128, 256 or 512")] = 256):
        path = thumbnails.thumbnail_path(ws(), image_id, size)
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/images/{image_id}/explanation", tags=["browse"],
             summary="Where the served model looks on the image: class map (JSON with the 2-D map, or a PNG overlay)")
    def explanation(image_id: Annotated[str, PathParam(pattern=IMAGE_ID)],
                    label: Annotated[str | None, Query(max_length=200, description="the class to explain "
                                                       "(default: the predicted one)")] = None,
                    format: Annotated[Literal["json", "png"], Query(description="json, or png for the overlay")] = "json",
                    contrastive: Annotated[bool, Query(description="png: the map of this class rather than the "
                                                       "runner-up")] = False):
        from ..trust.explain import overlay_png

        explained = browse.explain_image(ws(), image_id, model=workspace_model(), label=label)
        if format == "png":
            return Response(overlay_png(explained, contrastive=contrastive), media_type="image/png")
        return explained.to_dict()

    @app.get("/findings", tags=["discover"], summary="Findings of the newest discover run, worst first")
    def findings(kind: str | None = None, issues_only: bool = True,
                 limit: Annotated[int, Query(ge=1, le=browse.MAX_PAGE)] = 50,
                 offset: Annotated[int, Query(ge=0, le=10**9)] = 0):
        return browse.list_findings(ws(), kind=kind, issues_only=issues_only, limit=limit, offset=offset)

    # -- real time: the event log of watchers and uploads ---------------------------------------------------
    @app.get("/events", response_class=EventSourceResponse, tags=["watch"],
             summary="Server-Sent Events: each arrival (image, missing), drift report and alarm as it is recorded")
    async def events(request: Request,
                     after: Annotated[int | None, Query(ge=0, description="send events after this id (default: "
                                                        "from now; a reconnect resumes from Last-Event-ID)")] = None,
                     type: Annotated[list[str] | None, Query(description="only these event types (repeat)")] = None,
                     heartbeat: Annotated[float, Query(ge=0.2, le=60, description="seconds between heartbeat "
                                                       "comments when nothing happens")] = 10.0,
                     last_event_id: Annotated[str | None, Header(max_length=20)] = None):
        if after is None:
            after = int(last_event_id) if last_event_id and last_event_id.isdigit() else \
                await asyncio.to_thread(streams.latest_id)
        async for event in streams.stream(request, after, types=tuple(type) if type else None, heartbeat_s=heartbeat):
            if event is None:
                yield ServerSentEvent(comment="heartbeat")
            else:
                yield ServerSentEvent(data=event, event=event["type"], id=str(event["id"]))

    @app.get("/events/recent", tags=["watch"], summary="The newest recorded events, newest first")
    def recent_events(limit: Annotated[int, Query(ge=1, le=browse.MAX_PAGE)] = 50,
                      type: Annotated[list[str] | None, Query(description="only these event types (repeat)")] = None):
        return browse.recent_events(ws(), limit=limit, types=tuple(type) if type else None)

    @app.post("/ingest", tags=["watch"], dependencies=[Depends(require_token)],
              summary="Catalogue uploaded images (validated like pixelmine ingest; kept in WORKSPACE/uploads)")
    async def ingest(file: Files, label: Annotated[str | None, Query(max_length=200)] = None):
        from ..uploads import ingest_uploads

        uploads = await _accept(file)
        try:
            recorded = await asyncio.to_thread(lambda: ingest_uploads(ws(), uploads, label=label))
        finally:
            for u in uploads:
                u.discard()
        return {"events": recorded}

    @app.get("/search", tags=["browse"], summary="Images that match words, best first (CLIP, or offline concepts)")
    def search(q: Annotated[str, Query(min_length=1, max_length=1000, description="the words to search for")],
               k: Annotated[int, Query(ge=1, le=browse.MAX_PAGE)] = 24):
        return ws().search_text(q, k).to_dict()

    @app.post("/zero-shot", tags=["labels"], dependencies=[Depends(require_token)],
              summary="Label every image from label names alone (stored as a run; as_labels records corrections)")
    def zero_shot(body: ZeroShotRequest):
        return browse.zero_shot(ws(), labels=body.labels, from_labels=body.from_labels, as_labels=body.as_labels,
                                min_probability=body.min_probability)

    @app.get("/zero-shot", tags=["labels"], summary="The newest zero-shot result: summary and predictions, paged")
    def zero_shot_result(label: Annotated[str | None, Query(max_length=200)] = None,
                         limit: Annotated[int, Query(ge=1, le=browse.MAX_PAGE)] = 60,
                         offset: Annotated[int, Query(ge=0, le=10**9)] = 0):
        return browse.zero_shot_result(ws(), label=label, limit=limit, offset=offset)

    @app.get("/fairness", tags=["discover"],
             summary="The model's metrics per group of metadata columns, with the gaps between groups")
    def fairness(by: Annotated[list[str] | None, Query(description="a metadata column (repeat "
                                                        "for several; none: every column that varies)")] = None,
                 min_group: Annotated[int, Query(ge=2, le=100_000)] = 20,
                 refresh: Annotated[bool, Query(description="measure again instead of the saved table")] = False):
        return browse.fairness(ws(), by=by, model=workspace_model(), min_group=min_group, refresh=refresh)

    @app.get("/duplicates", tags=["discover"], summary="Near-duplicate and exact-duplicate groups")
    def duplicates(limit: Annotated[int, Query(ge=1, le=browse.MAX_PAGE)] = 20,
                   offset: Annotated[int, Query(ge=0, le=10**9)] = 0):
        return browse.duplicate_groups(ws(), limit=limit, offset=offset)

    @app.get("/map", tags=["discover"], summary="2-D map of the collection (one point per image)")
    def cluster_map(limit: Annotated[int, Query(ge=1, le=200_000)] = 20_000):
        return browse.cluster_map(ws(), limit=limit)

    @app.get("/suggestions", tags=["labels"], summary="What to label next: uncertain images, one per cluster first")
    def suggestions(n: Annotated[int, Query(ge=1, le=browse.MAX_PAGE)] = 50,
                    pool: Annotated[str, Query(pattern="^(unlabelled|review|all)$")] = "unlabelled"):
        return [s.to_dict() for s in ws().suggest(n, model=workspace_model(), pool=pool)]

    @app.get("/suggestions/manifest", tags=["labels"], response_class=PlainTextResponse,
             summary="The suggestions as a CSV manifest (path,label) to fill in and ingest back")
    def suggestions_manifest(n: Annotated[int, Query(ge=1, le=browse.MAX_PAGE)] = 50,
                             pool: Annotated[str, Query(pattern="^(unlabelled|review|all)$")] = "unlabelled"):
        from ..learn.suggest import manifest_csv

        return PlainTextResponse(manifest_csv(ws().suggest(n, model=workspace_model(), pool=pool)), media_type="text/csv",
                                 headers={"Content-Disposition": 'attachment; filename="to-label.csv"'})

    @app.get("/runs", tags=["workspace"], summary="Recorded runs, newest first")
    def runs(kind: str | None = None, limit: Annotated[int, Query(ge=1, le=browse.MAX_PAGE)] = 50):
        return browse.list_runs(ws(), kind=kind, limit=limit)

    @app.get("/models", tags=["workspace"], summary="Trained models with their test metrics")
    def models():
        return ws().models()

    @app.get("/report", tags=["workspace"], summary="The newest HTML report", response_class=FileResponse)
    def report():
        return FileResponse(browse.latest_report(ws()), media_type="text/html")

    # -- writing --------------------------------------------------------------------------------------
    @app.post("/labels/{image_id}", tags=["labels"], dependencies=[Depends(require_token)],
              summary="Record a label correction (never written into your files)")
    def label(image_id: Annotated[str, PathParam(pattern=IMAGE_ID)], body: LabelCorrection):
        return corrections.record_correction(ws().catalog, image_id, body.action, body.label, source="api")

    @app.get("/labels", tags=["labels"], summary="Label corrections, newest first")
    def labels(image_id: Annotated[str | None, Query(pattern=IMAGE_ID)] = None,
               limit: Annotated[int, Query(ge=1, le=browse.MAX_PAGE)] = 100,
               offset: Annotated[int, Query(ge=0, le=10**9)] = 0):
        return corrections.corrections(ws().catalog, image_id, limit=limit, offset=offset)

    # -- operations ---------------------------------------------------------------------------------
    @app.get("/health", tags=["operations"], summary="Liveness and what the server holds")
    def health():
        return {"status": "ok", "version": __version__, "workspace": str(config.root),
                "images": ws().catalog.query("SELECT COUNT(*) FROM images")[0][0]}

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse,
             summary="Prometheus metrics (text format 0.0.4)")
    def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    # -- docs and the web UI --------------------------------------------------------------------------
    _mount_docs(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/ui", include_in_schema=False)
    def ui():
        return RedirectResponse("/")

    return app


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


def _mount_docs(app: FastAPI) -> None:
    """Swagger UI from the swagger-ui-bundle package's files: /docs works without internet."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        swagger_ui_path = None
    if swagger_ui_path is not None and Path(swagger_ui_path).is_dir():
        app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

        @app.get("/docs", include_in_schema=False)
        def docs() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/openapi.json", title="pixelmine API",
                                       swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                       swagger_css_url="/docs-assets/swagger-ui.css",
                                       swagger_favicon_url="/docs-assets/favicon-32x32.png")
    else:
        @app.get("/docs", include_in_schema=False)
        def docs_plain() -> HTMLResponse:
            return HTMLResponse("<!doctype html><title>pixelmine API</title><h1>pixelmine API</h1>"
                                "<p>Install swagger-ui-bundle for the interactive page. The schema: "
                                "<a href='/openapi.json'>/openapi.json</a></p>")
