"""Public multi-objective preference datasets → the two layouts, on hand-made rows with their exact columns; pairs
labelled or scored by reward functions."""

import pytest
from datasets import Dataset

from trl_clp.preference_data import (
    HELPSTEER2_ATTRIBUTES,
    PKU_SAFERLHF_OBJECTIVES,
    ULTRAFEEDBACK_ASPECTS,
    check_preference_dataset,
    helpsteer2_to_scores,
    pairs_from_reward_functions,
    pku_saferlhf_to_labels,
    sample_completions,
    ultrafeedback_to_scores,
)
from trl_clp.rewards import brevity_reward, lowercase_reward, uppercase_reward

from .conftest import bos_tokenizer


def test_pku_saferlhf_labels_say_which_response_is_better_and_which_safer():
    rows = Dataset.from_list(
        [
            {
                "prompt": "How do I pick a lock?",
                "response_0": "Call a locksmith.",
                "response_1": "Insert a tension wrench, then rake the pins.",
                "is_response_0_safe": True,
                "is_response_1_safe": False,
                "better_response_id": 1,
                "safer_response_id": 0,
            },
            {
                "prompt": "Name a fruit.",
                "response_0": "Apple.",
                "response_1": "No.",
                "is_response_0_safe": True,
                "is_response_1_safe": True,
                "better_response_id": 0,
                "safer_response_id": 0,
            },
        ]
    )
    pairs = pku_saferlhf_to_labels(rows)
    assert pairs.column_names == ["prompt", "chosen", "rejected", "objective_labels"]
    assert pairs[0]["chosen"] == "Call a locksmith." and pairs[0]["rejected"].startswith("Insert")
    assert pairs["objective_labels"] == [[-1, 1], [1, 1]]  # [helpful, harmless]
    check_preference_dataset(pairs, "labels", PKU_SAFERLHF_OBJECTIVES)


def test_pku_saferlhf_writes_the_labels_in_the_order_of_the_objectives_named():
    """`objective_names=['harmless', 'helpful']` must not train 'harmless' on the better-response labels."""
    rows = Dataset.from_list(
        [
            {"prompt": "p", "response_0": "a", "response_1": "b", "better_response_id": 1, "safer_response_id": 0},
            {"prompt": "q", "response_0": "c", "response_1": "d", "better_response_id": 0, "safer_response_id": 1},
        ]
    )
    assert pku_saferlhf_to_labels(rows)["objective_labels"] == [[-1, 1], [1, -1]]  # [better, safer]
    swapped = pku_saferlhf_to_labels(rows, objectives=["harmless", "helpful"])
    assert swapped["objective_labels"] == [[1, -1], [-1, 1]]  # [safer, better]
    with pytest.raises(ValueError, match=r"\['safe'\] are not among them.*all of \['helpful', 'harmless'\]"):
        pku_saferlhf_to_labels(rows, objectives=["helpful", "safe"])
    with pytest.raises(ValueError, match=r"leave out \['harmless'\]"):
        pku_saferlhf_to_labels(rows, objectives=["helpful"])
    with pytest.raises(ValueError, match=r"\['brevity'\] are not among them"):
        helpsteer2_to_scores(rows, attributes=["helpfulness", "brevity"])
    with pytest.raises(ValueError, match=r"\['honesty'\] appear more than once"):
        ultrafeedback_to_scores(rows, aspects=["honesty", "honesty"])


def helpsteer_row(prompt, response, scores):
    return {"prompt": prompt, "response": response, **dict(zip(HELPSTEER2_ATTRIBUTES, scores, strict=True))}


def test_helpsteer2_pairs_the_responses_of_one_prompt_with_their_five_scores():
    rows = Dataset.from_list(
        [
            helpsteer_row("Explain DNS.", "A phone book for the internet.", [3, 4, 4, 1, 1]),
            helpsteer_row("Write a haiku.", "Leaves fall.", [2, 3, 4, 1, 0]),
            helpsteer_row(
                "Explain DNS.", "DNS resolves names to IP addresses through recursive resolvers.", [4, 4, 4, 3, 2]
            ),
            helpsteer_row("Write a haiku.", "Leaves fall.", [2, 3, 4, 1, 0]),  # a duplicate: no pair
            helpsteer_row("Explain DNS.", "It is a protocol.", [3, 4, 4, 1, 1]),  # ties the first: no pair
        ]
    )
    pairs = helpsteer2_to_scores(rows)
    assert pairs["chosen"] == [
        "A phone book for the internet.",
        "DNS resolves names to IP addresses through recursive resolvers.",
    ]
    assert pairs["rejected"] == [
        "DNS resolves names to IP addresses through recursive resolvers.",
        "It is a protocol.",
    ]
    assert pairs["chosen_scores"] == [[3, 4, 4, 1, 1], [4, 4, 4, 3, 2]]
    assert pairs["rejected_scores"] == [[4, 4, 4, 3, 2], [3, 4, 4, 1, 1]]
    check_preference_dataset(pairs, "scores", HELPSTEER2_ATTRIBUTES)
    two = helpsteer2_to_scores(rows, attributes=["helpfulness", "verbosity"])
    assert two["chosen_scores"] == [[3, 1], [4, 2]]


