"""Turn what a language model wrote into clean sentences.

Real answers come with numbering, bullets, markdown, quotes, "Here are ..."
preambles, "I hope this helps" closings, refusals, ``<think>`` blocks, JSON,
duplicates and, now and then, another language. :func:`parse_sentences` keeps
the descriptive sentences and drops the rest; :func:`clean_caption` does the
same for a one-line image caption.

Wrong-language heuristic (``language="en"``, the default)
--------------------------------------------------------
A sentence is dropped as not English when

* fewer than half of its letters are Latin script (Basic Latin, Latin-1 and
  Latin Extended A/B, i.e. code points below U+0250): Chinese, Japanese,
  Cyrillic, Arabic, Greek, ... text; or
* it contains at least two common function words of Spanish, French, German,
  Italian, Portuguese or Dutch (``el, los, una, y, est, une, und, ist, der, ...``)
  and more of them than English function words (``the, a, is, with, ...``).

Short sentences with neither kind of word pass. ``language=None`` turns the check off.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

# --- patterns ----------------------------------------------------------------------------------------------------

_THINK_RE = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.S | re.I)
_THINK_OPEN_RE = re.compile(r"<(think|thinking|reasoning)>.*", re.S | re.I)
_FENCE_RE = re.compile(r"^\s*(```|~~~)[\w+-]*\s*$")
_HEADER_RE = re.compile(r"^\s*#{1,6}\s+")
_RULE_RE = re.compile(r"^\s*([-*_=]\s*){3,}$")
_TABLE_SEP_RE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_QUOTE_BLOCK_RE = re.compile(r"^\s*>+\s?")
# "1.", "1)", "(1)", "[1]", "1:", "Step 1:", "a)", "(a)", "i.", "-", "*", "•", "·", "–", "—", "+", "▪", "►", "✓", "☐"
_MARKER_RE = re.compile(
    r"^\s*(?:"
    r"(?:step|sentence|description|caption|option|example)\s*\d{1,3}\s*[.):-](?=\s|$)"
    r"|\(?\d{1,3}\s*[.)\]:](?!\d)"
    r"|\(\d{1,3}\)"
    r"|\[\d{1,3}\]"
    r"|\(?[a-hA-H]\)(?=\s)"
    r"|\(?(?:i|ii|iii|iv|v|vi|vii|viii|ix|x)[.)](?=\s)"
    r"|[-*+–—](?=\s)"
    r"|[•·▪►✓✔☐○●◦‣⁃]"
    r")\s*"
)
_BOLD_RE = re.compile(r"(\*\*|__)(.+?)\1")
_ITALIC_RE = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?!\*)|(?<![\w_])_(?!\s)(.+?)(?<!\s)_(?![\w_])")
_CODE_RE = re.compile(r"`([^`]*)`")
_LINK_RE = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_STRIKE_RE = re.compile(r"~~(.+?)~~")
_CITATION_RE = re.compile(r"\s*\[\d{1,3}\]")
_HTML_RE = re.compile(r"</?(?:b|i|em|strong|br|p|li|ul|ol|span|div)\s*/?>", re.I)
_META_LABEL_RE = re.compile(
    r"^(?:answer|caption|description|sentence|output|response|result|a|assistant)(?:\s*\d{1,3})?\s*[:=-]\s+", re.I
)
_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "„": "“", "`": "`"}

_PREAMBLE_LINE_RE = re.compile(
    r"^(?:here\s+(?:are|is|'s)|below\s+(?:are|is)|the\s+following|these\s+are|following\s+are)\b", re.I
)
# What a preamble without a colon talks about: "Here are some descriptions of a cat."
_PREAMBLE_TOPIC_RE = re.compile(
    r"\b(?:sentences?|descriptions?|captions?|ways?|features|characteristics|facts|examples|answers?|list|"
    r"some|a few|several|\d+)\b",
    re.I,
)
_AFFIRM_RE = re.compile(
    r"^(?:sure|certainly|of course|absolutely|okay|ok|great question|happy to help|no problem|alright|gladly)\b"
    r"[\s!.,:-]*(?:(?:here|i'd|i would|i will|i'll|i can|below|let me)\b.*)?$",
    re.I,
)
_CLOSING_RE = re.compile(
    r"^(?:i hope|hope (?:this|that|these)|let me know|feel free|if you (?:need|want|have|would|'d)|"
    r"(?:these|the above|those) (?:sentences|descriptions|captions|points|features|details) (?:should|can|will|may|"
    r"capture|highlight|describe|help|cover)|note:|please note|in summary|to summarize|overall,? (?:these|this)|"
    r"would you like|do you (?:want|need))",
    re.I,
)
_REFUSAL_RE = re.compile(
    r"(?:\bi(?:'m| am) (?:sorry|afraid|unable|not able)|\bi (?:cannot|can't|can not|won't|am not able to)\b|"
    r"\bas an ai\b|\bas a (?:large )?language model\b|\bi do(?:n't| not) have (?:the ability|access|enough)|"
    r"\bi apologi[sz]e\b|\bunfortunately,? i\b|\bi'm just an ai\b|\bcannot (?:view|see|assist)\b)",
    re.I,
)

_ABBREVIATIONS = {
    "e.g", "i.e", "etc", "vs", "mr", "mrs", "ms", "dr", "st", "no", "approx", "ca", "cf", "inc", "jr", "sr", "fig",
    "mt", "ft", "in", "cm", "mm", "km", "lb", "lbs", "oz", "sp", "spp", "var", "u.s", "u.k",
}  # fmt: skip
_SENTENCE_END_RE = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s+[\"'“‘(\[]?[A-Z0-9])")

_EN_WORDS = frozenset(
    "the a an is are was were of with and in on to has have its it this that which for as by at from or be "
    "can often usually typically may their they there".split()
)
_FOREIGN_WORDS = frozenset(
    # Spanish / Portuguese
    "el los las es una y del con por para que su sus tiene son muy um uma os com não é está como pelo "
    # French
    "le les est une et des du avec dans sur sont il elle pour au aux ce cette qui très "
    # German
    "der die das ist und mit ein eine einen nicht sind sich auf dem den des zu hat wird oder auch "
    # Italian
    "il di della delle è sono gli nella ha"
    # Dutch
    " het een van zijn niet met heeft".split()
)
_WORD_RE = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.U)


# --- helpers -------------------------------------------------------------------------------------------------------


def normalize_key(text: str) -> str:
    """Key for duplicate detection: case-, punctuation- and whitespace-insensitive."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def is_refusal(text: str) -> bool:
    """True if the text reads like a model declining ("I'm sorry, but I can't ...", "As an AI ...")."""
    return bool(_REFUSAL_RE.search(text))


