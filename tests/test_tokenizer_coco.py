"""The Java-free tokenizer equals coco-caption's PTBTokenizer (brackets, periods, quotes, dashes)."""

from __future__ import annotations

import csv
import importlib.util
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrcn import metrics
from lrcn.metrics.ptb import ptb_tokenize
from lrcn.metrics.tokenizer import tokenize_captions

HAVE_JAVA = shutil.which("java") is not None and importlib.util.find_spec("pycocoevalcap")
needs_java = pytest.mark.skipif(not HAVE_JAVA, reason="needs `java` on PATH and pycocoevalcap")

# (caption, what pycocoevalcap's PTBTokenizer 3.4.1 jar + punctuation filter gives, joined by
# spaces), written from the jar's own output; the Java test below re-checks them where Java runs.
CONSTRUCTS = [
    ("a dog (brown) runs", "a dog -lrb- brown -rrb- runs"),
    ("a dog sits. it runs", "a dog sits it runs"),
    ("a dog sits. It runs", "a dog sits it runs"),
    ("a dog [brown] {x} runs", "a dog -lsb- brown -rsb- -lcb- x -rcb- runs"),
    ("“a dog” runs ‘fast’", "a dog runs fast"),
    ("a dog — runs – fast - now -- ok", "a dog runs fast now ok"),
    ("a dog… runs... fast . . .", "a dog runs fast"),
    ("a dog runs!!! ok?! yes?? no,, hi;;", "a dog runs !!! ok ?! yes ?? no hi"),
    (
        "can't won't cannot gonna wanna gotta don't i'm you're we'll they've he'd",
        "ca n't wo n't can not gon na wan na got ta do n't i 'm you 're we 'll they 've he 'd",
    ),
    ("the colour of the harbour theatre", "the colour of the harbour theatre"),
    ("a/b 1/2 ½ 3*4", "a/b 1/2 1/2 3 * 4"),
    ("£5 €5 $5 5% ¥5 ¢", "# 5 $ 5 $ 5 5 % ¥ 5 cents"),
    ("AT&T &amp; R&B a & b", "at&t & r&b a & b"),
    ("U.S. Mr. Smith etc. in D.C. e.g. the end.", "u.s. mr. smith etc. in d.c. e.g. the end"),
    (":) :-) ;) :(", ":-rrb- :--rrb- ;-rrb- :-lrb-"),
    ("rock'n'roll '90s 3rd 1990s 1,000 3.5", "rock 'n' roll '90s 3rd 1990s 1,000 3.5"),
    ("well-known e-mail -ependent a- b", "well-known e-mail ependent a b"),
    ("http://www.x.com a@b.com @joe #tag", "http://www.x.com a@b.com @joe #tag"),
    ("a\tb  c", "a b c"),
    ("'tis 'twas o'clock y'all", "'t is 't was o'clock y' all"),
    ("a dog 's ball the dogs' balls", "a dog 's ball the dogs balls"),
    ("a \"quoted\" word and 'single' ones", "a quoted word and single ones"),
    ("a dog runs .", "a dog runs"),
    ("a dog runs.", "a dog runs"),
    ("A DOG RUNS.", "a dog runs"),
    ("a dog runs . .", "a dog runs"),
    ("no.5 no. 5 vs. a.m. p.m.", "no. 5 no. 5 vs. a.m. p.m."),
    ("😀 a dog ✓ ♥", "a dog ✓ ♥"),
    ("a ` b `` c '' d", "a b c d"),
    ("a dog ? yes !", "a dog yes"),
    (
        "gonna gotta wanna lemme gimme dunno hafta woulda coulda shoulda kinda sorta outta tryna",
        "gon na got ta wan na lem me gim me dunno hafta woulda coulda shoulda kinda sorta outta tryna",
    ),
    ("<a> < b > x<y", "<a> < b > x < y"),
    (
        "© ° × ÷ ™ ← ∀ ✓ ♥ ★ ☺ • · § ¶ ¬ ® ± µ ℃ ∞ ≈ ≠ ‰ ′ ″ ‐ ‑ ‒ ― ⁄ € ₹",
        "© ° × ÷ ™ ← ∀ ✓ ♥ ★ ☺ • · § ¶ ¬ ® ± µ ℃ ∞ ≈ ≠ ‰ ′ ″ ⁄ $",
    ),
    # the jar writes "3 1/2" as one token with a no-break space inside
    ("3 1/2 cups and 1-1/2 and 12/25/2014", "3\u00a01/2 cups and 1-1/2 and 12/25/2014"),
    ("r&b r&amp;b us$ 5 a+b c++ ~ ^ | \\ =", "r & b r & b us $ 5 a + b c++ ~ ^ | \\ ="),
    ("'tis 'twas 'tisn't", "'t is 't was 't is n't"),
    ("ark. Ark. The dog. mr. jones vs. MR. JONES", "ark ark. the dog mr. jones vs. mr. jones"),
    ("dog’s dogs’ ‘hello’ “hello” «hi» „low“ ‹x›", "dog 's dogs hello hello hi „ low x"),
    ("3.5-inch a.b-c e-mail. x-ray, t-shirt; no.,", "3.5-inch a.b-c e-mail x-ray t-shirt no."),
    ("It's we're don’t can’t I’ll", "it 's we 're do n't ca n't i 'll"),
    ("hello... . . . ..... ...... ......... ...", "hello"),
    ("--- ---- ----- -- - _ __ @@ ## **", "----- _ __ @@ ## **"),
    ("a.k.a. cf. e.g., i.e. a. b. x.", "a.k.a. cf. e.g. i.e. a. b. x."),
    ("a dog is black-and-white.", "a dog is black-and-white"),
    ("dog.,cat.;horse.:", "dog. cat. horse."),
    ("www.google.com foo.org bar.com/x", "www.google.com foo.org bar.com / x"),
    ('"start" and "end"', "start and end"),
    ("a ' b", "a b"),
    ("x'ed doin' rock'n'roll ma'am", "x ed doin rock 'n' roll ma'am"),
    ("'em 'cause 'til '80s '04 cont'd", "'em 'cause 'til '80s '04 cont 'd"),
    ("“” ‚x‛ ‟y ‘‘ ’’ '' ` ``", "``'' ‚ x ‟ y"),
    (
        "la. del. pa. tex. az. ct. Del. Pa. Tex. Az. Ct. Ill. ill. wash. Wash. miss. Miss.",
        "la del pa tex az ct. del. pa. tex. az. ct. ill. ill wash wash. miss miss.",
    ),
    ("a dog runs a.m and p.m at 5 a.m", "a dog runs a.m and p.m at 5 a.m"),
    ("&quot;hi&quot; &lt; &gt; &amp; &apos;s &mdash; &nbsp;", "hi < > & 's"),
    ("pro- anti- pro-life C++ c++ x++", "pro- anti- pro-life c++ c++ x + +"),
    (
        "Jan. 5 jan. 5 etc. al. seq. st. Ste. dr. prof. gen. co. inc. ft. no. nos. sq. ph. est.",
        "jan. 5 jan. 5 etc. al. seq. st. ste. dr. prof. gen. co. inc. ft. no nos sq. ph. est.",
    ),
    ("a b.c d.e.f. x.y.z", "a b.c d.e.f. x.y.z"),
    ("I.B.M. The end. U.S. Army U.S. a", "i.b.m. the end u.s. army u.s. a"),
    ("a2b 2a b2 a_b a__b _a a-_b", "a2b 2a b2 a_b a __ b _ a a _ b"),
    ("ｆｕｌｌ ｗｉｄｔｈ ！ １２", "ｆｕｌｌ ｗｉｄｔｈ ！ １２"),
    ("naïve café résumé Zürich straße", "naïve café résumé zürich straße"),
    ("a—b a–b a--b a---b a-b-c a - b", "a b a b a b a b a-b-c a b"),
    ("$5.00 US$5 A$ 20% 5ft 10'' 6' tall", "$ 5.00 us$ 5 a$ 20 % 5ft 10 6 tall"),
    ("it's 90's 1990's the '60s rock 'n roll", "it 's 90 's 1990 's the '60s rock 'n roll"),
    (
        "dog'scat dog's-bone o'neill d'arcy l'eau j'ai",
        "dog scat dog 's bone o'neill d'arcy l'eau j' ai",
    ),
    ("2-3 2/3 1 2/3 10-20 1,2,3 .5 -5 +5 5.", "2-3 2/3 1\u00a02/3 10-20 1,2,3 .5 -5 +5 5"),
    ("“a dog” runs", "a dog runs"),
    ("a dog — runs", "a dog runs"),
    ("a dog… runs", "a dog runs"),
    ("a dog (brown) runs.", "a dog -lrb- brown -rrb- runs"),
    (
        "A little boy at the end of a yellow slip n 'slide .",
        "a little boy at the end of a yellow slip n slide",
    ),
    ("Washington D.C.", "washington d.c."),
    ("a dog,runs", "a dog runs"),
    ("dog's-bone", "dog 's bone"),
]


