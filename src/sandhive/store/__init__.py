"""The control plane's database: SQLAlchemy models, Alembic migrations and the `Store` of queries.

SQLite (`<data_dir>/sandhive.db`) is the embedded default; PostgreSQL serves many API replicas. Only
`sandhive.api` and the CLI use the store.
"""

from .audit import AuditEntry
from .engine import database_url
from .models import (
    ApiKey,
    AuditEvent,
    IdempotencyRecord,
    SandboxRecord,
    SnapshotRecord,
    Team,
    TemplateBuildRecord,
    TemplateOwner,
    VolumeMountRecord,
    VolumeRecord,
)
from .paging import SandboxQuery
from .store import Caller, Claim, ClaimOutcome, KeyInfo, Store
from .volumes import VolumeNameTaken

__all__ = ["ApiKey", "AuditEntry", "AuditEvent", "Caller", "Claim", "ClaimOutcome", "IdempotencyRecord", "KeyInfo",
           "SandboxQuery", "SandboxRecord", "SnapshotRecord", "Store", "Team", "TemplateBuildRecord", "TemplateOwner",
           "VolumeMountRecord", "VolumeNameTaken", "VolumeRecord", "database_url"]