def is_wrong_language(text: str, language: str | None = "en") -> bool:
    """True if ``text`` does not look like ``language`` (only ``"en"`` is checked; see the module doc)."""
    if language is None or language.lower() not in ("en", "english"):
        return False
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return False
    latin = sum(1 for ch in letters if ord(ch) < 0x250)
    if latin / len(letters) < 0.5:
        return True
    words = [w.lower() for w in _WORD_RE.findall(text)]
    en = sum(w in _EN_WORDS for w in words)
    foreign = sum(w in _FOREIGN_WORDS and w not in _EN_WORDS for w in words)
    return foreign >= 2 and foreign > en


def _strip_quotes(text: str) -> str:
    text = text.strip()
    for _ in range(2):
        if len(text) >= 2 and text[0] in _QUOTE_PAIRS and text[-1] == _QUOTE_PAIRS[text[0]]:
            inner = text[1:-1].strip()
            # Do not strip 'quoted' words inside, e.g. "The 'cat' and the 'dog'" - only a whole-text quote.
            if text[0] not in inner:
                text = inner
                continue
        break
    # A quote closed before the final period: "A fluffy cat". -> A fluffy cat.
    m = re.fullmatch(r"([\"“])(.+?)([\"”])([.!?]?)", text)
    if m and m.group(1) not in m.group(2):
        text = m.group(2) + m.group(4)
    return text.strip()


def _clean_inline(text: str) -> str:
    text = _HTML_RE.sub(" ", text)
    text = _LINK_RE.sub(r"\1", text)
    text = _BOLD_RE.sub(r"\2", text)
    text = _STRIKE_RE.sub(r"\1", text)
    text = _ITALIC_RE.sub(lambda m: m.group(1) or m.group(2) or "", text)
    text = _CODE_RE.sub(r"\1", text)
    text = _CITATION_RE.sub("", text)
    text = text.replace("**", "").replace("__", "")
    return " ".join(text.split())


def _strip_markers(line: str) -> str:
    for _ in range(3):  # "- 1. **text**" has two markers
        new = _MARKER_RE.sub("", line, count=1)
        if new == line:
            break
        line = new
    return line


