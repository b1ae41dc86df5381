"""Image bytes by content-addressed key.

No API key is required: keys are content hashes (unguessable without the image, and they
leak no user data), images are immutable, and storefront pages embed them in ``<img>`` tags
and CDNs, which cannot send headers. Erasure deletes a user's images, so their URLs die.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response, status

from api.deps import ComponentsDep

router = APIRouter(prefix="/v1", tags=["images"])

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,120}(\.[A-Za-z0-9]{1,5})?$"
#: One byte range; 18 digits bound the numbers (a 5,000-digit number is not parsed).
_RANGE = re.compile(r"^bytes=(\d{0,18})-(\d{0,18})$", re.IGNORECASE)
MAX_RANGE_HEADER = 200
CACHE_CONTROL = "public, max-age=31536000, immutable"


class _Ignore(Exception):
    """The Range header is to be ignored (another unit, or several ranges): serve it all."""


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, end_inclusive)`` of a single byte range; None when unsatisfiable or invalid
    (416). Raises :class:`_Ignore` for a unit other than bytes or several ranges, which
    RFC 9110 lets a server ignore (it then sends the whole image, 200)."""
    header = header.strip()
    if len(header) > MAX_RANGE_HEADER:
        return None
    unit, sep, _ = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        raise _Ignore
    if "," in header:
        raise _Ignore
    m = _RANGE.match(header.replace(" ", ""))
    if m is None:
        return None
    a, b = m.groups()
    if a == "" and b == "":
        return None
    if a == "":  # suffix: the last b bytes
        n = int(b)
        if n == 0:
            return None
        return max(0, size - n), size - 1
    start = int(a)
    end = size - 1 if b == "" else min(int(b), size - 1)
    if start >= size or end < start:
        return None
    return start, end


@router.head("/images/{key}", include_in_schema=False)
@router.get(
    "/images/{key}",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "image/webp": {}}, "description": "The image"},
        206: {"description": "A byte range of the image"},
        304: {"description": "Not modified (ETag matched)"},
        404: {"description": "Unknown key"},
        416: {"description": "Range not satisfiable"},
    },
)
def get_image(
    request: Request,
    comps: ComponentsDep,
    key: Annotated[str, Path(pattern=KEY_PATTERN, max_length=128)],
) -> Response:
    """The image with this content-addressed ``key``. Public (no key): URLs are unguessable
    content hashes and never change. Strong ``ETag``, ``Cache-Control: public,
    max-age=31536000, immutable``, ``If-None-Match`` (304) and single byte ``Range`` (206;
    416 when invalid or unsatisfiable; other units and multiple ranges are ignored: 200)."""
    if comps.images is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown image")
    try:
        data = comps.images.get(key)
    except (KeyError, FileNotFoundError, ValueError):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown image") from None
    etag = f'"{key}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Accept-Ranges": "bytes"}
    media = comps.images.content_type(key)
    inm = request.headers.get("if-none-match")
    if inm and (inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")]):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    rng = request.headers.get("range")
    if rng and request.headers.get("if-range", etag) == etag:
        try:
            span = _parse_range(rng, len(data))
        except _Ignore:
            return Response(
                content=b"" if request.method == "HEAD" else data,
                media_type=media,
                headers={**headers, "Content-Length": str(len(data))},
            )
        if span is None:
            return Response(
                status_code=status.HTTP_416_RANGE_NOT_SATISFIABLE,
                headers={**headers, "Content-Range": f"bytes */{len(data)}"},
            )
        start, end = span
        body = data[start : end + 1]
        return Response(
            content=b"" if request.method == "HEAD" else body,
            status_code=status.HTTP_206_PARTIAL_CONTENT,
            media_type=media,
            headers={
                **headers,
                "Content-Range": f"bytes {start}-{end}/{len(data)}",
                "Content-Length": str(len(body)),
            },
        )
    return Response(
        content=b"" if request.method == "HEAD" else data,
        media_type=media,
        headers={**headers, "Content-Length": str(len(data))},
    )
