"""The FastAPI application: routes, authentication, error mapping, lifespan of the engine."""

from __future__ import annotations

import contextlib
import logging
import math
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

import seallm
from seallm.deploy import DeploymentConfig
from seallm.server.engine_client import ControlError, EngineDeadError
from seallm.server.replicas import ReplicaSet
from seallm.kv import parse_bytes
from seallm.server.errors import APIError, error_body, error_response
from seallm.server.metrics import ServerMetrics
from seallm.server.middleware import APIKeyMiddleware, BodyLimitMiddleware
from seallm.server.protocol import ChatCompletionRequest, CompletionRequest
from seallm.server.serving import OpenAIServing, ServedModel
from seallm.server.templates import TemplateSandbox, max_prompt_chars

logger = logging.getLogger("seallm.server")


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        if e.get("type") == "json_invalid":
            return "the request body is not valid JSON"
        parts.append(f"{loc or 'body'}: {e.get('msg')}")
    return "; ".join(parts) or "invalid request"


def build_app(cfg: DeploymentConfig) -> FastAPI:
    """The app serving ``cfg``; the engine process starts with the app and stops with it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        from seallm.offline import load_tokenizer

        engine = ReplicaSet(cfg)
        try:
            await engine.start()
        except BaseException:
            await engine.shutdown()
            raise
        ready = engine.ready
        models = {m.name: ServedModel(m, load_tokenizer(m.path)) for m in ready.models}
        metrics = ServerMetrics(list(models), ready.scheduling_policy, ready.num_pages, cfg.preemption_mode)
        app.state.engine = engine
        app.state.metrics = metrics

        def _restarted(r) -> None:  # same models; the KV pool may be sized anew from free memory
            for info in r.models:
                models[info.name].info = info
            metrics.kv_total.set(engine.ready.num_pages)

        engine.on(restart=metrics.engine_restarts.inc, model_event=metrics.observe_model_event, ready=_restarted)
        from seallm.sched.slo import SLO_CLASSES

        slo_classes = {**SLO_CLASSES, **{c.name: c.to_slo() for c in cfg.slo_classes}}
        sandbox = None
        if cfg.allow_request_chat_template:
            import asyncio

            sandbox = TemplateSandbox({m.name: m.path for m in ready.models}, cfg.chat_template_timeout_s,
                                      {m.name: max_prompt_chars(m.max_model_len) for m in ready.models})
            await asyncio.to_thread(sandbox.start)
        app.state.serving = OpenAIServing(engine, models, metrics, cfg.max_tokens_limit, slo_classes,
                                          cfg.max_sequences_per_request, sandbox)
        app.state.created = int(time.time())
        logger.info("seallm %s serving %s on http://%s:%d (policy %s, %s preemption)", seallm.__version__,
                    ", ".join(models), cfg.host, cfg.port, ready.scheduling_policy, cfg.preemption_mode)
        try:
            yield
        finally:
            app.state.serving.close()
            await engine.shutdown()

    app = FastAPI(title="seallm", version=seallm.__version__, lifespan=lifespan)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError):
        return JSONResponse(error_body(_validation_message(exc), 400), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException):
        return JSONResponse(error_body(str(exc.detail), exc.status_code), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        logger.exception("unexpected error")
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}", 500), status_code=500)

    if cfg.api_key:
        app.add_middleware(APIKeyMiddleware, api_key=cfg.api_key)
    app.add_middleware(BodyLimitMiddleware, max_bytes=parse_bytes(cfg.max_request_body))
    _document_errors(app)

    @app.get("/health")
    async def health(request: Request):
        # 200 {"status": "ok"}; 503 {"status": "restarting" | "failed" | "stopped", "error": {OpenAI error}}
        # With several replicas: 200 only while every replica serves; "replicas" has each one's state.
        engine = request.app.state.engine
        body = {"status": "ok", "engine_restarts": engine.restarts}
        if len(engine.clients) > 1:
            body["replicas"] = engine.describe()
        if engine.alive:
            return JSONResponse(body)
        status = engine.status()
        if status == "ok":
            status = "restarting"
        message = {"restarting": "the engine process died; the server is restarting it",
                   "failed": "the engine process died and could not be restarted; restart the server",
                   "stopped": "the server is shutting down"}[status]
        body.update(status=status, last_engine_exit=engine.last_death(), error=error_body(message, 503)["error"])
        headers = None
        if status == "restarting":
            retry = math.ceil(engine.retry_after() or 1)
            body["retry_after_s"] = retry
            headers = {"Retry-After": str(retry)}
        return JSONResponse(body, status_code=503, headers=headers)

    @app.get("/version")
    async def version():
        return {"version": seallm.__version__}

    @app.get("/metrics")
    async def metrics(request: Request):
        st = request.app.state
        st.metrics.update_engine(st.engine.stats())
        return Response(st.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    def model_card(st, name: str, m: ServedModel) -> dict:
        # No filesystem path: "root" is the served name, as vLLM reports for a named model.
        return {"id": name, "object": "model", "created": st.created, "owned_by": "seallm", "root": name,
                "parent": None, "max_model_len": m.info.max_model_len,
                "resident": _resident(st.engine.is_resident(name), m.info.resident), "pinned": m.info.pinned}

    async def _control(request: Request, model_id: str, call) -> JSONResponse:
        st = request.app.state
        if model_id not in st.serving.models:
            raise APIError(f"The model `{model_id}` does not exist.", 404, "model", "model_not_found")
        try:
            await call
        except EngineDeadError as e:
            headers = {"Retry-After": str(math.ceil(e.retry_after))} if e.retry_after else None
            return JSONResponse(error_body(str(e), 503), status_code=503, headers=headers)
        except ControlError as e:
            return JSONResponse(error_body(str(e), e.status), status_code=e.status)
        return JSONResponse(model_card(st, model_id, st.serving.models[model_id]))

    @app.post("/v1/models/{model_id:path}/load")
    async def load_model(model_id: str, request: Request):
        """Make a model resident (evicting an idle one if needed); answers once it is."""
        return await _control(request, model_id, request.app.state.engine.load_model(model_id))

    @app.post("/v1/models/{model_id:path}/unload")
    async def unload_model(model_id: str, request: Request, force: bool = False):
        """Take a model off the device once its in-flight requests finished (``force=true``:
        now, aborting them); answers once it is off."""
        return await _control(request, model_id, request.app.state.engine.unload_model(model_id, force))

    @app.get("/v1/models")
    async def list_models(request: Request):
        st = request.app.state
        return {"object": "list", "data": [model_card(st, n, m) for n, m in st.serving.models.items()]}

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str, request: Request):
        st = request.app.state
        m = st.serving.models.get(model_id)
        if m is None:
            raise APIError(f"The model `{model_id}` does not exist.", 404, "model", "model_not_found")
        return model_card(st, model_id, m)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        return await _answer(request.app.state.serving.completions(body, request))

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        return await _answer(request.app.state.serving.chat(body, request))

    return app


def _resident(now: bool | None, at_start: bool) -> bool:
    return at_start if now is None else now


async def _answer(call):
    """The route's response; a bug answers 500 in the OpenAI format *as a response*, so the
    client's keep-alive connection stays usable (an exception escaping to Starlette's
    error middleware would make the server drop the connection)."""
    try:
        return await call
    except APIError as e:
        return error_response(e)
    except Exception as e:  # noqa: BLE001
        logger.exception("unexpected error")
        return JSONResponse(error_body(f"internal error: {type(e).__name__}", 500), status_code=500)


def _document_errors(app: FastAPI) -> None:
    """Publish the statuses the server really answers in the OpenAPI schema: 400 (not
    FastAPI's default 422) for invalid bodies, and the OpenAI error shape for every error."""
    from fastapi.openapi.utils import get_openapi

    error_schema = {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type", "code"], "properties": {
            "message": {"type": "string"}, "type": {"type": "string"},
            "param": {"type": ["string", "null"]}, "code": {"type": ["string", "integer", "null"]}}}}}
    statuses = {"400": "Invalid request", "401": "Invalid or missing API key", "404": "Unknown model",
                "413": "Request body too large", "429": "Waiting queue of the model full (see Retry-After)",
                "503": "Engine not running (see Retry-After)"}
    control = {"401": statuses["401"], "404": statuses["404"], "409": "Model pinned, or no room can be made",
               "500": "The model could not be loaded", "503": statuses["503"]}

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {})["ErrorResponse"] = error_schema
        ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
        for path, item in schema.get("paths", {}).items():
            for method, op in item.items():
                responses = op.setdefault("responses", {})
                responses.pop("422", None)
                if method == "post" and path.endswith(("/load", "/unload")):
                    for code, desc in control.items():
                        responses[code] = {"description": desc, **ref}
                elif method == "post":
                    for code, desc in statuses.items():
                        responses[code] = {"description": desc, **ref}
                elif path.startswith("/v1/models/"):
                    responses["404"] = {"description": statuses["404"], **ref}
        for name in ("HTTPValidationError", "ValidationError"):
            schema["components"]["schemas"].pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
