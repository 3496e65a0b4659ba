"""CLIP's byte-level BPE tokenizer, without importing torch or open_clip.

Read + tokenize tasks run in their own processes, several per GPU. Importing
open_clip for its tokenizer pulls in torch, torchvision and timm (seconds of
CPU and hundreds of MB per process) while the model actors start up beside
them. For the models open_clip itself gives its plain `SimpleTokenizer` (the
OpenAI CLIP vocabulary, lower-case cleaning, truncation), this module gives
the same token ids from open_clip's own vocabulary file, with numpy. Any other
tokenizer (Hugging Face, SigLIP, custom options) comes from open_clip.
"""

from __future__ import annotations

import gzip
import html
from functools import cache
from itertools import pairwise
from pathlib import Path

import numpy as np

from pipeline.models.architectures import architecture, open_clip_folders

VOCABULARY = "bpe_simple_vocab_16e6.txt.gz"
SPECIAL = ("<start_of_text>", "<end_of_text>")
# The vocabulary file's merges that CLIP uses: 49,152 tokens less 256 bytes and 2 specials.
MERGES = 49152 - 256 - 2
WORD_END = "</w>"
DEFAULT_CONTEXT = 77
# Words whose ids are remembered: web captions bring new words for ever, and a
# reader process lives for the whole job.
CACHED_WORDS = 100_000


def _byte_symbols() -> dict[int, str]:
    """One printable character per byte value: printable Latin-1 bytes stand for
    themselves, the rest for characters from U+0100 on. In the vocabulary's order:
    the printable bytes first, then the others."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    others = [value for value in range(256) if value not in printable]
    return {value: chr(value) for value in printable} | {
        value: chr(256 + n) for n, value in enumerate(others)
    }


class ClipBpe:
    """Token ids for a list of captions, as open_clip's SimpleTokenizer gives them."""

    def __init__(
        self, vocabulary: Path, *, context_length: int, cached_words: int = CACHED_WORDS
    ) -> None:
        import regex

        with gzip.open(vocabulary, "rt", encoding="utf-8") as file:
            lines = file.read().split("\n")[1 : MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        symbols = _byte_symbols()
        self.byte_symbols = [symbols[value] for value in range(256)]
        ordered = [*symbols.values()] + [s + WORD_END for s in symbols.values()]
        ordered += ["".join(pair) for pair in merges] + list(SPECIAL)
        self.ids = {token: index for index, token in enumerate(ordered)}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.start, self.end = self.ids[SPECIAL[0]], self.ids[SPECIAL[1]]
        self.context_length = context_length
        self.cached_words = cached_words
        self.words: dict[str, list[int]] = {}
        self.pattern = regex.compile(
            "|".join(SPECIAL) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )

    def __call__(self, texts: list[str]) -> np.ndarray:
        """(len(texts), context_length) int32 ids: start, the text's, end, zeros; a text
        too long is cut and still ends with the end token."""
        out = np.zeros((len(texts), self.context_length), np.int32)
        for row, text in enumerate(texts):
            ids = [self.start, *self.encode(text), self.end]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.end
            out[row, : len(ids)] = ids
        return out

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in self.pattern.findall(clean(text)):
            symbols = "".join(self.byte_symbols[b] for b in word.encode("utf-8"))
            if symbols in SPECIAL:
                ids.append(self.ids[symbols])
                continue
            if symbols not in self.words:
                if len(self.words) >= self.cached_words:
                    self.words.clear()
                self.words[symbols] = [self.ids[token] for token in self.merge(symbols)]
            ids += self.words[symbols]
        return ids

    def merge(self, word: str) -> list[str]:
        """The word's symbols (the last marked as the word's end), merged pair by pair,
        lowest-ranked pair first, every occurrence of it left to right."""
        symbols = [*word[:-1], word[-1] + WORD_END]
        while len(symbols) > 1:
            best = min(pairwise(symbols), key=lambda pair: self.ranks.get(pair, len(self.ranks)))
            if best not in self.ranks:
                break
            merged, index = [], 0
            while index < len(symbols):
                if index + 1 < len(symbols) and (symbols[index], symbols[index + 1]) == best:
                    merged.append(symbols[index] + symbols[index + 1])
                    index += 2
                else:
                    merged.append(symbols[index])
                    index += 1
            symbols = merged
        return symbols


def clean(text: str) -> str:
    """open_clip's 'lower' cleaning: ftfy's repairs, HTML entities (twice), runs of
    whitespace to one space, lower case."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


def vocabulary_file() -> Path | None:
    """open_clip's BPE vocabulary, found without importing open_clip."""
    found = [folder / VOCABULARY for folder in open_clip_folders()]
    return next((path for path in found if path.is_file()), None)


@cache
def plain_clip_bpe(name: str) -> ClipBpe | None:
    """The tokenizer for an open_clip model name whose tokenizer is the plain CLIP one,
    or None where open_clip would choose another (or this cannot tell without it)."""
    config = architecture(name)
    vocabulary = vocabulary_file()
    if config is None or vocabulary is None or "siglip" in name.lower():
        return None
    text = config.get("text_cfg", {})
    if text.get("hf_tokenizer_name") or text.get("tokenizer_kwargs"):
        return None
    return ClipBpe(vocabulary, context_length=text.get("context_length", DEFAULT_CONTEXT))
