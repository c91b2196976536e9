"""lggseg: FLAIR-abnormality segmentation of lower-grade glioma in brain MRI with a U-Net."""

__version__ = "0.1.0"
