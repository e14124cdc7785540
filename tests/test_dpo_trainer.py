"""DPO-CLP: the mixed preference loss against independent recomputations and TRL's DPO, steering, and bad data."""

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import LoraConfig
from transformers import TrainerCallback
from trl import DPOTrainer

from trl_clp import MultiObjectiveDPOConfig, MultiObjectiveDPOTrainer, SteerableModel, demo, format_weighted_prompt
from trl_clp.conditioning.config import ConditioningConfig
from trl_clp.sampling import sample_group_weights

from .conftest import TARGETS

LORA = LoraConfig(r=2, lora_alpha=4, target_modules=TARGETS)


def dpo_config(tmp_path, **overrides) -> MultiObjectiveDPOConfig:
    values = dict(
        output_dir=str(tmp_path / "out"),
        objective_names=["lower", "upper"],
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        bf16=False,
        gradient_checkpointing=False,
        disable_tqdm=True,
        seed=0,
    )
    values.update(overrides)
    return MultiObjectiveDPOConfig(**values)


def random_text(rng, upper: bool) -> str:
    word = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 7)))
    return word.upper() if upper else word


def case_pairs(num_pairs: int, seed: int, layout: str = "labels") -> Dataset:
    """Pairs of a lowercase and an uppercase answer; "lower" prefers the lowercase one, "upper" the other. Half the
    rows put the uppercase answer in `chosen`, so the labels' signs vary."""
    rng = random.Random(seed)
    rows = []
    for i, prompt in enumerate(demo.make_prompt_dataset(num_pairs, seed=seed)["prompt"]):
        lower, upper = random_text(rng, False), random_text(rng, True)
        swap = i % 2 == 1
        row = {"prompt": prompt, "chosen": upper if swap else lower, "rejected": lower if swap else upper}
        if layout == "labels":
            row["objective_labels"] = [-1, 1] if swap else [1, -1]
        else:
            lower_scores, upper_scores = [1.0, 0.0], [0.0, 1.0]
            row["chosen_scores"] = upper_scores if swap else lower_scores
            row["rejected_scores"] = lower_scores if swap else upper_scores
        rows.append(row)
    return Dataset.from_list(rows)


def make_trainer(tmp_path, dataset, model=None, **config_overrides) -> MultiObjectiveDPOTrainer:
    return MultiObjectiveDPOTrainer(
        model if model is not None else demo.make_tiny_llama(seed=0),
        args=dpo_config(tmp_path, **config_overrides),
        train_dataset=dataset,
        processing_class=demo.make_byte_tokenizer(),
        peft_config=LORA,
    )


def randomize_adapter(trainer, seed=0):
    """Move every LoRA B away from its zero init, so that the policy differs from the reference (and per block)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in trainer.model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def collate(trainer, indices) -> dict:
    return trainer.data_collator([trainer.train_dataset[i] for i in indices])


def sequence_logp(model, prompt_ids, completion_ids) -> torch.Tensor:
    """log π(completion | prompt) of one unpadded row, from the model's own logits."""
    input_ids = torch.tensor([prompt_ids + completion_ids])
    logits = model(input_ids=input_ids).logits[0, len(prompt_ids) - 1 : -1]  # (C, V)
    return torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(completion_ids).unsqueeze(-1)).sum()


def independent_logratios(trainer, example, weights):
    """(chosen, rejected) log π_w(y) − log π_ref(y), each from its own forward pass."""
    model = trainer.model
    values = []
    for key in ("chosen_ids", "rejected_ids"):
        with torch.no_grad():
            with trainer.conditioner.condition(weights):
                policy = sequence_logp(model, example["prompt_ids"], example[key])
            with model.disable_adapter():
                reference = sequence_logp(model, example["prompt_ids"], example[key])
        values.append(policy - reference)
    return values


def test_labels_loss_equals_the_weighted_sum_over_objectives_from_separate_forwards(tmp_path):
    rows = case_pairs(4, seed=0).to_list()
    rows[2]["objective_labels"] = [0, 1]  # one objective has no opinion
    rows[3]["objective_labels"] = [1, 1]  # both prefer chosen
    trainer = make_trainer(tmp_path, Dataset.from_list(rows), beta=0.5)
    randomize_adapter(trainer)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, collate(trainer, range(4)))
    trainer.conditioner.clear()
    # The pairs' weightings: the first draw of the run's seeded stream, one Dirichlet(1) draw per pair.
    weights = sample_group_weights("dirichlet", 4, 2, seed=0, stream=(0, 0))
    assert (weights[:, 0].max() - weights[:, 0].min()) > 0.1

    expected = []
    for b in range(4):
        example = trainer.train_dataset[b]
        chosen, rejected = independent_logratios(trainer, example, weights[b])
        delta = 0.5 * (chosen - rejected)
        # Panacea's Σ_i w_i·1[s_i≠0]·ℓ(s_i·z): the pair objective 1 ties on weighs w_2, not 1
        expected.append(
            sum(
                w * -F.logsigmoid(s * delta)
                for w, s in zip(weights[b], example["objective_labels"], strict=True)
                if s != 0
            )
        )
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), abs=1e-5)  # the mean over the 4 pairs
    assert abs(loss.item() - math.log(2)) > 1e-2  # the adapter moved the policy: not the trivial value at init


