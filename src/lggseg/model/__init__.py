"""The network: the U-Net, its self-describing weights bundle and the ONNX export."""
