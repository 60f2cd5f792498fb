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

Each pass gathers a window of ``ksize`` source pixels per output pixel along the contiguous axis (a banded
product, not a dense matrix), and the first pass reads only the rows (or columns) the second needs.
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
    # taps past the window have weight 0; pointing them at the window's last pixel keeps every index inside
    # the rows (or columns) the pass reads, so the image can be sliced to them first
    last = g.op("Sub", xmax, g.const(1.0))
    indices = g.op("Cast", g.op("Min", x, last), to=TensorProto.INT64)
    return indices, fixed


def _along_last_axis(g: GraphBuilder, planes: str, indices: str, fixed: str) -> str:
    """One pass over the last axis of float64 planes (N, 3, A, B): B source pixels -> out, rounded to 0..255
    as Pillow rounds between passes. The taps are gathered along the contiguous axis and summed there."""
    gathered = g.op("Gather", planes, indices, axis=3)  # (N, 3, A, out, ksize)
    summed = g.op("ReduceSum", g.op("Mul", gathered, fixed), g.const([4], "int64"), keepdims=0)
    rounded = g.op("Floor", g.op("Div", g.op("Add", summed, g.const(float(1 << (PRECISION_BITS - 1)))),
                                 g.const(float(1 << PRECISION_BITS))))
    return g.op("Clip", rounded, g.const(0.0), g.const(255.0))


def _swap(g: GraphBuilder, planes: str) -> str:
    return g.op("Transpose", planes, perm=[0, 1, 3, 2])


def _window(g: GraphBuilder, indices: str) -> tuple[str, str, str]:
    """(first, end) of the source pixels a pass reads, and its indices shifted to start at first."""
    first = g.op("ReduceMin", indices, keepdims=0)
    end = g.op("Add", g.op("ReduceMax", indices, keepdims=0), g.const(1, "int64"))
    return g.op("Unsqueeze", first, g.const([0], "int64")), g.op("Unsqueeze", end, g.const([0], "int64")), \
        g.op("Sub", indices, first)


def _two_passes(g: GraphBuilder, planes: str, columns, rows, *, vertical_first: bool) -> str:
    """Resample float64 planes (N, 3, H, W) to (N, 3, S, S): horizontal then vertical, or the reverse.
    The first pass reads only the rows (or columns) the second one needs (Pillow does so too, for rows)."""
    if vertical_first:
        first, end, shifted = _window(g, columns[0])
        sliced = g.op("Slice", planes, first, end, g.const([3], "int64"))  # (N, 3, H, W')
        tall = _along_last_axis(g, _swap(g, sliced), *rows)  # (N, 3, W', S)
        return _along_last_axis(g, _swap(g, tall), shifted, columns[1])  # (N, 3, S, S)
    first, end, shifted = _window(g, rows[0])
    sliced = g.op("Slice", planes, first, end, g.const([2], "int64"))  # (N, 3, H', W)
    wide = _along_last_axis(g, sliced, *columns)  # (N, 3, H', S)
    return _swap(g, _along_last_axis(g, _swap(g, wide), shifted, rows[1]))  # (N, 3, S, S)


def _branch(g: GraphBuilder, build, dtype: int, shape: list):
    """A subgraph for an ``If`` whose nodes read the outer graph's tensors; its constants go to the outer graph."""
    from onnx import helper

    sub = GraphBuilder(prefix=g.fresh("branch") + "/")
    out = sub.rename(build(sub), sub.fresh("out"))  # a branch output must be produced inside the branch
    g.initializers.extend(sub.initializers)
    return helper.make_graph(sub.nodes, sub.prefix.rstrip("/"), [], [helper.make_tensor_value_info(out, dtype, shape)])


def _as_float32(g: GraphBuilder, value: str) -> str:
    return g.op("Cast", g.op("Cast", value, to=TensorProto.FLOAT), to=TensorProto.DOUBLE)


def resize_crop(g: GraphBuilder, image: str, *, input_size: int, resize: int, interpolation: str) -> str:
    """uint8 (N, H, W, 3) -> uint8 (N, input_size, input_size, 3): imaging/decode.prepare in the graph."""
    if interpolation not in FILTERS:
        raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {', '.join(FILTERS)}")
    shape = g.op("Cast", g.op("Shape", image), to=TensorProto.DOUBLE)
    height = g.op("Gather", shape, g.const(1, "int64"))
    width = g.op("Gather", shape, g.const(2, "int64"))
    if resize != input_size:
        return _resample(g, image, height, width, input_size=input_size, resize=resize, interpolation=interpolation)
    # the whole frame: an image already at that size is used as it is (Pillow copies it), nothing computed
    size = g.const(float(input_size))
    unchanged = g.op("And", g.op("Equal", width, size), g.op("Equal", height, size))
    crop_shape = ["batch", input_size, input_size, 3]
    return g.op("If", unchanged, then_branch=_branch(g, lambda b: image, TensorProto.UINT8, crop_shape),
                else_branch=_branch(g, lambda b: _resample(b, image, height, width, input_size=input_size,
                                                           resize=resize, interpolation=interpolation),
                                    TensorProto.UINT8, crop_shape))


def _resample(g: GraphBuilder, image: str, height: str, width: str, *, input_size: int, resize: int,
              interpolation: str) -> str:
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
    planes = g.op("Transpose", g.op("Cast", image, to=TensorProto.DOUBLE), perm=[0, 3, 1, 2])  # (N, 3, H, W)
    columns = _coefficients(g, box_left, box_right, width, input_size, interpolation)
    rows = _coefficients(g, box_top, box_bottom, height, input_size, interpolation)
    planar = ["batch", 3, input_size, input_size]
    if _vertical_first_exists():
        # Pillow >= 13 runs the vertical pass first when the height shrinks by more than twice as many
        # pixels as the width (the rounding between the passes then differs)
        height_loss = g.op("Sub", height, size)
        vertical_first = g.op("And", g.op("Greater", height_loss, g.const(0.0)),
                              g.op("Greater", height_loss, g.op("Mul", g.op("Sub", width, size), two)))
        resized = g.op("If", vertical_first,
                       then_branch=_branch(g, lambda b: _two_passes(b, planes, columns, rows, vertical_first=True),
                                           TensorProto.DOUBLE, planar),
                       else_branch=_branch(g, lambda b: _two_passes(b, planes, columns, rows, vertical_first=False),
                                           TensorProto.DOUBLE, planar))
    else:
        resized = _two_passes(g, planes, columns, rows, vertical_first=False)
    return g.op("Cast", g.op("Transpose", resized, perm=[0, 2, 3, 1]), to=TensorProto.UINT8)


def _vertical_first_exists() -> bool:
    import PIL

    return int(PIL.__version__.split(".")[0]) >= 13