def swapped(example, swap: bool) -> dict:
    if not swap:
        return example
    return {**example, "chosen_ids": example["rejected_ids"], "rejected_ids": example["chosen_ids"]}


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
def test_one_hot_weighting_reproduces_trls_dpo_loss_for_that_objective(tmp_path, loss_type):
    trainer = make_trainer(
        tmp_path,
        case_pairs(4, seed=0),
        weight_distribution="fixed",
        fixed_weights=["0,1"],
        loss_type=loss_type,
        beta=0.3,
    )
    randomize_adapter(trainer)
    batch = collate(trainer, range(4))
    loss = trainer.compute_loss(trainer.model, batch)
    trainer.conditioner.clear()

    # TRL's own loss, on the pairs ordered as "upper" prefers them, with the policy conditioned on w = (0, 1).
    examples = [trainer.train_dataset[i] for i in range(4)]
    trl_batch = trainer.data_collator.collator(
        [swapped(example, example["objective_labels"][1] < 0) for example in examples]
    )
    trainer.conditioner.set_conditioning_vectors(torch.tensor([[0.0, 1.0]]).expand(8, 2))
    try:
        expected = DPOTrainer._compute_loss(trainer, trainer.model, trl_batch, False)
        as_given = DPOTrainer._compute_loss(trainer, trainer.model, trainer.data_collator.collator(examples), False)
    finally:
        trainer.conditioner.clear()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert abs(loss.item() - as_given.item()) > 1e-3  # the labels' signs matter: not TRL's loss on the data as given


def test_scores_layout_orders_each_pair_by_the_weighted_difference_and_drops_those_below_the_margin(tmp_path):
    rows = [
        {
            "prompt": "p: ",
            "chosen": "ab",
            "rejected": "CD",
            "chosen_scores": [1.0, 0.0],
            "rejected_scores": [0.0, 2.0],
        },
        {
            "prompt": "q: ",
            "chosen": "EF",
            "rejected": "gh",
            "chosen_scores": [0.0, 3.0],
            "rejected_scores": [1.0, 0.0],
        },
        {
            "prompt": "r: ",
            "chosen": "ij",
            "rejected": "KL",
            "chosen_scores": [0.5, 0.5],
            "rejected_scores": [0.4, 0.5],
        },
        {
            "prompt": "s: ",
            "chosen": "MN",
            "rejected": "op",
            "chosen_scores": [0.0, 0.0],
            "rejected_scores": [2.0, 0.0],
        },
    ]
    # Under w = (0.5, 0.5): w·Δr = −0.5, +1, 0.05, −1: pairs 0 and 3 flip, pair 2 is below the margin 0.1.
    trainer = make_trainer(
        tmp_path,
        Dataset.from_list(rows),
        preference_layout="scores",
        score_margin=0.1,
        weight_distribution="fixed",
        fixed_weights=["0.5,0.5"],
    )
    randomize_adapter(trainer)
    loss = trainer.compute_loss(trainer.model, collate(trainer, range(4)))
    trainer.conditioner.clear()
    assert trainer._metrics["train"]["pairs/dropped"][-1] == pytest.approx(0.25)

    examples = [trainer.train_dataset[i] for i in range(4)]
    kept = [swapped(examples[0], True), examples[1], swapped(examples[3], True)]
    trainer.conditioner.set_conditioning_vectors(torch.full((6, 2), 0.5))
    try:
        expected = DPOTrainer._compute_loss(trainer, trainer.model, trainer.data_collator.collator(kept), False)
    finally:
        trainer.conditioner.clear()
    # TRL's mean over the 3 pairs kept, as a share of the mean over all 4 (the pair left out adds 0)
    assert loss.item() == pytest.approx(expected.item() * 3 / 4, abs=1e-6)


