"""`civility_reward`: 1 − alt-profanity-check's offensive-language probability (the `civility` extra)."""

import sys

import pytest

from trl_clp.rewards import civility_reward, resolve_reward_function

TEXTS = [
    "Thank you for the thoughtful review, the pasta was lovely.",
    "You are a stupid idiot and this food is shit.",
    "The museum opens at nine and closes at five.",
    "",
]


def test_civility_is_one_minus_the_profanity_probability_in_one_batched_call(monkeypatch):
    profanity_check = pytest.importorskip("profanity_check")  # not in `test`: it pins scikit-learn and joblib
    expected = [1.0 - p for p in profanity_check.predict_prob(TEXTS).tolist()]
    calls = []
    predict_prob = profanity_check.predict_prob
    monkeypatch.setattr(
        profanity_check, "predict_prob", lambda texts: calls.append(list(texts)) or predict_prob(texts)
    )

    plain = civility_reward(completions=TEXTS, prompts=["p"] * len(TEXTS), completion_ids=[[1]] * len(TEXTS))
    chats = [[{"role": "assistant", "content": text}] for text in TEXTS]  # conversational: the last message
    conversational = civility_reward(completions=chats)
    assert plain == pytest.approx(expected, abs=1e-12) and conversational == plain
    assert calls == [TEXTS, TEXTS]  # one call per batch
    assert plain[0] > 0.9 and plain[1] < 0.01  # the polite review against the insult
    assert all(0.0 <= value <= 1.0 for value in plain)
    assert resolve_reward_function("civility") is civility_reward


def test_civility_without_alt_profanity_check_names_the_civility_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "profanity_check", None)
    with pytest.raises(ImportError) as error:
        civility_reward(completions=["hello"])
    assert str(error.value) == (
        '`profanity_check` is not installed; it is needed for the civility reward: `pip install "trl-clp[civility]"`.'
    )
