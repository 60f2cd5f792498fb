"""pixelmine's resize and centre crop (imaging/decode.prepare) as ONNX ops, equal to Pillow pixel for pixel.

An exported classifier takes the decoded image at its own size, so the resize and crop the network was
trained with must live in the graph. ONNX's own ``Resize`` (linear, antialias) differs from Pillow's
``Image.resize`` by up to 15 grey levels on fine textures (measured on the demo's textile photos), which
would move probabilities far more than the 1e-4 an export must hold. So the graph does what Pillow's
``Resample.c`` does, in float64 where every step is exact:

- per output pixel, the filter's window on the source (``center = box0 + (i + 0.5) * scale``, support
  scaled by the shrink factor), the triangle (bilinear) or Keys a = -0.5 (bicubic) weights, normalised;
- the weights in Pillow's 22-bit fixed point, the sum rounded and clipped to 0..255 after the horizontal
  pass and again after the vertical one;
- the crop as a box of the source (torchvision's ``Resize`` + ``CenterCrop`` geometry, crop_box), so only
  the pixels inside the crop are resampled;
- the order of the passes: horizontal first, except (Pillow >= 13) when the height shrinks by more than
  twice as many pixels as the width.

Each pass gathers a window of ``ksize`` source pixels per output pixel (a banded product, not a dense
matrix), so a 12-megapixel photo costs tens of milliseconds, not seconds.
"""

from __future__ import annotations

from onnx import TensorProto

from .graph import GraphBuilder

PRECISION_BITS = 22  # Pillow's fixed point for 8-bit images: 32 - 8 - 2
FILTERS = {"bilinear": 1.0, "bicubic": 2.0}  # filter support, in source pixels at scale 1


def _filter(g: GraphBuilder, t: str, interpolation: str) -> str:
    x = g.op("Abs", t)
    one, two = g.const(1.0), g.const(2.0)
    zero = g.const(0.0)
    if interpolation == "bilinear":
        inside = g.op("Less", x, one)
        return g.op("Where", inside, g.op("Sub", one, x), zero)
    a = -0.5
    # ((a + 2) x - (a + 3)) x x + 1 for x < 1;  (((x - 5) x + 8) x - 4) a for x < 2
    near = g.op("Add", g.op("Mul", g.op("Mul", g.op("Sub", g.op("Mul", g.const(a + 2.0), x), g.const(a + 3.0)), x), x),
                one)
    far = g.op("Mul", g.op("Sub", g.op("Mul", g.op("Add", g.op("Mul", g.op("Sub", x, g.const(5.0)), x),
                                                     g.const(8.0)), x), g.const(4.0)), g.const(a))
    return g.op("Where", g.op("Less", x, one), near, g.op("Where", g.op("Less", x, two), far, zero))


def _coefficients(g: GraphBuilder, in0: str, in1: str, in_size: str, out_size: int, interpolation: str):
    """(gather indices (out, ksize) int64, fixed-point weights (out, ksize) float64) of one pass, as
    Pillow's precompute_coeffs + normalize_coeffs_8bpc compute them. Scalars are float64 tensors."""
    support_1 = FILTERS[interpolation]
    out = g.const(float(out_size))
    # (double)(in1 - in0) / outSize: the width is a C float difference, rounded to float32
    scale = g.op("Div", _as_float32(g, g.op("Sub", in1, in0)), out)
    filterscale = g.op("Max", scale, g.const(1.0))
    support = g.op("Mul", g.const(support_1), filterscale)
    ksize = g.op("Add", g.op("Mul", g.op("Ceil", support), g.const(2.0)), g.const(1.0))
    steps = g.op("Range", g.const(0.0), ksize, g.const(1.0))  # (ksize,)
    positions = g.const([[i + 0.5] for i in range(out_size)], "float64")  # (out, 1)
    center = g.op("Add", in0, g.op("Mul", positions, scale))  # (out, 1)
    half = g.const(0.5)
    zero = g.const(0.0)
    # (int)(center -/+ support + 0.5); the lower end is clipped at 0, so trunc and floor agree
    xmin = g.op("Max", g.op("Floor", g.op("Add", g.op("Sub", center, support), half)), zero)
    xmax = g.op("Min", g.op("Floor", g.op("Add", g.op("Add", center, support), half)), in_size)
    x = g.op("Add", xmin, g.op("Unsqueeze", steps, g.const([0], "int64")))  # (out, ksize) source index
    inverse = g.op("Div", g.const(1.0), filterscale)
    weights = _filter(g, g.op("Mul", g.op("Add", g.op("Sub", x, center), half), inverse), interpolation)
    weights = g.op("Where", g.op("Less", x, xmax), weights, zero)
    total = g.op("ReduceSum", weights, g.const([1], "int64"), keepdims=1)
    weights = g.op("Where", g.op("Equal", total, zero), weights, g.op("Div", weights, total))
    # (int)(k * 2^22 +- 0.5): round half away from zero
    scaled = g.op("Mul", weights, g.const(float(1 << PRECISION_BITS)))
    fixed = g.op("Mul", g.op("Sign", scaled), g.op("Floor", g.op("Add", g.op("Abs", scaled), half)))
    last = g.op("Sub", in_size, g.const(1.0))
    indices = g.op("Cast", g.op("Min", x, last), to=TensorProto.INT64)
    return indices, fixed


