"""The control plane's database: SQLAlchemy models, Alembic migrations and the `Store` of queries.

SQLite (`<data_dir>/sandhive.db`) is the embedded default; PostgreSQL serves many API replicas. Only
`sandhive.api` and the CLI use the store.
"""

from .engine import database_url
from .models import (
    ApiKey,
    IdempotencyRecord,
    SandboxRecord,
    SnapshotRecord,
    Team,
    TemplateBuildRecord,
    TemplateOwner,
)
from .paging import SandboxQuery
from .store import Caller, Claim, ClaimOutcome, KeyInfo, Store

__all__ = ["ApiKey", "Caller", "Claim", "ClaimOutcome", "IdempotencyRecord", "KeyInfo", "SandboxQuery", "SandboxRecord",
           "SnapshotRecord", "Store", "Team", "TemplateBuildRecord", "TemplateOwner", "database_url"]