def test_prompt_conditioning_writes_each_pairs_weighting_into_the_policys_prompt_only(tmp_path):
    trainer = make_trainer(tmp_path, case_pairs(4, seed=0), conditioning="prompt")
    randomize_adapter(trainer)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, collate(trainer, range(4)))
    weights = sample_group_weights("dirichlet", 4, 2, seed=0, stream=(0, 0))
    tokenizer = trainer.processing_class
    expected = []
    for b in range(4):
        example = trainer.train_dataset[b]
        weighted = format_weighted_prompt(example["prompt"], weights[b].tolist(), ["lower", "upper"])
        weighted_ids = tokenizer(weighted)["input_ids"]
        ratios = []
        for key in ("chosen_ids", "rejected_ids"):
            with torch.no_grad():
                policy = sequence_logp(trainer.model, weighted_ids, example[key])
                with trainer.model.disable_adapter():
                    reference = sequence_logp(trainer.model, example["prompt_ids"], example[key])
            ratios.append(policy - reference)
        sign = example["objective_labels"][0]  # the two objectives disagree on every pair: weights w_0 and w_1
        delta = 0.1 * (ratios[0] - ratios[1])
        expected.append(weights[b, 0] * -F.logsigmoid(sign * delta) + weights[b, 1] * -F.logsigmoid(-sign * delta))
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), abs=1e-5)


def test_prompt_conditioning_scores_the_references_completion_tokens_under_truncation(tmp_path):
    # max_length=40 and 3-token prompts: the reference keeps the 23-token answers whole and cuts the long ones to 37
    # tokens; the policy's prompt is 34 tokens longer ("[weights: lower=0.xx upper=0.xx] "), and TRL's keep_start
    # truncation of the policy's rows would leave it 3 of the 23 tokens.
    rows = [
        {
            "prompt": "p: ",
            "chosen": "abcdefghij" * 2 + "ab",
            "rejected": "ABCDEFGHIJ" * 5,
            "objective_labels": [1, -1],
        },
        {
            "prompt": "q: ",
            "chosen": "KLMNOPQRST" * 2 + "KL",
            "rejected": "klmnopqrst" * 4,
            "objective_labels": [-1, 1],
        },
    ]
    trainer = make_trainer(
        tmp_path, Dataset.from_list(rows), conditioning="prompt", max_length=40, per_device_train_batch_size=2
    )
    randomize_adapter(trainer)
    batch = collate(trainer, range(2))
    assert batch["completion_mask"].sum(1).tolist() == [23, 23, 37, 37]  # what the reference scores
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    weights = sample_group_weights("dirichlet", 2, 2, seed=0, stream=(0, 0))
    tokenizer = trainer.processing_class
    expected = []
    for b in range(2):
        example = trainer.train_dataset[b]
        weighted_ids = tokenizer(format_weighted_prompt(example["prompt"], weights[b].tolist(), ["lower", "upper"]))
        assert len(weighted_ids["input_ids"]) + 23 > 40
        ratios = []
        for key in ("chosen_ids", "rejected_ids"):
            kept = example[key][: 40 - len(example["prompt_ids"])]  # the reference's completion tokens
            with torch.no_grad():
                policy = sequence_logp(trainer.model, weighted_ids["input_ids"], kept)
                with trainer.model.disable_adapter():
                    reference = sequence_logp(trainer.model, example["prompt_ids"], kept)
            ratios.append(policy - reference)
        sign = example["objective_labels"][0]
        delta = 0.1 * (ratios[0] - ratios[1])
        expected.append(weights[b, 0] * -F.logsigmoid(sign * delta) + weights[b, 1] * -F.logsigmoid(-sign * delta))
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), abs=1e-5)


def test_soft_score_preference_weights_each_side_by_the_bradley_terry_probability(tmp_path):
    rows = [
        {
            "prompt": "p: ",
            "chosen": "ab",
            "rejected": "CD",
            "chosen_scores": [1.0, 0.0],
            "rejected_scores": [0.0, 2.0],
        },
        {
            "prompt": "q: ",
            "chosen": "EF",
            "rejected": "gh",
            "chosen_scores": [0.5, 3.0],
            "rejected_scores": [0.5, 0.0],
        },
        {
            "prompt": "r: ",
            "chosen": "ij",
            "rejected": "KL",
            "chosen_scores": [0.2, 0.4],
            "rejected_scores": [0.2, 0.4],
        },
    ]
    trainer = make_trainer(
        tmp_path,
        Dataset.from_list(rows[:2] + [{**rows[2], "chosen_scores": [0.3, 0.4]}]),
        preference_layout="scores",
        score_temperature=0.5,
        weight_distribution="fixed",
        fixed_weights=["0.25,0.75"],
        beta=0.3,
    )
    randomize_adapter(trainer)
    loss = trainer.compute_loss(trainer.model, collate(trainer, range(3)))
    trainer.conditioner.clear()
    # w·Δr = 0.25 − 1.5 = −1.25, 2.25, 0.025: p = σ(w·Δr / 0.5); each pair p·ℓ(z) + (1 − p)·ℓ(−z), mean over 3.
    expected = []
    for b, difference in enumerate([-1.25, 2.25, 0.025]):
        chosen, rejected = independent_logratios(trainer, trainer.train_dataset[b], torch.tensor([0.25, 0.75]))
        z = 0.3 * (chosen - rejected)
        p = 1 / (1 + math.exp(-difference / 0.5))
        expected.append(p * -F.logsigmoid(z) + (1 - p) * -F.logsigmoid(-z))
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), abs=1e-5)
    assert trainer._metrics["train"]["pairs/dropped"][-1] == 0.0


