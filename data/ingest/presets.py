"""Column presets for catalog exports of known shop systems."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CatalogPreset:
    """How a shop system's export maps onto our catalog fields.

    ``mapping``: our field <- the file's column (several of ours may read one column);
    ``required``: file columns that must exist; ``facets``: our fields holding facet/tag strings,
    split on any character of ``facet_separators``; ``continuation_image_is_variant``: whether
    ``image`` on a variant row is that variant's image (else it is one more product image).
    """

    name: str
    mapping: dict[str, str] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    facets: tuple[str, ...] = ()
    facet_separators: str = "|;"
    continuation_image_is_variant: bool = True


#: Shopify's product CSV: one row per variant, grouped by ``Handle``; the first row of a
#: product carries its title, description (HTML), vendor, type and tags; later rows leave them
#: blank and carry the variant's SKU, price, option values and image. Option names are given
#: on the first row only. ``Image Src`` on a later row is one more product photo.
SHOPIFY = CatalogPreset(
    name="shopify",
    mapping={
        "handle": "Handle",
        "sku": "Handle",
        "title": "Title",
        "description": "Body (HTML)",
        "category": "Type",
        "attributes.brand": "Vendor",
        "tags": "Tags",
        "option1_name": "Option1 Name",
        "option1_value": "Option1 Value",
        "option2_name": "Option2 Name",
        "option2_value": "Option2 Value",
        "option3_name": "Option3 Name",
        "option3_value": "Option3 Value",
        "variant_sku": "Variant SKU",
        "variant_price": "Variant Price",
        "price": "Variant Price",
        "image": "Image Src",
        "variant_image": "Variant Image",
    },
    required=("Handle", "Title", "Variant SKU"),
    facets=("tags",),
    facet_separators=",|;",
    continuation_image_is_variant=False,
)

PRESETS: dict[str, CatalogPreset] = {SHOPIFY.name: SHOPIFY}


def get_preset(name: str) -> CatalogPreset:
    """The preset called ``name``; raises ``ValueError`` naming the known ones."""
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}") from None
