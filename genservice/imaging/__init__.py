"""Learned image parts: product cut-out (U^2-Net-p via onnxruntime), restoration (Real-ESRGAN
converted to PyTorch) and classic adjustments. Heavy libraries are imported lazily inside the
modules, so importing this package costs nothing.

- ``genservice.imaging.cutout``: ``cut_out_product``, ``SalientObjectModel``, ``default_model``.
- ``genservice.imaging.restore``: ``restore``, ``upscale_to``, ``Restorer``.
- ``genservice.imaging.adjust``: brightness, contrast, saturation, sharpness, ``auto_exposure``.
"""
