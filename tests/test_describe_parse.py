"""parse_sentences / clean_caption over messy, realistic model outputs."""

from __future__ import annotations

import pytest

from labeler.describe.parse import (
    clean_caption,
    clean_imported,
    is_refusal,
    is_wrong_language,
    normalize_key,
    parse_sentences,
    split_sentences,
)

# (name, raw answer, expected sentences) — shapes seen from GPT-3.5/4, Llama 3, Mistral, Qwen, Gemma, DeepSeek-R1.
CASES = [
    (
        "numbered with preamble and closing",
        "Sure! Here are 5 sentences describing a tabby cat:\n\n"
        "1. A tabby cat has a coat with distinctive stripes.\n"
        "2. Its fur often shows an M-shaped marking on the forehead.\n"
        "3. Tabby cats come in brown, grey and orange.\n\n"
        "I hope this helps!",
        [
            "A tabby cat has a coat with distinctive stripes.",
            "Its fur often shows an M-shaped marking on the forehead.",
            "Tabby cats come in brown, grey and orange.",
        ],
    ),
    (
        "paren numbering and (n)",
        "1) A fire truck is bright red.\n(2) A fire truck carries long ladders on top.\n3: Fire trucks have sirens.",
        ["A fire truck is bright red.", "A fire truck carries long ladders on top.", "Fire trucks have sirens."],
    ),
    (
        "bullets of several kinds",
        "- A zebra has black and white stripes.\n* Zebras have a short, upright mane.\n"
        "• A zebra's muzzle is dark.\n– Zebras graze in grassy savannas.",
        [
            "A zebra has black and white stripes.",
            "Zebras have a short, upright mane.",
            "A zebra's muzzle is dark.",
            "Zebras graze in grassy savannas.",
        ],
    ),
    (
        "markdown: headers, bold labels, italics, code fence",
        "## Visual features of a golden retriever\n\n```\n"
        "**Coat:** A golden retriever has a dense, wavy *golden* coat.\n"
        "**Build:** A golden retriever is a large, sturdy dog.\n```\n---\n",
        [
            "Coat: A golden retriever has a dense, wavy golden coat.",
            "Build: A golden retriever is a large, sturdy dog.",
        ],
    ),
    (
        "quoted lines and a caption label",
        '"A photo of an owl perched on a branch at night."\n'
        "“An owl has large, forward-facing eyes.”\n"
        "Caption: An owl with mottled brown feathers.",
        [
            "A photo of an owl perched on a branch at night.",
            "An owl has large, forward-facing eyes.",
            "An owl with mottled brown feathers.",
        ],
    ),
    (
        "duplicates differing in case and punctuation",
        "A koala is grey and fluffy.\na koala is grey and fluffy!\nA KOALA IS GREY AND FLUFFY\n"
        "A koala has a large black nose.",
        ["A koala is grey and fluffy.", "A koala has a large black nose."],
    ),
    (
        "paragraph split into sentences, abbreviations kept",
        "A tram runs on rails in city streets. It is powered by overhead wires, e.g. a pantograph on the roof. "
        "Trams are often painted in bright colours!",
        [
            "A tram runs on rails in city streets.",
            "It is powered by overhead wires, e.g. a pantograph on the roof.",
            "Trams are often painted in bright colours!",
        ],
    ),
    (
        "full refusal",
        "I'm sorry, but I can't help with that request. As an AI language model, I cannot see images.",
        [],
    ),
    (
        "partial refusal keeps the description",
        "I apologize, I cannot browse the internet. However, a lighthouse is a tall tower with a bright light on top.",
        ["However, a lighthouse is a tall tower with a bright light on top."],
    ),
    (
        "thinking block of a reasoning model",
        "<think>\nThe user wants a description of a tulip. Let me think about petals.\n</think>\n\n"
        "A tulip has a cup-shaped flower on a long stem.\nTulips come in red, yellow and pink.",
        ["A tulip has a cup-shaped flower on a long stem.", "Tulips come in red, yellow and pink."],
    ),
    (
        "wrong language lines dropped",
        "A panda is black and white.\n熊猫是黑白相间的动物。\nEl panda es un oso de color blanco y negro.\n"
        "Der Panda ist ein Bär mit schwarzen Augenflecken.\nA panda has black patches around its eyes.",
        ["A panda is black and white.", "A panda has black patches around its eyes."],
    ),
    (
        "too short and too long fragments",
        "S.\n.\nFur\nA hedgehog is covered in short, sharp spines.\n" + "A hedgehog " + "is very spiny " * 40 + ".",
        ["A hedgehog is covered in short, sharp spines."],
    ),
    (
        "JSON array answer inside a fence",
        '```json\n["A canoe is a narrow, light boat.", "A canoe is pointed at both ends."]\n```',
        ["A canoe is a narrow, light boat.", "A canoe is pointed at both ends."],
    ),
    (
        "CuPL style completion with heading line and empty lines",
        "Answer:\n\n\n   A volcano is a cone-shaped mountain with a crater at the top.   \n\n\n"
        "Description 2: Volcanoes may emit smoke and glowing lava.",
        ["A volcano is a cone-shaped mountain with a crater at the top.", "Volcanoes may emit smoke and glowing lava."],
    ),
    (
        "nested list, bold, link and citation",
        "Here is what a harp looks like:\n  - 1. **A harp** has a triangular wooden frame [1].\n"
        "  - 2. A harp has many [strings](https://en.wikipedia.org/wiki/Harp) stretched vertically.\n"
        "Let me know if you need more details.",
        ["A harp has a triangular wooden frame.", "A harp has many strings stretched vertically."],
    ),
    (
        "numbers inside sentences are not list markers",
        "3.5 cm long ears are typical of a fennec fox.\n2. A fennec fox has sandy fur.",
        ["3.5 cm long ears are typical of a fennec fox.", "A fennec fox has sandy fur."],
    ),
    (
        "Windows newlines, letter markers and 'Certainly!'",
        "Certainly!\r\na) A bonsai is a miniature tree in a shallow pot.\r\nb) A bonsai has a thick, gnarled trunk.",
        ["A bonsai is a miniature tree in a shallow pot.", "A bonsai has a thick, gnarled trunk."],
    ),
]


