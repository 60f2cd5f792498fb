"""Stage 5: findings about the collection. Finders are pure functions of arrays returning
:class:`Finding` lists; :mod:`.findings` stores and exports them."""

from .findings import KINDS, Finding, export_findings, load_findings, register_kind, store_findings

__all__ = ["KINDS", "Finding", "export_findings", "load_findings", "register_kind", "store_findings"]
