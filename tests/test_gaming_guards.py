"""The gaming guards: the texts each must flag (the quotes of issue 27 among them) and the fluent answers each must
pass, Fisher's exact test against an independent hypergeometric tail, rates on a table whose answer is known, and the
guarded samples."""

import json
import math
import os

import pytest

from trl_clp.gaming_guards import (
    GAMING_GUARDS,
    GuardRate,
    compare_guard_rates,
    digits_and_lists_share,
    echo_coverage,
    fisher_exact_greater,
    flag_completion,
    flag_samples,
    guard_rates_by_weighting,
    guarded_samples,
    has_verb,
    repeated_ngram_share,
    uncapitalised_english_share,
)

RESULTS = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "results")

# (prompt, completion, the guard that must flag it): what trained SmolLM2 policies wrote in the committed samples.
GAMED = [
    ("Write a short review of a video game about farming.", "A gaming review about farming.", "echo"),
    (
        "Describe a ceramic teapot for an online shop listing.",
        '"Jak, a jak, eet vant, hikkei, to kas, kan',
        "non_english",
    ),
    (
        "Describe a bamboo cutting board for an online shop listing.",
        "The 1012, a 1013, a 1014, a 1",
        "digits_and_lists",
    ),
    (
        'A customer writes: "The headphones crackle in the left ear." Write a reply.',
        'The customer asks, "The headphones crackle in the left ear."\n\nHolding the conversation, the staff holds',
        "echo",
    ),
    (
        "Write a short review of a budget hotel by the airport.",
        "bon bons, i am a no. 102170 cleaning up the lochs, we are",
        "non_english",
    ),
    ("Write a few sentences about an empty beach in winter.", "Abe, a beach in the winter, aunce.", "fragment"),
    (
        "Write a short review of a smart watch.",
        "😊💮💃💺A smartwatch is a smartwatch is a smartwatch is",
        "repetition",
    ),
    (
        "Write a product description for a bird feeder.",
        "The Snowy 390, a mission, to the top, to the top, to the",
        "repetition",
    ),
    ("Give your honest opinion of a cookbook.", "1. 1430, 12, 1310, Samra\n2. ", "digits_and_lists"),
    (
        "Write a product description for a rice cooker.",
        "Ingredients:\n1. Banana\n2. Carrot\n3. Lemon",
        "digits_and_lists",
    ),
    ("Write a few sentences about a mountain lake in autumn.", "The majestic mountain lake in autumn.", "fragment"),
    ("Write a short review of a cookbook.", "Safe.", "near_empty"),
    ("You work in customer support.", "You can't.", "near_empty"),
    ("Write a product description for a cake.", '"🍰🍰🍰🍰🍰🍰🍰" -', "near_empty"),
    (
        "Write a short review of a cookbook.",
        "La lumière est touche par la couleur en cinacaboc :) Etoile de la",
        "non_english",
    ),
]

# Base-model answers (committed samples), most cut mid-sentence by the 24-token limit: no guard may flag them.
FLUENT = [
    (
        "Describe a bamboo cutting board for an online shop listing.",
        "A bamboo cutting board is a classic and delicate piece of kitchenware that is often overlooked in the market. "
        "But, in",
    ),
    (
        "Give your honest opinion of a smart watch in a few sentences.",
        "The smartwatch is a practical, stylish wearable device designed to enhance the daily routines of people "
        "worldwide.",
    ),
    (
        "Write a few sentences about a crowded football stadium.",
        "The Scenic Shake includes 18 locations across 10 continents, featuring from 1,000",
    ),
    (
        "Write a few sentences about an empty beach in winter.",
        "In the deep blue of winter, the empty beach of a desert stretches out in unrelenting white. The sky above",
    ),
    (
        "Write a short review of a laptop for students.",
        "7.7 out of 10 stars.\nThis laptop has a good price, but the quality isn't there",
    ),
    ("Give your honest opinion of a laptop for students in a few sentences.", "Ladakhim's laptop is amazing."),
    (
        "Write a product description for a bamboo cutting board.",
        "Bamboo cutting board:\n\n*   Spun bamboo: A biodegradable alternative to traditional bamboo made from bamboo\n*",
    ),
    (
        "Describe a rice cooker for an online shop listing.",
        "Abespergorðing is a mejal online shop that specializes in curios, specialty treats, and",
    ),
    (
        "How do I choose running shoes?",
        "Choosing the right running shoes can make all the difference in your performance and comfort during your "
        "workouts. Here's a basic guide",
    ),
]


@pytest.mark.parametrize(("prompt", "completion", "guard"), GAMED, ids=[g[1][:30] for g in GAMED])
def test_each_gamed_completion_is_flagged_by_its_guard(prompt, completion, guard):
    flags = flag_completion(prompt, completion)
    assert set(flags) == set(GAMING_GUARDS)
    assert flags[guard], f"{guard} should flag {completion!r}: {flags}"


