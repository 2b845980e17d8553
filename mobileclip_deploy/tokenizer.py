"""CLIP byte-pair-encoding tokenizer, id-for-id equal to open_clip's default (`open_clip.tokenize`).

Every MobileCLIP text encoder was trained on these ids, so any deviation (cleaning, regex, special
tokens, truncation) silently degrades accuracy. The vocabulary ships as package data; nothing is
downloaded. `write_assets` exports the same vocabulary as plain files for on-device tokenizers.
"""

from __future__ import annotations

import functools
import gzip
import html
import json
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import ftfy
import regex
import torch

from .atomic import write_text

__all__ = ["ClipTokenizer", "get_tokenizer", "tokenize", "SOT", "EOT", "CONTEXT_LENGTH"]

VOCAB_RESOURCE = "bpe_simple_vocab_16e6.txt.gz"
SOT_TOKEN = "<start_of_text>"  # open_clip's spelling (OpenAI's original is "<|startoftext|>")
EOT_TOKEN = "<end_of_text>"
SOT = 49406
EOT = 49407
CONTEXT_LENGTH = 77
# The vocabulary file lists more merges than CLIP uses: 256 bytes + 256 byte</w> + merges + 2 specials = 49408.
NUM_MERGES = 49152 - 256 - 2


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable unicode character, so BPE never sees whitespace or control bytes.

    Printable Latin-1 bytes map to themselves; the rest are shifted to code points from 256 upwards.
    The insertion order (printable bytes first) is the order of the first 256 vocabulary ids.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _clean(text: str) -> str:
    """Repair mojibake, unescape HTML (twice: some captions are double-escaped), collapse whitespace, lowercase."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


def _load_merges() -> list[tuple[str, str]]:
    data = resources.files("mobileclip_deploy").joinpath("data").joinpath(VOCAB_RESOURCE).read_bytes()
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    # Line 0 is a "#version" header.
    return [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]


class ClipTokenizer:
    """Byte-level BPE over words split by CLIP's regex; words end with a `</w>` marker."""

    def __init__(self, merges: Sequence[tuple[str, str]] | None = None) -> None:
        merges = list(merges) if merges is not None else _load_merges()
        if len(merges) != NUM_MERGES:
            raise ValueError(f"expected {NUM_MERGES} BPE merges, got {len(merges)}")
        self.merges = merges
        self.byte_encoder = bytes_to_unicode()
        base = list(self.byte_encoder.values())
        vocab = base + [t + "</w>" for t in base] + ["".join(m) for m in merges] + [SOT_TOKEN, EOT_TOKEN]
        self.encoder: dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self.decoder: dict[int, str] = dict(enumerate(vocab))
        self.bpe_ranks: dict[tuple[str, str], int] = {pair: i for i, pair in enumerate(merges)}
        # Specials are matched whole by the regex and must not be split by BPE.
        self.cache: dict[str, tuple[str, ...]] = {SOT_TOKEN: (SOT_TOKEN,), EOT_TOKEN: (EOT_TOKEN,)}
        self.pattern = regex.compile(
            rf"{regex.escape(SOT_TOKEN)}|{regex.escape(EOT_TOKEN)}"
            r"|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
            regex.IGNORECASE,
        )
        self.sot_token_id = self.encoder[SOT_TOKEN]
        self.eot_token_id = self.encoder[EOT_TOKEN]

    @classmethod
    def from_merges_file(cls, path: str | Path) -> ClipTokenizer:
        """Build from a plain `merges.txt` as written by `write_assets` (one "a b" per line)."""
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return cls([tuple(line.split(" ")) for line in lines if line])

    def bpe(self, token: str) -> tuple[str, ...]:
        """Merge the characters of one word greedily by merge rank (lowest rank first)."""
        cached = self.cache.get(token)
        if cached is not None:
            return cached
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, NUM_MERGES))
            if best not in self.bpe_ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        result = tuple(word)
        self.cache[token] = result
        return result

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without start/end tokens or padding."""
        ids: list[int] = []
        for piece in self.pattern.findall(_clean(text)):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(mapped))
        return ids

    def __call__(self, texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
        """N×context_length int64 ids: SOT, tokens, EOT, zero padding; too-long texts keep EOT in the last slot."""
        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > context_length:
                ids = ids[:context_length]
                ids[-1] = self.eot_token_id
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def write_assets(self, folder: str | Path) -> dict[str, str]:
        """Write `merges.txt` and `vocab.json` for app-side tokenizers; return their paths relative to `folder`."""
        folder = Path(folder)
        write_text(folder / "merges.txt", "".join(f"{a} {b}\n" for a, b in self.merges), replace=True)
        write_text(folder / "vocab.json", json.dumps(self.encoder, ensure_ascii=False, indent=0) + "\n", replace=True)
        return {"merges": "merges.txt", "vocab": "vocab.json"}


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> ClipTokenizer:
    """The shared tokenizer built from the packaged vocabulary (loaded once, on first use)."""
    return ClipTokenizer()


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """Tokenize like `open_clip.tokenize`: a LongTensor of shape N×context_length."""
    return get_tokenizer()(texts, context_length)
