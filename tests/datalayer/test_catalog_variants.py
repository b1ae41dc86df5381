"""Real catalog exports: Shopify's multi-row variant layout, facet strings, HTML descriptions,
image URLs fetched from a local HTTP server, and one row numbering (file lines) in every report.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from data.ingest import import_catalog, import_events
from data.ingest.images import ImageFetcher, ImageFetchError
from data.ingest.text import html_to_text, looks_like_facets, parse_facets
from data.models import Event, ImportedImage, Product, ProductVariant
from data.repos.catalog import list_variants, product_ids_by_sku, resolve_sku

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "shopify_products.csv"

PRODUCT_SKUS = {"classic-tee", "mug", "hoodie", "socks"}
VARIANT_SKUS = {"TEE-RED-S", "TEE-RED-M", "TEE-BLU-S", "TEE-GRN-S", "MUG-001", "HOOD-S", "HOOD-L"}


def _line_of(path: Path, needle: str) -> int:
    """1-based number of the only line of ``path`` that starts with ``needle``."""
    hits = [i for i, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(needle)]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def _expected_bad_lines(path: Path) -> dict[int, str]:
    """The fixture's bad rows, located by their text (not by counting records)."""
    return {
        _line_of(path, "hoodie,,,,,,,,M,"): "has no sku",
        _line_of(path, "broken,Broken Cap"): "'price'",
        _line_of(path, "broken,,"): "which was not imported",
        _line_of(path, "socks,"): "duplicate sku 'TEE-RED-M'",
        _line_of(path, "ghost,"): "missing 'title'",
    }


def _snapshot(engine: Engine) -> dict[str, tuple[object, ...]]:
    with Session(engine) as s:
        out: dict[str, tuple[object, ...]] = {}
        for p in s.exec(select(Product)):
            out[p.sku] = (p.id, p.title, p.description, p.category, p.attributes, p.image)
            out[p.sku] += (p.price, p.updated_at)
        for v in s.exec(select(ProductVariant)):
            out[v.sku] = (v.id, v.product_id, v.options, v.attributes, v.image, v.price)
            out[v.sku] += (v.position, v.updated_at)
        return out