@pytest.mark.parametrize(("prompt", "completion"), FLUENT, ids=[f[1][:30] for f in FLUENT])
def test_fluent_base_answers_pass_every_guard(prompt, completion):
    flags = flag_completion(prompt, completion)
    assert not any(flags.values()), f"{completion!r} flagged: {[g for g, f in flags.items() if f]}"


def test_the_scores_behind_the_guards_by_hand():
    # echo: "about farming" is the one bigram of the prompt: 2 of the 5 words lie in it.
    assert echo_coverage("A gaming review about farming.", "a video game about farming") == pytest.approx(2 / 5)
    # "the left ear" gives the bigrams (the, left), (left, ear): 3 of 6 words.
    assert echo_coverage("The left ear is cracked now", "crackle in the left ear") == pytest.approx(3 / 6)
    assert echo_coverage("", "anything") == 0.0
    # Tokens: the, 1012, a, 1013, a, 1014, a, 1: four numbers of eight.
    assert digits_and_lists_share("The 1012, a 1013, a 1014, a 1") == pytest.approx(4 / 8)
    # Tokens: Ingredients, "1.", Banana, "2.", Carrot, "-", Lemon: three markers of seven ("1." counted once).
    assert digits_and_lists_share("Ingredients:\n1. Banana\n2. Carrot\n- Lemon") == pytest.approx(3 / 7)
    # Trigrams of "to the top to the top to": (to the top) (the top to) (top to the) (to the top)* (the top to)*.
    assert repeated_ngram_share("to the top, to the top, to") == pytest.approx(2 / 5)
    assert repeated_ngram_share("one two") == 0.0
    assert has_verb("I'm here") and has_verb("it's fine") and has_verb("you can't")
    assert not has_verb("A gaming review about farming.") and not has_verb("Today's menu")


def test_uncapitalised_english_share_against_textblobs_own_lexicon():
    """The share recomputed from `textblob.en.lexicon` (TextBlob's reading of the same file), word by word."""
    from textblob.en import lexicon

    text = "bon bons, i am a no. 102170 cleaning up the lochs, we are"
    uncapitalised = ["bon", "bons", "i", "am", "a", "no", "cleaning", "up", "the", "lochs", "we", "are"]
    english = [lexicon.get(word) not in (None, "FW", "NNP", "NNPS") for word in uncapitalised]
    assert english.count(False) == 3  # "bon" is tagged foreign; "bons" and "lochs" are unknown
    assert uncapitalised_english_share(text) == pytest.approx(sum(english) / len(english)) == pytest.approx(0.75)
    # Capitalised words are left out (a made-up name is not a foreign word); all-capitalised text is read whole.
    assert uncapitalised_english_share("Polachess is a brand of chess sets") == 1.0
    assert uncapitalised_english_share("SHOCKING TOOKS") == pytest.approx(0.5)  # "shocking" is English, "tooks" not
    assert uncapitalised_english_share("") is None


def test_a_conversation_prompt_is_read_through_its_user_turns():
    echo = "The shoes I ordered are the wrong size."
    conversation = [
        {"role": "system", "content": echo},
        {"role": "user", "content": "Write a short review of a bicycle repair shop."},
    ]
    assert not flag_completion(conversation, echo)["echo"]  # the system turn is not what the completion answers
    conversation[1]["content"] = f'A customer writes: "{echo}" Write a reply.'
    assert flag_completion(conversation, echo)["echo"]
    assert flag_samples([{"prompt": conversation, "completion": echo}]) == [flag_completion(conversation, echo)]


def test_guard_counts_on_the_committed_base_samples():
    """The base-model rates the module's docstring and docs/evaluation.md quote (288 SmolLM2 answers)."""
    with open(os.path.join(RESULTS, "smollm2_tone", "base.samples.jsonl"), encoding="utf-8") as handle:
        base = [json.loads(line) for line in handle]
    flags = flag_samples(base)
    counts = {guard: sum(row[guard] for row in flags) for guard in GAMING_GUARDS}
    assert len(base) == 288
    assert counts == {
        "echo": 11,
        "digits_and_lists": 1,
        "repetition": 2,
        "near_empty": 0,
        "non_english": 7,
        "fragment": 3,
    }
    assert sum(any(row.values()) for row in flags) == 23


