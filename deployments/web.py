"""`catsdogs web`: a page that answers "cat or dog?" for dropped photos, and the HTTP API behind it.

    GET  /          the page: drop or pick photos, see each one's thumbnail, label and probability
    POST /predict   multipart/form-data, one or more `files`: one answer per file, as `predict --json` gives
    POST /thumbnail multipart/form-data, one file: a small JPEG of it as a viewer shows it, for the page to show
                    what the browser cannot draw (an iPhone's HEIC, a TIFF); 4xx with {"error"} otherwise
    GET  /healthz   {"status": "ok", "model": ..., "runtime": "litert" | "tensorflow"}
    GET  /examples  a few validation photos to try: [{"name": "cat-1", "url": "examples/cat-1"}, ...]
    GET  /docs      the API's documentation (Swagger UI; /redoc: ReDoc), its scripts served from here, not a CDN

The model is loaded once. Uploads go to a temporary folder under names the server makes, and are deleted
with it: nothing a client sends names a file on the server (but for the documentation pages' own scripts).
"""

from __future__ import annotations

import html
import io
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect

from catsdogs import store
from catsdogs.data import CLASS_NAMES
from catsdogs.images import ImageError, pixel_count, thumbnail
from catsdogs.predict import Predictor, open_predictor, predict_files

# A malformed upload is answered 400 saying so; the multipart parser's own warning would repeat it on the
# server's terminal, once per request a client can send.
logging.getLogger("python_multipart").setLevel(logging.ERROR)

MAX_FILES = 32  # files per request
MAX_REQUEST_BYTES = 64 * 2**20  # a request body larger than this is refused before it is read (413)
MAX_REQUEST_PIXELS = 200_000_000  # the pixels a request's images may hold together (413): about 8 s of decoding
MAX_WAITING = 8  # requests waiting for the workers at once; more are told to come back (503)
UNSURE = 0.6  # the page says "not sure" when the answer's probability is below this
THUMBNAIL = 320  # pixels a side of /thumbnail's previews: sharp in the page's 160-pixel boxes on a phone
EXAMPLES_PER_CLASS = 3  # photos to try on the page, from the validation subset


