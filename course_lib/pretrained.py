"""Shipped checkpoints: small safetensors files in data/checkpoints/, verified by SHA-256.

safetensors holds only tensors (and a JSON metadata dict), so loading a file can
never run code, unlike a pickled ``torch.save``. Each file's metadata records the
model's constructor arguments and how it was trained; ``CHECKPOINTS`` below pins
its checksum, so a damaged or swapped file is caught before it is used.

To reproduce a checkpoint, run the script named in its entry; it prints the new
checksum to paste here.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "data" / "checkpoints"

# name -> (file in data/checkpoints, sha256, script that produced it)
CHECKPOINTS: dict[str, tuple[str, str, str]] = {
    "classifier": ("classifier.safetensors",
                   "60ce346dc668f2e8d65f9471ba484133490e089c22f01bae82c5a9bd8af4ab56",
                   "scripts/train.py classifier"),
    "ddpm": ("ddpm.safetensors",
             "ff8fb01f8c369ef185462b8eb9ab7059244f290a18153d155e3159302b864c5e",
             "scripts/train.py ddpm"),
    "flow": ("flow.safetensors",
             "ec17c28f6867ec1c2d10ff7ea45351cca17a808288bcf8479d7c74a08f51eca2",
             "scripts/train.py flow"),
    "reflow": ("reflow.safetensors",
               "a3fcb8771d75d86ef1c47e4a461d00fb3133915eae57e359ce94f060600be8b1",
               "scripts/train.py reflow"),
    "clip": ("clip.safetensors",
             "24cc13fc8f8274770fd45753a87d02078959285a848a1ac89d2cc3c287d863be",
             "scripts/train.py clip"),
    "ldm": ("ldm.safetensors",
            "d034e876e5c8a1b83bb0ade9d41090edd11f12bf5b8415542709e80748b80e8b",
            "scripts/train.py ldm"),
    "ae2d": ("ae2d.safetensors",
             "282d634603398364956bf0aeee97969ccb77f597ba9f0a65f3622d8fe05934c6",
             "scripts/train.py ae2d"),
    "vae2d": ("vae2d.safetensors",
              "92b8db4e1e4b4d8a37fd5b4ce72eef0e07ffa8aa1c408455201beab750ee010f",
              "scripts/train.py vae2d"),
    "vae": ("vae.safetensors",
            "7bce5d32fd2272bf56a753729b17551986a1afeef32bbb161a3c273c58f0d90b",
            "scripts/train.py vae"),
}


class CheckpointError(RuntimeError):
    """A shipped checkpoint is missing, damaged or not what the course expects."""


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_weights(model: nn.Module, path: str | os.PathLike, config: dict, info: dict | None = None) -> str:
    """Write ``model``'s weights to a safetensors file with its config; return the file's SHA-256.

    Refuses to overwrite an existing file (delete it first on purpose).
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; delete it first if you mean to replace the shipped checkpoint")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"config": json.dumps(config), "info": json.dumps(info or {})}
    save_file(tensors, str(path), metadata=metadata)
    return sha256(path)


def checkpoint_path(name: str) -> Path:
    """Path of the shipped checkpoint ``name``, after checking it exists and its checksum matches."""
    if name not in CHECKPOINTS:
        known = ", ".join(sorted(CHECKPOINTS)) or "none yet"
        raise CheckpointError(f"no shipped checkpoint called {name!r}; known: {known}")
    filename, expected, script = CHECKPOINTS[name]
    path = CHECKPOINT_DIR / filename
    restore = (f"Restore it with `git checkout -- data/checkpoints/{filename}`, "
               f"or retrain it with `python {script}`.")
    if not path.is_file():
        raise CheckpointError(f"the checkpoint {path} is missing. {restore}")
    actual = sha256(path)
    if actual != expected:
        raise CheckpointError(f"the checkpoint {path} is damaged or has been changed "
                              f"(sha256 {actual[:12]}…, expected {expected[:12]}…). {restore}")
    return path


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(tensors, config, info) from a safetensors checkpoint written by ``export_weights``."""
    from safetensors import safe_open

    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return tensors, json.loads(metadata.get("config", "{}")), json.loads(metadata.get("info", "{}"))
    except Exception as err:  # noqa: BLE001 -- any parse failure means the same thing to the user
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({err}). "
                              "Restore it from git or retrain it.") from err


def load_model(name: str, model_class) -> tuple[nn.Module, dict]:
    """Build ``model_class(**config)`` from the verified shipped checkpoint ``name``; return (model, info)."""
    tensors, config, info = read_weights(checkpoint_path(name))
    model = model_class(**config)
    model.load_state_dict(tensors)
    return model.eval().requires_grad_(False), info
