"""The server's web page: a panel for each model served, for people rather than programs.

    GET /                              the page (serving/playground/index.html)
    GET /playground/{file}             its script, style sheet and icon: the files of
                                       serving/playground/, read once; no other file is served
    GET /playground/models.json        the models served and their hints (below)

The page calls the same REST API as any client (metadata to choose a panel, `:predict` to use
it), so what a person sees is what a program gets. Nothing on it comes from another origin, and
the Content-Security-Policy says so: scripts and styles from this server's files only (no inline
script), images from the page itself or from `data:`/`blob:` URLs it made, requests to this
server only, no frames, no forms sent elsewhere.

Hints are what a page needs that a signature does not say: a typical input row to start a form
from, a decision threshold, class names. An export writes them as `assets.extra/playground.json`
(a JSON object) beside its SavedModel; a version without the file has none.
"""

import json
import logging
from pathlib import Path

log = logging.getLogger("serving.playground")

PAGE_DIR = Path(__file__).with_name("playground")
HINTS_FILE = Path("assets.extra") / "playground.json"
MAX_HINTS_BYTES = 64 * 1024
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src blob:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; "
        "base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def page_files() -> dict[str, tuple[bytes, str]]:
    """name -> (content, media type) of every file the page is made of, read once."""
    return {path.name: (path.read_bytes(), MEDIA_TYPES[path.suffix])
            for path in sorted(PAGE_DIR.iterdir()) if path.suffix in MEDIA_TYPES}


def read_hints(version_dir: Path) -> dict:
    """A version's playground.json, or {} when it has none or it is not a small JSON object."""
    path = version_dir / HINTS_FILE
    try:
        if not path.is_file():
            return {}
        if path.stat().st_size > MAX_HINTS_BYTES:
            raise ValueError(f"over {MAX_HINTS_BYTES} bytes")
        hints = json.loads(path.read_text())
        if not isinstance(hints, dict):
            raise ValueError("not a JSON object")
        return hints
    except (OSError, ValueError) as error:  # the model is still served, its panel plainer
        log.warning("%s: ignored (%s)", path, error)
        return {}


def add_routes(app, registry) -> None:
    """The page's routes on the API's FastAPI `app`, over the models of `registry`."""
    from fastapi.responses import JSONResponse, Response

    files = page_files()

    def page_file(name: str) -> Response:
        content, media_type = files[name]
        return Response(content, media_type=media_type, headers=SECURITY_HEADERS)

    @app.get("/", include_in_schema=False)
    async def index():
        return page_file("index.html")

    # A plain function: FastAPI runs it in a worker thread, so that reading each version's hints
    # from disk does not hold up the event loop, where every other request waits its turn.
    @app.get("/playground/models.json", include_in_schema=False)
    def served_models():
        models = [{"name": name, "version": servable.version,
                   "hints": read_hints(registry.base / name / str(servable.version))}
                  for name, servable in registry.latest().items()]
        return JSONResponse({"models": models}, headers=SECURITY_HEADERS)

    @app.get("/playground/{name}", include_in_schema=False)
    async def asset(name: str):
        if name not in files or name == "index.html":
            return JSONResponse({"error": f"No such file: /playground/{name}"}, status_code=404,
                                headers=SECURITY_HEADERS)
        return page_file(name)