@pytest.mark.parametrize(
    "overrides, recorded, sentence",
    [
        (
            {"loss_type": "ipo", "beta": 0.25},
            {"preference_layout": "labels", "loss_type": "ipo", "beta": 0.25},
            "Trained with DPO-CLP (the IPO loss ℓ, β = 0.25) on preference pairs labelled per objective",
        ),
        (
            {"preference_layout": "scores", "score_margin": 0.1},
            {"preference_layout": "scores", "loss_type": "sigmoid", "beta": 0.1, "score_temperature": None},
            "ordered by the sign of its weighted score difference w·Δr (a hard label",
        ),
        (
            {"preference_layout": "scores", "loss_type": "hinge", "score_temperature": 2.0},
            {"preference_layout": "scores", "loss_type": "hinge", "score_temperature": 2.0, "score_margin": 0.0},
            "the soft p = σ(w·Δr / τ), τ = 2",
        ),
    ],
)
def test_clp_config_and_model_card_record_the_layout_loss_and_beta(tmp_path, overrides, recorded, sentence):
    layout = overrides.get("preference_layout", "labels")
    trainer = make_trainer(tmp_path, case_pairs(4, seed=0, layout=layout), save_strategy="no", **overrides)
    trainer.save_model()
    trainer.create_model_card()
    saved = ConditioningConfig.load(str(tmp_path / "out" / "clp_config.json")).scalarization
    assert saved["method"] == "preference" and saved.items() >= recorded.items()
    card = (tmp_path / "out" / "README.md").read_text()
    assert sentence in card and "mixes the objectives' preferences" not in card


def test_precomputed_reference_log_probs_are_the_adapter_free_base(tmp_path):
    trainer = make_trainer(tmp_path, case_pairs(4, seed=0), precompute_ref_log_probs=True)
    assert "ref_chosen_logps" in trainer.train_dataset.column_names
    randomize_adapter(trainer)
    weights = torch.tensor([[0.3, 0.7]]).expand(4, 2)
    batch = collate(trainer, range(4))
    inputs = {**batch, "weights": weights, "conditioning_vectors": torch.cat([weights, weights])}
    trainer.conditioner.set_conditioning_vectors(inputs["conditioning_vectors"])
    try:
        with torch.no_grad():
            precomputed = trainer._compute_loss(trainer.model, inputs, False)
            trainer.precompute_ref_logps = False
            live = trainer._compute_loss(trainer.model, inputs, False)
    finally:
        trainer.conditioner.clear()
    assert precomputed.item() == pytest.approx(live.item(), abs=1e-5)


def test_training_steers_each_objectives_preferred_responses_and_steerable_model_loads_it(tmp_path, saved_base_model):
    args = dict(max_steps=40, per_device_train_batch_size=8, learning_rate=2e-2, beta=0.5, save_strategy="no")
    trainer = MultiObjectiveDPOTrainer(
        saved_base_model,
        args=dpo_config(tmp_path, **args),
        train_dataset=case_pairs(64, seed=0),
        processing_class=demo.make_byte_tokenizer(),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS),
    )
    trainer.train()
    trainer.save_model()
    steer = SteerableModel.from_pretrained(str(tmp_path / "out"))
    assert steer.objective_names == ["lower", "upper"]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "with DPO ([Rafailov et al., 2023]" in card and "RLOO" not in card
    assert "Trained with DPO-CLP (DPO's sigmoid loss ℓ, β = 0.5)" in card and "w·R" not in card
    assert "Σ_i w_i·1[s_i≠0]·ℓ(s_i·z)" in card
    tokenizer = demo.make_byte_tokenizer()
    held_out = case_pairs(16, seed=1)

    def preference_for_lowercase(weights) -> float:
        """Share of held-out pairs whose lowercase answer gains more log-probability over the base than the other."""
        wins = 0
        for row in held_out:
            prompt_ids = tokenizer(row["prompt"])["input_ids"]
            lower, upper = sorted([row["chosen"], row["rejected"]], key=str.isupper)
            ratios = []
            for answer in (lower, upper):
                ids = tokenizer(answer + tokenizer.eos_token)["input_ids"]
                with torch.no_grad():
                    with steer.condition(torch.tensor(weights)):
                        policy = sequence_logp(steer.model, prompt_ids, ids)
                    with steer.model.disable_adapter():
                        reference = sequence_logp(steer.model, prompt_ids, ids)
                ratios.append(policy - reference)
            wins += int(ratios[0] > ratios[1])
        return wins / len(held_out)

    assert preference_for_lowercase([1.0, 0.0]) >= 0.9
    assert preference_for_lowercase([0.0, 1.0]) <= 0.1


