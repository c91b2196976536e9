"""The package's public API: lazy, so ``import lggseg`` stays fast and does not load torch."""

import subprocess
import sys

import lggseg


def test_import_lggseg_does_not_load_torch():
    code = "import sys, lggseg; assert 'torch' not in sys.modules, 'torch imported'; print(lggseg.__version__)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == lggseg.__version__


def test_public_names_resolve():
    from lggseg.infer.segmenter import Segmenter
    from lggseg.model.bundle import PostProcess, load_weights
    from lggseg.model.unet import UNet
    from lggseg.train.config import TrainConfig

    assert lggseg.Segmenter is Segmenter and lggseg.load_weights is load_weights
    assert lggseg.UNet is UNet and lggseg.PostProcess is PostProcess and lggseg.TrainConfig is TrainConfig
    assert issubclass(lggseg.LggsegError, Exception)
    assert set(lggseg.__all__) <= set(dir(lggseg))


def test_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    assert lggseg.__version__ == version("lggseg")
