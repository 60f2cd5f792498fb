"""Channel pruning (deploy/prune.py) and feature distillation (deploy/distill.py)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from torch import nn

from pixelmine import backbones
from pixelmine.deploy.distill import distill, feature_cosine, teacher_targets
from pixelmine.deploy.prune import (
    SPARSITY_RANGE,
    check_sparsity,
    count_macs,
    count_parameters,
    prune_channels,
)
from pixelmine.errors import InputError

TINY_SIZE = 64


def structured_images(count: int, size: int, seed: int) -> np.ndarray:
    """Stripes of random angle and frequency under a few coloured discs: images with edges and colours
    a CNN responds to in varied ways (noise would give every image the same pooled features)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = np.empty((count, size, size, 3), np.float32)
    for index in range(count):
        angle, frequency = rng.uniform(0, np.pi), rng.uniform(2, 12)
        stripes = np.sin(2 * np.pi * frequency * (xx * np.cos(angle) + yy * np.sin(angle)))[..., None]
        image = rng.uniform(0, 1, 3) * 0.5 + 0.25 * stripes * rng.uniform(0, 1, 3)
        for _ in range(rng.integers(1, 4)):
            cy, cx, radius = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.3)
            disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2)[..., None]
            image = np.where(disc, rng.uniform(0, 1, 3), image)
        images[index] = image
    return (np.clip(images, 0, 1) * 255).astype(np.uint8)


def runner(model):
    """A FeatureModel as the uint8 batch -> features callable distillation takes."""
    def run(pixels):
        with torch.inference_mode():
            return model(torch.from_numpy(pixels))[0].numpy()
    return run


def state_of(model) -> dict:
    return {key: value.clone() for key, value in model.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[key].shape == b[key].shape and torch.equal(a[key], b[key]) for key in a)


