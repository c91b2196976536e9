"""The routes: the web page, the API docs, health, segmentation and downloads (one ``APIRouter``).

Every route reaches the model through the :class:`~lggseg.serve.service.Service` stored on the app
(``app.state.service``), injected with :func:`service_of`.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from lggseg.serve.cases import sample_uploads
from lggseg.serve.docs import DOCS_PAGE, openapi_30
from lggseg.serve.limits import reject
from lggseg.serve.schemas import ERRORS, UPLOAD_SCHEMA, ErrorOut, SegmentOut
from lggseg.serve.service import Service
from lggseg.serve.uploads import Upload, receive_uploads

WEB_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "shape.js": "text/javascript; charset=utf-8",
    "docs.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
SWAGGER_FILES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
DOCS_HEADERS = {
    **PAGE_HEADERS,
    # as strict as the page's: Swagger UI needs no inline script or style, its icons are data: SVGs
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
}
SEGMENT_DESCRIPTION = (
    "Multipart field `files` (repeat it for several files). Types are recognised by content. "
    "Slices named `<patient>_<n>.<ext>` are grouped per patient into one volume (normalised together, "
    "3D post-processing); `<patient>_<n>_mask.<ext>` files give ground truth and a Dice. Other slices are "
    "segmented one by one. Masks are on each input's own grid (a zipped patient folder whose slices differ "
    "in size is put on the 256x256 model grid). Download the masks from the URLs in the answer while the result is "
    "kept."
)

router = APIRouter()


def service_of(request: Request) -> Service:
    """The app's service (dependency of every route that needs the model)."""
    return request.app.state.service


@functools.cache
def web_file(name: str) -> bytes:
    """A file of the web page, shipped in ``lggseg/serve/web/``."""
    return resources.files("lggseg.serve").joinpath("web").joinpath(name).read_bytes()


def swagger_file(name: str) -> bytes:
    """A Swagger UI asset from the ``swagger-ui-bundle`` package (the machine may be offline)."""
    import swagger_ui_bundle

    return (Path(swagger_ui_bundle.swagger_ui_path) / name).read_bytes()


def attachment(filename: str, data: bytes, media_type: str) -> Response:
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }
    return Response(data, media_type=media_type, headers=headers)


@router.get("/", include_in_schema=False)
def page() -> Response:
    return Response(web_file("index.html"), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@router.get("/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    if name not in WEB_FILES:
        reject(404, f"no such file: {name}")
    return Response(web_file(name), media_type=WEB_FILES[name], headers=PAGE_HEADERS)


@router.get("/docs", include_in_schema=False)
def api_docs() -> Response:
    """Swagger UI from local files, reading :func:`api_docs_openapi` (Swagger UI 4 cannot read 3.1)."""
    return Response(DOCS_PAGE, media_type="text/html; charset=utf-8", headers=DOCS_HEADERS)


@router.get("/docs/openapi-3.0.json", include_in_schema=False)
def api_docs_openapi(request: Request) -> dict[str, Any]:
    """The app's OpenAPI document rewritten as OpenAPI 3.0.3, for the docs page."""
    return openapi_30(request.app.openapi())


@router.get("/docs-assets/{name}", include_in_schema=False)
def api_docs_asset(name: str) -> Response:
    if name not in SWAGGER_FILES:
        reject(404, f"no such file: {name}")
    return Response(swagger_file(name), media_type=SWAGGER_FILES[name])


@router.get("/healthz", summary="Model identity and readiness")
def healthz(service: Service = Depends(service_of)) -> dict[str, Any]:
    return service.health()


@router.post(
    "/api/v1/segment",
    summary="Segment slices, a zipped patient folder or a NIfTI volume",
    description=SEGMENT_DESCRIPTION,
    response_model=SegmentOut,
    responses=ERRORS,
    openapi_extra=UPLOAD_SCHEMA,
)
async def segment(
    request: Request,
    images: bool = Query(True, description="include the FLAIR image and the overlay of each slice"),
    service: Service = Depends(service_of),
) -> SegmentOut:
    service.gate.admit()
    try:
        folder = Path(tempfile.mkdtemp(prefix="lggseg-req-", dir=service.limits.temp_dir))
        try:
            uploads = await receive_uploads(request, folder, service.limits)
            return await run_in_threadpool(service.gate.run, service.analyse, uploads, folder, images)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        service.gate.leave()


async def analyse_files(service: Service, uploads: list[Upload], images: bool) -> SegmentOut:
    """Segment files already on disk (the bundled sample) through the same worker gate as uploads."""
    folder = Path(tempfile.mkdtemp(prefix="lggseg-req-", dir=service.limits.temp_dir))
    try:
        return await run_in_threadpool(service.gate.run, service.analyse, uploads, folder, images)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@router.post(
    "/api/v1/sample",
    summary="Segment the bundled sample patient",
    description=(
        "Segments one patient of the real sample shipped with lggseg (TCGA-LGG, with its ground truth), "
        "as if its slices and masks had been uploaded. The answer is that of `/api/v1/segment`."
    ),
    response_model=SegmentOut,
    responses={404: {"model": ErrorOut, "description": "no such sample patient"}, 503: ERRORS[503]},
)
async def segment_sample(
    patient: str | None = Query(None, description="sample patient folder name; the first one if absent"),
    images: bool = Query(True, description="include the FLAIR image and the overlay of each slice"),
    service: Service = Depends(service_of),
) -> SegmentOut:
    return await analyse_files(service, sample_uploads(patient), images)


@router.get(
    "/api/v1/results/{result_id}/mask.nii.gz",
    summary="Download a case's mask as NIfTI",
    description=(
        "uint8 0/1 volume in lggseg's axis convention; for a NIfTI input it carries the input's affine and header."
    ),
    response_class=Response,
    responses={200: {"content": {"application/gzip": {}}}, 404: {"model": ErrorOut}},
)
async def download_nifti(
    result_id: str,
    case: int = Query(0, description="case index in the result"),
    service: Service = Depends(service_of),
) -> Response:
    name, data = await run_in_threadpool(service.nifti_bytes, result_id, case)
    return attachment(name, data, "application/gzip")


@router.get(
    "/api/v1/results/{result_id}/mask.zip",
    summary="Download masks as a zip of PNG slices",
    description="One folder per case with `<slice>_mask.png` (0/255). Without `case`, all cases of the result.",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}, 404: {"model": ErrorOut}},
)
async def download_zip(
    result_id: str,
    case: int | None = Query(None, description="case index; all cases if absent"),
    service: Service = Depends(service_of),
) -> Response:
    name, data = await run_in_threadpool(service.zip_bytes, result_id, case)
    return attachment(name, data, "application/zip")
