"""One config builder: for every stage an unknown option is an InputError that lists the allowed ones."""

from __future__ import annotations

import pytest
from learnkit import labelled_workspace

from pixelmine.errors import InputError


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    workspace, *_ = labelled_workspace(tmp_path_factory.mktemp("config"), {"a": 6, "b": 6})
    return workspace


@pytest.mark.parametrize("call, message", [
    (lambda ws: ws.ingest(".", progress=False, lables_from_folders=True),
     r"unknown ingest option\(s\) 'lables_from_folders'; allowed: .*labels_from_folders"),
    (lambda ws: ws.extract("tiny_test", progress=False, batchsize=4),
     r"unknown extract option\(s\) 'batchsize'; allowed: .*batch_size"),
    (lambda ws: ws.train("logreg", backbone="tiny", epochs=3),
     r"unknown train option\(s\) 'epochs'; allowed: .*backbone"),
    (lambda ws: ws.train("finetune", backbone="tiny", finetune={"epoch": 3}),
     r"unknown finetune option\(s\) 'finetune.epoch'; allowed: .*epochs"),
    (lambda ws: ws.split(backbone="tiny", tests=0.2),
     r"unknown split option\(s\) 'split.tests'; allowed: .*test"),
    (lambda ws: ws.discover_clusters(backbone="tiny", kmax=3),
     r"unknown clusters option\(s\) 'kmax'; allowed: .*k_max"),
    (lambda ws: ws.rules(backbone="tiny", support=0.1),
     r"unknown rules option\(s\) 'support'; allowed: .*min_support"),
])
def test_unknown_options_list_the_allowed_ones(ws, call, message):
    with pytest.raises(InputError, match=message):
        call(ws)


def test_a_config_and_options_together_are_refused(ws):
    from pixelmine.features import ExtractConfig

    with pytest.raises(InputError, match=r"pass either config= \(a ExtractConfig\) or keyword options to extract, not both"):
        ws.extract(config=ExtractConfig(backbone="tiny_test"), batch_size=4, progress=False)
