"""SqueezeNet 1.1 (model/squeezenet.py): real predictions, CAM == logits, weight loading errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from model import voc
from model.squeezenet import (
    DEFAULT_WEIGHTS,
    DEFAULT_WEIGHTS_SHA256,
    IMAGENET_MEAN,
    IMAGENET_STD,
    WEIGHTS_ENV,
    WEIGHTS_SHA256_ENV,
    SqueezeNet11,
    WeightsError,
    load_squeezenet,
    sha256_of,
)

# torchvision.models.squeezenet1_1().state_dict().keys(), in order (torchvision 0.28.0).
TORCHVISION_KEYS = [
    "features.0.weight",
    "features.0.bias",
    *[
        f"features.{i}.{part}.{p}"
        for i in (3, 4, 6, 7, 9, 10, 11, 12)
        for part in ("squeeze", "expand1x1", "expand3x3")
        for p in ("weight", "bias")
    ],
    "classifier.1.weight",
    "classifier.1.bias",
]
# The same list spelled out, so a typo in the comprehension above cannot hide a wrong key.
TORCHVISION_KEYS_LITERAL = """
features.0.weight features.0.bias
features.3.squeeze.weight features.3.squeeze.bias features.3.expand1x1.weight features.3.expand1x1.bias features.3.expand3x3.weight features.3.expand3x3.bias
features.4.squeeze.weight features.4.squeeze.bias features.4.expand1x1.weight features.4.expand1x1.bias features.4.expand3x3.weight features.4.expand3x3.bias
features.6.squeeze.weight features.6.squeeze.bias features.6.expand1x1.weight features.6.expand1x1.bias features.6.expand3x3.weight features.6.expand3x3.bias
features.7.squeeze.weight features.7.squeeze.bias features.7.expand1x1.weight features.7.expand1x1.bias features.7.expand3x3.weight features.7.expand3x3.bias
features.9.squeeze.weight features.9.squeeze.bias features.9.expand1x1.weight features.9.expand1x1.bias features.9.expand3x3.weight features.9.expand3x3.bias
features.10.squeeze.weight features.10.squeeze.bias features.10.expand1x1.weight features.10.expand1x1.bias features.10.expand3x3.weight features.10.expand3x3.bias
features.11.squeeze.weight features.11.squeeze.bias features.11.expand1x1.weight features.11.expand1x1.bias features.11.expand3x3.weight features.11.expand3x3.bias
features.12.squeeze.weight features.12.squeeze.bias features.12.expand1x1.weight features.12.expand1x1.bias features.12.expand3x3.weight features.12.expand3x3.bias
classifier.1.weight classifier.1.bias
""".split()

CAT_CLASSES = {281: "tabby", 282: "tiger cat", 285: "Egyptian cat"}
ESPRESSO = 967


@pytest.fixture(scope="module")
def net() -> SqueezeNet11:
    n, info = load_squeezenet()
    assert info.sha256 == DEFAULT_WEIGHTS_SHA256
    return n


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.delenv(WEIGHTS_SHA256_ENV, raising=False)


def torchvision_preprocess(rgb: np.ndarray) -> torch.Tensor:
    """Resize short side to 256 (bilinear, antialiased as PIL does), centre-crop 224, normalise."""
    im = Image.fromarray(rgb)
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((max(256, round(w * s)), max(256, round(h * s))), Image.BILINEAR)
    w, h = im.size
    left, top = int(round((w - 224) / 2.0)), int(round((h - 224) / 2.0))
    im = im.crop((left, top, left + 224, top + 224))
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def full_res(rgb: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _cam_side(n: int) -> int:
    n = (n - 3) // 2 + 1
    for _ in range(3):
        n = -(-(n - 3) // 2) + 1
    return n


def test_chelsea_is_a_cat(net):
    logits, cam = net(torchvision_preprocess(skdata.chelsea()))
    assert cam.shape == (1, 1000, 13, 13)
    p = torch.softmax(logits[0], 0)
    top = int(p.argmax())
    assert top in CAT_CLASSES, (top, voc.IMAGENET_CATEGORIES[top])
    # The three cat classes together dominate (SOURCE.md: .392 + .310 + .284).
    assert float(p[list(CAT_CLASSES)].sum()) > 0.8
    assert voc.IMAGENET_CATEGORIES[top] == CAT_CLASSES[top]


def test_coffee_is_espresso(net):
    logits, _ = net(torchvision_preprocess(skdata.coffee()))
    p = torch.softmax(logits[0], 0)
    assert int(p.argmax()) == ESPRESSO
    assert voc.IMAGENET_CATEGORIES[ESPRESSO] == "espresso"
    assert float(p[ESPRESSO]) > 0.9


def test_logits_are_the_spatial_mean_of_the_cam_full_resolution(net):
    img = skdata.chelsea()  # 300 x 451, not a multiple of anything
    logits, cam = net(full_res(img))
    h, w = img.shape[:2]
    assert cam.shape[:2] == (1, 1000)
    # conv1 3x3/s2 (no pad) then three ceil-mode 3x3/s2 pools: 300 -> 149 -> 74 -> 37 -> 18
    assert cam.shape[2:] == (_cam_side(h), _cam_side(w)) == (18, 28), cam.shape
    assert float(cam.min()) >= 0.0  # ReLU'd
    assert torch.allclose(logits, cam.mean((2, 3)), rtol=1e-6, atol=1e-6)
    # and the CAM is not trivially constant: the cat class's map has structure
    top = int(logits[0].argmax())
    assert top in CAT_CLASSES
    assert float(cam[0, top].max()) > 2 * float(cam[0, top].mean())


def test_state_dict_keys_match_torchvision(net):
    assert TORCHVISION_KEYS == TORCHVISION_KEYS_LITERAL
    assert len(TORCHVISION_KEYS_LITERAL) == 52
    assert list(net.state_dict().keys()) == TORCHVISION_KEYS_LITERAL
    assert list(SqueezeNet11().state_dict().keys()) == TORCHVISION_KEYS_LITERAL
    assert sum(p.numel() for p in net.parameters()) == 1_235_496
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())


def test_shipped_file_matches_pinned_sha():
    assert sha256_of(DEFAULT_WEIGHTS) == DEFAULT_WEIGHTS_SHA256


def test_wrong_sha256_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "copy.pth"
    copy.write_bytes(DEFAULT_WEIGHTS.read_bytes())
    monkeypatch.setenv(WEIGHTS_ENV, str(copy))
    monkeypatch.setenv(WEIGHTS_SHA256_ENV, "0" * 64)
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        load_squeezenet()
    # the right pin is accepted
    monkeypatch.setenv(WEIGHTS_SHA256_ENV, DEFAULT_WEIGHTS_SHA256.upper())
    _, info = load_squeezenet()
    assert info.path == copy.resolve() and info.sha256 == DEFAULT_WEIGHTS_SHA256


def test_tampered_file_is_refused_when_pinned(tmp_path, monkeypatch):
    sd = torch.load(DEFAULT_WEIGHTS, weights_only=True)
    sd["classifier.1.bias"][0] += 1.0
    bad = tmp_path / "tampered.pth"
    torch.save(sd, bad)
    monkeypatch.setenv(WEIGHTS_ENV, str(bad))
    monkeypatch.setenv(WEIGHTS_SHA256_ENV, DEFAULT_WEIGHTS_SHA256)
    with pytest.raises(WeightsError, match="sha256"):
        load_squeezenet()


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_squeezenet(tmp_path / "nope.pth")


@pytest.mark.parametrize(
    "kind",
    ["garbage_bytes", "truncated_zip", "tensor_not_dict", "list", "wrong_keys", "wrong_shape", "pickled_object"],
)
def test_not_a_state_dict_gives_weights_error(tmp_path, kind):
    p = tmp_path / f"{kind}.pth"
    sd = torch.load(DEFAULT_WEIGHTS, weights_only=True)
    if kind == "garbage_bytes":
        p.write_bytes(b"\x00\x01 definitely not a torch file" * 10)
    elif kind == "truncated_zip":
        p.write_bytes(DEFAULT_WEIGHTS.read_bytes()[:100_000])
    elif kind == "tensor_not_dict":
        torch.save(torch.zeros(3), p)
    elif kind == "list":
        torch.save(list(sd.values()), p)
    elif kind == "wrong_keys":
        sd["features.0.extra"] = torch.zeros(1)
        torch.save(sd, p)
    elif kind == "wrong_shape":
        sd["classifier.1.weight"] = torch.zeros(10, 512, 1, 1)
        sd["classifier.1.bias"] = torch.zeros(10)
        torch.save(sd, p)
    else:
        import collections

        torch.save(collections.Counter(a=1), p)  # not allowed by weights_only=True
    with pytest.raises(WeightsError) as ei:
        load_squeezenet(p)
    assert str(p.resolve()) in str(ei.value) or str(p) in str(ei.value)


def test_torchvision_layout_file_loads_by_path(tmp_path, net):
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    sd["classifier.1.bias"] += 0.25  # a different (but valid) file, to prove it is what got loaded
    p = tmp_path / "resaved.pth"
    torch.save(sd, p)
    other, info = load_squeezenet(p)
    assert info.path == p.resolve()
    assert info.sha256 == sha256_of(p) != DEFAULT_WEIGHTS_SHA256
    for k, v in other.state_dict().items():
        assert torch.equal(v, sd[k]), k
    x = full_res(skdata.coffee()[::4, ::4].copy())
    a, _ = net(x)
    b, _ = other(x)
    # +0.25 on conv10's bias, then ReLU and mean: each logit rises by at most 0.25, most by more than 0
    d = b - a
    assert float(d.min()) >= -1e-5 and float(d.max()) <= 0.25 + 1e-5
    assert float(d.mean()) > 0.1


def test_env_path_is_used_without_pin(tmp_path, monkeypatch, net):
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    p = tmp_path / "env.pth"
    torch.save(sd, p)
    monkeypatch.setenv(WEIGHTS_ENV, str(p))
    _, info = load_squeezenet()
    assert info.path == p.resolve()
