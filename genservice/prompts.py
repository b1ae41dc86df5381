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
_SYNTAX = re.compile(r"[()\[\]{}<>|\\:;=`^~*#@_\"]+")
_KEYWORDS = re.compile(r"\b(?:BREAK|AND|ADDROW|ADDCOL|ADDBASE)\b")  # A1111 / composable words
_SPACES = re.compile(r"\s+")

# -- brand safety: block lists matched after normalisation ---------------------------------

#: Leetspeak and symbol substitutions (``1`` reads as ``i`` and as ``l``: both are tried).
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g",
     "@": "a", "$": "s", "!": "i", "|": "l", "+": "t", "€": "e"}
)  # fmt: skip
_LEET_L = str.maketrans({"1": "l"})
_WORD = re.compile(r"[a-z]+")
#: More lookalikes, for matching only (Armenian, small capitals, Cherokee ...).
_MATCH_CONFUSABLES = {**_CONFUSABLES, **{
    "ս": "u", "ո": "n", "օ": "o", "ց": "g", "հ": "h", "ա": "w", "ɴ": "n", "ᴜ": "u", "ᴅ": "d",
    "ᴇ": "e", "ꜱ": "s", "ᴘ": "p", "ʀ": "r", "ᴏ": "o", "ᴋ": "k", "ᴛ": "t", "ʏ": "y", "ᴀ": "a",
    "ɪ": "i", "ʟ": "l", "ᴍ": "m", "ᴡ": "w", "Ꭺ": "A", "Ꮃ": "W", "Ꭼ": "E", "Ꮲ": "P",
}}  # fmt: skip
#: Lookalikes with two readings (Cyrillic н is an H, but stands in for an n as well).
_MATCH_ALTERNATES = {"н": "n", "Н": "N", "и": "n", "ь": "b", "г": "r", "в": "b", "ν": "n"}
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class BlockList:
    """Blocked words (``words``: whole words after stemming; ``prefixes``: any word starting
    with one), phrases (several words) and CJK terms (substrings). Loaded from
    ``data/vocab/blocklist_*.txt``."""

    words: frozenset[str]
    prefixes: tuple[str, ...]
    phrases: tuple[tuple[str, ...], ...]
    cjk: tuple[str, ...]

    @classmethod
    def from_lines(cls, lines: Sequence[str]) -> BlockList:
        words: set[str] = set()
        prefixes: list[str] = []
        phrases: list[tuple[str, ...]] = []
        cjk: list[str] = []
        for raw in lines:
            line = unicodedata.normalize("NFKC", raw.split("#", 1)[0]).strip().casefold()
            if not line:
                continue
            if _CJK.search(line):
                cjk.append(re.sub(r"\s+", "", line))
            elif line.endswith("*"):
                prefixes.append(line[:-1])
            elif " " in line:
                phrases.append(tuple(line.split()))
            else:
                words.add(line)
        return cls(frozenset(words), tuple(prefixes), tuple(phrases), tuple(cjk))

    @classmethod
    def load(cls, folder: str | None = None) -> BlockList:
        """Every ``blocklist_*.txt`` in ``folder`` (default: the bundled ``data/vocab``)."""
        from pathlib import Path

        if folder is None:
            import data

            base = Path(data.__file__).resolve().parent / "vocab"
        else:
            base = Path(folder)
        files = sorted(base.glob("blocklist_*.txt"))
        if not files:
            raise FileNotFoundError(f"block lists: no blocklist_*.txt under {base}")
        lines: list[str] = []
        for f in files:
            lines += f.read_text(encoding="utf-8").splitlines()
        return cls.from_lines(lines)

    def _word_hit(self, word: str) -> str | None:
        # Plurals and common inflections: nudes -> nude, undressed -> undress, orgies -> orgy.
        forms = {word, word[:-1] if word.endswith("s") else word}
        if word.endswith(("es", "ed")):
            forms.add(word[:-2])
        if word.endswith("ies"):
            forms.add(word[:-3] + "y")
        if word.endswith("ing"):
            forms |= {word[:-3], word[:-3] + "e"}
        for f in forms:
            if f in self.words:
                return f
        for p in self.prefixes:
            if word.startswith(p):
                return p
        return None

    def find(self, text: str) -> str | None:
        """The first blocked term found in ``text`` after normalisation, else None.

        Normalisation: NFKC, case folding, homoglyphs to ASCII, accents stripped, invisible
        characters removed, leetspeak (``nud3``, ``p0rn``), separators inside a word
        (``n-s-f-w``, ``nu.des``), runs of spaced single letters (``n u d e``), plurals and
        stems; CJK terms match with anything between their characters removed.
        """
        text = unicodedata.normalize("NFKC", str(text)[:20_000])
        for table in (_MATCH_CONFUSABLES, {**_MATCH_CONFUSABLES, **_MATCH_ALTERNATES}):
            hit = self._find_folded(text, table)
            if hit is not None:
                return hit
        return None

    def _find_folded(self, text: str, confusables: dict[str, str]) -> str | None:
        chars: list[str] = []
        for ch in text:
            if ch in confusables:
                chars.append(confusables[ch])
            elif unicodedata.category(ch) == "Cf":
                continue  # zero-width joiners and friends hide separators
            elif ch.isascii() or _CJK.match(ch):
                chars.append(ch)
            else:
                base = unicodedata.normalize("NFKD", ch)
                ascii_base = "".join(c for c in base if c.isascii() and c.isalnum())
                chars.append(ascii_base or " ")
        flat = "".join(chars).casefold()
        if self.cjk:
            squeezed = "".join(_CJK.findall(flat))
            for term in self.cjk:
                if term in squeezed:
                    return term
        for table in (_LEET, _LEET_L):
            hit = self._find_words(flat.translate(table))
            if hit is not None:
                return hit
        return None

    def _find_words(self, text: str) -> str | None:
        chunks = text.split()
        words: list[str] = []
        candidates: list[str] = []
        run: list[str] = []
        for chunk in chunks:
            parts = _WORD.findall(chunk)
            words += parts
            candidates += parts
            if len(parts) > 1:
                candidates.append("".join(parts))  # n-s-f-w, nu.des, p*o*r*n
            joined = "".join(parts)
            if 0 < len(joined) <= 2:
                run.append(joined)
                continue
            if len(run) > 1:
                candidates.append("".join(run))  # n u d e s, nu de s
            run = []
        if len(run) > 1:
            candidates.append("".join(run))
        for w in candidates:
            hit = self._word_hit(w)
            if hit is not None:
                return hit
        if self.phrases:
            padded = " " + " ".join(words) + " "
            for phrase in self.phrases:
                if " " + " ".join(phrase) + " " in padded:
                    return " ".join(phrase)
        return None