def create_app(workdir: Path, model: str = "champion", max_files: int = MAX_FILES,
               max_request_bytes: int = MAX_REQUEST_BYTES, max_request_pixels: int = MAX_REQUEST_PIXELS,
               max_waiting: int = MAX_WAITING) -> FastAPI:
    """The web app for the registered MODEL in WORKDIR (best, latest, a name or a .keras file).

    Decoding and inference run in worker threads, never on the event loop, so /healthz and the page answer while
    photos are classified; at most MAX_WAITING requests wait for the workers (more get 503, to retry), and a
    request's images may hold at most MAX_REQUEST_PIXELS pixels together (413 otherwise)."""
    predictor = TakingTurns(open_predictor(model, workdir))
    waiting = {"requests": 0}  # a count, not an asyncio primitive: test clients run each request on its own loop
    counting = threading.Lock()
    model_name, runtime = predictor.name, predictor.runtime  # the registered name, or the file given
    examples = validation_examples(workdir)
    app = FastAPIOffline(title="catsdogs", description="Cat or dog?")  # /docs without a CDN: offline machines

    @app.exception_handler(HTTPException)
    async def as_error(request: Request, err: HTTPException) -> JSONResponse:  # 404, 405: {"error"} as the rest
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code, headers=err.headers)

    @app.head("/healthz", include_in_schema=False)  # HEAD apart: one route with both names one operation twice
    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, "runtime": runtime, "image_size": predictor.image_size}

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)  # the page
    def page() -> str:
        return PAGE.replace("{{MODEL}}", html.escape(f"{model_name} ({runtime})")).replace("{{UNSURE}}", str(UNSURE))

    @app.head("/examples", include_in_schema=False)
    @app.get("/examples")
    def list_examples() -> list[dict[str, str]]:
        return [{"name": name, "url": f"examples/{name}"} for name in examples]

    @app.head("/examples/{name}", include_in_schema=False)
    @app.get("/examples/{name}")
    def example(name: str) -> FileResponse:
        if name not in examples:  # only the names the server listed: nothing a client sends names a file
            raise HTTPException(404, f"no example named {name!r}")
        return FileResponse(examples[name])

    async def read_uploads(request: Request, most: int) -> tuple[Any, list[UploadFile], JSONResponse | None]:
        """The request's form and files, or the answer that refuses it: 415, 411, 413, 400, or 503 while MAX_WAITING
        requests already wait (else it takes a place among them, which `finished` gives back)."""
        refused = _refuse(request, max_request_bytes)
        if refused is not None:
            return None, [], refused
        try:
            form = await request.form(max_files=most, max_fields=most, max_part_size=max_request_bytes)
        except ClientDisconnect:  # a closed tab mid-upload: no one to answer, nothing to log
            return None, [], Response(status_code=400)
        except (MultiPartException, HTTPException) as err:  # Starlette turns the first into the second
            reason = str(getattr(err, "message", None) or getattr(err, "detail", "") or "").rstrip(".")
            if reason.startswith("Too many fields"):  # text fields: the API reads files only
                return None, [], _error(400, f"{reason}; send only file fields, at most {most} per request")
            if reason.startswith("Too many"):
                return None, [], _error(400, f"{reason}; send at most {most} file{'s' * (most > 1)} per request")
            return None, [], _error(400, f"malformed multipart/form-data body ({reason or 'unreadable'}); send "
                                         "images as multipart/form-data file fields, e.g. curl -F files=@photo.jpg")
        uploads = [item for _, item in form.multi_items() if isinstance(item, UploadFile)]
        if not uploads:
            await form.close()
            return None, [], _error(400, "no files: send one or more images as multipart/form-data file "
                                         "fields, e.g. curl -F files=@photo.jpg")
        with counting:
            busy = waiting["requests"] >= max_waiting
            waiting["requests"] += 0 if busy else 1
        if busy:
            await form.close()
            return None, [], JSONResponse({"error": f"busy: {max_waiting} requests are waiting to be answered; "
                                                    "try again in a moment"}, status_code=503,
                                          headers={"Retry-After": "1"})
        return form, uploads, None

    async def finished(form: Any) -> None:
        with counting:
            waiting["requests"] -= 1
        await form.close()

    @app.post("/thumbnail", openapi_extra=_upload_body("files", "one image"),
              responses={200: {"content": {"image/jpeg": {}}, "description": "a small JPEG, upright"}})
    async def preview(request: Request) -> Response:
        """A small JPEG of one image as a viewer shows it (turned as its EXIF says): what the page shows for
        photos a browser cannot draw, such as an iPhone's HEIC."""
        form, uploads, refused = await read_uploads(request, 1)
        if refused is not None:
            return refused
        try:
            with tempfile.TemporaryDirectory(prefix="catsdogs-web-") as folder:
                path = Path(folder) / "upload-0"  # the server's name, never the client's
                path.write_bytes(await uploads[0].read())
                try:
                    small = await anyio.to_thread.run_sync(lambda: _jpeg(predictor.drawn(path, THUMBNAIL)))
                except ImageError as err:
                    return _error(422, f"{uploads[0].filename or 'the file'}: {err}")
                except Exception as err:  # noqa: BLE001  never a 500 for what a client sends
                    return _error(422, f"{uploads[0].filename or 'the file'}: could not draw it: "
                                       f"{type(err).__name__}: {err}"[:300])
        finally:
            await finished(form)
        return Response(small, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.post("/predict", openapi_extra=_upload_body("files", f"one or more images (at most {max_files})"))
    async def predict(request: Request) -> JSONResponse:
        """Cat or dog for each image sent: one answer per file, in order, as `catsdogs predict --json` gives
        them ({"path", "label", "probability", ...}, or {"path", "error"} for a file that is no image)."""
        form, uploads, refused = await read_uploads(request, max_files)
        if refused is not None:
            return refused
        try:
            with tempfile.TemporaryDirectory(prefix="catsdogs-web-") as folder:
                saved = []
                for number, upload in enumerate(uploads):
                    path = Path(folder) / f"upload-{number}"  # the server's name, never the client's
                    path.write_bytes(await upload.read())
                    saved.append((upload.filename or f"file {number + 1}", path))
                pixels = await anyio.to_thread.run_sync(lambda: sum(pixel_count(path) for _, path in saved))
                if pixels > max_request_pixels:
                    return _error(413, f"the images hold {pixels:,} pixels together, more than the "
                                       f"{max_request_pixels:,} a request may; send fewer or smaller images")
                # the command line's batching and per-file errors: what a client sends is at worst its error line
                answers = await anyio.to_thread.run_sync(lambda: list(predict_files(
                    predictor, [(shown, path, None) for shown, path in saved], workers=1)))
        finally:
            await finished(form)
        return JSONResponse([answer.model_dump(exclude_none=True) for answer in answers])

    return app


def validation_examples(workdir: Path, per_class: int = EXAMPLES_PER_CLASS) -> dict[str, Path]:
    """A few photos to try, by name: from a validation subset in WORKDIR, never the test one (the page must not
    show the images models are scored on)."""
    found: dict[str, Path] = {}
    for subsets in sorted((Path(workdir) / "subsets").glob("*/")):
        if not store.is_complete(subsets):
            continue
        for label in CLASS_NAMES:
            files = sorted(p for p in (subsets / "validation" / label).glob("*") if p.is_file())
            found |= {f"{label}-{number + 1}": path for number, path in enumerate(files[:per_class])}
        if found:
            break
    return found


def _refuse(request: Request, max_bytes: int) -> JSONResponse | None:
    """415 for anything but multipart/form-data, 411 without a length, 413 over the limit."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return _error(415, "send the images as multipart/form-data file fields, e.g. curl -F "
                           "files=@photo.jpg")
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        return _error(411, "the request needs a Content-Length")
    if int(length) > max_bytes:
        return _error(413, f"the request is {int(length):,} bytes, more than the {max_bytes:,} allowed; "
                           "send fewer or smaller images")
    return None


class TakingTurns:
    """A predictor whose model answers one batch at a time (one interpreter, shared by the request threads);
    decoding runs in as many threads at once as there are cores: more would be no faster, and each may hold a
    large photo's pixels (a 9000x9000 PNG of 240 KB: about 0.8 GB while it is decoded)."""

    def __init__(self, predictor: Predictor):
        self.predictor, self.lock = predictor, threading.Lock()
        self.decoding = threading.BoundedSemaphore(os.cpu_count() or 1)
        self.name, self.runtime, self.image_size = predictor.name, predictor.runtime, predictor.image_size

    def load(self, path: Path) -> Any:
        with self.decoding:
            return self.predictor.load(path)

    def drawn(self, path: Path, size: int) -> Any:
        """The photo as a viewer shows it, at most SIZE pixels a side (images.thumbnail), decoded in turn too."""
        with self.decoding:
            return thumbnail(path, size)

    def predict_batch(self, images: Any) -> Any:
        with self.lock:
            return self.predictor.predict_batch(images)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _jpeg(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def _upload_body(field: str, what: str) -> dict[str, Any]:
    """The OpenAPI request body of an upload route, which reads its form itself: FIELD holds WHAT, as files."""
    files = {"type": "array", "items": {"type": "string", "format": "binary"}, "description": what}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": {field: files}, "required": [field]}}}}}


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>catsdogs: cat or dog?</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 * { box-sizing: border-box; }
 body { font-family: system-ui, sans-serif; max-width: 860px; margin: 0 auto; padding: 1.5em 1em; color: #222; }
 h1 { margin: 0 0 .2em; }
 .model { color: #666; font-size: .9em; margin: 0 0 1em; }
 #drop { display: block; border: 2px dashed #888; border-radius: 12px; padding: 2em 1em; text-align: center;
         cursor: pointer; margin: 0 0 1em; }
 #drop.over { background: #eef5ff; border-color: #36c; }
 #drop small { display: block; color: #666; margin-top: .4em; }
 #examples { display: flex; flex-wrap: wrap; align-items: center; gap: .5em; margin: 0 0 1em; color: #666; }
 #examples button { border: 1px solid #ccc; border-radius: 6px; padding: 0; background: none; cursor: pointer; }
 #examples img { width: 56px; height: 56px; object-fit: cover; border-radius: 5px; display: block; }
 #answers { display: flex; flex-wrap: wrap; gap: 1em; }
 figure { margin: 0; width: 160px; }
 figure img, .nopreview { width: 160px; height: 160px; object-fit: cover; border-radius: 8px; display: block; }
 .nopreview { display: flex; align-items: center; justify-content: center; background: #f2f2f2; color: #888; }
 figcaption { margin-top: .3em; overflow-wrap: anywhere; }
 .label { font-weight: bold; font-size: 1.2em; } .unsure { color: #a60; } .error { color: #b00; }
 .bar { height: 6px; background: #eee; border-radius: 3px; margin: .25em 0; }
 .bar span { display: block; height: 100%; border-radius: 3px; background: #36c; }
 .detail { color: #555; font-size: .85em; }
</style></head>
<body>
<h1>Cat or dog?</h1>
<p class="model">Answered by model <span id="model">{{MODEL}}</span> · <a href="docs">its HTTP API</a></p>
<label id="drop">Drop photos here, click to pick them, or paste one
 <small>JPEG, PNG, GIF, BMP, WebP, TIFF, HEIC (iPhone) · as many as you like</small>
 <input id="pick" type="file" accept="image/*,.heic,.heif" multiple hidden></label>
<div id="examples" hidden>Or try one: </div>
<div id="answers"></div>
<script>
const UNSURE = {{UNSURE}};  // below this probability of its label, an answer is "not sure"
const AT_ONCE = 2;  // photos asked about at once
const drop = document.getElementById("drop"), pick = document.getElementById("pick");
const answers = document.getElementById("answers"), examples = document.getElementById("examples");
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => { e.preventDefault(); drop.classList.remove("over"); ask(e.dataTransfer.files); });
pick.addEventListener("change", () => ask(pick.files));
document.addEventListener("paste", e => {
  const files = [...(e.clipboardData || {}).items || []].filter(i => i.kind === "file").map(i => i.getAsFile());
  if (files.length) { e.preventDefault(); ask(files); }
});
fetch("examples").then(r => r.ok ? r.json() : []).then(list => {
  for (const example of list) {
    const button = document.createElement("button"); button.title = example.name;
    const img = document.createElement("img"); img.src = example.url; img.alt = example.name;
    button.append(img); examples.append(button); examples.hidden = false;
    button.addEventListener("click", async () => {
      const blob = await (await fetch(example.url)).blob();
      ask([new File([blob], example.name + ".jpg", { type: blob.type })]);
    });
  }
});
function show(caption, answer, ms) {
  caption.innerHTML = "";
  if (answer.error) { caption.className = "error"; caption.textContent = answer.path + ": " + answer.error; return; }
  const sure = answer.probability >= UNSURE, percent = 100 * answer.probability;
  const label = document.createElement("div");
  label.className = sure ? "label" : "label unsure";
  label.textContent = sure ? answer.label : "not sure: " + answer.label + "?";
  const bar = document.createElement("div"); bar.className = "bar"; bar.title = percent.toFixed(1) + "%";
  const fill = document.createElement("span"); fill.style.width = percent.toFixed(1) + "%"; bar.append(fill);
  const detail = document.createElement("div"); detail.className = "detail";
  detail.textContent = percent.toFixed(1) + "% " + answer.label + " · " + ms + " ms · " + answer.path;
  caption.append(label, bar, detail);
}
function preview(file) {
  // A file the browser cannot draw gets the server's drawing of it, or, not an image, a plain box (never a
  // broken-image icon)
  const figure = document.createElement("figure");
  const img = document.createElement("img"); img.alt = file.name;
  img.onload = () => URL.revokeObjectURL(img.src);
  const noPreview = () => {
    const box = document.createElement("div"); box.className = "nopreview"; box.textContent = "no preview";
    box.setAttribute("role", "img"); box.setAttribute("aria-label", file.name); img.replaceWith(box);
  };
  img.onerror = async () => {  // the server draws what it reads (an iPhone's HEIC, a TIFF) as it was answered
    URL.revokeObjectURL(img.src); img.onerror = noPreview;
    const form = new FormData(); form.append("files", file, file.name);
    try {
      const response = await fetch("thumbnail", { method: "POST", body: form });
      if (!response.ok) throw new Error(response.statusText);
      img.src = URL.createObjectURL(await response.blob());
    } catch (err) { noPreview(); }
  };
  img.src = URL.createObjectURL(file);
  const caption = document.createElement("figcaption"); caption.textContent = "asking…";
  figure.append(img, caption); return figure;
}
async function ask(files) {
  // One request a photo, AT_ONCE at a time: a drop of phone photos never outgrows a request's limits, and each
  // answer shows as soon as it is made
  files = [...files];
  if (!files.length) return;
  const figures = files.map(preview);
  answers.prepend(...figures);  // the newest on top, each drop in the order given
  const queue = files.map((file, i) => [file, figures[i].querySelector("figcaption")]);
  const work = async () => { for (let item; (item = queue.shift()); ) await answer(...item); };
  await Promise.all(Array.from({ length: Math.min(AT_ONCE, queue.length) }, work));
}
async function answer(file, caption) {
  const form = new FormData(); form.append("files", file, file.name);
  const started = performance.now();
  for (let tries = 1; ; tries++) {
    try {
      const response = await fetch("predict", { method: "POST", body: form });
      const result = await response.json();
      if (response.status === 503 && tries < 6) {  // busy with other people's photos: wait, then ask again
        await new Promise(done => setTimeout(done, 1000 * tries)); continue;
      }
      if (!response.ok) throw new Error(result.error || response.statusText);
      show(caption, result[0], Math.round(performance.now() - started));
    } catch (err) {
      caption.className = "error"; caption.textContent = file.name + ": " + err.message;
    }
    return;
  }
}
</script>
</body></html>
"""
