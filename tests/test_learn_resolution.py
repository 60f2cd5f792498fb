"""full:NAME@SIZE backbones: the whole image at SIZE pixels, with its own fingerprint and cache."""

import pytest
from learnkit import labelled_workspace

from pixelmine import backbones
from pixelmine.errors import InputError
from pixelmine.imaging.decode import load_pixels
from pixelmine.learn.config import TrainConfig


def test_variant_keeps_weights_and_changes_only_the_preprocessing():
    base = backbones.get("mobilenet_v2")
    full = backbones.get("full:mobilenet_v2@250")
    assert full.name == "full:mobilenet_v2@250"
    assert (full.preprocessing.input_size, full.preprocessing.resize) == (250, 250)
    assert full.preprocessing.mean == base.preprocessing.mean and full.weights == base.weights
    assert full.fingerprint() != base.fingerprint()


def test_whole_frame_is_kept(tmp_path):
    from imagefactory import photo, save

    path = save(photo(1, (60, 40)), tmp_path / "wide.png")
    pixels = load_pixels(path, input_size=40, resize=40)
    assert pixels.shape == (40, 40, 3)  # short side to 40: the 60 px side is centre-cropped to 40


@pytest.mark.parametrize("name, message", [
    ("full:mobilenet_v2", "must be written full:NAME@SIZE"),
    ("full:mobilenet_v2@9999", "between 32 and 1024"),
    ("full:nothing@64", "unknown backbone 'nothing'"),
])
def test_bad_variant_names_are_explained(name, message):
    with pytest.raises(InputError, match=message):
        backbones.get(name)


def test_train_on_a_full_frame_variant_extracts_it(tmp_path):
    ws, *_ = labelled_workspace(tmp_path, {"a": 8, "b": 8}, write_features=False)
    model = ws.train("logreg", backbone="full:tiny_test@48", progress=False, search_budget_s=1, bootstrap=10, cv_folds=2)
    assert model.name == "logreg-full-tiny_test-48"
    assert ws.features("full:tiny_test@48").vectors.shape == (16, 16)
    assert model.predict([ws.images()[0]["path"]])[0].ok


def test_default_model_names_are_folder_safe():
    assert TrainConfig(head="svm", backbone="timm:convnext_tiny.fb_in22k").model_name == \
        "svm-timm-convnext_tiny.fb_in22k"