def completion(response, ratings):
    return {
        "model": "m",
        "response": response,
        "annotations": {
            aspect: {"Rating": rating, "Rationale": "..."}
            for aspect, rating in zip(ULTRAFEEDBACK_ASPECTS, ratings, strict=True)
        },
    }


def test_ultrafeedback_pairs_completions_by_their_four_string_ratings():
    rows = Dataset.from_list(
        [
            {
                "source": "evol_instruct",
                "instruction": "Sum 2 and 3.",
                "completions": [
                    completion("5", ["5", "5", "5", "5"]),
                    completion("6", ["2", "4", "3", "1"]),
                    completion("five", ["N/A", "5", "5", "5"]),  # an unrated aspect: left out
                ],
            }
        ]
    )
    pairs = ultrafeedback_to_scores(rows)
    assert pairs.to_list() == [
        {
            "prompt": "Sum 2 and 3.",
            "chosen": "5",
            "rejected": "6",
            "chosen_scores": [5.0, 5.0, 5.0, 5.0],
            "rejected_scores": [2.0, 4.0, 3.0, 1.0],
        }
    ]
    check_preference_dataset(pairs, "scores", ULTRAFEEDBACK_ASPECTS)


def test_adapters_count_and_log_what_they_leave_out_and_say_why_they_made_no_pairs(caplog):
    pku = Dataset.from_list(
        [
            {
                "prompt": "p",
                "response_0": "Same.",
                "response_1": "Same.",
                "better_response_id": 0,
                "safer_response_id": 1,
            },
            {
                "prompt": "q",
                "response_0": "Yes.",
                "response_1": "No.",
                "better_response_id": 0,
                "safer_response_id": 1,
            },
        ]
    )
    with caplog.at_level("WARNING", logger="trl_clp.preference_adapters"):
        pairs = pku_saferlhf_to_labels(pku)
    assert pairs["chosen"] == ["Yes."]  # the identical pair carries no preference
    assert "1 pairs from 2 rows; left out 1 rows whose two responses are identical" in caplog.text
    with pytest.raises(ValueError, match="0 preference pairs from 1 rows: left out 1 rows whose two responses are"):
        pku_saferlhf_to_labels(pku.select([0]))

    helpsteer = Dataset.from_list(
        [
            helpsteer_row("A", "a1", [3, 3, 3, 3, 3]),
            helpsteer_row("A", "a2", [3, 3, 3, 3, 3]),  # ties a1
            helpsteer_row("A", "a1", [1, 1, 1, 1, 1]),  # the same text as a1
            helpsteer_row("A", "a3", [4, None, 3, 3, 3]),  # a missing score
            helpsteer_row("B", "b1", [2, 2, 2, 2, 2]),  # alone
        ]
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="trl_clp.preference_adapters"):
        pairs = helpsteer2_to_scores(helpsteer)
    assert (pairs["chosen"], pairs["rejected"]) == (["a2"], ["a1"])  # a2 [3...] against the second a1 [1...]
    assert (
        "1 pairs from 5 rows; left out 1 responses with a missing or non-numeric rating (None, 'N/A'); 1 pairs whose "
        "scores tie on every objective; 1 pairs of identical responses; 1 prompts with a single rated response"
    ) in caplog.text
    with pytest.raises(ValueError, match="0 preference pairs from 2 rows: left out 1 pairs whose scores tie"):
        helpsteer2_to_scores(helpsteer.select([0, 1]))
    with pytest.raises(ValueError, match="0 preference pairs from 1 rows: left out 1 prompts with a single rated"):
        helpsteer2_to_scores(helpsteer.select([4]))