@pytest.mark.parametrize("name,raw,expected", CASES, ids=[c[0] for c in CASES])
def test_parse_messy_outputs(name, raw, expected):
    assert parse_sentences(raw) == expected


def test_parse_empty_and_none():
    assert parse_sentences(None) == []
    assert parse_sentences("   \n\n  ") == []


def test_parse_options():
    raw = "A koala is grey. A koala is grey."
    assert parse_sentences(raw, dedupe=False) == ["A koala is grey.", "A koala is grey."]
    assert parse_sentences("Un chat est un animal avec une queue et des moustaches.", language=None) == [
        "Un chat est un animal avec une queue et des moustaches."
    ]
    assert parse_sentences("Cats purr.", min_words=1, min_chars=1) == ["Cats purr."]
    assert parse_sentences("A cat. A dog sits.", split=False, min_words=1) == ["A cat. A dog sits."]


def test_helpers():
    assert normalize_key("  A Cat,  has FUR! ") == normalize_key("a cat has fur")
    assert is_refusal("As an AI, I don't have the ability to see images.")
    assert not is_refusal("A sorrel horse has a reddish coat.")
    assert is_wrong_language("Это кошка с длинным хвостом.")
    assert is_wrong_language("Le chat est un animal avec une queue.")
    assert not is_wrong_language("The cat has a long tail and a pink nose.")
    assert not is_wrong_language("A café in Paris.")
    assert split_sentences("Dr. Smith owns a cat. It is black.") == ["Dr. Smith owns a cat.", "It is black."]


def test_clean_caption():
    assert clean_caption("Sure! Here is a caption:\n\n**A small brown dog running on grass.**") == (
        "A small brown dog running on grass."
    )
    assert clean_caption("I'm sorry, I can't describe this image.") == ""
    assert clean_caption("A cat.\nIt sleeps.") == "A cat. It sleeps."
    long = clean_caption("A dog " + "runs fast " * 100, max_chars=50)
    assert len(long) <= 51 and long.endswith("…")


def test_clean_imported_keeps_sentences_as_written():
    raw = ["  A cat has fur.  ", "a cat has fur", ".", "S.", "", "Un chat noir.", "Two. Parts."]
    out, dropped = clean_imported(raw)
    assert out == ["A cat has fur.", "Un chat noir.", "Two. Parts."]
    assert dropped == 4


def test_descriptive_sentences_that_look_like_preambles_are_kept():
    raw = (
        "These are large birds with long necks.\nHere is a heron standing in shallow water.\n"
        "Note the long, dagger-like beak of a heron.\nHere are some descriptions of a heron.\n"
        "Okay, here you go.\nNote: herons vary by species."
    )
    assert parse_sentences(raw) == [
        "These are large birds with long necks.",
        "Here is a heron standing in shallow water.",
        "Note the long, dagger-like beak of a heron.",
    ]