def test_shopify_export_yields_every_sku_with_options_and_reimport_changes_nothing(
    db_engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "products_export.csv"
    shutil.copy(FIXTURE, path)
    report = import_catalog(db_engine, path=path, preset="shopify", progress=False)

    # The body of the first product spans lines 2-3, so record numbers and lines differ.
    assert report.rows_read == 13  # 13 records on lines 2..15
    assert (report.products, report.variants, report.image_rows) == (4, 7, 1)
    assert report.written == 11 and report.unchanged == 0
    expected = _expected_bad_lines(path)
    assert expected == {9: "has no sku", 11: "'price'", 12: "which was not imported"} | {
        13: "duplicate sku 'TEE-RED-M'",
        14: "missing 'title'",
    }
    got = {b.row: b.reason for b in report.bad_rows}
    assert set(got) == set(expected)
    for line, part in expected.items():
        assert part in got[line], (line, got[line])
    assert "first at line 4" in got[13]  # points at the variant row that owns the sku

    with Session(db_engine) as s:
        products = {p.sku: p for p in s.exec(select(Product))}
        variants = {v.sku: v for v in s.exec(select(ProductVariant))}
        assert set(products) == PRODUCT_SKUS
        assert set(variants) == VARIANT_SKUS
        tee = products["classic-tee"]
        assert tee.title == "Classic Tee"
        assert tee.description == "Soft organic cotton tee.\nMachine wash\nFair & square"
        assert tee.category == "shirts"  # Type wins over the tags' category
        assert tee.attributes == {"material": "cotton", "tags": ["summer"], "brand": "Acme"}
        assert tee.price == 19.0
        assert tee.image == str(tmp_path / "images" / "tee-front.png")
        assert [v.sku for v in list_variants(s, product_id=tee.id or 0)] == [
            "TEE-RED-S",
            "TEE-RED-M",
            "TEE-BLU-S",
            "TEE-GRN-S",  # a later row with the same handle (line 15) joins its product
        ]
        blue = variants["TEE-BLU-S"]
        assert blue.product_id == tee.id
        assert blue.options == {"color": "Blue", "size": "S"}
        assert blue.attributes == {"color": "Blue", "size": "S"}
        assert blue.title == "Blue / S"
        assert blue.price == 21.0
        assert blue.image == str(tmp_path / "images" / "tee-blue.png")
        assert variants["TEE-RED-M"].options == {"color": "Red", "size": "M"}
        assert variants["TEE-RED-S"].image is None  # uses the product's photo

        mug = products["mug"]
        assert mug.category == "kitchen"  # from the tags, Type being blank
        assert mug.attributes == {"material": "ceramic", "tags": ["gift"], "brand": "Acme Home"}
        assert mug.description == "A 350 ml mug \u2014 dishwasher safe."
        assert variants["MUG-001"].options == {}  # Shopify's "Default Title" is no option
        assert products["hoodie"].description == "Heavy fleece.\nUnisex fit."
        assert variants["HOOD-L"].options == {"size": "L"} and variants["HOOD-L"].price == 52.0
        assert products["socks"].price == 8.0  # imported although its variant row was bad

    before = _snapshot(db_engine)
    again = import_catalog(db_engine, path=path, preset="shopify", progress=False)
    assert (again.written, again.unchanged) == (0, 11)
    assert {b.row for b in again.bad_rows} == set(expected)
    assert _snapshot(db_engine) == before


def test_variant_skus_resolve_to_their_product_everywhere(
    db_engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "export.csv"
    shutil.copy(FIXTURE, path)
    import_catalog(db_engine, path=path, preset="shopify", progress=False)
    with Session(db_engine) as s:
        tee = resolve_sku(s, sku="classic-tee")
        blue = resolve_sku(s, sku="TEE-BLU-S")
        red = resolve_sku(s, sku="TEE-RED-M")
        assert tee is not None and tee.variant is None
        assert blue is not None and blue.variant is not None and red is not None
        assert blue.product.id == tee.product.id == red.product.id
        assert blue.title == "Classic Tee (Blue / S)"
        assert blue.image == str(tmp_path / "images" / "tee-blue.png")
        assert red.image == tee.product.image  # no image of its own
        assert blue.attributes["color"] == "Blue" and blue.attributes["brand"] == "Acme"
        assert resolve_sku(s, sku="CAP-2") is None
        mug_id = s.exec(select(Product.id).where(Product.sku == "mug")).one()
        ids = product_ids_by_sku(s, skus=["TEE-BLU-S", "mug", "NOPE"])
        assert ids == {"TEE-BLU-S": tee.product.id, "mug": mug_id}
        assert product_ids_by_sku(s, skus=["TEE-BLU-S"], variants=False) == {}

    events = tmp_path / "events.csv"
    events.write_text(
        "event_id,user_id,sku,kind,ts\n"
        "e1,u1,TEE-BLU-S,view,2026-03-01T10:00:00Z\n"
        "e2,u1,classic-tee,purchase,2026-03-01T10:05:00Z\n"
    )
    rep = import_events(db_engine, path=events, progress=False)
    assert (rep.written, rep.bad_count) == (2, 0)
    with Session(db_engine) as s:
        pids = set(s.exec(select(Event.product_id)))
        assert pids == {tee.product.id}


def _cli_env(home: Path) -> dict[str, str]:
    return {"TAILORSHOT_HOME": str(home), "TAILORSHOT_DATABASE_URL": ""}


def test_text_json_and_errors_file_number_rows_by_file_line(tmp_path: Path) -> None:
    from api.cli import app

    path = tmp_path / "export.csv"
    shutil.copy(FIXTURE, path)
    expected = set(_expected_bad_lines(path))
    runner = CliRunner()
    errors = tmp_path / "bad.jsonl"
    args = ["import", "catalog", str(path), "--preset", "shopify", "--no-fetch-images"]
    res = runner.invoke(app, [*args, "--json", "--errors", str(errors)], env=_cli_env(tmp_path))
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert [b["row"] for b in report["bad_rows"]] == sorted(expected)  # in file order
    assert (report["products"], report["variants"], report["written"]) == (4, 7, 11)
    from_file = [json.loads(line) for line in errors.read_text().splitlines()]
    assert {b["row"] for b in from_file if b["level"] == "error"} == expected

    text = runner.invoke(app, args, env=_cli_env(tmp_path))
    assert text.exit_code == 0, text.output
    assert "wrote 0, unchanged 11, bad 5" in text.output
    printed = [int(m) for m in re.findall(rf"{re.escape(str(path))}:(\d+): ", text.output)]
    assert printed == sorted(expected)


def test_generic_layout_facets_and_html(sqlite_engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text(
        "sku,title,description,category,facets,price,option.color,image\n"
        'LAP-1,Laptop 14,"<p>Thin &amp; light</p>",,category:Electronics|brand:Apple|ram:16GB,'
        "999,Silver,img/lap.png\n"
        "LAP-1-GRY,,,,,1049,Space Grey,img/lap-grey.png\n"
        "PH-1,Phone,Plain text & no tags,category:Phones|brand:Apple,,699,,\n"
        "CASE-1,Case,,Home: Kitchen,,9,,\n"
        ",,,,,5,Red,\n"
    )
    report = import_catalog(sqlite_engine, path=path, facets=["facets"], progress=False)
    assert (report.products, report.variants, report.written) == (3, 1, 4)
    assert [(b.row, b.reason) for b in report.bad_rows] == [
        (6, "variant {'color': 'Red'} has no sku (needed to address it)")
    ]
    with Session(sqlite_engine) as s:
        lap = s.exec(select(Product).where(Product.sku == "LAP-1")).one()
        assert lap.category == "electronics"
        # The product row's own option value describes the product shown.
        assert lap.attributes == {"brand": "Apple", "ram": "16GB", "color": "Silver"}
        assert lap.description == "Thin & light"
        phone = s.exec(select(Product).where(Product.sku == "PH-1")).one()
        # A facet string in 'category' is parsed even without --facets; plain text is kept.
        assert (phone.category, phone.attributes) == ("phones", {"brand": "Apple"})
        assert phone.description == "Plain text & no tags"
        case = s.exec(select(Product).where(Product.sku == "CASE-1")).one()
        assert case.category == "home: kitchen"  # names no category: not a facet string
        variants = s.exec(select(ProductVariant)).all()
        assert [v.sku for v in variants] == ["LAP-1-GRY"]
        grey = variants[0]
        assert grey.product_id == lap.id and grey.price == 1049.0
        assert grey.options == {"color": "Space Grey"} and grey.title == "Space Grey"
        assert grey.image == str((tmp_path / "img" / "lap-grey.png").resolve())
    with pytest.raises(ValueError, match="facets: no column 'tags'"):
        import_catalog(sqlite_engine, path=path, facets=["tags"], progress=False)
    with pytest.raises(ValueError, match=r"preset shopify: .* no column"):
        import_catalog(sqlite_engine, path=path, preset="shopify", progress=False)


def test_html_to_text_and_facets_known_answers() -> None:
    html = (
        "<h2>Care</h2><p>Wash&nbsp;cold,\n   <em>dry flat</em>.</p><style>p{}</style>"
        "<ul><li>100% wool</li><li>5 &lt; 6 &amp; 7 &gt; 3</li></ul><br/>Made in EU"
    )
    assert html_to_text(html) == "Care\nWash cold, dry flat.\n100% wool\n5 < 6 & 7 > 3\nMade in EU"
    assert html_to_text("  plain\ttext  ") == "plain text"
    f = parse_facets("category:Electronics|brand:Apple|color:red; color=blue|sale|color:red")
    assert f.category == "Electronics"
    assert f.attributes == {"brand": "Apple", "color": ["red", "blue"]}
    assert f.tags == ("sale",)
    assert parse_facets("summer, Category:Tops", separators=",").category == "Tops"
    assert looks_like_facets("category:Electronics|brand:Apple")
    assert not looks_like_facets("Home: Kitchen") and not looks_like_facets("Mugs")
    with pytest.raises(ValueError, match="separators"):
        parse_facets("a:b", separators="")


def _png(size: int = 8, colour: tuple[int, int, int] = (10, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[str, bytes, bool]] = {}
    slow_s = 3.0

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        if self.path == "/slow.png":
            time.sleep(self.slow_s)  # longer than the fetch timeout
        content_type, body, declare_length = self.routes.get(
            self.path, ("text/plain", b"not found", True)
        )
        try:
            self.send_response(200 if self.path in self.routes else 404)
            self.send_header("Content-Type", content_type)
            if declare_length:
                self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)


@pytest.fixture
def image_server() -> Iterator[str]:
    """A local HTTP server on 127.0.0.1 with one route per fetch outcome."""
    big = _png(8) + b"\0" * 300_000
    _Handler.routes = {
        "/ok.png": ("image/png", _png(), True),
        "/big.png": ("image/png", big, True),
        "/big-undeclared.png": ("image/png", big, False),
        "/slow.png": ("image/png", _png(), True),
        "/page.html": ("text/html; charset=utf-8", b"<html>hi</html>", True),
        "/fake.png": ("image/png", b"this is not a png at all", True),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_image_fetcher_ok_too_big_timeout_wrong_type(image_server: str, tmp_path: Path) -> None:
    fetcher = ImageFetcher(home=tmp_path, timeout_s=0.5, max_bytes=100_000)
    ok = fetcher.fetch(f"{image_server}/ok.png")
    assert ok.path == f"catalog/imported/{ok.sha256}.png"
    assert (tmp_path / ok.path).read_bytes() == _png()
    assert ok.size_bytes == len(_png()) and ok.content_type == "image/png"
    cases = {
        "/big.png": "too large (300",  # declared Content-Length over the cap
        "/big-undeclared.png": "too large (more than 100000 bytes)",  # counted while reading
        "/slow.png": "timed out after 0.5 s",
        "/page.html": "expected an image/* content type, got 'text/html'",
        "/fake.png": "not a readable image",
        "/missing.png": "HTTP 404",
    }
    for route, reason in cases.items():
        with pytest.raises(ImageFetchError, match=re.escape(reason)):
            fetcher.fetch(f"{image_server}{route}")
    with pytest.raises(ImageFetchError, match="only http"):
        fetcher.fetch("ftp://example.com/a.png")
    assert sorted(p.name for p in (tmp_path / "catalog" / "imported").iterdir()) == [
        Path(ok.path).name  # nothing stored for a failed fetch
    ]
    with pytest.raises(ValueError, match="timeout_s"):
        ImageFetcher(home=tmp_path, timeout_s=0)


def test_catalog_image_urls_are_fetched_once_and_failures_are_warnings(
    image_server: str, sqlite_engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "catalog.csv"
    rows = ["sku,title,image"]
    for sku, route in [
        ("A", "ok.png"),
        ("B", "big.png"),
        ("C", "slow.png"),
        ("D", "page.html"),
        ("E", "ok.png"),
    ]:
        rows.append(f"{sku},Product {sku},{image_server}/{route}")
    path.write_text("\n".join(rows) + "\n")
    home = tmp_path / "home"
    fetcher = ImageFetcher(home=home, timeout_s=0.5, max_bytes=100_000)
    report = import_catalog(sqlite_engine, path=path, fetcher=fetcher, progress=False)
    assert (report.products, report.bad_count) == (5, 0)  # nothing lost to a bad image
    assert (report.images_fetched, report.images_reused) == (1, 0)  # E reuses A's download
    warned = {w.row: w.reason for w in report.warnings}
    assert set(warned) == {3, 4, 5}  # file lines of B, C, D
    assert "too large" in warned[3] and "timed out" in warned[4] and "image/*" in warned[5]
    assert all(w.level == "warning" for w in report.warnings)
    with Session(sqlite_engine) as s:
        images = {p.sku: p.image for p in s.exec(select(Product))}
        stored = s.exec(select(ImportedImage)).one()
    assert images["A"] == images["E"] == stored.path
    assert stored.path.startswith("catalog/imported/") and stored.path.endswith(".png")
    assert (home / stored.path).read_bytes() == _png()
    assert images["B"] is images["C"] is images["D"] is None

    again = import_catalog(sqlite_engine, path=path, fetcher=fetcher, progress=False)
    assert (again.written, again.unchanged) == (0, 5)
    assert (again.images_fetched, again.images_reused) == (0, 1)  # from the stored copy
    assert {w.row for w in again.warnings} == {3, 4, 5}
