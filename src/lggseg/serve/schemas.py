"""Response schemas: they are the OpenAPI documentation of the answers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class SliceOut(BaseModel):
    index: int = Field(description="1-based position of the slice in its case")
    name: str = Field(description="slice name (file stem, or <case>_<n> for volumes)")
    tumor_area_px: int = Field(description="predicted tumor area in pixels")
    truth_area_px: int | None = Field(None, description="ground-truth area when a mask was given")
    mask_png: str = Field(description="predicted mask, PNG (0/255) in base64, on the slice's grid")
    flair_png: str | None = Field(None, description="the FLAIR channel as a grey PNG in base64 (?images=true)")
    overlay_png: str | None = Field(
        None,
        description="FLAIR with the predicted outline in vermillion (truth in sky blue), PNG base64 (?images=true)",
    )
    truth_png: str | None = Field(None, description="ground-truth mask, PNG (0/255) in base64, when a mask was given")
    probability_png: str | None = Field(
        None, description="tumor probability before post-processing, grey PNG (0..255 = 0..1) in base64 (?images=true)"
    )


class CaseDownloads(BaseModel):
    nifti: str = Field(description="URL of the mask as NIfTI (.nii.gz)")
    png_zip: str = Field(description="URL of the mask as a zip of PNG slices")


class CohortBox(BaseModel):
    n: int = Field(description="cohort patients with a value of this feature")
    min: float | None
    q1: float | None = Field(description="first quartile (linear interpolation)")
    median: float | None
    q3: float | None = Field(description="third quartile (linear interpolation)")
    max: float | None


class ShapeFeature(BaseModel):
    value: float | None = Field(description="the case's value; null when not defined for this case")
    percentile: float | None = Field(
        description="percent of cohort patients below the value (ties count half), 0..100; null without a value"
    )
    cohort: CohortBox = Field(description="the cohort's distribution of this feature, for a box plot")


class ShapeOut(BaseModel):
    dimensions: Literal[2, 3] = Field(
        description="3: measured on the case's volume; 2: one slice only (no BEVR, no volume percentile)"
    )
    largest_slice: int = Field(description="1-based slice with the most tumor: MF and ASD are measured on it")
    volume_voxels: ShapeFeature = Field(description="predicted tumor volume in voxels")
    bevr: ShapeFeature = Field(description="bounding ellipsoid volume ratio (3D; 1 = an ellipsoid)")
    margin_fluctuation: ShapeFeature = Field(description="margin fluctuation, on the largest slice (0 = smooth)")
    angular_sd: ShapeFeature = Field(description="angular standard deviation, on the largest slice (0 = round)")


class CaseOut(BaseModel):
    name: str
    kind: Literal["slice", "slices", "patient", "nifti"] = Field(
        description="one slice; slices of one patient uploaded together; a patient folder from a zip; a NIfTI volume"
    )
    sources: list[str] = Field(description="uploaded file (or zip entry) names")
    shape: list[int] = Field(description="mask shape (slices, height, width)")
    tumor_volume_voxels: int
    slices_with_tumor: int
    voxel_size_mm: list[float] | None = Field(
        None, description="voxel size (x: columns, y: rows, z: slices) in mm, when known (NIfTI volumes)"
    )
    tumor_volume_ml: float | None = Field(None, description="tumor volume in millilitres, when the voxel size is known")
    dice: float | None = Field(None, description="3D Dice against the uploaded ground-truth masks, if any")
    dice_note: str | None = Field(
        None,
        description="with a Dice: whether the model saw this patient in training (by the case name; a training "
        "patient's Dice is optimistic, not a test result)",
    )
    orientation: list[str] | None = Field(
        None,
        description="anatomical direction of increasing row and column (e.g. ['P', 'L']: rows run anterior to "
        "posterior, columns patient right to left); null when unknown",
    )
    shape_features: ShapeOut | None = Field(
        None,
        description="BEVR, margin fluctuation and angular SD of the predicted mask (voxel units) against the "
        "manual masks of the 100 patients of the LGG data set (docs/radiogenomics.md); null for an empty mask",
    )
    downloads: CaseDownloads
    slices: list[SliceOut]


class SkippedFile(BaseModel):
    file: str = Field(description="the uploaded file's name")
    status: int = Field(description="the HTTP status this file alone would have got")
    detail: str = Field(description="why it was skipped")


class SegmentOut(BaseModel):
    result_id: str = Field(description="id for the download URLs; kept while in the server's LRU")
    model_sha256: str
    runtime: str
    seconds: float = Field(description="processing time on the server")
    png_zip: str = Field(description="URL of all cases' masks as a zip of PNG slices")
    cases: list[CaseOut]
    warnings: list[str]
    skipped: list[SkippedFile] = Field([], description="files that could not be used; the others were segmented")


class ErrorOut(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in {
        400: "malformed request: not multipart, no files, empty file, unsafe zip entry names, only masks; or an "
        "unknown Host name",
        401: "this server has an API token and the request did not carry it (Authorization: Bearer <token>)",
        403: "a cross-origin, cross-site or Origin: null request that would change state",
        408: "the upload was too slow (no data for body_idle_timeout, or longer than body_timeout in all)",
        413: "too large: body, file count, image dimensions, voxels, slices or cases per request, decoded size, "
        "zip size, entries or ratio",
        415: "a file is not a TIFF/PNG/JPEG image, a zip or a NIfTI volume (checked by content)",
        422: "a file of a known type cannot be read (truncated image, corrupt NIfTI or zip), or a query parameter "
        "is invalid (the detail is one string naming it)",
        503: "the server is busy (work queue, download queue or upload space full); retry later",
        507: "the server ran out of disk space (its problem, not the request's); retry later",
    }.items()
}

UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "slices (TIFF/PNG/JPEG), a zip of a patient folder, or a NIfTI volume",
                        }
                    },
                }
            }
        },
    }
}