def _pass(g: GraphBuilder, pixels: str, axis: int, indices: str, fixed: str) -> str:
    """One separable pass over ``axis`` (1 = rows, 2 = columns) of float64 (N, H, W, 3) pixels."""
    gathered = g.op("Gather", pixels, indices, axis=axis)  # axis -> (out, ksize)
    # (out, ksize) -> (out, ksize, 1[, 1]): broadcast over the other spatial axis and the channels
    weights = g.op("Reshape", fixed, g.const([0, 0, 1] if axis == 2 else [0, 0, 1, 1], "int64"))
    summed = g.op("ReduceSum", g.op("Mul", gathered, weights), g.const([axis + 1], "int64"), keepdims=0)
    rounded = g.op("Floor", g.op("Div", g.op("Add", summed, g.const(float(1 << (PRECISION_BITS - 1)))),
                                 g.const(float(1 << PRECISION_BITS))))
    return g.op("Clip", rounded, g.const(0.0), g.const(255.0))


def _as_float32(g: GraphBuilder, value: str) -> str:
    return g.op("Cast", g.op("Cast", value, to=TensorProto.FLOAT), to=TensorProto.DOUBLE)


def resize_crop(g: GraphBuilder, image: str, *, input_size: int, resize: int, interpolation: str) -> str:
    """uint8 (N, H, W, 3) -> uint8 (N, input_size, input_size, 3): imaging/decode.prepare in the graph."""
    if interpolation not in FILTERS:
        raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {', '.join(FILTERS)}")
    shape = g.op("Cast", g.op("Shape", image), to=TensorProto.DOUBLE)
    height = g.op("Gather", shape, g.const(1, "int64"))
    width = g.op("Gather", shape, g.const(2, "int64"))
    target = g.const(float(resize))
    # torchvision's Resize: the short side becomes `resize`, the long side int(resize * long / short)
    portrait = g.op("LessOrEqual", width, height)
    new_w = g.op("Where", portrait, target, g.op("Floor", g.op("Div", g.op("Mul", target, width), height)))
    new_h = g.op("Where", portrait, g.op("Floor", g.op("Div", g.op("Mul", target, height), width)), target)
    size = g.const(float(input_size))
    two = g.const(2.0)
    # CenterCrop offsets: int(round((new - size) / 2)), Python's round is half to even, as ONNX's Round
    top = g.op("Round", g.op("Div", g.op("Sub", new_h, size), two))
    left = g.op("Round", g.op("Div", g.op("Sub", new_w, size), two))
    scale_x, scale_y = g.op("Div", width, new_w), g.op("Div", height, new_h)
    # Pillow reads the box as C floats: round each corner to float32 as it does
    box_left, box_right = (_as_float32(g, g.op("Mul", left, scale_x)),
                           _as_float32(g, g.op("Mul", g.op("Add", left, size), scale_x)))
    box_top, box_bottom = (_as_float32(g, g.op("Mul", top, scale_y)),
                           _as_float32(g, g.op("Mul", g.op("Add", top, size), scale_y)))
    pixels = g.op("Cast", image, to=TensorProto.DOUBLE)
    columns = _coefficients(g, box_left, box_right, width, input_size, interpolation)
    rows = _coefficients(g, box_top, box_bottom, height, input_size, interpolation)
    across_first = _pass(g, _pass(g, pixels, 2, *columns), 1, *rows)
    if not _vertical_first_exists():
        return g.op("Cast", across_first, to=TensorProto.UINT8)
    # Pillow >= 13 runs the vertical pass first when the height shrinks by more than twice as many pixels
    # as the width (the rounding between the passes then differs): both orders are computed, one is kept
    down_first = _pass(g, _pass(g, pixels, 1, *rows), 2, *columns)
    height_loss = g.op("Sub", height, size)
    vertical_first = g.op("And", g.op("Greater", height_loss, g.const(0.0)),
                          g.op("Greater", height_loss, g.op("Mul", g.op("Sub", width, size), two)))
    return g.op("Cast", g.op("Where", vertical_first, down_first, across_first), to=TensorProto.UINT8)


def _vertical_first_exists() -> bool:
    import PIL

    return int(PIL.__version__.split(".")[0]) >= 13
