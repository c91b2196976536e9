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
        None, description="FLAIR with the predicted outline in red (truth in green), PNG base64 (?images=true)"
    )


class CaseDownloads(BaseModel):
    nifti: str = Field(description="URL of the mask as NIfTI (.nii.gz)")
    png_zip: str = Field(description="URL of the mask as a zip of PNG slices")


class CaseOut(BaseModel):
    name: str
    kind: Literal["slice", "slices", "patient", "nifti"] = Field(
        description="one slice; slices of one patient uploaded together; a patient folder from a zip; a NIfTI volume"
    )
    sources: list[str] = Field(description="uploaded file (or zip entry) names")
    shape: list[int] = Field(description="mask shape (slices, height, width)")
    tumor_volume_voxels: int
    slices_with_tumor: int
    voxel_size_mm: list[float] | None = Field(None, description="NIfTI pixdim (i, j, k) in mm, when known")
    tumor_volume_ml: float | None = Field(None, description="tumor volume in millilitres, when the voxel size is known")
    dice: float | None = Field(None, description="3D Dice against the uploaded ground-truth masks, if any")
    downloads: CaseDownloads
    slices: list[SliceOut]


class SegmentOut(BaseModel):
    result_id: str = Field(description="id for the download URLs; kept while in the server's LRU")
    model_sha256: str
    runtime: str
    seconds: float = Field(description="processing time on the server")
    png_zip: str = Field(description="URL of all cases' masks as a zip of PNG slices")
    cases: list[CaseOut]
    warnings: list[str]


class ErrorOut(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in {
        400: "malformed request: not multipart, no files, empty file, unsafe zip entry names",
        413: "too large: body, file count, image dimensions, voxels, zip size, entries or ratio",
        415: "a file is not a TIFF/PNG/JPEG image, a zip or a NIfTI volume (checked by content)",
        422: "a file of a known type cannot be read (truncated image, corrupt NIfTI or zip)",
        503: "the server is busy (queue full); retry later",
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
