"""The detail page of a creation: product geometry on the canvas, and the PNG that marks a
created image as generated (metadata and the IPTC digital source type)."""

from __future__ import annotations

import hashlib
import io

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from genservice.metadata import PREFIX

#: Share of the canvas side the product's longer side fills (``centred`` framing).
PRODUCT_FILL = 0.8
#: IPTC digital source type of images made by a trained model (what detail pages label).
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
_XMP = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
    'Iptc4xmpExt:DigitalSourceType="{dst}"/></rdf:RDF></x:xmpmeta>'
)


def plain_enlargement(
    source: tuple[int, int], target: tuple[int, int], max_upscale: float
) -> float:
    """How far ``source`` pixels are enlarged by resampling when x4 restoration passes run
    while the remaining enlargement exceeds ``max_upscale`` (as ``upscale_to`` does)."""
    f = max(target[0] / source[0], target[1] / source[1])
    while f > max_upscale:
        f /= 4.0
    return f


def product_box(cut: tuple[int, int], size: int, fill: float = PRODUCT_FILL) -> tuple[int, int]:
    """``(w, h)`` of a cut-out of size ``cut`` fitted (aspect kept) into ``fill`` of the canvas."""
    side = max(1, round(size * fill))
    f = side / max(cut)
    return max(1, round(cut[0] * f)), max(1, round(cut[1] * f))


def on_background(product: Image.Image, size: int, colour: tuple[int, int, int]) -> Image.Image:
    """RGBA ``product`` centred on a ``size`` x ``size`` canvas of ``colour`` (RGB)."""
    canvas = Image.new("RGBA", (size, size), (*colour, 255))
    x = (size - product.width) // 2
    y = (size - product.height) // 2
    canvas.alpha_composite(product.convert("RGBA"), (x, y))
    return canvas.convert("RGB")


def creation_metadata(*, model: str, seed: int, prompt: str, source: str) -> dict[str, str]:
    """What a created image carries: ``generated`` (always ``true``), the model, seed, how it
    was conditioned (``text`` | ``text-shape-guide`` | ``sketch-controlnet`` |
    ``sketch-img2img``) and the prompt's
    sha256 (never the text itself: it may hold a merchant's unreleased product)."""
    return {
        "generated": "true",
        "digital_source_type": DIGITAL_SOURCE_TYPE,
        "model": str(model)[:256],
        "seed": str(int(seed)),
        "source": source,
        "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(),
    }


def encode_png(image: Image.Image, metadata: dict[str, str]) -> bytes:
    """PNG bytes with ``tailorshot:<key>`` text chunks and an XMP packet naming the IPTC
    digital source type (readers such as exiftool show it)."""
    info = PngInfo()
    for k, v in metadata.items():
        info.add_text(PREFIX + k, str(v))
    dst = metadata.get("digital_source_type", DIGITAL_SOURCE_TYPE)
    info.add_itxt("XML:com.adobe.xmp", _XMP.format(dst=dst))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG", pnginfo=info, compress_level=6)
    return buf.getvalue()


def is_generated(data: bytes | Image.Image) -> bool:
    """Whether an image's PNG metadata marks it as generated."""
    img = Image.open(io.BytesIO(data)) if isinstance(data, bytes) else data
    return dict(getattr(img, "text", {}) or {}).get(PREFIX + "generated") == "true"


__all__ = [
    "DIGITAL_SOURCE_TYPE",
    "PRODUCT_FILL",
    "creation_metadata",
    "encode_png",
    "is_generated",
    "on_background",
    "plain_enlargement",
    "product_box",
]
