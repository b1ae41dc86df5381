"""Catalog import with product variants, facets, HTML descriptions and fetched images.

Layout: a *product row* (it has a title) may be followed by *variant rows* that leave title
and description blank and carry their own sku, price, option values and image (Shopify's
product CSV, or any file with the same shape). With a ``handle`` column, rows are grouped by
handle instead of by position, and a product row's ``variant_sku`` makes it its first variant
too. Each variant gets its own sku, price, options (``{"color": "Red", "size": "M"}``, also in
its attributes) and optional image; a variant sku resolves to its product everywhere.

Options come from ``option1_name``/``option1_value`` .. ``option3_*`` (names may be given on
the product row only) or from ``option.X`` / ``opt_X`` columns. Facet strings such as
``category:Electronics|brand:Apple`` in the columns named by ``facets`` (and in ``category``
itself when it holds one) become the category and attributes. Descriptions are reduced to
text. ``http(s)`` image URLs are fetched by an ``ImageFetcher`` when one is given.

Groups are written whole, in transactions of about ``chunk_size`` rows, so memory is bounded
by a chunk plus one product's rows. Row numbers in every report are the file's line numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.engine import Engine
from sqlmodel import Session

from data.db import session_scope
from data.ingest.images import ImageFetcher, ImageFetchError
from data.ingest.importer import (
    MAX_ATTRIBUTES_JSON,
    MAX_CATEGORY_LEN,
    MAX_DESCRIPTION_LEN,
    MAX_ID_LEN,
    MAX_IMAGE_LEN,
    MAX_TITLE_LEN,
    BadRow,
    ImportReport,
    RowError,
    _apply_mapping,
    _attributes,
    _bad_writer,
    _check_file,
    _image,
    _iter_rows,
    _price,
    _progress,
    _text,
)
from data.ingest.presets import CatalogPreset, get_preset
from data.ingest.readers import detect_format
from data.ingest.text import DEFAULT_FACET_SEPARATORS, html_to_text, looks_like_facets, parse_facets
from data.models import ImportedImage
from data.repos.catalog import (
    PRODUCT_FIELDS,
    get_imported_image,
    product_ids_by_sku,
    record_imported_image,
    upsert_products,
    upsert_variants,
    variant_ids_by_sku,
)

#: Numbered option slots (``option1_name`` .. ``option3_value``), as in Shopify's export.
OPTION_SLOTS = 3
_OPTION_PREFIXES = ("option.", "opt_")
# Shopify writes this option for a product without variants: it is no option at all.
_NO_OPTION = ("title", "Default Title")


@dataclass
class _Variant:
    line: int
    sku: str
    title: str
    options: dict[str, str]
    attributes: dict[str, Any]
    image: str | None
    price: float | None
    position: int


@dataclass
class _Group:
    """One product and its variant rows, written together. ``product`` is None for rows that
    continue a product already written (same handle, later in the file)."""

    line: int
    product_sku: str
    product: dict[str, Any] | None
    handle: str | None = None
    option_names: dict[int, str] = field(default_factory=dict)
    variants: list[_Variant] = field(default_factory=list)
    rows: int = 1
    next_position: int = 0


@dataclass
class _Broken:
    """A product row that was not imported: its variant rows are reported against it."""

    line: int
    handle: str | None


class _CatalogImport:
    def __init__(
        self,
        engine: Engine,
        *,
        path: Path,
        mapping: Mapping[str, str],
        preset: CatalogPreset | None,
        facets: tuple[str, ...],
        facet_separators: str,
        fetcher: ImageFetcher | None,
        chunk_size: int,
        errors_out: TextIO | None,
    ) -> None:
        self.engine = engine
        self.path = path
        self.mapping = dict(mapping)
        self.preset = preset
        self.facets = facets
        self.separators = facet_separators
        self.fetcher = fetcher
        self.chunk_size = chunk_size
        self.report = ImportReport(file=str(path), kind="catalog")
        self.add_bad = _bad_writer(errors_out, self.report)
        self.errors_out = errors_out
        self.continuation_image_is_variant = (
            preset.continuation_image_is_variant if preset else True
        )
        self.seen: dict[str, tuple[str, int]] = {}  # sku -> ("product" | "variant", line)
        self.handles: dict[str, _Group] = {}  # written groups by handle (for late rows)
        self.broken_handles: dict[str, int] = {}
        self.current: _Group | _Broken | None = None
        self.pending: list[_Group] = []
        self.pending_rows = 0
        self.images: dict[str, str | None] = {}  # url -> stored path, for this import
        self.checked_columns = False

    # --- reporting -------------------------------------------------------------------------

    def bad(self, line: int, reason: str) -> None:
        self.add_bad(BadRow(str(self.path), line, reason))

    def warn(self, line: int, reason: str) -> None:
        warning = BadRow(str(self.path), line, reason, level="warning")
        self.report.add_warning(warning)
        if self.errors_out is not None:
            self.errors_out.write(json.dumps(warning.__dict__) + "\n")

    # --- rows ------------------------------------------------------------------------------

    def _check_columns(self, item: Mapping[str, Any], rec: Mapping[str, Any]) -> None:
        self.checked_columns = True
        columns = sorted(item)
        if self.preset is not None:
            missing = [c for c in self.preset.required if c not in item]
            if missing:
                raise ValueError(
                    f"preset {self.preset.name}: {self.path.name} has no column(s) {missing} "
                    f"(its columns: {columns[:30]})"
                )
        for col in self.facets:
            if col not in rec:
                raise ValueError(
                    f"facets: no column {col!r} in {self.path.name} (its columns: {columns[:30]})"
                )

    def row(self, line: int, item: Mapping[str, Any]) -> None:
        """Classify and validate one record; raises ``RowError`` for a bad row."""
        rec = _apply_mapping(item, self.mapping)
        if not self.checked_columns:
            self._check_columns(item, rec)
        title = _text(rec, "title", max_len=MAX_TITLE_LEN)
        handle = _text(rec, "handle", max_len=MAX_ID_LEN) or None
        cur = self.current
        if handle is not None:
            if cur is not None and cur.handle == handle:
                self._variant_row(line, rec, cur)
                return
            if not title:
                if handle in self.handles:  # a later row of a product already written
                    self._finish_current()
                    written = self.handles[handle]
                    late = _Group(
                        line=line,
                        product_sku=written.product_sku,
                        product=None,
                        handle=handle,
                        option_names=dict(written.option_names),
                        rows=0,
                        next_position=written.next_position,
                    )
                    self.current = late
                    self._variant_row(line, rec, late)
                    return
                if handle in self.broken_handles:
                    raise RowError(
                        f"variant of the product at line {self.broken_handles[handle]}, "
                        "which was not imported"
                    )
                self._finish_current()
                self.current = _Broken(line, handle)
                self.broken_handles[handle] = line
                raise RowError(
                    f"missing 'title' (the first row of handle {handle!r} must name the product)"
                )
            self._product_row(line, rec, handle)
            return
        if title:
            self._product_row(line, rec, None)
            return
        description = _text(rec, "description", max_len=MAX_DESCRIPTION_LEN * 5)
        if not description and cur is not None:
            self._variant_row(line, rec, cur)
            return
        raise RowError("missing 'title'")

    def _product_row(self, line: int, rec: Mapping[str, Any], handle: str | None) -> None:
        self._finish_current()
        self.current = _Broken(line, handle)  # until the row validates
        if handle is not None:
            self.broken_handles[handle] = line
        product = self._validate_product(line, rec)
        sku = product["sku"]
        self._claim(sku, "product", line)
        group = _Group(line=line, product_sku=sku, product=product, handle=handle)
        self.current = group
        if handle is not None:
            self.broken_handles.pop(handle, None)
        if "variant_sku" in rec:
            # This row is also the product's first variant (Shopify's layout).
            try:
                options = self._options(rec, group)
                variant_sku = _text(rec, "variant_sku", max_len=MAX_ID_LEN)
                if not variant_sku:
                    if options:
                        self.warn(
                            line,
                            f"variant {options} has no sku, so it cannot be addressed; "
                            "its options were not imported (the product was)",
                        )
                    return
                self._add_variant(line, rec, group, variant_sku, options, product_row=True)
            except RowError as exc:
                self.bad(line, f"variant on this line: {exc} (the product was imported)")
        else:
            options = self._options(rec, group)
            product["attributes"] = {**options, **product["attributes"]}

    def _variant_row(self, line: int, rec: Mapping[str, Any], group: _Group | _Broken) -> None:
        if isinstance(group, _Broken):
            raise RowError(f"variant of the product at line {group.line}, which was not imported")
        group.rows += 1
        key = "variant_sku" if "variant_sku" in rec else "sku"
        sku = _text(rec, key, max_len=MAX_ID_LEN)
        options = self._options(rec, group)
        if not sku:
            extra = _text(rec, "image", max_len=MAX_IMAGE_LEN)
            if options:
                raise RowError(f"variant {options} has no sku (needed to address it)")
            if extra and not self.continuation_image_is_variant:
                # One more product photo: used when the product has none yet.
                if group.product is not None and not group.product.get("image"):
                    group.product["image"] = self._image(line, extra)
                self.report.image_rows += 1
                return
            raise RowError("variant row has no sku, no option values and no image")
        self._add_variant(line, rec, group, sku, options, product_row=False)

    def _add_variant(
        self,
        line: int,
        rec: Mapping[str, Any],
        group: _Group,
        sku: str,
        options: dict[str, str],
        *,
        product_row: bool,
    ) -> None:
        """Add a variant to ``group``. On the product's own row, ``image`` and the attribute
        columns describe the product, so the variant takes only its options and variant image."""
        price_raw = rec.get("variant_price")
        if price_raw in (None, ""):
            price_raw = rec.get("price")
        price = _price(price_raw)
        image_raw = rec.get("variant_image")
        if image_raw in (None, "") and self.continuation_image_is_variant and not product_row:
            image_raw = rec.get("image")
        attrs = dict(options) if product_row else {**options, **_attributes(rec)}
        self._claim(sku, "variant", line)
        variant = _Variant(
            line=line,
            sku=sku,
            title=" / ".join(options.values()),
            options=options,
            attributes=attrs,
            image=None,
            price=price,
            position=group.next_position,
        )
        if image_raw not in (None, ""):
            variant.image = self._image(line, image_raw)
        group.next_position += 1
        group.variants.append(variant)

    def _claim(self, sku: str, kind: str, line: int) -> None:
        first = self.seen.get(sku)
        if first is not None:
            what = "" if first[0] == kind else f" of a {first[0]}"
            raise RowError(f"duplicate sku {sku!r} (first at line {first[1]}{what})")
        self.seen[sku] = (kind, line)

    def _options(self, rec: Mapping[str, Any], group: _Group) -> dict[str, str]:
        """``{name: value}`` from the numbered option slots and ``option.X`` columns."""
        out: dict[str, str] = {}
        for n in range(1, OPTION_SLOTS + 1):
            name = _text(rec, f"option{n}_name", max_len=MAX_CATEGORY_LEN)
            if name:
                group.option_names[n] = name  # variant rows leave the names blank
            value = _text(rec, f"option{n}_value", max_len=MAX_CATEGORY_LEN)
            if not value:
                continue
            name = group.option_names.get(n, "")
            if not name:
                raise RowError(f"'option{n}_value' {value!r} has no option name")
            key = " ".join(name.split()).lower()
            if (key, value) == _NO_OPTION:
                continue
            out[key] = value
        for col, raw in rec.items():
            for prefix in _OPTION_PREFIXES:
                if col.startswith(prefix) and raw not in (None, ""):
                    value = _text(rec, col, max_len=MAX_CATEGORY_LEN)
                    if value:
                        out[col[len(prefix) :].strip().lower()] = value
        return out

    def _validate_product(self, line: int, rec: Mapping[str, Any]) -> dict[str, Any]:
        sku = _text(rec, "sku", max_len=MAX_ID_LEN, required=True)
        title = _text(rec, "title", max_len=MAX_TITLE_LEN, required=True)
        raw_description = _text(rec, "description", max_len=MAX_DESCRIPTION_LEN * 5)
        description = html_to_text(raw_description)
        if len(description) > MAX_DESCRIPTION_LEN:
            raise RowError(
                f"'description' too long: {len(description)} characters "
                f"(at most {MAX_DESCRIPTION_LEN})"
            )
        category = _text(rec, "category", max_len=MAX_ATTRIBUTES_JSON)
        facet_attrs: dict[str, Any] = {}
        tags: list[str] = []
        facet_category: str | None = None
        columns = list(self.facets)
        if "category" not in columns and looks_like_facets(category, separators=self.separators):
            columns.append("category")  # a facet string in 'category' is never a category
        for col in columns:
            parsed = parse_facets(
                _text(rec, col, max_len=MAX_ATTRIBUTES_JSON), separators=self.separators
            )
            facet_category = facet_category or parsed.category
            for k, v in parsed.attributes.items():
                facet_attrs.setdefault(k, v)
            tags.extend(t for t in parsed.tags if t not in tags)
            if col == "category":
                category = ""
        category = category or facet_category or ""
        if len(category) > MAX_CATEGORY_LEN:
            raise RowError(
                f"'category' too long: {len(category)} characters (at most {MAX_CATEGORY_LEN})"
            )
        attributes = {**facet_attrs, **({"tags": tags} if tags else {}), **_attributes(rec)}
        if len(json.dumps(attributes, default=str)) > MAX_ATTRIBUTES_JSON:
            raise RowError(
                f"'attributes' too large (more than {MAX_ATTRIBUTES_JSON} bytes as JSON)"
            )
        price = _price(rec.get("price"))
        image_raw = rec.get("image")
        return {
            "sku": sku,
            "title": title,
            "description": description,
            "category": category.lower(),
            "attributes": attributes,
            "image": None if image_raw in (None, "") else self._image(line, image_raw),
            "price": price,
        }

    def _image(self, line: int, value: Any) -> str | None:
        """A stored image path or URI for ``value``; a failed fetch is a warning, not a loss
        of the row: the product or variant is imported without that image."""
        ref = _image(value, self.path.parent)
        if ref is None or self.fetcher is None:
            return ref
        if not ref.lower().startswith(("http://", "https://")):
            return ref  # a local path, or a URI of another kind kept as written
        if ref in self.images:
            return self.images[ref]
        url_hash = hashlib.sha256(ref.encode()).hexdigest()
        with Session(self.engine) as session:
            known = get_imported_image(session, url_hash=url_hash)
        if known is not None and (self.fetcher.home / known.path).is_file():
            self.report.images_reused += 1
            self.images[ref] = known.path
            return known.path
        try:
            fetched = self.fetcher.fetch(ref)
        except ImageFetchError as exc:
            self.warn(line, f"{exc}; imported without this image")
            self.images[ref] = None
            return None
        with session_scope(self.engine) as session:
            record_imported_image(
                session,
                image=ImportedImage(
                    url_hash=url_hash,
                    url=ref,
                    path=fetched.path,
                    sha256=fetched.sha256,
                    size_bytes=fetched.size_bytes,
                    content_type=fetched.content_type,
                ),
            )
        self.report.images_fetched += 1
        self.images[ref] = fetched.path
        return fetched.path

    # --- writing ---------------------------------------------------------------------------

    def _finish_current(self) -> None:
        cur = self.current
        self.current = None
        if not isinstance(cur, _Group):
            return
        if cur.handle is not None:
            self.handles[cur.handle] = cur
        self.pending.append(cur)
        self.pending_rows += max(cur.rows, 1)

    def maybe_flush(self) -> None:
        if self.pending_rows >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        groups, self.pending, self.pending_rows = self.pending, [], 0
        if not groups:
            return
        with session_scope(self.engine) as session:
            clash = variant_ids_by_sku(
                session, skus=[g.product["sku"] for g in groups if g.product is not None]
            )
            kept: list[_Group] = []
            for g in groups:
                if g.product is not None and g.product["sku"] in clash:
                    self.bad(g.line, f"sku {g.product_sku!r} is already a variant's sku")
                    for v in g.variants:
                        self.bad(v.line, f"variant of the product at line {g.line}, not imported")
                    continue
                kept.append(g)
            products = [
                {k: g.product[k] for k in PRODUCT_FIELDS} for g in kept if g.product is not None
            ]
            n_products = upsert_products(session, products=products)
            variants = [(g, v) for g in kept for v in g.variants]
            taken = product_ids_by_sku(session, skus=[v.sku for _, v in variants], variants=False)
            ids = product_ids_by_sku(
                session, skus={g.product_sku for g, _ in variants}, variants=False
            )
            rows: list[dict[str, Any]] = []
            for g, v in variants:
                if v.sku in taken:
                    self.bad(v.line, f"sku {v.sku!r} is already a product's sku")
                    continue
                pid = ids.get(g.product_sku)
                if pid is None:
                    self.bad(v.line, f"product {g.product_sku!r} of this variant is not stored")
                    continue
                rows.append(
                    {
                        "sku": v.sku,
                        "product_id": pid,
                        "title": v.title,
                        "options": v.options,
                        "attributes": json.loads(json.dumps(v.attributes, default=str)),
                        "image": v.image,
                        "price": v.price,
                        "position": v.position,
                    }
                )
            n_variants = upsert_variants(session, variants=rows)
        r = self.report
        r.written += n_products + n_variants
        r.unchanged += len(products) - n_products + len(rows) - n_variants
        r.products += len(products)
        r.variants += len(rows)

    def finish(self) -> None:
        self._finish_current()
        self.flush()


def import_catalog(
    engine: Engine,
    *,
    path: Path,
    fmt: str | None = None,
    mapping: Mapping[str, str] | None = None,
    preset: str | CatalogPreset | None = None,
    facets: tuple[str, ...] | list[str] = (),
    facet_separators: str | None = None,
    fetcher: ImageFetcher | None = None,
    chunk_size: int = 1_000,
    progress: bool = True,
    errors_out: TextIO | None = None,
) -> ImportReport:
    """Upsert products and their variants from ``path`` by sku; idempotent.

    ``mapping``: our field <- file column, applied over the ``preset``'s (``"shopify"``);
    ``facets``: fields holding facet strings, split on ``facet_separators``; ``fetcher``:
    fetches ``http(s)`` image URLs (None keeps them as URIs). Bad rows are reported with
    their line number and reason, good rows always load; failed image fetches are warnings.
    Raises ``ValueError`` / ``FileNotFoundError`` for a problem with the file as a whole.
    """
    _check_file(path)
    fmt = detect_format(path, fmt)
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive row count, got {chunk_size}")
    chosen = get_preset(preset) if isinstance(preset, str) else preset
    merged = {**(chosen.mapping if chosen else {}), **(mapping or {})}
    facet_cols = tuple(dict.fromkeys([*(chosen.facets if chosen else ()), *facets]))
    if facet_separators is None:
        facet_separators = chosen.facet_separators if chosen else DEFAULT_FACET_SEPARATORS
    job = _CatalogImport(
        engine,
        path=path,
        mapping=merged,
        preset=chosen,
        facets=facet_cols,
        facet_separators=facet_separators,
        fetcher=fetcher,
        chunk_size=chunk_size,
        errors_out=errors_out,
    )
    bar = _progress(path, fmt, progress, f"catalog {path.name}")
    try:
        for line, item in _iter_rows(path, fmt, bar):
            job.report.rows_read += 1
            if isinstance(item, str):
                job.bad(line, item)
                continue
            try:
                job.row(line, item)
            except RowError as exc:
                job.bad(line, str(exc))
            job.maybe_flush()
        job.finish()
    finally:
        if bar is not None:
            bar.close()
    return job.report
