"""Stage 1: find the files, validate each one, and record it in the catalog keyed by content hash."""

from .runner import IngestConfig, IngestResult, ingest
from .sources import IMAGE_EXTENSIONS, SourceItem, resolve_sources
from .validate import MISSING, STATUSES, FileRecord, ValidationLimits, validate_file

__all__ = ["IMAGE_EXTENSIONS", "MISSING", "STATUSES", "FileRecord", "IngestConfig", "IngestResult", "SourceItem",
           "ValidationLimits", "ingest", "resolve_sources", "validate_file"]
