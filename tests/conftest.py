import os
import sys

# The image builders are shared test helpers, not part of the package.
sys.path.insert(0, os.path.dirname(__file__))