def test_conversational_pairs_are_templated_and_trained(tmp_path):
    tokenizer = demo.make_byte_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    rows = [
        {
            "prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}],
            "objective_labels": row["objective_labels"],
        }
        for row in case_pairs(8, seed=0)
    ]
    trainer = MultiObjectiveDPOTrainer(
        demo.make_tiny_llama(seed=0),
        args=dpo_config(tmp_path),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LORA,
    )
    first = trainer.train_dataset[0]
    assert tokenizer.decode(first["prompt_ids"]).endswith("assistant: ")
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5)  # policy = reference at init, under every weighting
    assert losses[-1] < losses[0]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "change, layout, message",
    [
        (
            lambda row: row.pop("objective_labels"),
            "labels",
            "no 'objective_labels' column: preference_layout='labels'",
        ),
        (lambda row: row.update(objective_labels=[1, 0, -1]), "labels", "give one value per objective"),
        (lambda row: row.update(chosen_scores=[1.0], rejected_scores=[0.0]), "scores", "give one value per objective"),
        (lambda row: row.update(objective_labels=[2, -1]), "labels", "must be \\+1 .* -1 .* or 0"),
        (lambda row: row.update(objective_labels=[0, 0]), "labels", "no objective prefers either response"),
        (lambda row: row.update(chosen_scores=[float("nan"), 1.0]), "scores", "must be a finite number"),
        (lambda row: row.update(chosen_scores=[0.0, 1.0], rejected_scores=[0.0, 1.0]), "scores", "no objective"),
        (lambda row: row.pop("rejected_scores"), "scores", "no 'rejected_scores' column"),
    ],
)
def test_bad_data_is_refused_at_construction_naming_the_fix(tmp_path, change, layout, message):
    rows = case_pairs(4, seed=0, layout=layout).to_list()
    for row in rows if "column" in message else rows[1:2]:
        change(row)
    with pytest.raises(ValueError, match=message):
        make_trainer(tmp_path, Dataset.from_list(rows), preference_layout=layout)


def test_a_streamed_dataset_is_checked_from_its_first_row_and_trains(tmp_path):
    missing = case_pairs(4, seed=0).remove_columns("objective_labels").to_iterable_dataset()
    with pytest.raises(ValueError, match="no 'objective_labels' column"):
        make_trainer(tmp_path, missing)
    trainer = make_trainer(tmp_path, case_pairs(16, seed=0).to_iterable_dataset())
    trainer.train()
    assert trainer.state.global_step == 2 and trainer.state.log_history[0]["loss"] == pytest.approx(math.log(2))


def with_row_changed(dataset: Dataset, index: int, **values) -> Dataset:
    return Dataset.from_list([{**row, **values} if i == index else row for i, row in enumerate(dataset)])


@pytest.mark.parametrize(
    "make_dataset, layout, message",
    [
        (  # a label too few, on the 40th pair of the stream: broadcast over both objectives if not refused
            lambda: with_row_changed(case_pairs(48, seed=0), 39, objective_labels=[2]).to_iterable_dataset(),
            "labels",
            "Row 39 of the training dataset has objective_labels=\\[2\\]: give one value per objective",
        ),
        (  # a NaN score: dropped from the loss if not refused
            lambda: with_row_changed(
                case_pairs(8, seed=0, layout="scores"), 5, chosen_scores=[math.nan, 1.0]
            ).to_iterable_dataset(),
            "scores",
            "Row 5 of the training dataset has chosen_scores=\\[nan, 1.0\\].*must be a finite number",
        ),
        (
            lambda: case_pairs(4, seed=0).to_iterable_dataset().filter(lambda row: False),
            "labels",
            "a stream\\) yields no rows",
        ),
        (
            lambda: case_pairs(4, seed=0).filter(lambda row: False),
            "labels",
            "has no pairs \\(0 rows; columns \\['prompt'",
        ),
    ],
    ids=["stream-label-length", "stream-nan-score", "empty-stream", "empty-dataset"],
)
def test_streamed_and_empty_datasets_are_refused_before_the_model_loads(tmp_path, make_dataset, layout, message):
    # A model path that cannot load: the data must be refused first.
    with pytest.raises(ValueError, match=message):
        make_trainer(tmp_path, make_dataset(), model=str(tmp_path / "no-model-here"), preference_layout=layout)


