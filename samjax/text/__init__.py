"""Text prompts: CLIP's tokenizer (needs the `text` extra: tokenizers, ftfy)."""

from samjax.text.tokenizer import ClipTokenizer, clean

__all__ = ["ClipTokenizer", "clean"]
