"""Test strings for the CLIP tokenizer: prompts, punctuation, contractions, numbers, many scripts, emoji, HTML
entities, mojibake (ftfy's job), odd whitespace, special-token strings, and long texts that need truncation."""

from __future__ import annotations

import numpy as np

HANDWRITTEN = [
    "a photo of a cat", "a photo of a dog", "A PHOTO OF A CAT", "dog, red car", "the dog", "a red car.",
    "", " ", "   \t\n ", "a", "I", "!", "?!?!", "...", "—", "a photo of a cat, a photo of a dog",
    "It's a dog's life; they're here, we've won, I'm sure, you'll see, he'd go.", "DON'T SHOUT, IT'S LOUD",
    "rock'n'roll", "'quoted' \"double\" `backtick` «guillemets» „low“ ‘curly’ “curly”",
    "3.14159", "2024-06-01 12:30:45", "10,000,000 people", "$100.99 €50 £20 ¥1000", "1st 2nd 3rd 4th",
    "100% sure", "#hashtag @mention", "email@example.com", "https://example.com/path?q=1&r=2#frag",
    "C:\\Users\\name\\file.txt", "snake_case and camelCase and kebab-case", "x^2 + y^2 = z^2", "a*b/c-d+e=f",
    "(parentheses) [brackets] {braces} <angles>", "tab\tseparated\tvalues", "line\nbreaks\r\nhere",
    "multiple     spaces   between", "  leading and trailing  ", "naïve café résumé coöperate",
    "Ångström Øresund Æsir ß straße", "İstanbul ıi", "Ελληνικά γράμματα", "Русский текст, кошка и собака",
    "中文：一只猫和一只狗", "日本語のテキスト、猫と犬", "한국어 텍스트 고양이", "עברית טקסט", "العربية نص قطة",
    "हिन्दी पाठ बिल्ली", "ไทย ข้อความ แมว", "tiếng Việt con mèo", "Ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ １２３",
    "😀 😃 😄 😁", "a dog 🐶 and a cat 🐱", "👍🏽 thumbs up", "👨‍👩‍👧‍👦 family", "🇫🇷 flag", "❤️ heart",
    "emoji😀glued", "✓ ✗ ★ ☆ ♠ ♣ ♥ ♦", "→ ← ↑ ↓ ⇒", "∑ ∫ √ ∞ ≈ ≠ ≤ ≥", "½ ¼ ¾ ² ³", "™ © ®",
    "&amp; &lt;tag&gt; &quot;quoted&quot; &#39;apos&#39;", "Tom &amp;amp; Jerry", "caf&eacute; &copy; 2024",
    "&nbsp;non&nbsp;breaking", "fish &amp; chips", "Ã©tÃ© Ã  Paris", "The Mona Lisa doesnâ€™t have eyebrows.",
    "Ã¼ber", "soft\u00adhyphen", "zero\u200bwidth", "non\u00a0breaking\u00a0space", "ligature ﬁ ﬂ",
    "combining e\u0301 vs é", "control\x07char", "<|startoftext|>", "<|endoftext|>",
    "a photo <|endoftext|> of a cat", "<<|endoftext|>>", "x<|startoftext|>y", "<|ENDOFTEXT|>",
    "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "abababababababababab", "0123456789" * 3,
    "The quick brown fox jumps over the lazy dog.", "the cat sat on the mat", "a bowl of fruit on a table",
    "a person riding a horse on the beach at sunset", "two zebras grazing in a field",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "tennis racket", "wine glass",
    "hot dog", "potted plant", "dining table", "cell phone", "teddy bear", "hair drier", "toothbrush",
]


def generated(n: int, seed: int = 0) -> list[str]:
    """`n` strings of random words, numbers, punctuation, unicode and emoji joined by random whitespace."""
    rng = np.random.default_rng(seed)
    words = ["photo", "cat", "dog", "car", "Tree", "house", "RED", "blue", "green", "über", "café", "猫", "犬",
             "собака", "γάτα", "😀", "🐶", "👍🏽", "it's", "don't", "&amp;", "&lt;", "1", "42", "3.5", "1,000",
             "...", "!!", "?", "-", "_", "/", ":", ";", "(", ")", "[x]", "\"q\"", "'s", "#", "@", "%", "ﬁ",
             "Ã©", "e\u0301", "\u00a0", "<|endoftext|>"]
    spaces = [" ", "  ", "\t", "\n", ""]
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 14))
        out.append("".join(words[int(rng.integers(len(words)))] + spaces[int(rng.integers(len(spaces)))]
                           for _ in range(k)))
    return out


LONG = [
    " ".join(["a photo of a cat sitting on a red sofa next to a dog"] * 12),
    "word " * 200,
    "🐶" * 100,
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore "
    "magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo "
    "consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla.",
    "1 2 3 4 5 6 7 8 9 " * 10,
    "x" * 500,
]

CORPUS = HANDWRITTEN + generated(120) + LONG
