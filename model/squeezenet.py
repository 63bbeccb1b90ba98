"""SqueezeNet 1.1 with torchvision's state_dict key names, returning logits and CAMs in one pass.

torchvision is deliberately not a dependency: its PyPI wheel is CUDA-linked and does not import
with the CPU build of torch this project pins. The module below reproduces
``torchvision.models.squeezenet1_1`` layer for layer (same key names, so torchvision's own
``squeezenet1_1-b8a52dc0.pth`` loads as well as the shipped file).

The class activation map (Zhou et al. 2016) of SqueezeNet needs no extra weights: the last layer
is a 1x1 convolution with 1000 outputs followed by ReLU and global average pooling, so the
1000 x h x w map before pooling *is* the CAM of every class and its spatial mean is the logit.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "squeezenet1_1-imagenet.pth"
# sha256 of the shipped file (see model/weights/SOURCE.md for provenance and how it was checked).
DEFAULT_WEIGHTS_SHA256 = "89108e4a8c6e3ef94ee225ac4ebf0a05e54149ad1715b09203a29fba27a26dfc"
WEIGHTS_ENV = "CAMCUT_WEIGHTS"
WEIGHTS_SHA256_ENV = "CAMCUT_WEIGHTS_SHA256"

# torchvision's ImageNet normalisation, which the shipped weights expect (conv1 has the Caffe
# BGR mean folded in; see SOURCE.md).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(RuntimeError):
    """The weights file is missing, corrupt, or does not fit SqueezeNet 1.1."""


class Fire(nn.Module):
    def __init__(self, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1)


class SqueezeNet11(nn.Module):
    """SqueezeNet 1.1; ``forward`` returns ``(logits, cam)``.

    ``cam`` is ``relu(classifier.1(features(x)))`` with shape (N, 1000, h, w) and
    ``logits == cam.mean((2, 3))`` exactly as torchvision's global average pooling computes it.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=3, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(64, 16, 64, 64),
            Fire(128, 16, 64, 64),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(128, 32, 128, 128),
            Fire(256, 32, 128, 128),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(256, 48, 192, 192),
            Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256),
            Fire(512, 64, 256, 256),
        )
        # Same indices as torchvision (Dropout, Conv, ReLU, AdaptiveAvgPool) so keys match.
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5),
            nn.Conv2d(512, num_classes, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((1, 1)),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        cam = self.classifier[2](self.classifier[1](self.classifier[0](f)))
        logits = torch.flatten(self.classifier[3](cam), 1)
        return logits, cam


@dataclass(frozen=True)
class WeightsInfo:
    path: Path
    sha256: str


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_weights(path: str | os.PathLike[str] | None = None) -> tuple[Path, str | None]:
    """The weights file to use and the sha256 it must have (None = not pinned).

    Order: explicit ``path`` > ``$CAMCUT_WEIGHTS`` > the shipped file. A file other than the
    shipped one is verified only if ``$CAMCUT_WEIGHTS_SHA256`` pins it.
    """
    chosen = path or os.environ.get(WEIGHTS_ENV) or None
    if chosen is None:
        return DEFAULT_WEIGHTS, DEFAULT_WEIGHTS_SHA256
    p = Path(chosen).expanduser().resolve()
    expected = os.environ.get(WEIGHTS_SHA256_ENV) or None
    if p == DEFAULT_WEIGHTS.resolve():
        expected = expected or DEFAULT_WEIGHTS_SHA256
    return p, expected


def load_squeezenet(path: str | os.PathLike[str] | None = None) -> tuple[SqueezeNet11, WeightsInfo]:
    """Build SqueezeNet 1.1 in eval mode with verified weights; never touches the network."""
    p, expected = resolve_weights(path)
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}")
    digest = sha256_of(p)
    if expected is not None and digest != expected.lower():
        raise WeightsError(f"sha256 mismatch for {p}: got {digest}, expected {expected}")
    try:
        # weights_only=True: a state_dict of tensors, never arbitrary pickled objects.
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt / non-tensor files
        raise WeightsError(f"cannot load weights {p}: {exc}") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"{p} does not hold a state_dict")
    net = SqueezeNet11()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{p} is not a SqueezeNet 1.1 state_dict: {exc}") from exc
    net.eval()
    for prm in net.parameters():
        prm.requires_grad_(False)
    return net, WeightsInfo(path=p, sha256=digest)