def split_sentences(text: str) -> list[str]:
    """Split a paragraph at sentence ends (., !, ?, … followed by a capital or digit), keeping abbreviations."""
    out, start = [], 0
    for m in _SENTENCE_END_RE.finditer(text):
        before = text[start : m.start()].split()
        last = before[-1].lower().rstrip(".") if before else ""
        # "e.g. The", "Dr. Smith", a single initial "J. Smith"
        if m.group(0).startswith(".") and (last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())):
            continue
        out.append(text[start : m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return [s for s in out if s]


def _json_items(text: str) -> list[str] | None:
    """Strings of a JSON answer (a list, or a dict of lists), or None if the text is not JSON."""
    t = text.strip()
    if not t or t[0] not in "[{":
        return None
    try:
        data = json.loads(t)
    except ValueError:
        return None
    items: list[str] = []

    def walk(x):
        if isinstance(x, str):
            items.append(x)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)

    walk(data)
    return items


def _lines(text: str) -> list[str]:
    """The answer's content lines: think blocks, code fences, headers, rules and quotes removed."""
    text = _THINK_RE.sub("\n", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _THINK_OPEN_RE.sub("\n", text)  # an unclosed <think>: the model stopped while thinking
    text = re.sub(r"</?(?:think|thinking|reasoning)>", "\n", text, flags=re.I)
    body = "\n".join(line for line in text.split("\n") if not _FENCE_RE.match(line))
    items = _json_items(body)
    if items is not None:
        return items
    out = []
    for raw in body.split("\n"):
        if _HEADER_RE.match(raw) or _RULE_RE.match(raw) or _TABLE_SEP_RE.match(raw):
            continue
        line = _QUOTE_BLOCK_RE.sub("", raw).strip()
        if line.startswith("|") and line.endswith("|"):  # a markdown table row: keep its cells as text
            line = " ".join(c.strip() for c in line.strip("|").split("|") if c.strip())
        if line:
            out.append(line)
    return out


def _is_preamble(line: str) -> bool:
    """ "Here are 5 descriptions of a cat:" / "Below are some sentences." (but not "Here is a cat on a sofa.")."""
    if not _PREAMBLE_LINE_RE.match(line):
        return False
    return line.rstrip().endswith(":") or (len(line.split()) <= 15 and bool(_PREAMBLE_TOPIC_RE.search(line)))


# --- public ------------------------------------------------------------------------------------------------------


def parse_sentences(
    text: str | None,
    *,
    split: bool = True,
    min_words: int = 3,
    min_chars: int = 10,
    max_chars: int = 300,
    language: str | None = "en",
    dedupe: bool = True,
) -> list[str]:
    """Clean sentences from a model's answer.

    Parameters
    ----------
    text : str or None
        The raw answer.
    split : bool
        Split paragraphs into sentences (lists are always split into items).
    min_words, min_chars : int
        Drop fragments shorter than this (e.g. ``"S."``, ``"Fur"``).
    max_chars : int
        Drop sentences longer than this (run-on text, leaked prompts).
    language : str or None
        Expected language; ``"en"`` drops text in other languages (heuristic, see module doc); None keeps all.
    dedupe : bool
        Drop repeats, ignoring case, punctuation and spacing.

    Returns
    -------
    list of str
        In order of appearance.

    Examples
    --------
    >>> parse_sentences("Sure! Here are some:\\n1. **A cat** has fur.\\n2. A cat has fur!\\n- Cats have whiskers.")
    ['A cat has fur.', 'Cats have whiskers.']
    """
    if not text or not text.strip():
        return []
    out: list[str] = []
    seen: set[str] = set()
    for line in _lines(text):
        line = _clean_inline(_strip_markers(line))
        line = _strip_quotes(_strip_markers(line))
        if not line:
            continue
        if line.endswith(":") and not re.search(r"[.!?]\s", line):  # a heading or a preamble
            continue
        if _is_preamble(line):
            continue
        pieces = split_sentences(line) if split else [line]
        for piece in pieces:
            s = _strip_quotes(_META_LABEL_RE.sub("", _strip_quotes(piece)))
            s = " ".join(s.split())
            if not s or not any(ch.isalpha() for ch in s):
                continue
            if _AFFIRM_RE.match(s) or _CLOSING_RE.match(s) or is_refusal(s):
                continue
            if _is_preamble(s):
                continue
            if s.endswith(":"):
                continue
            if len(s.split()) < min_words or len(s) < min_chars or len(s) > max_chars:
                continue
            if is_wrong_language(s, language):
                continue
            key = normalize_key(s)
            if dedupe:
                if key in seen:
                    continue
                seen.add(key)
            out.append(s)
    return out


def clean_caption(text: str | None, max_chars: int = 400, language: str | None = None) -> str:
    """One caption from a model's answer: preambles, markdown, refusals and think blocks removed, sentences joined.

    Returns ``""`` when nothing usable is left (e.g. a refusal). Longer answers are cut at a word
    boundary near ``max_chars``.
    """
    parts = parse_sentences(text, min_words=1, min_chars=2, max_chars=10_000, language=language)
    caption = " ".join(parts)
    if len(caption) > max_chars:
        caption = caption[:max_chars].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return caption


def clean_imported(
    sentences: Iterable[str], min_words: int = 2, reasons: dict[str, int] | None = None
) -> tuple[list[str], int]:
    """Light cleaning for imported descriptions: trim, unquote, drop empties, fragments and repeats.

    Unlike :func:`parse_sentences` it neither splits nor drops by language, so a file's
    sentences come in as they are written.

    Parameters
    ----------
    reasons : dict, optional
        Counts per reason for a dropped line are added here: ``empty`` (blank or no letters),
        ``fragment`` (fewer than ``min_words`` words), ``duplicate`` (repeats an earlier line, ignoring
        case, spacing and quotes).

    Returns
    -------
    (sentences, dropped)
    """
    out, seen, dropped = [], set(), 0
    for raw in sentences:
        s = _strip_quotes(" ".join(str(raw).split())) if raw is not None else ""
        key = normalize_key(s)
        if not s or not any(ch.isalpha() for ch in s):
            why = "empty"
        elif len(s.split()) < min_words:
            why = "fragment"
        elif key in seen:
            why = "duplicate"
        else:
            seen.add(key)
            out.append(s)
            continue
        dropped += 1
        if reasons is not None:
            reasons[why] = reasons.get(why, 0) + 1
    return out, dropped
