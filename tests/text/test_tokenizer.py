"""The CLIP tokenizer (samjax.text, on `tokenizers`): ids identical to OpenAI's SimpleTokenizer (clip-anytorch)
and to transformers' CLIPTokenizer built from the same vocabulary, on 233 varied strings (tests/text/corpus.py).

transformers' fast CLIPTokenizer has no ftfy / HTML-unescape step and matches "<|endoftext|>" anywhere as an added
token, where OpenAI's regex sees it only at a token boundary; samjax follows OpenAI. The comparison with transformers
therefore gives it the ftfy + HTML-cleaned text, and skips the strings where a special-token string touches other
punctuation or only lower-casing spells it (counted, and checked to be few).
"""

from __future__ import annotations

import html
import json

import ftfy
import numpy as np
import pytest

from samjax.text import ClipTokenizer, clean
from tests.text.corpus import CORPUS
from tests.text.reference import openai_simple_tokenizer

CONTEXT = 77


@pytest.fixture(scope="module")
def reference():
    return openai_simple_tokenizer().SimpleTokenizer()


@pytest.fixture(scope="module")
def ours():
    return ClipTokenizer.from_clip_package()


def clip_tokenize(ref, texts, context_length=CONTEXT):
    """clip.tokenize(texts, context_length, truncate=True) (clip/clip.py, which the tests cannot import), as a
    numpy array."""
    sot, eot = ref.encoder["<|startoftext|>"], ref.encoder["<|endoftext|>"]
    out = np.zeros((len(texts), context_length), np.int64)
    for i, text in enumerate(texts):
        tokens = [sot] + ref.encode(text) + [eot]
        if len(tokens) > context_length:
            tokens = tokens[:context_length]
            tokens[-1] = eot
        out[i, :len(tokens)] = tokens
    return out


def test_corpus_is_varied():
    assert len(CORPUS) >= 200
    assert any(len(t) > 400 for t in CORPUS) and any(not t.strip() for t in CORPUS)
    assert any(ord(c) > 0x1F000 for t in CORPUS for c in t)  # emoji
    assert any(clean(t) != " ".join(t.split()).lower() for t in CORPUS)  # ftfy / HTML do something somewhere


@pytest.mark.torch
def test_ids_equal_openai_simple_tokenizer(ours, reference):
    for text in CORPUS:
        assert ours.encode(text) == reference.encode(text), repr(text)
    ids = ours(CORPUS)
    assert ids.dtype == np.int32 and ids.shape == (len(CORPUS), CONTEXT)
    np.testing.assert_array_equal(ids, clip_tokenize(reference, CORPUS))
    truncated = [t for t in CORPUS if len(reference.encode(t)) + 2 > CONTEXT]
    assert len(truncated) >= 5 and (ours(truncated)[:, -1] == ours.eot_id).all()
    # OWL-ViT's 16-token queries
    np.testing.assert_array_equal(ours(CORPUS, context_length=16), clip_tokenize(reference, CORPUS, 16))


def _special_string_differs(text: str) -> bool:
    """A special-token string that OpenAI and transformers read differently: one next to other non-space,
    non-letter, non-digit characters (OpenAI's regex then reads it as punctuation, transformers' added-token
    matching still finds it), or one that only lower-casing makes (transformers matches added tokens before)."""
    t = clean(text)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        if t.count(special) != text.count(special):
            return True
        start = t.find(special)
        while start >= 0:
            before, after = t[start - 1:start], t[start + len(special):start + len(special) + 1]
            if any(c and not c.isspace() and not c.isalnum() for c in (before, after)):
                return True
            start = t.find(special, start + 1)
    return False


@pytest.mark.torch
def test_ids_equal_transformers_clip_tokenizer(ours, reference, tmp_path):
    transformers = pytest.importorskip("transformers")
    merges = sorted(reference.bpe_ranks, key=reference.bpe_ranks.get)
    hf = transformers.CLIPTokenizer(vocab=dict(reference.encoder), merges=list(merges))  # pads with EOT
    texts = [t for t in CORPUS if not _special_string_differs(t)]
    assert len(CORPUS) - len(texts) <= 5
    prepared = [html.unescape(html.unescape(ftfy.fix_text(t))) for t in texts]
    assert sum(p != t for p, t in zip(prepared, texts)) >= 5  # the cases only CLIP's own clean-up handles
    enc = hf(prepared, padding="max_length", max_length=CONTEXT, truncation=True)
    ref_ids = np.where(np.array(enc["attention_mask"]) == 1, np.array(enc["input_ids"]), 0)  # samjax pads with 0
    np.testing.assert_array_equal(ours(texts), ref_ids)
    # the checkpoint formats transformers writes: tokenizer.json, and vocab.json + merges.txt
    hf.save_pretrained(tmp_path / "fast")
    np.testing.assert_array_equal(ClipTokenizer.from_pretrained(tmp_path / "fast")(CORPUS), ours(CORPUS))
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "vocab.json").write_text(json.dumps(reference.encoder), encoding="utf-8")
    (slow / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                     encoding="utf-8")
    (slow / "config.json").write_text(json.dumps({"model_type": "owlvit", "text_config": {}}))
    owl = ClipTokenizer.from_pretrained(slow)
    assert owl.context_length == 16  # OWL-ViT's default text length, read from config.json
    np.testing.assert_array_equal(owl(CORPUS), clip_tokenize(reference, CORPUS, 16))


def test_api_details(ours):
    assert ours.vocab_size == 49408 and (ours.sot_id, ours.eot_id) == (49406, 49407)
    np.testing.assert_array_equal(ours("")[0, :3], [49406, 49407, 0])
    assert ours("a photo of a cat").shape == (1, CONTEXT)
    assert ours.decode(ours(["A Photo of a CAT!"])[0]) == "a photo of a cat !"
    assert (np.argmax(ours(CORPUS), -1) == (ours(CORPUS) == ours.eot_id).argmax(-1)).all()  # CLIP's EOT pooling
    with pytest.raises(ValueError, match="more than the context length 77"):
        ours("word " * 100, truncate=False)
    with pytest.raises(ValueError, match="special tokens"):
        ClipTokenizer({"a": 0}, [])