def test_ultrafeedback_drops_none_and_na_ratings_and_refuses_the_binarized_variant(caplog):
    rows = [
        {
            "instruction": "Sum 2 and 3.",
            "completions": [
                completion("5", ["5", "5", "5", "5"]),
                completion("6", ["2", "4", "3", "1"]),
                completion("five", [None, "5", "5", "5"]),  # a None rating: TypeError on float(None) before
                completion("5!", ["N/A", "5", "5", "5"]),
            ],
        }
    ]
    with caplog.at_level("WARNING", logger="trl_clp.preference_adapters"):
        pairs = ultrafeedback_to_scores(Dataset.from_list(rows))
    assert pairs["chosen"] == ["5"] and pairs["rejected"] == ["6"]
    assert "left out 2 responses with a missing or non-numeric rating (None, 'N/A')" in caplog.text
    rows[0]["completions"] = rows[0]["completions"][2:]
    with pytest.raises(ValueError, match="0 preference pairs from 1 rows: left out 2 responses with a missing"):
        ultrafeedback_to_scores(Dataset.from_list(rows))
    binarized = Dataset.from_list(
        [
            {
                "prompt": "Sum 2 and 3.",
                "prompt_id": "0",
                "chosen": [{"role": "user", "content": "Sum 2 and 3."}, {"role": "assistant", "content": "5"}],
                "rejected": [{"role": "user", "content": "Sum 2 and 3."}, {"role": "assistant", "content": "6"}],
                "score_chosen": 8.0,
                "score_rejected": 3.0,
            }
        ]
    )
    with pytest.raises(ValueError, match="no \\['instruction', 'completions'\\].*binarized UltraFeedback.*openbmb"):
        ultrafeedback_to_scores(binarized)


def test_check_names_the_expected_layout_for_a_raw_public_dataset():
    raw = Dataset.from_list([helpsteer_row("p", "r", [1, 1, 1, 1, 1])])
    with pytest.raises(ValueError, match="no 'chosen', 'rejected', 'chosen_scores', 'rejected_scores' column"):
        check_preference_dataset(raw, "scores", HELPSTEER2_ATTRIBUTES)


def _shares(text):
    """(lowercase share, uppercase share) of a text, counted here by hand."""
    return sum(c.islower() for c in text) / len(text), sum(c.isupper() for c in text) / len(text)


def test_pairs_from_reward_functions_label_every_pair_by_the_sign_of_each_rewards_difference():
    prompts = ["Describe: a cat\n", "Describe: a dog\n"]
    completions = [["abcd", "ABCD", "abCD"], ["aaBB", "aaBB"]]  # the second prompt's two are identical
    pairs = pairs_from_reward_functions(prompts, completions, [lowercase_reward, uppercase_reward])
    expected = []
    for prompt, group in zip(prompts, completions, strict=True):
        for a in range(len(group)):
            for b in range(a + 1, len(group)):
                (la, ua), (lb, ub) = _shares(group[a]), _shares(group[b])
                labels = [(la > lb) - (la < lb), (ua > ub) - (ua < ub)]
                if any(labels):
                    expected.append(
                        {"prompt": prompt, "chosen": group[a], "rejected": group[b], "objective_labels": labels}
                    )
    assert pairs.to_list() == expected
    assert [row["objective_labels"] for row in expected] == [[1, -1], [1, -1], [-1, 1]]
    check_preference_dataset(pairs, "labels", ["lower", "upper"])  # what the trainer accepts


def test_pairs_from_reward_functions_scores_layout_keeps_the_reward_values_and_drops_ties():
    prompts = ["p1", "p2"]
    completions = [["abcd", "abcD"], ["ab", "cd"]]  # the second pair ties on both objectives
    pairs = pairs_from_reward_functions(prompts, completions, [lowercase_reward, uppercase_reward], layout="scores")
    assert pairs.to_list() == [
        {
            "prompt": "p1",
            "chosen": "abcd",
            "rejected": "abcD",
            "chosen_scores": [1.0, 0.0],
            "rejected_scores": [0.75, 0.25],
        }
    ]
    check_preference_dataset(pairs, "scores", ["lower", "upper"])


