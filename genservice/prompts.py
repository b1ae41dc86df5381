"""Prompts from briefs: templates per placement and category, sanitised merchant/user text,
and fitting into the text encoder's token limit (drop the lowest-weight terms first)."""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from genservice.brief import CreativeBrief, StyleTerm

#: Counts the tokens of a text *without* begin/end tokens (for example CLIP's BPE).
TokenCounter = Callable[[str], int]

# Cyrillic / Greek / other letters that look like ASCII ones. NFKC already folds fullwidth
# and mathematical alphanumerics; this handles the scripts NFKC leaves alone.
_CONFUSABLES = {
    # Cyrillic lower / upper
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d",
    "ɡ": "g", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w", "ь": "b", "г": "r", "п": "n",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C",
    "Т": "T", "Х": "X", "У": "Y", "Ѕ": "S", "І": "I", "Ј": "J", "Ԁ": "D", "Ԛ": "Q", "Ԝ": "W",
    # Greek
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x", "γ": "y", "ω": "w",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Latin lookalikes and punctuation
    "ı": "i", "ȷ": "j", "ℓ": "l", "ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O",
    "đ": "d", "ł": "l", "Ł": "L", "œ": "oe", "‘": "'", "’": "'", "“": '"', "”": '"',
    "–": "-", "—": "-", "‐": "-", "‑": "-", "…": "...",
}  # fmt: skip

# Phrases that try to steer a model as if it followed instructions. A diffusion model does
# not, but downstream LLM tooling (captioners, prompt rewriters) might, so they never pass.
_INJECTION = re.compile(
    r"(?:ignore|disregard|forget|override|bypass)\s+(?:all\s+|any\s+|the\s+|your\s+)*"
    r"(?:previous|prior|above|earlier|preceding|system|safety)?\s*"
    r"(?:instructions?|prompts?|rules?|guidelines?|filters?|context)"
    r"|(?:system|developer)\s+prompt"
    r"|you\s+are\s+now\b"
    r"|new\s+instructions?"
    r"|jailbreak|do\s+anything\s+now",
    re.IGNORECASE,
)
_LORA = re.compile(r"<\s*(?:lora|lyco|hypernet|embedding)\s*:[^>]*>?", re.IGNORECASE)
_WEIGHT = re.compile(r":\s*[-+]?\d*\.?\d+")  # "(word:1.5)" → "(word"
_SYNTAX = re.compile(r"[()\[\]{}<>|\\:;=`^~*#@$%_\"]+")
_KEYWORDS = re.compile(r"\b(?:BREAK|AND|ADDROW|ADDCOL|ADDBASE)\b")  # A1111 / composable words
_BLOCKED = re.compile(
    r"\b(?:nsfw|nude|nudity|naked|topless|porn\w*|sexy|sex|erotic\w*|gore|gory|blood\w*)\b",
    re.IGNORECASE,
)
_SPACES = re.compile(r"\s+")


