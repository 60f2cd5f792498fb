"""Stage 6 (live): ``pixelmine watch`` recognises and flags each image as it arrives in a folder.

    for event in ws.watch(["incoming/"], model="logreg-mobilenet_v2", timeout_s=60):
        print(event["type"], event["path"], event.get("label"), event.get("flags"))

:mod:`.files` says when a file is complete (inotify close-write and rename-into-place, or polling until
size and mtime settle); :mod:`.pipeline` validates, catalogues, embeds, predicts and checks each complete
file in micro-batches and stores one event per file; :mod:`.webhook` posts the events, retrying, without
ever holding the pipeline up; :mod:`.drift` tests whether the arrivals still look like the reference.
"""

from .drift import DriftMonitor, DriftReport
from .files import MODES, choose_mode, is_candidate
from .pipeline import WatchConfig, watch

__all__ = ["MODES", "DriftMonitor", "DriftReport", "WatchConfig", "choose_mode", "is_candidate", "watch"]