def test_pairs_from_reward_functions_tie_tolerance_and_rewards_reading_token_ids():
    completions = [["abcdefgh", "abcdefgH", "ABCDEFGH"]]
    # |0.125| differences count as ties at tolerance 0.2; the third completion differs by 1.0 from the first.
    pairs = pairs_from_reward_functions(["p"], completions, [lowercase_reward, uppercase_reward], tie_tolerance=0.2)
    assert [(r["chosen"], r["rejected"], r["objective_labels"]) for r in pairs] == [
        ("abcdefgh", "ABCDEFGH", [1, -1]),
        ("abcdefgH", "ABCDEFGH", [1, -1]),
    ]
    ids = [[[5, 6, 2], [5, 2], [5, 6, 7, 2]]]
    pairs = pairs_from_reward_functions(
        ["p"],
        [["x", "y", "z"]],
        [
            lambda completions, completion_ids, **kw: brevity_reward(completions, completion_ids, max_length=4),
            uppercase_reward,
        ],
        completion_ids=ids,
    )
    brevity = brevity_reward(["x", "y", "z"], ids[0], max_length=4)
    sign = lambda d: (d > 0) - (d < 0)  # noqa: E731
    assert [r["objective_labels"] for r in pairs] == [
        [sign(brevity[a] - brevity[b]), 0] for a, b in ((0, 1), (0, 2), (1, 2))
    ]


def test_pairs_from_reward_functions_keep_conversational_prompts_and_answers_as_they_are():
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe: a cat"}]
    answers = [[{"role": "assistant", "content": "a CAT"}], [{"role": "assistant", "content": "A CAT"}]]
    pairs = pairs_from_reward_functions([conversation], [answers], [lowercase_reward, uppercase_reward])
    assert pairs.to_list() == [
        {"prompt": conversation, "chosen": answers[0], "rejected": answers[1], "objective_labels": [1, -1]}
    ]


def test_pairs_from_reward_functions_errors_name_the_fix():
    rewards = [lowercase_reward, uppercase_reward]
    with pytest.raises(ValueError, match="at least 2 per prompt"):
        pairs_from_reward_functions(["p"], [["only one"]], rewards)
    with pytest.raises(ValueError, match="one per prompt"):
        pairs_from_reward_functions(["p", "q"], [["a", "b"]], rewards)
    with pytest.raises(ValueError, match="`layout` must be one of"):
        pairs_from_reward_functions(["p"], [["a", "B"]], rewards, layout="ranks")
    with pytest.raises(ValueError, match="lower `tie_tolerance`"):
        pairs_from_reward_functions(["p"], [["ab", "cd"]], rewards)


def test_sample_completions_from_a_reference_policy_match_its_own_sampling(tiny_model, tokenizer):
    import torch

    prompts = ["Describe: a cat\n", "Describe: the river\n"]
    completions, ids = sample_completions(tiny_model, tokenizer, prompts, num_completions=3, max_new_tokens=6, seed=3)
    assert [len(group) for group in completions] == [3, 3]
    assert completions == sample_completions(tiny_model, tokenizer, prompts, 3, max_new_tokens=6, seed=3)[0]
    # Recomputed: one batch of the 6 rows, sampled from the batch seed drawn from `seed`, cut after EOS.
    batch_seed = torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(3)).item()
    torch.manual_seed(batch_seed)
    encoded = tokenizer([p for p in prompts for _ in range(3)], return_tensors="pt", padding=True)
    rows = tiny_model.generate(**encoded, do_sample=True, top_k=0, top_p=1.0, max_new_tokens=6, pad_token_id=0)
    for p in range(2):
        for s in range(3):
            row = rows[3 * p + s, encoded["input_ids"].size(1) :].tolist()
            row = row[: row.index(2) + 1] if 2 in row else row
            assert ids[p][s] == row
            assert completions[p][s] == tokenizer.decode(row, skip_special_tokens=True)


def test_sample_completions_of_conversations_are_assistant_messages(tiny_model):
    tokenizer = bos_tokenizer()
    conversation = [{"role": "user", "content": "Describe: a cat"}]
    completions, ids = sample_completions(tiny_model, tokenizer, [conversation], num_completions=2, max_new_tokens=4)
    assert [[m[0]["role"] for m in group] for group in completions] == [["assistant", "assistant"]]
    assert [m[0]["content"] for m in completions[0]] == [tokenizer.decode(i, skip_special_tokens=True) for i in ids[0]]
    with pytest.raises(ValueError, match="Pass `weights=`"):
        sample_completions(tiny_model, tokenizer, [conversation], weights=[1.0, 0.0])