@pytest.mark.parametrize(("caption", "expected"), CONSTRUCTS)
def test_python_path_gives_the_jars_tokens(caption, expected):
    # recorded as a line the jar reads with another after it (its last line can differ)
    assert list(ptb_tokenize(caption)) == expected.split(" ")
    assert tokenize_captions([caption, "end"], "python")[0][0] == expected.split(" ")


def test_brackets_and_periods_as_coco_keeps_them():
    # coco's filter holds only "-LRB-"-style tokens, which never match after -lowerCase
    assert ptb_tokenize("A dog (brown) runs.") == ("a", "dog", "-lrb-", "brown", "-rrb-", "runs")
    assert ptb_tokenize("a dog sits. it runs") == ("a", "dog", "sits", "it", "runs")
    assert ptb_tokenize("Washington D.C.") == ("washington", "d.c.")
    # the old Python path scored "a dog (brown) runs" as 1.0 against "a dog -lrb- brown -rrb- runs"
    result = metrics.score(
        {1: ["a dog (brown) runs"]}, {1: "a dog brown runs"}, metrics=["bleu"], tokenizer="python"
    )
    assert result["Bleu_4"] < 0.01


@needs_java
def test_constructs_equal_the_java_path():
    captions = [c for c, _ in CONSTRUCTS] + ["a last line: the jar reads the last one differently"]
    java, used = tokenize_captions(captions, "ptb")
    assert used == "ptb"
    python, _ = tokenize_captions(captions, "python")
    assert python[:-1] == java[:-1]
    assert [t for t in java[:-1]] == [e.split(" ") for _, e in CONSTRUCTS]


