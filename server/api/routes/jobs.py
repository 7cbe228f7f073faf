"""Background jobs for long videos: ``POST /jobs`` (202 + ``Location``), ``GET /jobs``,
``GET /jobs/{job_id}``, ``DELETE /jobs/{job_id}`` (cancel). The work: ``server.core.jobs``."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from server.api import schemas
from server.api.deps import State, receive_media, require_api_key
from server.api.errors import error_responses
from server.api.forms import parse_form, read_json
from server.core.errors import Busy, InvalidRequest, NotReady
from server.core.jobs import (
    STATES,
    JobRecord,
    JobRunner,
    file_fingerprint,
    new_job_id,
    resolve_job_path,
)
from server.core.media import choose_suffix
from server.core.pipeline import check_user_metadata, windowing
from server.core.state import AppState
from server.core.uploads import is_multipart

router = APIRouter(tags=["jobs"], dependencies=[Depends(require_api_key)])

JOB_ID_REGEX = "^[0-9a-f]{32}$"
JobId = Annotated[
    str, PathParam(pattern=JOB_ID_REGEX, description="a job id (32 hex) from POST /jobs")
]


def job_body(job: JobRecord) -> schemas.Job:
    total_s = job.duration_s
    if job.state == "done":
        fraction = 1.0
    elif total_s:
        fraction = min(1.0, job.seconds_done / total_s)
    else:
        fraction = 0.0
    error = None
    if job.state in ("failed", "cancelled") and job.error_code:
        error = schemas.JobError(code=job.error_code, message=job.error_message or "")
    return schemas.Job(
        id=job.id,
        state=job.state,  # type: ignore[arg-type]
        clip_id=job.clip_id,
        source=job.source,  # type: ignore[arg-type]
        name=job.name,
        progress=schemas.JobProgress(
            seconds_done=round(job.seconds_done, 3),
            seconds_total=total_s,
            windows_done=job.windows_done,
            windows_total=job.windows_total,
            fraction=round(fraction, 4),
        ),
        error=error,
        attempts=job.attempts,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def _runner(state: AppState) -> JobRunner:
    runner = state.job_runner
    if runner is None:
        raise NotReady("background jobs are not running on this server; retry shortly")
    return runner  # type: ignore[no-any-return]


def _check_fields(state: AppState, form: schemas.JobForm) -> dict[str, Any]:
    """The job's parameters, checked now (a mistake is 400 at once, not a failed job)."""
    from server.index.types import validate_metadata

    meta = form.metadata or {}
    check_user_metadata(meta)
    try:
        meta, _ = validate_metadata(meta)
    except ValueError as e:
        raise InvalidRequest(str(e), code="invalid_metadata") from None
    window_segments = windowing(state, form.window, form.stride)
    # the stride floor, before anything is queued
    from server.core.pipeline import resolve_stride

    media = state.backend.cfg.media
    resolve_stride(state, form.stride, window_segments or media.num_segments)
    return {"metadata": meta, "window_segments": window_segments, "stride": form.stride}


async def _queue_has_room(state: AppState, runner: JobRunner) -> None:
    """Refuse early (429) when the queue is full, before a large upload is read."""
    _, unfinished = await runner.page(0, 1, "queued")
    _, running = await runner.page(0, 1, "running")
    if unfinished + running >= state.settings.job_queue:
        raise Busy(
            f"the job queue is full ({unfinished + running} jobs queued or running, "
            f"PEMT_JOB_QUEUE={state.settings.job_queue}); retry later",
            retry_after_s=30,
        )