def test_a_dataset_in_the_other_layout_says_so(tmp_path):
    with pytest.raises(ValueError, match="fit preference_layout='scores'"):
        make_trainer(tmp_path, case_pairs(4, seed=0, layout="scores"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"loss_type": "robust"}, "one of \\['sigmoid', 'hinge', 'ipo'\\]"),
        ({"loss_type": ["sigmoid", "hinge"]}, "one of \\['sigmoid', 'hinge', 'ipo'\\]"),
        ({"objective_names": None}, "Give one name per objective"),
        ({"conditioning": "logit"}, "Choose conditioning='full' or 'attn'"),
        ({"score_margin": 0.1}, "applies to preference_layout='scores' only"),
        ({"score_temperature": 1.0}, "applies to preference_layout='scores' only"),
        ({"preference_layout": "scores", "score_temperature": 0.0}, "must be a finite value > 0"),
        ({"conditioning": "prompt", "truncation_mode": "keep_end"}, "use truncation_mode='keep_start'"),
        ({"preference_layout": "ranks"}, "`preference_layout` must be one of"),
        ({"ld_alpha": 0.5}, "not supported by DPO-CLP"),
        ({"weight_distribution": "fixed", "fixed_weights": ["0.2,0.3,0.5"]}, "one weight per objective"),
        ({"use_liger_kernel": True}, "`use_liger_kernel` is not supported by DPO-CLP"),
        ({"loss_weights": [0.5, 0.5]}, "`loss_weights` must have the same length as `loss_type`"),
    ],
)
def test_bad_config_is_refused_naming_the_fix(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        dpo_config(tmp_path, **overrides)


def test_loss_weights_scale_the_loss_as_in_dpo(tmp_path):
    losses = []
    for loss_weights in (None, [0.25]):
        trainer = make_trainer(tmp_path, case_pairs(4, seed=0), loss_weights=loss_weights)
        randomize_adapter(trainer)
        with torch.no_grad():
            losses.append(trainer.compute_loss(trainer.model, collate(trainer, range(4))).item())
        trainer.conditioner.clear()
    assert losses[0] > 0.1 and losses[1] == pytest.approx(0.25 * losses[0], rel=1e-6)


def test_a_dataset_passed_to_evaluate_is_checked_as_at_construction(tmp_path):
    trainer = make_trainer(tmp_path, case_pairs(4, seed=0))
    bad = with_row_changed(case_pairs(4, seed=1), 1, objective_labels=[2])
    with pytest.raises(ValueError, match="Row 1 of the evaluation dataset has objective_labels=\\[2\\]"):
        trainer.evaluate(bad)
    with pytest.raises(ValueError, match="Row 1 of the held-out dataset has objective_labels=\\[2\\]"):
        trainer.evaluate({"held-out": bad})
    assert "eval_held-out_loss" in trainer.evaluate({"held-out": case_pairs(4, seed=1)})


class StreamRecordingTrainer(MultiObjectiveDPOTrainer):
    def _weighting_stream(self, mode):
        stream = super()._weighting_stream(mode)
        self.streams.append(stream)
        return stream


def test_weightings_follow_the_micro_step_stream_across_a_resume_and_evaluations_repeat(tmp_path):
    def trainer(**overrides):
        built = StreamRecordingTrainer(
            demo.make_tiny_llama(seed=0),
            args=dpo_config(tmp_path, gradient_accumulation_steps=2, save_strategy="steps", save_steps=1, **overrides),
            train_dataset=case_pairs(16, seed=0),
            eval_dataset=case_pairs(4, seed=1),
            processing_class=demo.make_byte_tokenizer(),
            peft_config=LORA,
        )
        built.streams = []
        return built

    first = trainer()
    first.train()
    assert first.streams == [(0, 0), (0, 1), (0, 2), (0, 3)]
    losses = [first.evaluate()["eval_loss"] for _ in range(2)]
    assert losses[0] == losses[1]  # each evaluation draws the same weightings
    assert first.streams[4:] == [(1, 0), (1, 0)]

    resumed = trainer()
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-1"))
    assert resumed.streams == [(0, 2), (0, 3)]

    with pytest.raises(ValueError, match="same reward functions"):
        trainer(objective_names=["helpful", "harmless"]).train(resume_from_checkpoint=True)


class PairWeightsRecordingTrainer(MultiObjectiveDPOTrainer):
    def _draw_pair_weights(self, num_local_pairs, mode):
        all_weights, weights = super()._draw_pair_weights(num_local_pairs, mode)
        self.drawn.append(all_weights.clone())
        return all_weights, weights


def test_weighting_schedule_draws_corners_first_for_the_pairs_too(tmp_path):
    trainer = PairWeightsRecordingTrainer(
        demo.make_tiny_llama(seed=0),
        args=dpo_config(tmp_path, max_steps=4, one_hot_fraction=0.5, dirichlet_concentration=0.5),
        train_dataset=case_pairs(16, seed=0),
        processing_class=demo.make_byte_tokenizer(),
        peft_config=LORA,
    )
    trainer.drawn = []
    trainer.train()
    # Steps 0 and 1 (t < .5): every pair on a corner; steps 2 and 3: p = 0, the run's Dirichlet draws unchanged.
    logged = [
        h["weights/one_hot_probability"] for h in trainer.state.log_history if "weights/one_hot_probability" in h
    ]
    assert logged == [1.0, 1.0, 0.0, 0.0]
    assert len(trainer.drawn) == 4
    for step in (0, 1):
        assert (trainer.drawn[step].max(-1).values == 1).all()
        corner_rng = np.random.default_rng([0, 0, step, 2])
        corner_rng.random(4)  # the draw's uniforms come first, then the corners
        assert trainer.drawn[step].argmax(-1).tolist() == corner_rng.integers(2, size=4).tolist()
    for step in (2, 3):
        expected = np.random.default_rng([0, 0, step]).dirichlet([0.5, 0.5], size=4)
        torch.testing.assert_close(trainer.drawn[step], torch.as_tensor(expected, dtype=torch.float32))


class RecordGradients(TrainerCallback):
    """Keeps the gradients of the first optimizer step, and whether the model checkpointed its activations."""

    def __init__(self):
        self.recorded = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if not self.recorded:
            self.recorded["checkpointing"] = model.get_base_model().is_gradient_checkpointing
            self.recorded.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})