@needs_java
@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "a",
                "Dog",
                "runs",
                "(",
                ")",
                "[",
                ".",
                ",",
                "'s",
                "n't",
                '"',
                "“",
                "”",
                "—",
                "…",
                "-",
                "3.5",
                "1/2",
                "Mr.",
                "U.S.",
                "etc.",
                "well-known",
                "o'clock",
                "&",
                "$",
                "!?",
            ]
        ),  # fmt: skip
        min_size=1,
        max_size=8,
    ).map(" ".join)
)
def test_spaced_constructs_equal_the_java_path(caption):
    # one JVM per example is slow, so few examples; the Flickr8k test covers volume
    java, _ = tokenize_captions([caption, "end"], "ptb")
    assert list(ptb_tokenize(caption)) == java[0]


@pytest.mark.slow
@needs_java
def test_flickr8k_captions_tokenize_as_the_jar(shared_data):
    path = shared_data / "flickr8k" / "captions.txt"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    images: dict[str, list[str]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            images.setdefault(row["image"], []).append(row["caption"])
    items = list(images.items())[:5000]
    captions = [c for _, refs in items for c in refs[:5]]
    assert len(captions) == 25_000
    java, _ = tokenize_captions(captions, "ptb")
    python, _ = tokenize_captions(captions, "python")
    differ = sum(j != p for j, p in zip(java, python))
    assert differ <= 2, f"{differ} of {len(captions)} captions tokenize differently"
    # caption 0 as the hypothesis, captions 1-4 as references: the same scores both ways
    refs = {name: caps[1:5] for name, caps in items}
    hyps = {name: caps[0] for name, caps in items}
    ptb = metrics.score(refs, hyps, metrics=["bleu", "cider"], tokenizer="ptb")
    ours = metrics.score(refs, hyps, metrics=["bleu", "cider"], tokenizer="python")
    for key in ("Bleu_4", "CIDEr"):
        assert ours[key] == pytest.approx(ptb[key], abs=1e-9), key
