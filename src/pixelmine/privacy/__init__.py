"""Privacy: what an image file tells about the person who took it, and copies that tell less.

- :mod:`.metadata` reads what a file carries (EXIF, XMP, IPTC; GPS, serial numbers, owner names, embedded
  thumbnails) from its bytes, without decoding pixels: ``read_metadata(path)``.
- :mod:`.strip` writes a cleaned copy: ``clean_bytes(data, strip_location=True, strip_metadata=False)``;
  JPEG, PNG and WebP losslessly (the compressed pixel data is copied byte for byte), other formats as PNG.
- :mod:`.audit` counts, per workspace, the images carrying location, serials, owners, thumbnails, faces.
- :mod:`.export` copies selected images out of a workspace, cleaned, with a manifest; originals are never
  touched.
- :mod:`.faces` finds and paints out faces (imported only where faces are asked for: it needs a model).

The file-format parts (:mod:`.exif`, :mod:`.xmp`, :mod:`.iptc`, :mod:`.containers`) are pure byte code
with no dependency beyond the standard library.
"""
