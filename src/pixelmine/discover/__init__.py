"""Stage 5: findings about the collection. Finders are pure functions of arrays returning
:class:`Finding` lists; :mod:`.finders` is the table of finders and finding kinds; :mod:`.findings` stores
and exports them."""

from .finders import FINDERS, KINDS, Finder
from .findings import Finding, export_findings, load_findings, store_findings

__all__ = ["FINDERS", "KINDS", "Finder", "Finding", "export_findings", "load_findings", "store_findings"]