def convolutions(model) -> list:
    return [module for module in model.modules() if isinstance(module, nn.Conv2d)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # These tests check results, not speed: on a busy 2-core machine two OpenMP threads waiting on each
    # other make every forward pass 10-20x slower, so the module runs torch on one.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny():
    return backbones.build(backbones.get("tiny_test"))


@pytest.fixture(scope="module")
def crops():
    return {"train": structured_images(128, TINY_SIZE, seed=0), "held_out": structured_images(64, TINY_SIZE, seed=1)}


@pytest.fixture(scope="module")
def targets(tiny, crops):
    return teacher_targets(runner(tiny), crops["train"])


@pytest.fixture(scope="module")
def mobilenet():
    return backbones.build(backbones.get("mobilenet_v2"))


@pytest.fixture(scope="module")
def mobilenet_half(mobilenet):
    return prune_channels(mobilenet, 0.5)


# -- sparsity ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, 0.95, -1, "x", None, True, float("nan")])
def test_check_sparsity_rejects_values_outside_the_range_naming_it(bad):
    with pytest.raises(InputError) as caught:
        check_sparsity(bad)
    message = str(caught.value)
    assert f"{SPARSITY_RANGE[0]} to {SPARSITY_RANGE[1]}" in message and "0.3 to 0.6" in message
    assert repr(bad) in message


def test_check_sparsity_accepts_numbers_in_the_range():
    assert check_sparsity(0.5) == 0.5
    assert check_sparsity("0.3") == 0.3
    assert check_sparsity(SPARSITY_RANGE[0]) == SPARSITY_RANGE[0]


# -- pruning ----------------------------------------------------------------------------------------
def test_pruning_tiny_removes_channels_and_keeps_the_outputs(tiny):
    original = state_of(tiny)
    pruned = prune_channels(tiny, 0.5)
    assert count_parameters(pruned) < 0.6 * count_parameters(tiny)
    assert count_macs(pruned, TINY_SIZE) < 0.6 * count_macs(tiny, TINY_SIZE)
    # tiny_test's only inner channels are its stem's: they are the ones pruned
    assert [conv.out_channels for conv in convolutions(pruned)] == [4, 16]
    pixels = torch.from_numpy(structured_images(3, TINY_SIZE, seed=5))
    with torch.inference_mode():
        features, logits = pruned(pixels)
    assert features.shape == (3, 16) and logits.shape == (3, 10)
    assert not pruned.training and pruned.pruned_sparsity == 0.5
    assert same_state(state_of(tiny), original), "the input model must be left untouched"
    assert same_state(state_of(prune_channels(tiny, 0.5)), state_of(pruned)), "pruning must be deterministic"


def test_pruning_mobilenet_v2_keeps_stem_features_and_depthwise_structure(mobilenet, mobilenet_half):
    size = mobilenet.preprocessing.input_size
    original = state_of(mobilenet)
    assert count_parameters(mobilenet_half) < 0.8 * count_parameters(mobilenet)
    assert count_macs(mobilenet_half, size) < 0.65 * count_macs(mobilenet, size)
    before, after = convolutions(mobilenet), convolutions(mobilenet_half)
    assert after[0].out_channels == before[0].out_channels == 32  # the stem is kept whole
    assert after[-1].out_channels == before[-1].out_channels == 1280  # so is the pooled feature size
    for old, new, following in zip(before, after, before[1:]):
        expansion = following.groups > 1 and old.groups == 1 and old.kernel_size == (1, 1) and old is not before[0]
        if expansion:  # the expanded channels inside a block are halved ...
            assert new.out_channels == old.out_channels // 2
        elif old.groups == 1:  # ... the residual stream between blocks keeps its width
            assert new.out_channels == old.out_channels
    depthwise = [conv for conv in after if conv.groups > 1]
    assert len(depthwise) == len([conv for conv in before if conv.groups > 1])
    assert all(conv.groups == conv.in_channels == conv.out_channels for conv in depthwise)
    pixels = torch.from_numpy(structured_images(2, size, seed=3))
    with torch.inference_mode():
        features, logits = mobilenet_half(pixels)
    assert features.shape == (2, 1280) and logits.shape == (2, 1000)
    assert same_state(state_of(prune_channels(mobilenet, 0.5)), state_of(mobilenet_half)), "deterministic"
    assert same_state(state_of(mobilenet), original), "the input model must be left untouched"
    assert count_parameters(mobilenet) == 3_504_872


def test_pruned_mobilenet_v2_exports_to_onnx_and_runs_the_same(mobilenet_half, tmp_path):
    from pixelmine.features.onnx_backend import OnnxRunner, export_onnx

    path = export_onnx(mobilenet_half, tmp_path / "pruned.onnx", fingerprint="x")  # checks cosine >= 0.999
    pixels = structured_images(3, mobilenet_half.preprocessing.input_size, seed=4)
    features, logits, _ = OnnxRunner(path, threads=2).run(pixels)
    with torch.inference_mode():
        expected_features, expected_logits = mobilenet_half(torch.from_numpy(pixels))
    np.testing.assert_allclose(features, expected_features.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(logits, expected_logits.numpy(), rtol=1e-3, atol=1e-3)


# -- distillation -----------------------------------------------------------------------------------
def test_teacher_targets_cover_every_view(tiny, crops, targets):
    assert set(targets) == {"identity", "hflip"}
    assert targets["identity"].shape == (128, 16) and targets["identity"].dtype == np.float32
    mirrored = runner(tiny)(np.ascontiguousarray(crops["train"][:4, :, ::-1]))
    np.testing.assert_allclose(targets["hflip"][:4], mirrored, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="views"):
        teacher_targets(runner(tiny), crops["train"], views=("rotate",))


def test_distillation_brings_held_out_features_closer_to_the_teacher(tiny, crops, targets):
    student = prune_channels(tiny, 0.5)
    distance_before = 1 - feature_cosine(runner(tiny), runner(student), crops["held_out"])
    result = distill(student, crops["train"], targets, budget_s=60, epochs=10, lr=3e-3)
    distance_after = 1 - feature_cosine(runner(tiny), runner(student), crops["held_out"])
    assert result.stopped_by == "epochs" and result.steps == result.planned_steps == 40
    assert result.loss_last < 0.5 * result.loss_first
    assert distance_after < 0.5 * distance_before, (distance_before, distance_after)
    assert not student.training


def test_a_tiny_budget_stops_early_and_says_so(tiny, crops, targets):
    student = prune_channels(tiny, 0.5)
    result = distill(student, crops["train"], targets, budget_s=0.2, epochs=1000)
    assert result.stopped_by == "budget"
    assert 1 <= result.steps < result.planned_steps == 4000
    assert result.seconds < 2.0
    assert result.to_dict()["stopped_by"] == "budget"


def test_a_budget_alone_plans_the_steps_that_fit(tiny, crops, targets):
    result = distill(prune_channels(tiny, 0.5), crops["train"], targets, budget_s=1.0)
    assert result.stopped_by in ("epochs", "budget") and result.steps >= 1
    assert result.seconds < 3.0


def test_more_epochs_on_a_checkpoint_do_only_the_remaining_steps(tiny, crops, targets, tmp_path):
    checkpoint = tmp_path / "distill.pt"
    first = distill(prune_channels(tiny, 0.5), crops["train"], targets, budget_s=60, epochs=1,
                    checkpoint=checkpoint)
    assert first.stopped_by == "epochs" and first.steps == 4 and checkpoint.exists()

    reported = []
    student = prune_channels(tiny, 0.5)  # the caller rebuilds the same structure
    second = distill(student, crops["train"], targets, budget_s=60, epochs=2, checkpoint=checkpoint,
                     progress=lambda done, total: reported.append((done, total)))
    assert second.resumed_from == 4 and second.steps == 8 and second.stopped_by == "epochs"
    assert reported == [(step, 8) for step in range(5, 9)]
    distilled = state_of(student)

    again = prune_channels(tiny, 0.5)
    third = distill(again, crops["train"], targets, budget_s=60, epochs=2, checkpoint=checkpoint,
                    progress=lambda done, total: pytest.fail("finished work must not be redone"))
    assert third.stopped_by == "finished earlier" and third.steps == 8
    assert same_state(state_of(again), distilled), "a finished checkpoint gives back its student"


def test_an_interrupted_run_resumes_to_the_same_weights(tiny, crops, targets, tmp_path):
    uninterrupted = prune_channels(tiny, 0.5)
    distill(uninterrupted, crops["train"], targets, budget_s=60, epochs=2)

    def interrupt_at_step_3(done, total):
        if done == 3:
            raise KeyboardInterrupt

    checkpoint = tmp_path / "distill.pt"
    with pytest.raises(KeyboardInterrupt):
        distill(prune_channels(tiny, 0.5), crops["train"], targets, budget_s=60, epochs=2,
                checkpoint=checkpoint, progress=interrupt_at_step_3)
    assert torch.load(checkpoint, weights_only=True)["step"] == 3

    resumed = prune_channels(tiny, 0.5)
    result = distill(resumed, crops["train"], targets, budget_s=60, epochs=2, checkpoint=checkpoint)
    assert result.resumed_from == 3 and result.steps == 8
    assert same_state(state_of(resumed), state_of(uninterrupted))


def test_a_checkpoint_is_written_while_the_run_goes(tiny, crops, targets, tmp_path, monkeypatch):
    from pixelmine.deploy import distill as distill_module

    monkeypatch.setattr(distill_module, "CHECKPOINT_EVERY_S", 0.0)
    checkpoint, seen = tmp_path / "distill.pt", []

    def look(done, total):
        if checkpoint.exists():
            seen.append(torch.load(checkpoint, weights_only=True)["step"])

    distill(prune_channels(tiny, 0.5), crops["train"], targets, budget_s=60, epochs=1, checkpoint=checkpoint,
            progress=look)
    assert seen == [1, 2, 3], "each step's checkpoint is on disk by the next step"
    assert torch.load(checkpoint, weights_only=True)["finished"] is True


def test_a_checkpoint_of_another_structure_or_run_is_refused(tiny, crops, targets, tmp_path):
    checkpoint = tmp_path / "distill.pt"
    distill(prune_channels(tiny, 0.5), crops["train"], targets, budget_s=60, epochs=0.5, checkpoint=checkpoint)
    with pytest.raises(InputError, match="same sparsity"):
        distill(prune_channels(tiny, 0.3), crops["train"], targets, budget_s=60, epochs=1, checkpoint=checkpoint)
    with pytest.raises(InputError, match="same crops"):
        distill(prune_channels(tiny, 0.5), crops["train"], targets, budget_s=60, epochs=1,
                checkpoint=checkpoint, batch_size=16)


def test_distill_rejects_unusable_arguments(tiny, crops, targets):
    student = prune_channels(tiny, 0.5)
    with pytest.raises(InputError, match="budget_s"):
        distill(student, crops["train"], targets, budget_s=0)
    with pytest.raises(InputError, match="teacher_targets"):
        distill(student, crops["train"][:10], targets, budget_s=1)
    with pytest.raises(InputError, match="uint8"):
        distill(student, crops["train"].astype(np.float32), targets, budget_s=1)