def sanitize_text(text: str, *, max_chars: int = 200) -> str:
    """Make merchant/user text safe to put in a prompt.

    NFKC-normalise, fold homoglyphs to ASCII (others are dropped), strip control and
    zero-width characters, prompt-weight syntax (``(word:1.5)``, ``[word]``, ``{}``,
    ``<lora:...>``, ``BREAK``), injected instructions and blocked words, collapse spaces and
    cut to ``max_chars`` at a word boundary. The result is printable ASCII.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars: expected >= 1, got {max_chars}")
    # Bound the work first: a 10 MB title should not cost 10 MB of regex passes.
    text = str(text)[: max_chars * 8]
    text = unicodedata.normalize("NFKC", text)
    chars: list[str] = []
    for ch in text:
        if ch in _CONFUSABLES:
            chars.append(_CONFUSABLES[ch])
        elif ch.isascii():
            chars.append(ch if ch.isprintable() else " ")
        else:
            cat = unicodedata.category(ch)
            if cat.startswith("Z") or cat == "Cc":
                chars.append(" ")
                continue
            # é → e; anything without an ASCII base letter is dropped.
            base = unicodedata.normalize("NFKD", ch)
            chars.append("".join(c for c in base if c.isascii() and c.isprintable()))
    text = "".join(chars)
    text = _LORA.sub(" ", text)
    text = _WEIGHT.sub(" ", text)
    text = _SYNTAX.sub(" ", text)
    text = _KEYWORDS.sub(" ", text)
    # Repeat until stable: removing one phrase may join the halves of another.
    for _ in range(5):
        new = _BLOCKED.sub(" ", _INJECTION.sub(" ", _SPACES.sub(" ", text)))
        if new == text:
            break
        text = new
    text = _SPACES.sub(" ", text).strip(" ,.-'")
    if len(text) > max_chars:
        cut = text[: max_chars + 1]
        space = cut.rfind(" ")
        text = (cut[:space] if space > 0 else cut[:max_chars]).rstrip(" ,.-'")
    return text


def approx_token_count(text: str) -> int:
    """A conservative stand-in for a BPE tokenizer: one token per punctuation mark and
    one per 4 characters of each word (CLIP averages about 1.3 tokens per English word)."""
    count = 0
    for piece in re.findall(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]", text):
        count += max(1, -(-len(piece) // 4)) if piece[0].isalnum() else 1
    return count


#: Positive templates per placement; ``{title}``, ``{category}``, ``{terms}``, ``{placement}``.
PLACEMENT_TEMPLATES: dict[str, str] = {
    "banner": "{title}, {category} product photo, {terms}, wide scene, clean space for text",
    "square": "{title}, {category} product photo, {terms}, centered composition",
    "story": "{title}, {category} product photo, {terms}, tall vertical scene",
}
DEFAULT_TEMPLATE = "{title}, {category} product photo, {terms}"
#: Tried in turn when a template's own words exceed a short text-encoder context.
FALLBACK_TEMPLATES: tuple[str, ...] = (DEFAULT_TEMPLATE, "{title}, {terms}", "{title}")
#: Extra scene hints per category (keys are lower-case category names).
CATEGORY_HINTS: dict[str, str] = {
    "t-shirt": "folded on a table", "hoodie": "on a hanger", "sneaker": "on a clean floor",
    "handbag": "on a shelf", "mug": "on a kitchen counter", "lamp": "in a living room",
    "chair": "in a bright room", "watch": "on a wooden desk",
}  # fmt: skip
NEGATIVE_BASE = (
    "blurry, low quality, deformed, distorted product, extra objects, text, watermark, logo, "
    "nsfw, nudity"
)
_ALLOWED_FIELDS = {"title", "category", "terms", "placement"}
_HINT_WEIGHT = -1e30  # below any real weight: category hints are dropped first


@dataclass(frozen=True)
class BuiltPrompt:
    """Positive/negative prompts and which style terms made it in (highest weight first)."""

    prompt: str
    negative_prompt: str
    terms_used: tuple[str, ...]
    terms_dropped: tuple[str, ...]
    prompt_tokens: int
    negative_tokens: int


@dataclass
class PromptBuilder:
    """Turn a :class:`CreativeBrief` into prompts that fit the text encoder.

    ``max_tokens`` counts begin/end tokens (77 for CLIP); ``token_counter`` counts without
    them — pass the pipeline tokenizer's (``DiffusersBackend.count_tokens``) so the fit is
    exact; the default is a conservative estimate.
    """

    max_tokens: int = 77
    token_counter: TokenCounter = approx_token_count
    max_title_chars: int = 160
    max_term_chars: int = 48
    max_terms: int = 24
    templates: dict[str, str] = field(default_factory=lambda: dict(PLACEMENT_TEMPLATES))
    negative_prompt: str = NEGATIVE_BASE

    def __post_init__(self) -> None:
        if self.max_tokens < 8:
            raise ValueError(f"max_tokens: expected >= 8, got {self.max_tokens}")

    @property
    def budget(self) -> int:
        """Tokens available to the text itself (without begin/end tokens)."""
        return self.max_tokens - 2

    def build(self, brief: CreativeBrief) -> BuiltPrompt:
        """Positive and negative prompt for ``brief``; raises ``ValueError`` on a bad template.

        When even the template's own words do not fit the text encoder (a small model with a
        short context), simpler templates are tried in turn (``FALLBACK_TEMPLATES``), so a
        short context degrades the wording rather than failing the job.
        """
        first = self._template(brief)
        title = sanitize_text(brief.product.title, max_chars=self.max_title_chars) or "product"
        category = sanitize_text(brief.product.category, max_chars=40)
        hint = CATEGORY_HINTS.get(category.lower(), "")
        terms = self._clean_terms(brief.style_terms)
        if hint:
            # The category hint is a low-priority term: dropped before any brief term.
            terms.append(StyleTerm(hint, _HINT_WEIGHT))
        for template in dict.fromkeys([first, *FALLBACK_TEMPLATES]):
            fitted = self._fit(template, brief, title, category, terms)
            if fitted is not None:
                prompt, kept = fitted
                break
        else:
            raise ValueError(
                f"prompt_template: the template alone needs more than {self.budget} tokens: "
                f"{first!r}"
            )
        negative = self._fit_negative(self.negative_prompt)
        kept_names = {t.term for t in kept}
        return BuiltPrompt(
            prompt=prompt,
            negative_prompt=negative,
            terms_used=tuple(t.term for t in kept if t.weight != _HINT_WEIGHT),
            terms_dropped=tuple(
                t.term for t in terms if t.term not in kept_names and t.weight != _HINT_WEIGHT
            ),
            prompt_tokens=self.token_counter(prompt),
            negative_tokens=self.token_counter(negative),
        )

    def _fit(
        self,
        template: str,
        brief: CreativeBrief,
        title: str,
        category: str,
        terms: Sequence[StyleTerm],
    ) -> tuple[str, list[StyleTerm]] | None:
        """``template`` filled, dropping lowest-weight terms then trailing title words until
        it fits the budget; None when the template's own words do not fit."""
        kept = list(terms)

        def render(title_text: str, kept_terms: Sequence[StyleTerm]) -> str:
            text = template.format(
                title=title_text,
                category=category,
                terms=", ".join(t.term for t in kept_terms),
                placement=brief.placement.name,
            )
            # Empty fields leave ", ," behind.
            return _SPACES.sub(" ", re.sub(r"(\s*,\s*)+", ", ", text)).strip(" ,")

        prompt = render(title, kept)
        while self.token_counter(prompt) > self.budget and kept:
            kept.pop()  # lowest weight last in the list
            prompt = render(title, kept)
        words = title.split(" ")
        while self.token_counter(prompt) > self.budget and len(words) > 1:
            words.pop()  # cut the title at a word boundary, never inside a word
            prompt = render(" ".join(words), kept)
        if self.token_counter(prompt) > self.budget:
            return None
        return prompt, kept

    def _template(self, brief: CreativeBrief) -> str:
        if brief.prompt_template is None:
            return self.templates.get(brief.placement.name, DEFAULT_TEMPLATE)
        raw = str(brief.prompt_template)[:2000]
        # Sanitise the literal parts; keep only the known placeholders.
        parts: list[str] = []
        try:
            parsed = list(string.Formatter().parse(raw))
        except ValueError as exc:
            raise ValueError(f"prompt_template: not a valid template ({exc}): {raw!r}") from None
        for literal, name, _spec, _conv in parsed:
            parts.append(sanitize_text(literal, max_chars=400) if literal.strip() else literal)
            if name is not None:
                if name not in _ALLOWED_FIELDS:
                    raise ValueError(
                        f"prompt_template: expected placeholders among {sorted(_ALLOWED_FIELDS)},"
                        f" got {{{name}}}"
                    )
                parts.append("{" + name + "}")
        out = ", ".join(p.strip(" ,") for p in parts if p.strip(" ,"))
        return out or DEFAULT_TEMPLATE

    def _clean_terms(self, terms: Sequence[StyleTerm]) -> list[StyleTerm]:
        seen: set[str] = set()
        clean: list[StyleTerm] = []
        for t in terms:
            text = sanitize_text(t.term, max_chars=self.max_term_chars)
            if text and text.lower() not in seen:
                seen.add(text.lower())
                clean.append(StyleTerm(text, float(t.weight)))
        # Stable sort: ties keep the brief's order.
        clean.sort(key=lambda t: -t.weight)
        return clean[: self.max_terms]

    def _fit_negative(self, text: str) -> str:
        items = [p.strip() for p in text.split(",") if p.strip()]
        while items and self.token_counter(", ".join(items)) > self.budget:
            items.pop()
        return ", ".join(items)
