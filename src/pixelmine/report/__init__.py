"""The HTML report: one self-contained file (thumbnails and plots embedded as data: URIs, CSS inline, no
script, no external asset), so it opens offline, can be mailed, and shows the same findings table the
CLI, the API and the web UI read.

    >>> ws.report()                       # reports/report.html
    >>> pixelmine report --output audit.html
"""

from .build import write_report

__all__ = ["write_report"]