def hypergeometric_upper_tail(flagged, total, base_flagged, base_total):
    """P(X >= flagged), X the flagged among `total` drawn without replacement: the probability of each count by the
    product formula over draws, not binomial coefficients."""
    population, successes = total + base_total, flagged + base_flagged

    def probability(x):  # C(K, x) C(N-K, n-x) / C(N, n) as a product of ratios
        p = 1.0
        for i in range(x):
            p *= (successes - i) / (i + 1)
        for i in range(total - x):
            p *= (population - successes - i) / (i + 1)
        for i in range(total):
            p *= (i + 1) / (population - i)
        return p

    return sum(probability(x) for x in range(flagged, min(total, successes) + 1))


def test_fisher_exact_greater_by_hand_and_against_an_independent_tail():
    # N = 11, K = 4, n = 5: P(X >= 3) = (C(4,3) C(7,2) + C(4,4) C(7,1)) / C(11,5) = (84 + 7) / 462.
    assert fisher_exact_greater(3, 5, 1, 6) == pytest.approx(91 / 462, rel=1e-12)
    # Issue 27: full-CLP near-empty 6 of 216 against the base model's 0 of 288: all 6 fall in the first row.
    p = fisher_exact_greater(6, 216, 0, 288)
    assert p == pytest.approx(math.prod((216 - i) / (504 - i) for i in range(6)), rel=1e-12)
    assert round(p, 3) == 0.006
    for table in [(5, 20, 2, 30), (0, 10, 4, 10), (10, 10, 0, 10), (7, 40, 7, 40), (1, 3, 9, 12)]:
        assert fisher_exact_greater(*table) == pytest.approx(hypergeometric_upper_tail(*table), rel=1e-9)
    assert fisher_exact_greater(0, 10, 3, 10) == 1.0  # nothing flagged: no evidence of a higher rate
    assert fisher_exact_greater(0, 10, 0, 10) == 1.0


def test_fisher_exact_greater_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for flagged, total, base_flagged, base_total in [
        (6, 216, 0, 288),
        (5, 20, 2, 30),
        (1, 3, 9, 12),
        (18, 72, 23, 288),
    ]:
        table = [[flagged, total - flagged], [base_flagged, base_total - base_flagged]]
        expected = stats.fisher_exact(table, alternative="greater").pvalue
        assert fisher_exact_greater(flagged, total, base_flagged, base_total) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 0, 1, 10), "completions on both sides"),
        ((1, 10, 0, 0), "completions on both sides"),
        ((11, 10, 0, 10), r"flagged must lie in \[0, 10\]"),
        ((1, 10, -1, 10), r"base_flagged must lie in \[0, 10\]"),
    ],
)
def test_fisher_exact_greater_refuses_empty_or_impossible_tables(args, message):
    with pytest.raises(ValueError, match=message):
        fisher_exact_greater(*args)


def rows(completions, prompt="Write a short review of a pizza delivery app.", weights=(0.0, 1.0)):
    return [
        {"prompt": [{"role": "user", "content": prompt}], "completion": text, "weights": list(weights)}
        for text in completions
    ]


FLUENT_REVIEW = "The app is quick to use and the pizza arrived hot within half an hour of ordering."


def test_compare_guard_rates_on_a_table_whose_answer_is_known():
    # 4 of 10 near-empty against 0 of 10: P(X >= 4) with N = 20, K = 4, n = 10 is C(10,4) / C(20,4) = 210 / 4845.
    samples = rows(["You can't."] * 4 + [FLUENT_REVIEW] * 6)
    base = rows([FLUENT_REVIEW] * 10)
    rates = compare_guard_rates(samples, base)
    assert set(rates) == {*GAMING_GUARDS, "any"}
    near_empty = rates["near_empty"]
    assert near_empty == GuardRate(
        guard="near_empty",
        flagged=4,
        total=10,
        rate=0.4,
        base_flagged=0,
        base_total=10,
        base_rate=0.0,
        p_value=pytest.approx(210 / 4845),
        worse=True,
    )
    assert rates["any"].flagged == 4 and rates["any"].worse  # "You can't." (a verb: no fragment) trips near-empty only
    for guard in ("echo", "digits_and_lists", "repetition", "non_english", "fragment"):
        assert (rates[guard].flagged, rates[guard].p_value, rates[guard].worse) == (0, 1.0, False)
    assert not compare_guard_rates(samples, base, significance=0.01)["near_empty"].worse  # 0.043 > 0.01
    # The same rate as the base model's is never worse.
    assert not compare_guard_rates(samples, samples)["near_empty"].worse


def test_any_counts_a_completion_flagged_by_several_guards_once():
    samples = rows(["A gaming review about farming.", "Safe.", FLUENT_REVIEW], prompt="a video game about farming")
    rates = compare_guard_rates(samples, rows([FLUENT_REVIEW]))
    # The echo is also a fragment (no verb), and "Safe." near-empty and a fragment: four flags on two completions.
    assert (rates["echo"].flagged, rates["fragment"].flagged, rates["near_empty"].flagged) == (1, 2, 1)
    assert rates["any"].flagged == 2


