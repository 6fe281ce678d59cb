"""course_lib.pretrained: checksums catch damaged files, errors say how to restore them."""

import pytest
import torch

from course_lib import pretrained
from course_lib.pretrained import CheckpointError
from course_lib.unet import UNet


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A temporary checkpoint registered as 'tiny', the way the real ones are."""
    torch.manual_seed(0)
    model = UNet(base_channels=8, channel_mults=(1, 2), attention_levels=(False, True))
    digest = pretrained.export_weights(model, tmp_path / "tiny.safetensors", model.config, {"steps": 3})
    monkeypatch.setattr(pretrained, "CHECKPOINT_DIR", tmp_path)
    monkeypatch.setitem(pretrained.CHECKPOINTS, "tiny", ("tiny.safetensors", digest, "scripts/train.py tiny"))
    return model, tmp_path / "tiny.safetensors"


def test_round_trip(shipped):
    model, _ = shipped
    loaded, info = pretrained.load_model("tiny", UNet)
    assert info == {"steps": 3}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert not any(p.requires_grad for p in loaded.parameters())


def test_tampered_checkpoint_is_refused_with_a_fix(shipped):
    _, path = shipped
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # flip one byte of one weight
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"tiny.safetensors is damaged.*git checkout -- data/checkpoints/tiny"
                                              r".*python scripts/train.py tiny"):
        pretrained.load_model("tiny", UNet)


def test_missing_and_unknown_checkpoints(shipped):
    _, path = shipped
    path.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        pretrained.checkpoint_path("tiny")
    with pytest.raises(CheckpointError, match="no shipped checkpoint called 'nope'"):
        pretrained.checkpoint_path("nope")


def test_export_never_overwrites(shipped):
    model, path = shipped
    with pytest.raises(FileExistsError):
        pretrained.export_weights(model, path, model.config)


def test_garbage_file_is_explained(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        pretrained.read_weights(bad)
