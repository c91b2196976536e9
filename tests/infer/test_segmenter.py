import numpy as np
import torch

from lggseg.data.dataset import index_dataset, load_volume
from lggseg.infer import postprocess
from lggseg.infer.backends import TorchBackend
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.model.bundle import load_weights, save_weights
from lggseg.model.unet import UNet, UNetConfig


def _segmenter(tmp_path, tta="none", batch_size=16, bf16="off"):
    path = tmp_path / f"w_{tta}.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        save_weights(path, UNet(UNetConfig(base_width=4, depth=2)), tta=tta)
    bundle = load_weights(path)
    return Segmenter(bundle, TorchBackend(bundle, bf16=bf16), InferenceConfig(batch_size=batch_size))


def test_probabilities_shape_and_range(tmp_path, sample_dir):
    volume = load_volume(index_dataset(sample_dir).patients[0])
    prob = _segmenter(tmp_path, bf16="auto").probabilities(volume.images)
    assert prob.shape == (20, 256, 256) and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0


def test_batch_size_does_not_change_the_result(tmp_path, sample_dir):
    volume = load_volume(index_dataset(sample_dir).patients[0])
    a = _segmenter(tmp_path, "flip", batch_size=16).probabilities(volume.images)
    b = _segmenter(tmp_path, "flip", batch_size=4).probabilities(volume.images)
    assert np.abs(a - b).max() < 1e-4


def test_flip_tta_is_flip_equivariant(tmp_path, sample_dir):
    volume = load_volume(index_dataset(sample_dir).patients[0])
    seg = _segmenter(tmp_path, "flip")
    a = seg.probabilities(volume.images[:4])
    b = seg.probabilities(volume.images[:4, :, ::-1].copy())
    assert np.abs(a - b[:, :, ::-1]).max() < 1e-4


def test_shipped_model_segments_sample(sample_dir):
    volume = load_volume(index_dataset(sample_dir).patients[0])
    segmenter = Segmenter.from_weights(None)
    mask = segmenter.segment(volume.images)
    assert mask.shape == volume.require_masks().shape and mask.dtype == bool
    assert np.array_equal(mask, postprocess.apply(segmenter.probabilities(volume.images), segmenter.bundle.post))
    prob, same_mask = segmenter.segment_with_probabilities(volume.images)
    assert np.array_equal(prob, segmenter.probabilities(volume.images)) and np.array_equal(same_mask, mask)
    assert load_weights(None).post.threshold > 0


def test_any_size_gives_a_mask_on_the_input_grid(tmp_path, sample_dir):
    from PIL import Image

    volume = load_volume(index_dataset(sample_dir).patients[0])
    small = np.stack(
        [np.asarray(Image.fromarray(image).resize((200, 176), Image.BILINEAR)) for image in volume.images[:6]]
    )
    seg = _segmenter(tmp_path)
    mask = seg.segment(small)
    assert mask.shape == (6, 176, 200) and mask.dtype == bool
    assert seg.probabilities(small).shape == (6, 176, 200)


def test_inference_config_is_validated():
    import pytest

    from lggseg.errors import LggsegError

    for bad in (
        {"runtime": "tensorrt"},
        {"bf16": "maybe"},
        {"batch_size": 0},
        {"threads": -1},
        {"runtime": "onnx", "device": "cuda"},
    ):
        with pytest.raises(LggsegError):
            InferenceConfig(**bad)


def test_a_25d_model_sees_each_slice_with_its_neighbours(tmp_path, sample_dir):
    """A 2.5D network whose weights read only the slice above gives slice z the 2D answer for z + 1."""
    volume = load_volume(index_dataset(sample_dir).patients[0])
    torch.manual_seed(0)
    flat = UNet(UNetConfig(base_width=4, depth=2))
    wide = UNet(UNetConfig(in_channels=9, base_width=4, depth=2, context_slices=1))
    state = flat.state_dict()
    stem = torch.zeros(4, 9, 3, 3)
    stem[:, 6:] = state["stem.0.weight"]  # only the channels of slice z + 1
    wide.load_state_dict({**state, "stem.0.weight": stem})
    save_weights(tmp_path / "flat.safetensors", flat)
    save_weights(tmp_path / "wide.safetensors", wide)
    config = InferenceConfig(batch_size=3, bf16="off")
    a = Segmenter.from_weights(tmp_path / "flat.safetensors", config).probabilities(volume.images[:6])
    b = Segmenter.from_weights(tmp_path / "wide.safetensors", config).probabilities(volume.images[:6])
    assert np.abs(b[:5] - a[1:6]).max() < 1e-4  # slices 0..4 see 1..5
    assert np.abs(b[5] - a[5]).max() < 1e-4  # the last slice is its own upper neighbour


def test_a_flair_only_model_is_shown_flair_alone_whatever_the_input_holds(tmp_path, sample_dir):
    from lggseg.data.dataset import flair_only_images

    images = load_volume(index_dataset(sample_dir).patients[0]).images[8:12]
    flair = flair_only_images(images[..., 1])
    torch.manual_seed(0)
    net = UNet(UNetConfig(base_width=4, depth=2))
    segmenters = {}
    for name, info in (("plain", {}), ("flair_only", {"input": "flair_only"})):
        save_weights(tmp_path / f"{name}.safetensors", net, info=info)
        bundle = load_weights(tmp_path / f"{name}.safetensors")
        segmenters[name] = Segmenter(bundle, TorchBackend(bundle, bf16="off"), InferenceConfig())
    plain, flair_model = segmenters["plain"], segmenters["flair_only"]
    assert np.abs(plain.probabilities(images) - plain.probabilities(flair)).max() > 1e-3  # the channels matter
    np.testing.assert_array_equal(flair_model.probabilities(images), plain.probabilities(flair))