_BLOCKLIST: BlockList | None = None


def blocklist() -> BlockList:
    """The bundled block lists (loaded once)."""
    global _BLOCKLIST
    if _BLOCKLIST is None:
        _BLOCKLIST = BlockList.load()
    return _BLOCKLIST


def find_blocked(text: str) -> str | None:
    """The first blocked term in ``text`` (see :meth:`BlockList.find`), else None."""
    return blocklist().find(text)


def has_injection(text: str) -> bool:
    """Whether ``text`` holds an instruction-injection phrase ("ignore previous ...")."""
    folded = unicodedata.normalize("NFKC", str(text)[:20_000])
    folded = "".join(_MATCH_CONFUSABLES.get(ch, ch) for ch in folded)
    folded = "".join(" " if unicodedata.category(ch)[0] in "CZ" else ch for ch in folded)
    return bool(_INJECTION.search(_SPACES.sub(" ", folded)))


def sanitize_text(text: str, *, max_chars: int = 200, drop_blocked: bool = True) -> str:
    """Make merchant/user text safe to put in a prompt or on a hero.

    NFKC-normalise, fold homoglyphs to ASCII (others are dropped), strip control and
    zero-width characters, prompt-weight syntax (``(word:1.5)``, ``[word]``, ``{}``,
    ``<lora:...>``, ``BREAK``) and injected instructions, collapse spaces and cut to
    ``max_chars`` at a word boundary. Ordinary symbols (``%``, ``$``, ``&``, ``!``) stay.
    When the text holds a blocked term (:func:`find_blocked`, after normalisation) the
    *whole* text is dropped (``""``): a caption that tried to smuggle one word in is not
    trusted for the rest. The result is printable ASCII.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars: expected >= 1, got {max_chars}")
    # Bound the work first: a 10 MB title should not cost 10 MB of regex passes.
    text = str(text)[: max_chars * 8]
    if drop_blocked and find_blocked(text) is not None:
        return ""
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
        new = _INJECTION.sub(" ", _SPACES.sub(" ", text))
        if new == text:
            break
        text = new
    text = _SPACES.sub(" ", text).strip(" ,.-'")
    if len(text) > max_chars:
        cut = text[: max_chars + 1]
        space = cut.rfind(" ")
        text = (cut[:space] if space > 0 else cut[:max_chars]).rstrip(" ,.-'")
    if drop_blocked and find_blocked(text) is not None:  # joined halves of a blocked word
        return ""
    return text


def validate_template(template: str) -> None:
    """Raise ``ValueError`` naming ``prompt_template`` when ``template`` is not a valid
    format string, uses placeholders other than ``{title}``, ``{category}``, ``{terms}``,
    ``{placement}`` (no attribute or index access), or holds a blocked term."""
    try:
        parsed = list(string.Formatter().parse(str(template)))
    except ValueError as exc:
        raise ValueError(f"prompt_template: not a valid template ({exc})") from None
    for _literal, name, spec, conv in parsed:
        if name is not None and (name not in _ALLOWED_FIELDS or spec or conv):
            raise ValueError(
                f"prompt_template: expected placeholders among {sorted(_ALLOWED_FIELDS)}, "
                f"got {{{name}}}"
            )
    if find_blocked(str(template)) is not None:
        raise ValueError("prompt_template: blocked by the brand-safety list")


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
#: Safety terms of every negative prompt: first, and never dropped to fit the token budget.
SAFETY_NEGATIVE: tuple[str, ...] = ("nsfw", "nudity", "gore")
NEGATIVE_BASE = (
    "nsfw, nudity, gore, blurry, low quality, deformed, distorted product, extra objects, "
    "text, watermark, logo"
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
        """The negative prompt within budget: the safety terms (``SAFETY_NEGATIVE``) come first
        and stay; the other items are dropped from the end until it fits."""
        items = [p.strip() for p in text.split(",") if p.strip()]
        safety = list(SAFETY_NEGATIVE)
        rest = [i for i in items if i.lower() not in SAFETY_NEGATIVE]
        while rest and self.token_counter(", ".join(safety + rest)) > self.budget:
            rest.pop()
        return ", ".join(safety + rest)
