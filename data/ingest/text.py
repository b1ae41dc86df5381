"""Text clean-up for catalog fields: HTML descriptions to plain text, facet strings to
category and attributes."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

#: Tags that end a line of text (paragraphs, list items, headings, table rows, line breaks).
_BLOCK_TAG_NAMES = (
    "address article aside blockquote br dd div dl dt figcaption figure footer h1 h2 h3 h4 h5 h6"
    " header hr li ol p pre section table tbody td th thead tr ul"
)
_BLOCK_TAGS = frozenset(_BLOCK_TAG_NAMES.split())
#: Tags whose content is never shown to a shopper.
_HIDDEN_TAGS = frozenset({"script", "style", "template", "noscript", "head", "title"})


class _TextExtractor(HTMLParser):
    """Collects the visible text of an HTML fragment, one string per line of output."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)  # entities (&amp; &#8217; ...) become text
        self.lines: list[list[str]] = [[]]
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden += 1
        elif tag in _BLOCK_TAGS:
            self.lines.append([])

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:  # <br/>, <hr/>
            self.lines.append([])

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCK_TAGS:
            self.lines.append([])

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.lines[-1].append(data)


def html_to_text(value: str) -> str:
    """Visible text of an HTML fragment: tags dropped, entities decoded, script/style content
    removed, one line per block element (paragraph, list item, ``<br>``), runs of white space
    collapsed. Plain text without ``<`` or ``&`` is returned with white space collapsed only.
    """
    if "<" not in value and "&" not in value:
        return " ".join(value.split())
    parser = _TextExtractor()
    parser.feed(value)
    parser.close()
    lines = (" ".join("".join(parts).split()) for parts in parser.lines)
    return "\n".join(line for line in lines if line)


@dataclass(frozen=True)
class Facets:
    """A parsed facet string: ``category`` (None when no ``category:`` pair), other
    ``key:value`` pairs as ``attributes`` (a key given twice keeps a list of its values, in
    order), and bare values (no ``:``) as ``tags``."""

    category: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


#: Characters that separate pairs by default: ``category:Electronics|brand:Apple``.
DEFAULT_FACET_SEPARATORS = "|;"


def parse_facets(value: str, *, separators: str = DEFAULT_FACET_SEPARATORS) -> Facets:
    """Split ``value`` on any character of ``separators`` into ``key:value`` pairs (``=`` also
    separates a key from its value). Keys are lower-cased, values kept as written; empty parts
    are skipped; a ``category`` key fills ``Facets.category``."""
    if not separators:
        raise ValueError("separators: expected at least one separator character, got ''")
    parts = [value]
    for sep in separators:
        parts = [piece for part in parts for piece in part.split(sep)]
    category: str | None = None
    attributes: dict[str, Any] = {}
    tags: list[str] = []
    for raw in parts:
        part = raw.strip()
        if not part:
            continue
        cut = min((i for i in (part.find(":"), part.find("=")) if i > 0), default=-1)
        if cut < 0:
            if part not in tags:
                tags.append(part)
            continue
        key = " ".join(part[:cut].split()).lower()
        val = part[cut + 1 :].strip()
        if not val:
            continue
        if key == "category":
            category = category or val  # the first category named wins
        elif key not in attributes:
            attributes[key] = val
        else:
            have = attributes[key]
            values = have if isinstance(have, list) else [have]
            if val not in values:
                attributes[key] = [*values, val]
    return Facets(category=category, attributes=attributes, tags=tuple(tags))


def looks_like_facets(value: str, *, separators: str = DEFAULT_FACET_SEPARATORS) -> bool:
    """True when ``value`` is a facet string that names a category (``category:X|...``), the
    form that must not be stored whole as a category. ``Home: Kitchen`` is not one."""
    if ":" not in value and "=" not in value:
        return False
    facets = parse_facets(value, separators=separators)
    return facets.category is not None and not facets.tags
