"""``python -m pixelmine``: the same as the ``pixelmine`` command."""

from .cli import main

main(prog_name="pixelmine")
