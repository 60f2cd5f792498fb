import os
import sys

# The image builders are shared test helpers, not part of the package.
sys.path.insert(0, os.path.dirname(__file__))

import tempfile  # noqa: E402

# Exported ONNX graphs are cached per user; the suite shares one cache of its own (exports once per
# backbone, as a user would) and never reads or writes the real ~/.cache/pixelmine.
if "PIXELMINE_CACHE" not in os.environ or os.environ.get("CI"):
    os.environ["PIXELMINE_CACHE"] = tempfile.mkdtemp(prefix="pixelmine-test-cache-")
