"""CLIP's tokenizer on the `tokenizers` library: text -> (N, context) int32 token ids.

The byte-level BPE itself runs in `tokenizers` (a BPE model with CLIP's `</w>` end-of-word suffix, CLIP's
pre-tokenising regex and the byte-to-unicode map); the vocabulary and merges come from a checkpoint's
`tokenizer.json` (or `vocab.json` + `merges.txt`), or from the `bpe_simple_vocab_16e6.txt.gz` a CLIP package ships.
Before it, the text gets CLIP's own clean-up (OpenAI `clip.simple_tokenizer`): ftfy.fix_text, HTML unescaping
(twice), whitespace runs to one space, strip, lower case; transformers' fast CLIPTokenizer leaves out the first two,
so for text ftfy or HTML entities change it gives other ids than the model was trained with, this tokenizer not.
Each text becomes [<|startoftext|>, ...tokens, <|endoftext|>], truncated to `context_length` with the end-of-text
token kept last (clip.tokenize(truncate=True), HF truncation=True), padded with `pad_id` (0 as clip.tokenize and
OWL-ViT; the end-of-text token is the largest id, so `ids.argmax(-1)` finds it, as CLIP's text tower does).

Ids equal OpenAI's except for characters whose letter class differs between the Unicode tables of the `regex`
module (OpenAI's tokenizer; recent Unicode) and of `tokenizers`' Oniguruma: about 1.5k code points below U+30000,
nearly all assigned after Unicode 14 (so unknown when CLIP was trained), and U+0345. transformers' CLIPTokenizer
gives the same ids as this one there.

    tok = ClipTokenizer.from_pretrained("clip-vit-base-patch32/")     # a HF checkpoint directory
    ids = tok(["a photo of a cat", "a dog"])                          # (2, 77) int32
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

try:
    import ftfy
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
except ImportError as e:  # optional dependencies of the text prompts
    raise ImportError(f"samjax.text needs the `tokenizers` and `ftfy` packages ({e}); "
                      "pip install 'samjax[text]'") from e

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
# OpenAI CLIP's pre-tokenising pattern (clip/simple_tokenizer.py; the same in HF's CLIPTokenizer): the special
# tokens, English contractions, letter runs, single digits, runs of anything else that is not whitespace.
PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
BPE_GZ = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # OpenAI's vocabulary: 256 bytes x 2 (with </w>) + these merges + 2 specials = 49408
_WHITESPACE = re.compile(r"\s+")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, in its order (the first 512 entries of CLIP's vocabulary
    are these characters, then the same with "</w>")."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clean(text: str) -> str:
    """CLIP's text clean-up before BPE: ftfy.fix_text, HTML unescape twice, whitespace runs -> " ", strip, lower."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