def test_gradient_checkpointing_keeps_each_pairs_weighting_through_backward(tmp_path):
    """Backward re-runs the forward under gradient checkpointing: the pairs' weightings must still be set then."""
    gradients = []
    for checkpointing in (False, True):
        trainer = make_trainer(
            tmp_path / str(checkpointing), case_pairs(4, seed=0), gradient_checkpointing=checkpointing, max_steps=1
        )
        randomize_adapter(trainer)
        callback = RecordGradients()
        trainer.add_callback(callback)
        trainer.train()  # one step of 4 pairs with Dirichlet weightings, the same on both runs
        assert callback.recorded.pop("checkpointing") == checkpointing
        assert trainer.conditioner.conditioning_vectors is None  # cleared once backward is done
        gradients.append(callback.recorded)
    assert gradients[0].keys() == gradients[1].keys() and gradients[0]
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_gradient_accumulation_weighs_every_pair_alike_as_one_large_batch_does(tmp_path):
    """10 pairs in micro-batches of 4, 4 and 2 (one optimizer step): the step's gradient must be that of the mean over
    the 10 pairs, as one batch of 10 gives it, not the mean of the micro-batches' means (the 2 pairs of the short
    micro-batch weighing twice as much as the others)."""
    rows = case_pairs(10, seed=0).to_list()
    for row in rows[6:]:
        row["objective_labels"] = [0, 1]  # pair weight 0.7 under w = (0.3, 0.7): pairs of unequal weight
    gradients = []
    for batch_size, accumulation in ((10, 1), (4, 3)):
        trainer = make_trainer(
            tmp_path / str(accumulation),
            Dataset.from_list(rows),
            weight_distribution="fixed",
            fixed_weights=["0.3,0.7"],
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
        )
        randomize_adapter(trainer)
        callback = RecordGradients()
        trainer.add_callback(callback)
        trainer.train()
        callback.recorded.pop("checkpointing")
        gradients.append((callback.recorded, trainer.state.log_history[0]["loss"]))
    (whole, whole_loss), (accumulated, accumulated_loss) = gradients
    assert whole.keys() == accumulated.keys() and whole
    for name, gradient in whole.items():
        torch.testing.assert_close(accumulated[name], gradient, rtol=1e-4, atol=1e-7, msg=name)
    assert accumulated_loss == pytest.approx(whole_loss, rel=1e-5)


def test_metrics_are_gathered_for_metrics_so_padded_duplicate_pairs_are_not_counted(tmp_path):
    """At the end of an uneven evaluation under DDP, accelerate pads the last batches with repeated pairs and
    `gather_for_metrics` drops them. Simulated on one process: the gather keeps the first 3 of 4 pairs, so every
    metric must equal that of the 3 pairs alone."""
    rows = case_pairs(4, seed=0).to_list()
    rows[3]["objective_labels"] = [0, 1]  # a pair unlike the others: counted, it would move every metric
    trainer = make_trainer(tmp_path, Dataset.from_list(rows), weight_distribution="fixed", fixed_weights=["0.3,0.7"])
    randomize_adapter(trainer)

    def metrics_of(num_pairs):
        trainer._metrics["train"].clear()
        tokens_before = trainer._total_train_tokens
        with torch.no_grad():
            trainer.compute_loss(trainer.model, collate(trainer, range(num_pairs)))
        trainer.conditioner.clear()
        metrics = {key: values[-1] for key, values in trainer._metrics["train"].items()}
        metrics["num_tokens"] -= tokens_before
        return metrics

    alone = metrics_of(3)
    trainer.accelerator.gather_for_metrics = lambda tensor: tensor[:3]  # the 4th pair: a padded duplicate
    padded = metrics_of(4)
    assert padded.keys() == alone.keys() and "rewards/upper/accuracies" in padded
    for key, value in alone.items():
        assert padded[key] == pytest.approx(value, abs=1e-6), key