def _keep_upload(src: Path, dst: Path) -> None:
    """Make the streamed upload durable under the job's name (fsync, rename, fsync folder)."""
    with open(src, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(src, dst)
    fd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@router.post(
    "/jobs",
    operation_id="submit_job",
    status_code=202,
    response_model=schemas.Job,
    responses=error_responses(400, 401, 403, 408, 413, 415, 422, 429, 503, 507),
    openapi_extra=schemas.multipart_or_json(schemas.JobForm, schemas.JobRequest, ("metadata",)),
    summary="Embed a long video in the background (an upload, or a file under PEMT_JOB_ROOTS)",
)
async def submit_job(request: Request, state: State) -> Any:
    """Answers 202 with the job and ``Location: /jobs/{id}`` once the job is recorded (it then
    survives a restart); follow it with ``GET /jobs/{id}``. The clip is searchable when the
    job is ``done``."""
    s = state.settings
    runner = _runner(state)
    await _queue_has_room(state, runner)
    job_id = new_job_id()
    now = time.time()
    if is_multipart(request):
        async with receive_media(request, state) as up:
            form = parse_form(up.fields, schemas.JobForm, ("metadata",))
            params = _check_fields(state, form)
            if up.size == 0:
                raise InvalidRequest(
                    "the uploaded file is empty (0 bytes); send a video file", code="empty"
                )
            assert up.path is not None
            kept = runner.upload_path(job_id, choose_suffix(up.path, up.filename, up.content_type))
            await state.run_index(_keep_upload, up.path, kept)
            up.path = None  # moved: the job owns it now
            job = JobRecord(
                id=job_id, state="queued", clip_id=form.id or uuid.uuid4().hex, source="upload",
                path=str(kept), name=up.filename, content_type=up.content_type, fingerprint=None,
                params=params, duration_s=None, windows_total=None, windows_done=0,
                seconds_done=0.0, decoded=False, attempts=0, error_code=None,
                error_message=None, created_at=now, started_at=None, finished_at=None,
            )  # fmt: skip
            try:
                job = await runner.submit(job)
            except BaseException:
                kept.unlink(missing_ok=True)
                raise
    else:
        req = await read_json(request, schemas.JobRequest, state.read_limits)
        params = _check_fields(state, req)
        real = resolve_job_path(req.path, s.job_roots)
        job = JobRecord(
            id=job_id, state="queued", clip_id=req.id or uuid.uuid4().hex, source="path",
            path=str(real), name=req.path, content_type=None, fingerprint=file_fingerprint(real),
            params=params, duration_s=None, windows_total=None, windows_done=0,
            seconds_done=0.0, decoded=False, attempts=0, error_code=None, error_message=None,
            created_at=now, started_at=None, finished_at=None,
        )  # fmt: skip
        job = await runner.submit(job)
    body = job_body(job).model_dump(mode="json")
    return JSONResponse(body, status_code=202, headers={"Location": f"/jobs/{job.id}"})


@router.get(
    "/jobs",
    operation_id="list_jobs",
    response_model=schemas.JobPage,
    responses=error_responses(400, 401, 503),
    summary="Jobs, newest first (finished ones are kept up to PEMT_JOBS_KEPT)",
)
async def list_jobs(
    state: State,
    offset: Annotated[int, Query(ge=0, le=schemas.MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    job_state: Annotated[
        str | None, Query(alias="state", pattern="^(" + "|".join(STATES) + ")$")
    ] = None,
) -> schemas.JobPage:
    jobs, total = await _runner(state).page(offset, limit, job_state)
    return schemas.JobPage(
        items=[job_body(j) for j in jobs], total=total, offset=offset, limit=limit
    )


@router.get(
    "/jobs/{job_id}",
    operation_id="get_job",
    response_model=schemas.Job,
    responses=error_responses(400, 401, 404, 503),
    summary="A job's state, progress, clip id and error",
)
async def get_job(job_id: JobId, state: State) -> schemas.Job:
    return job_body(await _runner(state).get(job_id))


@router.delete(
    "/jobs/{job_id}",
    operation_id="cancel_job",
    response_model=schemas.Job,
    responses=error_responses(400, 401, 404, 409, 503),
    summary="Cancel a queued or running job (nothing of it is stored); 409 once it ended",
)
async def cancel_job(job_id: JobId, state: State) -> schemas.Job:
    return job_body(await _runner(state).cancel(job_id))