class ClipTokenizer:
    """CLIP's BPE tokenizer. `vocab`: token -> id (must hold SOT and EOT); `merges`: pairs in priority order."""

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]], context_length: int = 77,
                 pad_id: int = 0):
        missing = [t for t in (SOT, EOT) if t not in vocab]
        if missing:
            raise ValueError(f"the vocabulary lacks CLIP's special tokens {missing}: not a CLIP tokenizer")
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2 (start and end tokens), got {context_length}")
        self.vocab_size = len(vocab)
        self.sot_id, self.eot_id = vocab[SOT], vocab[EOT]
        self.context_length, self.pad_id = context_length, pad_id
        self._specials = {SOT: self.sot_id, EOT: self.eot_id}
        tok = Tokenizer(models.BPE(vocab=dict(vocab), merges=[tuple(m) for m in merges], end_of_word_suffix="</w>",
                                   continuing_subword_prefix="", fuse_unk=False))
        # No normaliser (`clean` did it in Python) and no added tokens: the special strings are split off by the
        # pattern exactly where OpenAI's tokenizer sees them, and mapped to their ids in `encode`.
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tok.decoder = decoders.ByteLevel()
        self._tokenizer = tok

    # ----- constructors -----
    @classmethod
    def from_bpe_gz(cls, path: str | Path, **kwargs) -> ClipTokenizer:
        """From OpenAI's `bpe_simple_vocab_16e6.txt.gz` (merges, one pair a line after a header line)."""
        lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
        if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(f"{path} is not CLIP's BPE vocabulary ({NUM_MERGES} merges after a header line)")
        chars = list(bytes_to_unicode().values())
        tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [SOT, EOT]
        return cls({t: i for i, t in enumerate(tokens)}, merges, **kwargs)

    @classmethod
    def from_clip_package(cls, **kwargs) -> ClipTokenizer:
        """From the BPE vocabulary an installed CLIP package ships (`clip` (clip-anytorch / OpenAI) or
        `open_clip`); the package itself is not imported."""
        for name in ("clip", "open_clip"):
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):  # ValueError: a module object without a spec stands in sys.modules
                continue
            if spec is not None and spec.origin and (Path(spec.origin).parent / BPE_GZ).is_file():
                return cls.from_bpe_gz(Path(spec.origin).parent / BPE_GZ, **kwargs)
        raise FileNotFoundError(f"no installed CLIP package (clip-anytorch, open_clip_torch) ships {BPE_GZ}; give "
                                "a checkpoint's tokenizer.json (ClipTokenizer.from_pretrained) or the .gz path")

    @classmethod
    def from_tokenizer_json(cls, path: str | Path, **kwargs) -> ClipTokenizer:
        """From a HF `tokenizer.json` (its BPE model's vocab and merges; CLIP's pipeline is rebuilt around them)."""
        model = json.loads(Path(path).read_text(encoding="utf-8")).get("model", {})
        if model.get("type") != "BPE" or model.get("end_of_word_suffix") != "</w>":
            raise ValueError(f"{path} does not hold a CLIP BPE model (type BPE with end_of_word_suffix '</w>')")
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        return cls(model["vocab"], merges, **kwargs)

    @classmethod
    def from_vocab_merges(cls, vocab_json: str | Path, merges_txt: str | Path, **kwargs) -> ClipTokenizer:
        """From HF's `vocab.json` and `merges.txt` (a "#version" header line, then one pair a line)."""
        vocab = json.loads(Path(vocab_json).read_text(encoding="utf-8"))
        lines = Path(merges_txt).read_text(encoding="utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
        return cls(vocab, merges, **kwargs)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs) -> ClipTokenizer:
        """From a HF checkpoint directory: tokenizer.json, else vocab.json + merges.txt. The context length defaults
        to the config.json's text max_position_embeddings (77 for CLIP, 16 for OWL-ViT)."""
        directory = Path(directory)
        if "context_length" not in kwargs and (directory / "config.json").is_file():
            text = json.loads((directory / "config.json").read_text()).get("text_config") or {}
            if "max_position_embeddings" in text:
                kwargs["context_length"] = int(text["max_position_embeddings"])
            elif json.loads((directory / "config.json").read_text()).get("model_type") in ("owlvit", "owlv2"):
                kwargs["context_length"] = 16
        if (directory / "tokenizer.json").is_file():
            return cls.from_tokenizer_json(directory / "tokenizer.json", **kwargs)
        if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
            return cls.from_vocab_merges(directory / "vocab.json", directory / "merges.txt", **kwargs)
        raise FileNotFoundError(f"{directory} holds neither tokenizer.json nor vocab.json + merges.txt")

    @classmethod
    def for_checkpoint(cls, path: str | Path | None, **kwargs) -> ClipTokenizer:
        """The tokenizer of a CLIP checkpoint: its directory's tokenizer files (`from_pretrained`), else (a weights
        file, a directory without them, or None) the vocabulary an installed CLIP package ships (`from_clip_package`,
        OpenAI's, which every released CLIP shares). FileNotFoundError naming both where neither is found."""
        try:
            if path is None or not Path(path).is_dir():
                raise FileNotFoundError(f"{path} is no directory")
            return cls.from_pretrained(path, **kwargs)
        except FileNotFoundError as no_files:
            try:
                return cls.from_clip_package(**kwargs)
            except FileNotFoundError as e:
                raise FileNotFoundError(f"no CLIP tokenizer: {no_files}; {e}") from None

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the vocabulary and merges as `directory`/tokenizer.json (read back by `from_pretrained` and
        `from_tokenizer_json`). Returns the file's path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._tokenizer.save(str(directory / "tokenizer.json"))
        return directory / "tokenizer.json"

    # ----- encoding -----
    def encode(self, text: str) -> list[int]:
        """One text -> its BPE ids, without start/end tokens and untruncated (clip's SimpleTokenizer.encode)."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        cleaned = [clean(t) for t in texts]
        encodings = self._tokenizer.encode_batch(cleaned, add_special_tokens=False)
        out = []
        for text, enc in zip(cleaned, encodings):
            ids = list(enc.ids)
            if "<|" in text:  # rare: map words that are special-token strings to their single id
                ids = self._specials_to_ids(text, enc)
            out.append(ids)
        return out

    def _specials_to_ids(self, text: str, enc) -> list[int]:
        ids, words = [], {}
        for i, w in enumerate(enc.word_ids):
            words.setdefault(w, []).append(i)
        for w in sorted(words):
            idx = words[w]
            span = text[enc.offsets[idx[0]][0]:enc.offsets[idx[-1]][1]]
            ids += [self._specials[span]] if span in self._specials else [enc.ids[i] for i in idx]
        return ids

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None,
                 truncate: bool = True) -> np.ndarray:
        """texts -> (N, context_length) int32: [SOT, tokens..., EOT, pad...]. truncate=False raises for a text
        longer than the context instead of cutting it (keeping EOT last)."""
        if isinstance(texts, str):
            texts = [texts]
        n_ctx = context_length or self.context_length
        out = np.full((len(texts), n_ctx), self.pad_id, np.int32)
        for row, (text, ids) in enumerate(zip(texts, self.encode_batch(texts))):
            ids = [self.sot_id, *ids, self.eot_id]
            if len(ids) > n_ctx:
                if not truncate:
                    raise ValueError(f"text {text[:60]!r}... has {len(ids)} tokens, more than the context length "
                                     f"{n_ctx}")
                ids = ids[:n_ctx - 1] + [self.eot_id]
            out[row, :len(ids)] = ids
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text: the start token dropped, everything from the first end-of-text token on (padding) ignored,
        "</w>" read as a space."""
        ids = [int(i) for i in ids]
        if self.eot_id in ids:
            ids = ids[:ids.index(self.eot_id)]
        ids = [i for i in ids if i != self.sot_id]
        return self._tokenizer.decode(ids).replace("</w>", " ").strip()
