"""``POST /v1/score``: score uploaded images of one cargo type; nothing is recorded.

Officers (and admins) only. Scores, thresholds, each signal's log-odds and heatmaps of images that
leave no trace would let whoever submits cargo tune pictures until they pass; a submitter's images
are decided through ``POST /v1/shipments``, where each decision is recorded once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile

from serve.deps import MultipartDep, OfficerDep, ServicesDep
from serve.problems import AUTHENTICATED, problem_responses
from serve.schemas import ScoredImage, ScoreResponse
from serve.scoring import (
    batcher_for,
    decoded_uploads,
    heatmap_base64,
    heatmap_png,
    predict,
    refuse_repeated_fields,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["scoring"])

UPLOAD_ERRORS = (400, *AUTHENTICATED, 408, 413, 415, 422, 503, 504)
"""What a route that scores uploaded images can answer (``POST /v1/score``, ``POST /v1/shipments``)."""
UPLOAD_DESCRIBED = {
    415: "A body that is not multipart/form-data (unsupported-media-type)",
    503: "The scoring queue or pixel budget full (overloaded), a model or the scoring engine "
    "unavailable (model-unavailable, engine-unavailable): retry after Retry-After seconds; without "
    "one (a model artifact missing or damaged), an operator must act first",
}


@router.post(
    "/score",
    response_model=ScoreResponse,
    responses=problem_responses(
        UPLOAD_ERRORS,
        {
            **UPLOAD_DESCRIBED,
            403: "Officers and admins only (forbidden)",
            422: "A field that does not match the schema (validation), cargo_type sent twice "
            "(bad-input), not a usable image (bad-image), a cargo type without a model "
            "(unknown-cargo-type)",
        },
    ),
    summary="Score images (nothing recorded)",
)
async def score_images(
    request: Request,
    services: ServicesDep,
    _caller: OfficerDep,
    _multipart: MultipartDep,
    images: Annotated[list[UploadFile], File(description="One or more images (PNG, JPEG, TIFF, BMP, WebP).")],
    cargo_type: Annotated[str, Form(min_length=1, max_length=64, examples=["bulk_ore"])],
    heatmap: Annotated[bool, Form(description="Include a base64 heatmap overlay PNG per image.")] = False,
    heatmap_query: Annotated[bool, Query(alias="heatmap", description="Same as the form flag.")] = False,
) -> ScoreResponse:
    """Score each image with the cargo type's model: score, label, anomaly type and probabilities,
    thresholds and model id, and with ``heatmap=true`` (form field or query) the overlay PNG."""
    await refuse_repeated_fields(request, "cargo_type")
    batcher_for(services, cargo_type)  # an unknown cargo type decodes nothing
    want_heatmap = heatmap or heatmap_query
    async with decoded_uploads(services, images, gone=request.is_disconnected) as uploads:
        predictions = await predict(services, cargo_type, uploads)
        results = []
        for upload, prediction in zip(uploads, predictions, strict=True):
            overlay = heatmap_base64(await heatmap_png(upload, prediction)) if want_heatmap else None
            results.append(
                ScoredImage.build(
                    filename=upload.filename,
                    sha256=upload.sha256,
                    shape=upload.pixels.shape,
                    prediction=prediction,
                    heatmap=overlay,
                )
            )
    model_ids = sorted({p.model_id for p in predictions})
    request.state.log_extra = {"model_ids": model_ids, "cargo_type": cargo_type}
    return ScoreResponse(
        request_id=request.state.request_id,
        cargo_type=cargo_type,
        model_ids=model_ids,
        policy_version=services.policy.version if services.policy is not None else "none",
        images=results,
    )