# ---------------------------------------------------------------- parity with TRL's DPO (found by upstream conformance)


def all_prefer_chosen(num_pairs: int) -> Dataset:
    """Pairs that every objective labels alike (+1): under any weighting the mixed loss is DPO's loss of the pair."""
    return case_pairs(num_pairs, seed=0).map(lambda row: {"objective_labels": [1, 1]})


def ours_and_trls(trainer, num_pairs: int, weights: list[float]):
    """(loss, metrics) of our `compute_loss` and of TRL's `_compute_loss` on the same batch, the policy conditioned on
    `weights` (the config's fixed weighting) in both."""
    batch = collate(trainer, range(num_pairs))
    trainer._metrics["train"].clear()
    loss = trainer.compute_loss(trainer.model, batch)
    ours = {key: values[-1] for key, values in trainer._metrics["train"].items()}
    trainer._metrics["train"].clear()
    trainer.conditioner.set_conditioning_vectors(torch.tensor([weights]).expand(2 * num_pairs, len(weights)))
    try:
        expected = DPOTrainer._compute_loss(
            trainer, trainer.model, trainer.data_collator.collator(batch_rows(trainer, num_pairs)), False
        )
    finally:
        trainer.conditioner.clear()
    trls = {key: values[-1] for key, values in trainer._metrics["train"].items()}
    return loss, expected, ours, trls


def batch_rows(trainer, num_pairs):
    return [trainer.train_dataset[i] for i in range(num_pairs)]


def test_token_metrics_are_logged_as_trls_dpo_logs_them(tmp_path):
    trainer = make_trainer(
        tmp_path, all_prefer_chosen(4), weight_distribution="fixed", fixed_weights=["0.3,0.7"], beta=0.3
    )
    randomize_adapter(trainer)
    loss, expected, ours, trls = ours_and_trls(trainer, 4, [0.3, 0.7])
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    for key in ("entropy", "logits/chosen", "logits/rejected", "mean_token_accuracy"):
        assert key in ours, f"{key} is not logged"
        assert ours[key] == pytest.approx(trls[key], abs=1e-5), key
    assert ours["num_tokens"] == collate(trainer, range(4))["attention_mask"].sum().item()  # TRL's then adds its own


def test_moe_router_load_balancing_loss_is_added_and_logged_as_in_trls_dpo(tmp_path):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(0)
    config = Qwen3MoeConfig(
        vocab_size=259,
        hidden_size=16,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        intermediate_size=32,
        moe_intermediate_size=16,
        num_experts=4,
        num_experts_per_tok=2,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    trainer = MultiObjectiveDPOTrainer(
        Qwen3MoeForCausalLM(config),
        args=dpo_config(tmp_path, weight_distribution="fixed", fixed_weights=["0.5,0.5"], router_aux_loss_coef=1.0),
        train_dataset=all_prefer_chosen(4),
        processing_class=demo.make_byte_tokenizer(),
        peft_config=LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]),
    )
    assert trainer.aux_loss_enabled
    randomize_adapter(trainer)
    loss, expected, ours, trls = ours_and_trls(trainer, 4, [0.5, 0.5])
    assert trls["aux_loss"] > 0.1  # so that leaving it out shows
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert ours["aux_loss"] == pytest.approx(trls["aux_loss"], abs=1e-6)


def test_compute_metrics_receives_the_policys_logits_of_every_row(tmp_path):
    seen = {}

    def compute_metrics(eval_pred):
        seen["logits"], seen["input_ids"] = eval_pred.predictions, eval_pred.label_ids
        return {"rows": float(len(eval_pred.label_ids))}

    trainer = MultiObjectiveDPOTrainer(
        demo.make_tiny_llama(seed=0),
        args=dpo_config(tmp_path, per_device_eval_batch_size=3),
        train_dataset=case_pairs(4, seed=0),
        eval_dataset=case_pairs(3, seed=1),
        processing_class=demo.make_byte_tokenizer(),
        compute_metrics=compute_metrics,
        peft_config=LORA,
    )
    metrics = trainer.evaluate()
    assert metrics["eval_rows"] == 6.0  # chosen and rejected rows of the 3 pairs
    assert seen["logits"].shape[:2] == seen["input_ids"].shape and seen["logits"].shape[2] == 259
