"""The JSON bodies of E2B's template-build API (docs/wire.md §2.6), with E2B's key names, plus Sandhive's extensions.

Optional keys the client reads as "absent or a value" are left out rather than sent as null: the released SDK
parses a present `reason`, `url` or `finishedAt` without a None check, so a `null` there would crash it
(`_Omitting`). Keys E2B declares as required-but-nullable (`createdBy`, `lastSpawnedAt`) are always sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

BuildStatus = Literal["building", "waiting", "ready", "error"]
LogLevel = Literal["debug", "info", "warn", "error"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Omitting(BaseModel):
    """A response whose None-valued optional keys are left out of the JSON."""

    @model_serializer(mode="wrap")
    def _omit_none(self, handler: SerializerFunctionWrapHandler):  # unannotated: the schema stays the model's
        data = handler(self)
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


# ---- register a build -------------------------------------------------------------------------------------

class TemplateBuildRequestV3(_Request):
    """`POST /v3/templates`: a new build of the template called `name` ("my-tpl" or "my-tpl:tag")."""

    name: str | None = Field(None, description="'name' or 'name:tag'; the same name again is a new build")
    tags: list[str] | None = None
    alias: str | None = Field(None, description="deprecated: use name")
    teamID: str | None = None
    cpuCount: int | None = Field(None, ge=1, le=64)
    memoryMB: int | None = Field(None, ge=128)
    minFreeDiskMb: int | None = Field(None, ge=0)


class TemplateRequestResponseV3(BaseModel):
    templateID: str
    buildID: str
    public: bool
    names: list[str]
    tags: list[str]
    aliases: list[str]


class TemplateBuildFileUpload(_Omitting):
    """Whether the server has a COPY step's files; if not, a signed URL to PUT their tar to."""

    present: bool
    url: str | None = None
    headers: dict[str, str] | None = None


# ---- start a build ----------------------------------------------------------------------------------------

class TemplateStep(_Request):
    type: str = Field(description="COPY, ENV, RUN, WORKDIR or USER")
    args: list[str] = Field(default_factory=list)
    filesHash: str | None = None
    force: bool = False
    forceUpload: bool | None = None


class TemplateBuildStartV2(_Request):
    """`POST /v2/templates/{templateID}/builds/{buildID}`.

    E2B's keys, plus Sandhive's extension for Dockerfile builds: `dockerfile` (the text) with `contextHash`
    (the files hash of an uploaded tar of the build context) and `buildArgs`, instead of fromImage and steps.
    """

    fromImage: str | None = None
    fromTemplate: str | None = None
    fromImageRegistry: dict[str, Any] | None = None
    force: bool = False
    steps: list[TemplateStep] = Field(default_factory=list)
    startCmd: str | None = None
    readyCmd: str | None = None
    dockerfile: str | None = Field(None, description="Sandhive extension: a Dockerfile to build")
    contextHash: str | None = Field(None, description="Sandhive extension: files hash of the uploaded context tar")
    buildArgs: dict[str, str] | None = Field(None, description="Sandhive extension: ARG values")


# ---- build status -----------------------------------------------------------------------------------------

class BuildLogEntry(_Omitting):
    timestamp: datetime
    message: str
    level: LogLevel = "info"
    step: str | None = None


class BuildStatusReason(_Omitting):
    message: str
    step: str | None = None
    logEntries: list[BuildLogEntry] | None = None


class TemplateBuildInfo(_Omitting):
    """`GET /templates/{templateID}/builds/{buildID}/status`: the status and the log entries from `logsOffset`."""

    templateID: str
    buildID: str
    status: BuildStatus
    logs: list[str] = Field(default_factory=list, description="legacy, always empty: read logEntries")
    logEntries: list[BuildLogEntry]
    reason: BuildStatusReason | None = None


# ---- templates --------------------------------------------------------------------------------------------

class TemplateUpdateRequest(_Request):
    """E2B's `PATCH /templates/{templateID}`: `public` lets every team start the template (by
    `team-slug/name` or id); false makes it the owner's alone again."""

    public: bool | None = None


class TemplateUpdateResponse(BaseModel):
    templateID: str
    public: bool
    names: list[str]


class TemplateAliasResponse(BaseModel):
    templateID: str
    public: bool


class TemplateBuild(_Omitting):
    buildID: str
    status: BuildStatus
    createdAt: datetime
    updatedAt: datetime
    finishedAt: datetime | None = None
    cpuCount: int
    memoryMB: int
    diskSizeMB: int | None = None
    envdVersion: str | None = None
    tags: list[str] | None = Field(None, description="Sandhive: the tags given to this build")


class TemplateWithBuilds(BaseModel):
    """`GET /templates/{templateID}`: E2B's keys, then Sandhive's (the template's defaults)."""

    templateID: str
    buildID: str
    cpuCount: int
    memoryMB: int
    diskSizeMB: int
    public: bool
    aliases: list[str]
    names: list[str]
    createdAt: datetime
    updatedAt: datetime
    createdBy: dict[str, Any] | None = None
    lastSpawnedAt: datetime | None = None
    spawnCount: int = 0
    buildCount: int
    envdVersion: str
    buildStatus: BuildStatus
    builds: list[TemplateBuild]
    tags: list[str] = Field(default_factory=list, description="Sandhive: tags of the current build")
    defaultUser: str | None = Field(None, description="Sandhive: the user commands run as")
    defaultWorkdir: str | None = Field(None, description="Sandhive: where commands start")
    startCmd: str | None = Field(None, description="Sandhive: started in every sandbox before it is handed out")
    readyCmd: str | None = Field(None, description="Sandhive: the sandbox is ready when this exits 0")
    owned: bool = Field(False, description="Sandhive: built by the caller's team (it may rebuild or delete it)")


class TemplateAliases(_Request):
    """Sandhive extension (`PUT /templates/{templateID}/aliases`): the template's full list of aliases."""

    aliases: list[str]


# ---- tags -------------------------------------------------------------------------------------------------

class AssignTemplateTagsRequest(_Request):
    target: str = Field(description="'name:tag' of the build to tag")
    tags: list[str]


class AssignedTemplateTags(BaseModel):
    tags: list[str]
    buildID: str


class DeleteTemplateTagsRequest(_Request):
    name: str
    tags: list[str]


class TemplateTag(BaseModel):
    tag: str
    buildID: str
    createdAt: datetime
