"""Decoding images into pixels: optional decoders, EXIF orientation, odd modes, fast resizing."""
