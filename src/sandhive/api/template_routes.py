"""E2B's template-build routes (docs/wire.md §2.6) and Sandhive's template management: thin HTTP wrappers over
`TemplateBuildService`.

No `from __future__ import annotations` here: FastAPI reads the parameter annotations at runtime.
"""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from ..errors import UserError
from ..store import Store
from ..templates.build_service import TemplateBuildService
from ..templates.schemas import (
    AssignedTemplateTags,
    AssignTemplateTagsRequest,
    DeleteTemplateTagsRequest,
    TemplateAliases,
    TemplateAliasResponse,
    TemplateBuildFileUpload,
    TemplateBuildInfo,
    TemplateBuildRequestV3,
    TemplateBuildStartV2,
    TemplateRequestResponseV3,
    TemplateTag,
    TemplateUpdateRequest,
    TemplateUpdateResponse,
    TemplateWithBuilds,
)
from .auth import team_of_key
from .schemas import ErrorBody

ERROR_TEXT = {400: "Bad request", 401: "Missing or invalid API key", 403: "Another team's template", 404: "Not found",
              409: "Conflict", 413: "Upload too large", 500: "Server error"}
TemplateID = Annotated[str, Path(alias="templateID", description="template id, alias or name")]
BuildID = Annotated[str, Path(alias="buildID")]
FilesHash = Annotated[str, Path(alias="hash", description="sha256 of the files (64 hex digits)")]


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": ERROR_TEXT[code]} for code in codes}


def template_build_router(service: TemplateBuildService, store: Store) -> APIRouter:
    router = APIRouter(tags=["template builds"])
    Team = Annotated[str, Depends(team_of_key(store))]  # noqa: N806 — a type alias, read as one

    @router.post("/v3/templates", status_code=202, responses=errors(400, 401, 403, 409, 500))
    async def request_template_build(body: TemplateBuildRequestV3, team: Team) -> TemplateRequestResponseV3:
        """Register a build of the template `name` ('name' or 'name:tag'): the template is created by its first
        build and belongs to the caller's team; the same name again is a new build of it."""
        return await service.register(team, body)

    @router.get("/templates/{templateID}/files/{hash}", status_code=201, responses=errors(400, 401, 403, 404, 500))
    async def template_files_status(template_id: TemplateID, files_hash: FilesHash, team: Team,
                                    request: Request) -> TemplateBuildFileUpload:
        """Whether the server has the files of a COPY step; if not, a signed URL to PUT their tar to."""
        return await service.file_status(team, template_id, files_hash, str(request.base_url))

    @router.put("/templates/{templateID}/files/{hash}/upload", status_code=204, response_class=Response,
                responses=errors(400, 403, 404, 413))
    async def upload_template_files(template_id: TemplateID, files_hash: FilesHash, request: Request,
                                    expires: Annotated[int, Query()], signature: Annotated[str, Query()]) -> Response:
        """The signed upload URL: a tar (gzipped or not) of a COPY step's files, paths relative to the context.
        Authorised by its signature, not an API key. Members that would land outside refuse the upload."""
        await service.receive_files(template_id, files_hash, expires, signature, request.stream())
        return Response(status_code=204)

    @router.post("/v2/templates/{templateID}/builds/{buildID}", status_code=202, response_class=Response,
                 responses=errors(400, 401, 404, 409, 500))
    async def start_template_build(template_id: TemplateID, build_id: BuildID, body: TemplateBuildStartV2,
                                   team: Team) -> Response:
        """Start a registered build: from E2B's steps, or (Sandhive's extension) from `dockerfile` with the
        context uploaded as `contextHash`. It runs in the background: poll its status."""
        await service.start_build(team, template_id, build_id, body)
        return Response(status_code=202)

    @router.get("/templates/{templateID}/builds/{buildID}/status", responses=errors(400, 401, 404, 500))
    async def template_build_status(
        template_id: TemplateID, build_id: BuildID, team: Team,
        logs_offset: Annotated[int, Query(alias="logsOffset", ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=100)] = 100,
        level: Annotated[Literal["debug", "info", "warn", "error"] | None, Query()] = None,
    ) -> TemplateBuildInfo:
        """The build's status and its log entries from `logsOffset` (at most `limit`, at `level` or above)."""
        return await service.status(team, template_id, build_id, logs_offset, limit, level)

    @router.get("/templates/aliases/{alias:path}", responses=errors(400, 401, 403, 404))  # team-slug/name too
    async def template_alias(alias: Annotated[str, Path()], team: Team) -> TemplateAliasResponse:
        """Whether a template answers to `alias`: 200 (yours, or built in), 403 (another team's), 404 (none)."""
        return await service.alias_info(team, alias)

    @router.post("/templates/tags", status_code=201, responses=errors(400, 401, 403, 404, 500))
    async def assign_template_tags(body: AssignTemplateTagsRequest, team: Team) -> AssignedTemplateTags:
        """Give the build `target` ('name:tag') more tags. Sandhive keeps one build per template: the tags of a
        build are replaced by those of the next one."""
        return await service.assign_tags(team, body.target, body.tags)

    @router.delete("/templates/tags", status_code=204, response_class=Response,
                   responses=errors(400, 401, 403, 404, 500))
    async def delete_template_tags(body: DeleteTemplateTagsRequest, team: Team) -> Response:
        """Remove tags from the template `name`."""
        await service.remove_tags(team, body.name, body.tags)
        return Response(status_code=204)

    @router.get("/templates/{templateID}/tags", responses=errors(401, 403, 404, 500))
    async def template_tags(template_id: TemplateID, team: Team) -> list[TemplateTag]:
        """The tags of the template's current build."""
        return await service.tags(team, template_id)

    @router.get("/templates/{templateID}", responses=errors(401, 404, 500))
    async def get_template(template_id: TemplateID, team: Team) -> TemplateWithBuilds:
        """A template with its builds (newest first) and its defaults."""
        return await service.detail(team, template_id)

    @router.delete("/templates/{templateID}", status_code=204, response_class=Response,
                   responses=errors(401, 403, 404, 409, 500))
    async def delete_template(template_id: TemplateID, team: Team) -> Response:
        """Delete one of the team's templates (refused while sandboxes of it run or it is being built)."""
        await service.delete(team, template_id)
        return Response(status_code=204)

    async def update_template(template_id: TemplateID, body: TemplateUpdateRequest,
                              team: Team) -> TemplateUpdateResponse:
        """Mark one of the team's templates public (every team may start it by `team-slug/name` or id) or
        private again (E2B's `public` flag). Built-ins and other teams' templates cannot be changed."""
        if body.public is None:
            detail = await service.detail(team, template_id)
            if not detail.owned:
                raise UserError(404, f"template '{template_id}' not found")
        else:
            detail = await service.set_public(team, template_id, body.public)
        return TemplateUpdateResponse(templateID=detail.templateID, public=detail.public,
                                      names=await service.full_names(team, detail.templateID))

    for path in ("/templates/{templateID}", "/v2/templates/{templateID}"):
        router.add_api_route(path, update_template, methods=["PATCH"], responses=errors(400, 401, 403, 404, 500),
                             operation_id=f"update_template{'_v2' if path.startswith('/v2') else ''}")

    @router.put("/templates/{templateID}/aliases", responses=errors(400, 401, 403, 404, 409, 500))
    async def set_template_aliases(template_id: TemplateID, body: TemplateAliases, team: Team) -> TemplateAliases:
        """Sandhive extension: replace the template's aliases (each unique across the server's templates)."""
        return TemplateAliases(aliases=await service.set_aliases(team, template_id, body.aliases))

    return router