def test_guard_rates_by_weighting_splits_the_samples_by_weighting():
    samples = rows(["Safe."] * 3, weights=(0.0, 1.0)) + rows([FLUENT_REVIEW] * 3, weights=(1.0, 0.0))
    by_weighting = guard_rates_by_weighting(samples, rows([FLUENT_REVIEW] * 5))
    assert set(by_weighting) == {(0.0, 1.0), (1.0, 0.0)}
    assert by_weighting[(0.0, 1.0)]["near_empty"].flagged == 3 and by_weighting[(1.0, 0.0)]["any"].flagged == 0


def test_compare_guard_rates_refuses_bad_input():
    with pytest.raises(ValueError, match="significance must lie in"):
        compare_guard_rates(rows(["x y z"]), rows(["x y z"]), significance=5)
    with pytest.raises(ValueError, match="needs completions on both sides"):
        compare_guard_rates([], rows(["x y z"]))


def test_guarded_samples_zero_exactly_the_flagged_rows():
    samples = rows(["You can't.", FLUENT_REVIEW, "The 1012, a 1013, a 1014, a 1"], weights=(0.25, 0.75))
    rewards = [
        {"positivity": 0.5, "objectivity": 1.0},
        {"positivity": 0.8, "objectivity": 0.4},
        {"positivity": 0.6, "objectivity": None},
    ]
    for sample, reward in zip(samples, rewards, strict=True):
        sample.update(rewards=reward, kl=2.0)
        scored = [w * r for w, r in zip(sample["weights"], reward.values(), strict=True) if r is not None]
        sample["value"] = sum(scored) - 0.1 * 2.0  # w·R − α·KL with α = 0.1
    original = json.loads(json.dumps(samples))
    guarded = guarded_samples(samples)
    assert samples == original  # copies: the input is left alone
    assert [row["flags"] for row in guarded] == [["near_empty"], [], ["digits_and_lists"]]
    assert guarded[0]["rewards"] == {"positivity": 0.0, "objectivity": 0.0}
    assert guarded[2]["rewards"] == {"positivity": 0.0, "objectivity": None}  # unscored stays unscored
    assert guarded[0]["value"] == pytest.approx(-0.2) and guarded[2]["value"] == pytest.approx(-0.2)  # −α·KL only
    assert {k: v for k, v in guarded[1].items() if k != "flags"} == original[1]  # the clean row is unchanged
    assert [row["kl"] for row in guarded] == [2.0] * 3


def test_text_guards_on_english_french_empty_and_repeated_texts():
    """The language and degeneracy guards on hand-made texts, recomputed from TextBlob's own
    reading of its lexicon (`textblob.en.lexicon`)."""
    from textblob.en import lexicon

    from trl_clp import gaming_guards

    def english(word):  # a common word in any case, or a capitalised proper noun whose lowercase is not foreign
        common = lexicon.get(word.lower()) not in (None, "FW", "NNP", "NNPS")
        proper = lexicon.get(word) in ("NNP", "NNPS") and word[0].isupper() and lexicon.get(word.lower()) != "FW"
        return common or proper

    texts = {
        "english": "The food was good and the staff were kind to us in Italy.",
        "french": "Le restaurant est situé dans le centre de la ville.",
        "repeated": "great great great great!",
        "near-empty": "Safe.",
        "empty": "",
    }
    words = {
        "english": "The food was good and the staff were kind to us in Italy".split(),
        "french": "Le restaurant est situé dans le centre de la ville".split(),
        "repeated": ["great"] * 4,
    }
    assert gaming_guards.words(texts["french"]) == words["french"]
    expected_share = {name: sum(map(english, found)) / len(found) for name, found in words.items()}
    assert expected_share == {"english": 1.0, "french": 0.2, "repeated": 1.0}  # French: "restaurant", "centre"
    for name in words:
        assert gaming_guards.english_word_share(texts[name]) == pytest.approx(expected_share[name])
    assert gaming_guards.english_word_share("") is None and gaming_guards.distinct_word_ratio("") is None
    assert gaming_guards.distinct_word_ratio(texts["repeated"]) == 0.25
    assert gaming_guards.distinct_word_ratio(texts["english"]) == pytest.approx(12 / 13)  # "the" twice
    guards = gaming_guards.text_guards(list(texts.values()))
    # Two of five have fewer than 3 words; of the other three, English and the repetition are English, French not.
    assert guards["empty"] == pytest.approx(2 / 5) and guards["english"] == pytest.approx(2 / 3)
    assert guards["distinct"] == pytest.approx((12 / 13 + 9 / 10 + 1 / 4) / 3)  # "le" twice in the French
    assert math.isnan(gaming_guards.text_guards(["", "Safe."])["english"])
