"""Fetch product images named by URL in a catalog file and store them like other product
images: content-addressed files under the state folder, referenced by a relative path.

A fetch is bounded three ways: a socket timeout and a whole-transfer deadline (``timeout_s``), a
size cap (``max_bytes``, checked against ``Content-Length`` and again while reading), and a
content check (an ``image/*`` content type, then the bytes must decode as PNG, JPEG, WebP or
GIF). A failure raises ``ImageFetchError`` with the reason shown in the import report.
"""

from __future__ import annotations

import hashlib
import io
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

#: Decoded formats accepted, with the file suffix used to store them.
_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif"}
_READ_BLOCK = 64 * 1024


class ImageFetchError(ValueError):
    """An image URL could not be fetched or is not an acceptable image; ``str`` is the reason."""


@dataclass(frozen=True)
class FetchedImage:
    """A stored image: ``path`` relative to the state folder, ``sha256`` of its bytes."""

    url: str
    path: str
    sha256: str
    size_bytes: int
    content_type: str


@dataclass(frozen=True)
class ImageFetcher:
    """Fetches ``http(s)`` image URLs into ``home / subdir / <sha256>.<ext>``.

    ``timeout_s``: seconds, both per socket operation and for the whole transfer;
    ``max_bytes``: largest accepted body in bytes.
    """

    home: Path
    subdir: str = "catalog/imported"
    timeout_s: float = 10.0
    max_bytes: int = 20 * 1024 * 1024
    user_agent: str = "tailorshot-import/1"

    def __post_init__(self) -> None:
        if not (self.timeout_s > 0):
            raise ValueError(f"timeout_s: expected seconds > 0, got {self.timeout_s!r}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes: expected a positive byte count, got {self.max_bytes!r}")

    def fetch(self, url: str) -> FetchedImage:
        """Download ``url``, check it, store it; raises ``ImageFetchError`` with the reason."""
        if not url.lower().startswith(("http://", "https://")):
            raise ImageFetchError(f"image URL {url[:80]!r}: only http:// and https:// are fetched")
        body, content_type = self._download(url)
        suffix = _check_image(url, body)
        digest = hashlib.sha256(body).hexdigest()
        rel = f"{self.subdir.strip('/')}/{digest}{suffix}"
        dest = self.home / rel
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(dest.suffix + ".part")
            tmp.write_bytes(body)
            tmp.replace(dest)  # atomic: a reader never sees half a file
        return FetchedImage(
            url=url, path=rel, sha256=digest, size_bytes=len(body), content_type=content_type
        )

    def _download(self, url: str) -> tuple[bytes, str]:
        deadline = time.monotonic() + self.timeout_s
        request = urllib.request.Request(url, headers={"User-Agent": self.user_agent})
        short = url[:80]
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                content_type = (response.headers.get_content_type() or "").lower()
                if not content_type.startswith("image/"):
                    raise ImageFetchError(
                        f"image URL {short!r}: expected an image/* content type, "
                        f"got {content_type or 'none'!r}"
                    )
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > self.max_bytes:
                    raise ImageFetchError(
                        f"image URL {short!r}: too large ({int(declared)} bytes, "
                        f"at most {self.max_bytes})"
                    )
                chunks: list[bytes] = []
                size = 0
                while True:
                    if time.monotonic() > deadline:
                        raise ImageFetchError(
                            f"image URL {short!r}: timed out after {self.timeout_s:g} s"
                        )
                    block = response.read(_READ_BLOCK)
                    if not block:
                        break
                    size += len(block)
                    if size > self.max_bytes:  # a server may omit or lie about Content-Length
                        raise ImageFetchError(
                            f"image URL {short!r}: too large (more than {self.max_bytes} bytes)"
                        )
                    chunks.append(block)
        except ImageFetchError:
            raise
        except TimeoutError:
            raise ImageFetchError(
                f"image URL {short!r}: timed out after {self.timeout_s:g} s"
            ) from None
        except urllib.error.HTTPError as exc:
            raise ImageFetchError(f"image URL {short!r}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise ImageFetchError(
                    f"image URL {short!r}: timed out after {self.timeout_s:g} s"
                ) from None
            raise ImageFetchError(f"image URL {short!r}: cannot fetch ({reason})") from None
        except (OSError, ValueError) as exc:  # connection reset, malformed URL ...
            raise ImageFetchError(
                f"image URL {short!r}: cannot fetch ({type(exc).__name__}: {exc})"
            ) from None
        return b"".join(chunks), content_type


def _check_image(url: str, body: bytes) -> str:
    """The storage suffix for ``body`` if it decodes as an accepted image format."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(body)) as img:
            fmt = img.format or ""
            img.verify()  # reads the whole file structure without decoding pixels
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError):
        raise ImageFetchError(
            f"image URL {url[:80]!r}: the body is not a readable image ({len(body)} bytes)"
        ) from None
    suffix = _FORMATS.get(fmt)
    if suffix is None:
        raise ImageFetchError(
            f"image URL {url[:80]!r}: expected one of {sorted(_FORMATS)}, got {fmt or 'unknown'}"
        )
    return suffix
