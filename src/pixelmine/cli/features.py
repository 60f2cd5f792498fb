"""pixelmine extract / backbones."""

from __future__ import annotations

import click

from .. import backbones
from ..errors import PixelmineError
from ..features import ExtractConfig
from .common import common_options, table

_DEFAULTS = ExtractConfig()


@click.command("extract")
@click.option("--backbone", default=_DEFAULTS.backbone, show_default=True,
              help="Registered backbone (see: pixelmine backbones), timm:NAME, torchvision:NAME, full:NAME@SIZE "
                   "(the whole frame at SIZE px) or model:NAME (your fine-tuned model NAME).")
@click.option("--backend", type=click.Choice(["onnx", "torch"]), default=_DEFAULTS.backend, show_default=True,
              help="onnx: ONNX Runtime (fastest on CPU); torch: eager PyTorch (uses a CUDA GPU when present).")
@click.option("--batch-size", type=click.IntRange(min=1), default=_DEFAULTS.batch_size, show_default=True,
              help="Images per inference call.")
@click.option("--precision", type=click.Choice(list(backbones.PRECISIONS)), default=_DEFAULTS.precision,
              show_default=True, help="int8: statically quantized ONNX model calibrated on this workspace "
                                      "(faster; its accuracy cost: benchmarks/README.md, Extract).")
@click.option("--threads", type=click.IntRange(min=1), help="Inference threads (default: all cores).")
@click.option("--workers", type=click.IntRange(min=0),
              help="Decode processes (default: cores - 1; 0 = decode in a thread of this process).")
@click.option("--device", default=_DEFAULTS.device, show_default=True,
              help="For --backend torch: auto, cpu, cuda, cuda:N.")
@click.option("--retry-errors", is_flag=True, help="Try again the images that failed to decode in earlier runs.")
@click.option("--offline", is_flag=True, help="Never download weights (same as PIXELMINE_OFFLINE=1).")
@common_options
def extract_command(ws, out, backbone, backend, batch_size, precision, threads, workers, device, retry_errors,
                    offline):
    """Compute a feature vector and top-5 ImageNet tags for every ingested image.

    Cached per image and backbone: re-running computes only new images, identical files are computed
    once, and an interrupted run resumes where it stopped.

    \b
    Examples:
      pixelmine extract
      pixelmine extract --backbone efficientnet_lite0 --batch-size 32
      pixelmine extract --backend torch --device cuda
    """
    result = ws.extract(backbone, backend=backend, batch_size=batch_size, precision=precision, threads=threads,
                        workers=workers, device=device, retry_errors=retry_errors,
                        allow_download=False if offline else None, progress=out.progress)
    spec = backbones.get(result.backbone, root=ws.root)
    errors = [e for e in ws.extraction_errors(result.backbone) if e["fingerprint"] == result.fingerprint]
    summary = {**result.to_dict(), "errors": [{k: e[k] for k in ("image_id", "path", "error")} for e in errors]}
    tags = _top_tags(ws, result, spec)
    summary["top_tags"] = [{"tag": t, "images": n} for t, n in tags]
    out.result(summary)
    out.say(f"extract run {result.run_id}: {result.images} images, {result.backbone} ({result.backend}): "
            f"{result.computed} computed, {result.cached} cached, {result.failed} failed in "
            f"{result.elapsed_s:.1f} s" + (f" ({result.images_per_s:.0f} img/s)" if result.computed else ""))
    if result.skipped_failed:
        out.say(f"{result.skipped_failed} images that failed before were skipped (retry: --retry-errors)")
    for error in errors[:5]:
        out.say(f"  failed: {error['path']}: {error['error']}")
    if len(errors) > 5:
        out.say(f"  ... and {len(errors) - 5} more (pixelmine extract --json lists all)")
    if tags and not out.quiet:
        out.say("\n" + table(tags, ("most frequent top-1 tag", "images")))


def _top_tags(ws, result, spec) -> list[tuple[str, int]]:
    from ..features.tags import top1_counts

    if not spec.num_classes or result.computed + result.cached == 0:
        return []
    return top1_counts(result.features(), spec.label_names(), n=8)


@click.command("backbones")
@click.argument("pattern", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout, for scripts.")
def backbones_command(pattern, as_json):
    """List the registered backbones: feature size, input, source, and where their weights are found.

    \b
    Examples:
      pixelmine backbones
      pixelmine backbones 'eff*' --json
    """
    import json

    rows = []
    for name in backbones.names(pattern):
        spec = backbones.get(name)
        try:
            weights = spec.locate_weights(allow_download=False).origin
        except PixelmineError:
            weights = "download needed" if any(s.can_download() for s in spec.weights) else "missing"
        pre = spec.preprocessing
        rows.append({"name": name, "dim": spec.feature_dim, "input": pre.input_size, "classes": spec.num_classes,
                     "params_m": spec.params_m, "source": spec.source, "weights": weights,
                     "description": spec.description})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(table([(r["name"], r["dim"], r["input"], r["source"], r["weights"]) for r in rows],
                     ("backbone", "dim", "input", "source", "weights")))
    click.echo(f"\ndefault: {backbones.DEFAULT_BACKBONE}. Also any timm:NAME or torchvision:NAME "
               "(e.g. timm:convnext_tiny.fb_in22k, torchvision:resnet50; their weights download on first use), "
               "full:NAME@SIZE (the whole frame at SIZE px, e.g. full:mobilenet_v2@250) and model:NAME (the "
               "network of your fine-tuned model NAME).")


COMMANDS = [extract_command, backbones_command]
