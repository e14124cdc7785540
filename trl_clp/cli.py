"""`trl-clp` command line: train, inspect and evaluate steerable models.

trl-clp train --output_dir outputs/clp-demo          # every flag of examples/train_clp.py; --config file.yaml
trl-clp info outputs/clp-demo
trl-clp evaluate outputs/clp-demo --prompts prompts.txt --reward_funcs lowercase uppercase --grid_points 5
trl-clp evaluate clp-tldr --prompts heldout.jsonl --reward_funcs nli rougeL --nli_model path/to/nli
trl-clp compare --runs CLP=runs/clp-s0,runs/clp-s1 soups=runs/rs-s0,runs/rs-s1 --prompts heldout.jsonl \
    --reward_funcs sentiment objectivity --output_dir outputs/comparison      # paired intervals, verdicts, guards
trl-clp plot outputs/clp-demo/front.json other/front.json --labels CLP prompting --output fronts.png
trl-clp export outputs/clp-demo lora/w-0.3-0.7 --weights 0.3,0.7
trl-clp serve outputs/clp-demo --port 8000
trl-clp convert-gguf SmolLM2-135M-Instruct.Q4_1.gguf models/smollm2   # then any model path above takes the folder
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

from .conditioning.config import CLP_CONFIG_NAME


class CommandError(Exception):
    """A mistake in the command line or its files: printed as a one-line message, without a traceback."""


def _check_model_folder(model: str) -> None:
    """Refuse early a path that cannot be a saved model; anything else may still be a hub repository id."""
    looks_like_a_path = model.startswith(("/", ".", "~")) or model.count("/") > 1 or os.sep != "/" and os.sep in model
    if os.path.exists(model) and not os.path.isdir(model):
        raise CommandError(f"{model!r} is a file: give the folder written by `trainer.save_model()`.")
    if not os.path.exists(model) and looks_like_a_path:
        raise CommandError(f"The folder {model!r} does not exist (looked in {os.getcwd()}).")


def _load_steerable(model: str, base_model: str | None = None):
    from .conditioning.steerable import SteerableModel

    _check_model_folder(model)
    try:
        return SteerableModel.from_pretrained(model, base_model=base_model)
    except (OSError, ValueError) as error:
        if os.path.isdir(model):
            raise
        # "user/name" may be a folder that is not there or a hub repository: say both.
        raise CommandError(
            f"{model!r} is not a folder here ({os.getcwd()}) and could not be loaded as a hub repository: {error}"
        ) from error


def _info(args) -> None:
    if not os.path.isdir(args.model):
        raise CommandError(f"The folder {args.model!r} does not exist (looked in {os.getcwd()}).")
    path = os.path.join(args.model, CLP_CONFIG_NAME)
    if not os.path.isfile(path):
        raise CommandError(
            f"{args.model!r} has no {CLP_CONFIG_NAME}: it is not a model saved by `MultiObjectiveTrainer.save_model()` "
            "or `SteerableModel.save_pretrained()`."
        )
    with open(path) as handle:
        print(json.dumps(json.load(handle), indent=2))


def read_prompts(path: str) -> dict[str, list]:
    """Columns of a prompts file: `{"prompt": [...], <other column>: [...]}`.

    A `.jsonl` file holds one JSON object per line, a `.json` file a list of them (or one per line), a `.csv` file a
    header row; each needs a `prompt` column, and its other columns (e.g. `reference`, `source`) reach the reward
    functions as keyword arguments, as dataset columns do in training. In JSON, a `prompt` may be a conversation (a
    list of `{"role", "content"}` messages, as in a conversational TRL dataset). Any other file is plain text, one
    prompt per line, with `\\n` for a newline inside a prompt.
    """
    from .conditioning.prompts import check_prompts

    if not os.path.isfile(path):
        raise CommandError(f"The prompts file {path!r} does not exist (looked in {os.getcwd()}).")
    extension = os.path.splitext(path)[1].lower()
    with open(path, newline="" if extension == ".csv" else None) as handle:
        if extension == ".csv":
            rows = list(csv.DictReader(handle))
        elif extension in (".jsonl", ".json"):
            text = handle.read()
            try:
                rows = (
                    json.loads(text)
                    if extension == ".json" and text.lstrip().startswith("[")
                    else [json.loads(line) for line in text.splitlines() if line.strip()]
                )
            except json.JSONDecodeError as error:
                raise CommandError(f"{path}: not valid JSON ({error}); write one object per line.") from error
        else:
            return {"prompt": [line.rstrip("\n").replace("\\n", "\n") for line in handle if line.strip()]}
    if not rows:
        raise CommandError(f"{path} has no rows.")
    columns = list(rows[0])
    if "prompt" not in columns:
        raise CommandError(f"{path} has no `prompt` column; its columns are {columns}.")
    missing = [i for i, row in enumerate(rows) if set(row) != set(columns)]
    if missing:
        raise CommandError(f"{path}: row {missing[0] + 1} does not have the columns of the first row, {columns}.")
    prompts = [row["prompt"] for row in rows]
    try:
        check_prompts(prompts)
    except ValueError as error:
        raise CommandError(f"{path}: {error}") from error
    return {column: [row[column] for row in rows] for column in columns}


def _reward_functions(args, columns: dict[str, list]) -> list:
    """`--reward_funcs` resolved as `trl-clp train` resolves them, checked against the prompts' columns."""
    from .rewards import RougeReward, resolve_reward_function

    reward_funcs = [
        resolve_reward_function(
            spec, reference_column=args.reference_column, nli_model=args.nli_model, premise_column=args.premise_column
        )
        for spec in args.reward_funcs
    ]
    if any(isinstance(f, str) for f in reward_funcs):
        raise CommandError(
            f"`{args.command}` takes callable rewards: built-in names (lowercase, uppercase, titlecase, brevity, "
            "source_coverage, sentiment, objectivity, readability, civility), rouge1/rouge2/rougeL, nli, or "
            f"module:function; got {args.reward_funcs}."
        )
    needed = {f.reference_column for f in reward_funcs if isinstance(f, RougeReward)}
    needed |= {args.premise_column} if "nli" in args.reward_funcs and args.premise_column else set()
    for column in sorted(needed - set(columns)):
        raise CommandError(
            f"The rewards need a {column!r} column, which {args.prompts} does not have: give the prompts as a JSONL "
            f"or CSV file with `prompt` and `{column}` columns (or name the column with --reference_column)."
        )
    return reward_funcs


def read_prompt_source(source: str, split: str = "test") -> dict[str, list]:
    """Columns of held-out prompts from a file (`read_prompts`), or from a dataset folder or hub id (its `split`,
    loaded with `datasets.load_dataset`, as `trl-clp train --dataset_name` loads one)."""
    if os.path.isfile(source):
        return read_prompts(source)
    from datasets import load_dataset

    try:
        dataset = load_dataset(source)
    except Exception as error:  # datasets raises many kinds: say what was tried
        raise CommandError(
            f"--prompts {source!r} is not a file here ({os.getcwd()}) and could not be loaded as a dataset: {error}"
        ) from error
    if split not in dataset:
        raise CommandError(
            f"--prompts {source}: no split {split!r}; its splits are {list(dataset)} (--prompts_split)."
        )
    if "prompt" not in dataset[split].column_names:
        raise CommandError(f"--prompts {source}: no `prompt` column; its columns are {dataset[split].column_names}.")
    return {column: list(dataset[split][column]) for column in dataset[split].column_names}


def _compare(args) -> None:
    from .comparison import compare_runs

    if args.num_resamples < 1 or not 0 < args.confidence < 1 or not 0 < args.significance < 1:
        raise CommandError("--num_resamples must be >= 1, and --confidence and --significance in (0, 1).")
    if not args.reuse and (args.prompts is None or args.reward_funcs is None):
        raise CommandError(
            "Give --prompts and --reward_funcs to evaluate the runs (or --reuse, to compare the evaluations already "
            "in --output_dir)."
        )
    prompts, reward_funcs, reward_kwargs = None, None, None
    if args.prompts is not None:
        columns = read_prompt_source(args.prompts, args.prompts_split)
        columns = {name: values[: args.num_prompts] for name, values in columns.items()}
        prompts = columns.pop("prompt")
        reward_kwargs = columns or None
        if args.reward_funcs is not None:
            reward_funcs = _reward_functions(args, {"prompt": prompts, **columns})
    results = compare_runs(
        args.runs,
        args.output_dir,
        prompts=prompts,
        reward_funcs=reward_funcs,
        reward_kwargs=reward_kwargs,
        grid_points=args.grid_points,
        reuse=args.reuse,
        kl_weights_for=args.kl_weights_for,
        logit_mix_for=args.logit_mix_for,
        kl_series=args.kl_series,
        reference_point=args.reference,
        base_samples_per_prompt=args.base_samples_per_prompt,
        generations_for=args.generations_for,
        num_resamples=args.num_resamples,
        confidence=args.confidence,
        bootstrap_seed=args.seed,
        pair_seeds=not args.independent_seeds,
        significance=args.significance,
        guards=not args.no_guards,
        num_samples=args.samples_per_prompt,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
    )
    from .paired_bootstrap import describe_verdict

    for key, pair in results["paired"].items():
        entries = [("hypervolume", pair["hypervolume"])] + [(f"{n} margin", e) for n, e in pair["margins"].items()]
        verdicts = [f"{name}: {describe_verdict(entry['verdict'], pair['a'], pair['b'])}" for name, entry in entries]
        print(f"{key}: " + "; ".join(verdicts))
    print(f"Wrote comparison.json, report.md, the figures and generations.md to {args.output_dir}")


def _evaluate(args) -> None:
    import torch

    from .evaluation import evaluate_front
    from .sampling import simplex_grid

    _check_model_folder(args.model)
    for flag, valid, expected in (
        ("temperature", args.temperature > 0, "> 0"),
        ("top_p", 0 < args.top_p <= 1, "in (0, 1]"),
        ("top_k", args.top_k >= 0, ">= 0 (0 keeps every token)"),
        ("batch_size", args.batch_size >= 1, ">= 1"),
    ):
        if not valid:
            raise CommandError(f"--{flag} must be {expected}, got {getattr(args, flag)}.")
    columns = read_prompts(args.prompts)
    reward_funcs = _reward_functions(args, columns)
    steer = _load_steerable(args.model, args.base_model)
    if steer.tokenizer is None:
        raise CommandError(f"{args.model} has no tokenizer files: save the tokenizer beside the adapter.")
    if len(reward_funcs) != steer.conditioning_config.num_objectives:
        raise CommandError(
            f"Give one reward function per objective, in this order: {steer.objective_names} "
            f"({len(reward_funcs)} given)."
        )
    steer.to("cuda" if torch.cuda.is_available() else "cpu")
    front = evaluate_front(
        steer,
        steer.tokenizer,
        columns["prompt"],
        reward_funcs,
        simplex_grid(steer.conditioning_config.num_objectives, args.grid_points),
        num_samples=args.samples_per_prompt,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        reward_kwargs={name: values for name, values in columns.items() if name != "prompt"},
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
    )
    print(front.format_table())
    print(front.table_legend())
    directory = args.output_dir or args.model
    paths = list(front.save(directory, stem="evaluation"))
    paths.append(front.save_samples(os.path.join(directory, "evaluation_samples.jsonl")))
    try:
        from .plotting import plot_fronts

        paths.append(
            plot_fronts(
                {os.path.basename(os.path.abspath(args.model)): front}, os.path.join(directory, "evaluation.png")
            )
        )
    except ImportError as error:
        print(f"No plot: {error}")
    print("Wrote " + ", ".join(paths))


def _plot(args) -> None:
    from .evaluation import Front
    from .plotting import plot_fronts

    labels = args.labels or [os.path.basename(os.path.dirname(os.path.abspath(path))) for path in args.fronts]
    if len(labels) != len(args.fronts):
        raise CommandError(f"Give one label per front: {len(args.fronts)} fronts, {len(labels)} labels.")
    for path in args.fronts:
        if not os.path.isfile(path):
            raise CommandError(f"The front file {path!r} does not exist (looked in {os.getcwd()}).")
    fronts = {label: Front.load(path) for label, path in zip(labels, args.fronts, strict=True)}
    print("Wrote " + plot_fronts(fronts, args.output))


def _export(args) -> None:
    import torch

    _check_model_folder(args.model)
    try:
        weights = torch.tensor([float(w) for w in args.weights.split(",")])
    except ValueError as error:
        raise CommandError(f"--weights takes comma-separated numbers, e.g. 0.3,0.7; got {args.weights!r}.") from error
    steer = _load_steerable(args.model, args.base_model)
    steer.export_lora(args.output_dir, weights, kl_weight=args.kl_weight)
    if steer.tokenizer is not None:
        steer.tokenizer.save_pretrained(args.output_dir)
    shown = ", ".join(f"{name}={w:g}" for name, w in zip(steer.objective_names, weights.tolist(), strict=True))
    print(f"Wrote a plain LoRA adapter for the weighting {shown} to {args.output_dir}")


def _serve(args) -> None:
    from .serving import serve

    # Options left unset keep `ServerConfig`'s defaults.
    settings = {
        name: getattr(args, name)
        for name in (
            "model_name",
            "max_batch_size",
            "max_queue_size",
            "max_new_tokens",
            "batch_wait_ms",
            "max_request_bytes",
        )
    }
    serve(
        args.model,
        base_model=args.base_model,
        host=args.host,
        port=args.port,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        chat_template=args.chat_template,
        api_key=args.api_key,
        **{name: value for name, value in settings.items() if value is not None},
    )


def _convert_gguf(args) -> None:
    from .gguf import convert_gguf

    paths = convert_gguf(args.gguf_file, args.output_dir, dtype=args.dtype)
    print(f"Wrote a transformers model folder ({args.dtype} weights) to {args.output_dir}:")
    for path in paths:
        print(f"  {path}")


def _train(args) -> None:
    from .scripts.train import run

    run(args.train_args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="trl-clp", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    # Its arguments are the training script's (TrlParser: dataclass fields and --config), parsed by the script.
    train = commands.add_parser(
        "train",
        add_help=False,
        help="train a steerable model (examples/train_clp.py's arguments and YAML; `trl-clp train --help` lists them)",
    )
    train.set_defaults(run=_train)
    info = commands.add_parser("info", help="print the conditioning metadata of a saved model")
    info.add_argument("model", help="directory written by MultiObjectiveTrainer.save_model")
    info.set_defaults(run=_info)
    evaluate = commands.add_parser("evaluate", help="score a saved model over a grid of weightings")
    evaluate.add_argument("model", help="directory written by MultiObjectiveTrainer.save_model")
    evaluate.add_argument(
        "--prompts",
        required=True,
        help="text file, one prompt per line ('\\n' for newlines); or "
        "JSONL/CSV with a `prompt` column and the columns the rewards read (reference, source)",
    )
    evaluate.add_argument("--reward_funcs", nargs="+", required=True, help="one per objective, in order")
    evaluate.add_argument("--reference_column", default="reference", help="column with the reference, for rouge*")
    evaluate.add_argument("--nli_model", default=None, help="NLI model id or path, for the `nli` reward")
    evaluate.add_argument("--premise_column", default=None, help="column with the source for `nli` (default: prompt)")
    evaluate.add_argument("--grid_points", type=int, default=5, help="points per simplex edge")
    evaluate.add_argument("--samples_per_prompt", type=int, default=2)
    evaluate.add_argument("--max_new_tokens", type=int, default=32)
    # Sampling as in training: TRL's defaults (T=1, no top-p or top-k truncation); set them as in the training run.
    evaluate.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature (the KL is taken at it)"
    )
    evaluate.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling; 1.0 keeps every token")
    evaluate.add_argument("--top_k", type=int, default=0, help="top-k sampling; 0 keeps every token")
    evaluate.add_argument("--batch_size", type=int, default=64, help="rows per generate call (rows mix weightings)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument(
        "--output_dir",
        default=None,
        help="where to write evaluation.json/.csv and the completions, evaluation_samples.jsonl (default: model)",
    )
    evaluate.add_argument(
        "--base_model",
        default=None,
        help="base model folder or hub id, when the one the adapter records has moved or was a GGUF file",
    )
    evaluate.set_defaults(run=_evaluate)
    compare = commands.add_parser(
        "compare",
        help="compare several trained runs on held-out prompts: paired intervals over seeds and prompts, verdicts, "
        "gaming guards (docs/evaluation.md)",
        description="Evaluate every run (and the base model, adapters off) on the same prompts, weightings and "
        "sampling seed, and compare them: per method its seed-averaged front, hypervolume and margins; for every two "
        "methods the paired differences of hypervolume, margins and each weighting's w·R, each with a verdict (A beats "
        "B, B beats A, no difference detected) from a bootstrap over seeds and prompts; the gaming guards against the "
        "base model and the guarded fronts; the equal-KL view. Writes comparison.json, report.md, fronts.png, "
        "equal_kl.png, generations.md, and every evaluation (<label>-s<i>.json, <label>-s<i>.samples.jsonl, base.*).",
    )
    compare.add_argument(
        "--runs",
        nargs="+",
        required=True,
        metavar="LABEL=PATH[,PATH...]",
        help="one entry per method: its label, then its run folders (one per seed); quote a label with spaces",
    )
    compare.add_argument(
        "--prompts",
        default=None,
        help="held-out prompts: a JSONL/JSON/CSV file with a `prompt` column (other columns reach the rewards), a "
        "text file (one per line), or a dataset folder or hub id (see --prompts_split); optional with --reuse",
    )
    compare.add_argument("--prompts_split", default="test", help="the split of a --prompts dataset")
    compare.add_argument("--num_prompts", type=int, default=None, help="the first N prompts only (default: all)")
    compare.add_argument(
        "--reward_funcs",
        nargs="+",
        default=None,
        help="one per objective, in training's order, named as for `trl-clp train`; optional with --reuse",
    )
    compare.add_argument("--reference_column", default="reference", help="column with the reference, for rouge*")
    compare.add_argument("--nli_model", default=None, help="NLI model id or path, for the `nli` reward")
    compare.add_argument("--premise_column", default=None, help="column with the source for `nli` (default: prompt)")
    compare.add_argument("--output_dir", required=True, help="where the evaluations and the comparison are written")
    compare.add_argument(
        "--reuse",
        action="store_true",
        help="read back the evaluations already in --output_dir (<label>-s<i>.json + .samples.jsonl, base.*) and "
        "sample only the missing ones: with all of them there, neither the run folders nor the rewards are needed",
    )
    compare.add_argument("--grid_points", type=int, default=5, help="weightings per simplex edge")
    compare.add_argument("--samples_per_prompt", type=int, default=2, help="completions per (prompt, weighting)")
    compare.add_argument(
        "--base_samples_per_prompt", type=int, default=4, help="completions of the base model per prompt"
    )
    compare.add_argument("--max_new_tokens", type=int, default=32, help="set it as in the training run")
    compare.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature, as in training (the KL is taken at it)"
    )
    compare.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling; 1.0 keeps every token")
    compare.add_argument("--top_k", type=int, default=0, help="top-k sampling; 0 keeps every token")
    compare.add_argument("--batch_size", type=int, default=64, help="rows per generate call (rows mix weightings)")
    compare.add_argument(
        "--seed", type=int, default=0, help="seeds the sampling (the same for every run) and the bootstrap"
    )
    compare.add_argument(
        "--reference",
        nargs="+",
        type=float,
        default=None,
        help="the hypervolume's reference point, one value per objective, fixed before any run (default: 0s)",
    )
    compare.add_argument("--num_resamples", type=int, default=1000, help="bootstrap resamples")
    compare.add_argument("--confidence", type=float, default=0.95, help="of every interval")
    compare.add_argument(
        "--independent_seeds",
        action="store_true",
        help="draw each method's seeds independently in the bootstrap; by default methods with as many seeds draw the "
        "same seed indices (seed i of one with seed i of the other: the same training stream)",
    )
    compare.add_argument(
        "--significance",
        type=float,
        default=0.05,
        help="a gaming guard is flagged when Fisher's test against the base model gives p below it",
    )
    compare.add_argument(
        "--no_guards",
        action="store_true",
        help="leave out the language and gaming guards and the guarded fronts (they read English prose)",
    )
    compare.add_argument(
        "--kl_weights_for",
        nargs="+",
        action="append",
        default=[],
        metavar=("LABEL", "ALPHA"),
        help="LABEL α [α...]: evaluate a run trained conditioned on the KL weight at each α (one front per α)",
    )
    compare.add_argument(
        "--logit_mix_for",
        nargs="+",
        default=[],
        metavar="LABEL",
        help="evaluate these runs also as the logit mixture of their single-objective specialists (MOD: tokens from "
        "softmax(Σ_i w_i · logits of the run at corner e_i); one forward pass per objective per token), as the "
        "front 'LABEL (logit mix)'; not for prompting runs, nor with --top_p/--top_k",
    )
    compare.add_argument(
        "--kl_series",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "LABEL"),
        help="NAME LABEL LABEL [...]: fronts of one method trained at several α, compared at matched KL",
    )
    compare.add_argument("--generations_for", default=None, help="the label whose completions fill generations.md")
    compare.set_defaults(run=_compare)
    plot = commands.add_parser("plot", help="draw one or several saved fronts (front.json files) to a PNG")
    plot.add_argument("fronts", nargs="+", help="front JSON files written by evaluate or the training script")
    plot.add_argument("--labels", nargs="+", default=None, help="one per front (default: the parent folder names)")
    plot.add_argument("--output", default="fronts.png", help="PNG file to write")
    plot.set_defaults(run=_plot)
    export = commands.add_parser("export", help="write a plain LoRA adapter for one weighting (vLLM, PEFT)")
    export.add_argument("model", help="directory written by MultiObjectiveTrainer.save_model")
    export.add_argument("output_dir", help="where to write adapter_config.json and adapter_model.safetensors")
    export.add_argument("--weights", required=True, help="comma-separated weighting, in the objectives' order")
    export.add_argument("--kl_weight", type=float, default=None, help="α, for KL-conditioned models")
    export.add_argument(
        "--base_model",
        default=None,
        help="base model folder or hub id, when the one the adapter records has moved or was a GGUF file",
    )
    export.set_defaults(run=_export)
    serve = commands.add_parser(
        "serve", help="OpenAI-compatible HTTP server, any weighting per request (docs/serving.md)"
    )
    serve.add_argument("model", help="directory written by MultiObjectiveTrainer.save_model")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes it to the network)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--api-key",
        default=os.environ.get("TRL_CLP_API_KEY") or None,
        help="bearer token clients must send (default: $TRL_CLP_API_KEY; none: no check)",
    )
    serve.add_argument(
        "--served-model-name", dest="model_name", help="the `model` id clients send (default: folder name)"
    )
    serve.add_argument("--max-batch-size", type=int, help="most requests decoded together (default 32)")
    serve.add_argument("--max-queue-size", type=int, help="waiting requests before answering 503 (default 256)")
    serve.add_argument("--max-new-tokens", type=int, help="largest max_tokens a request may ask for (default 256)")
    serve.add_argument(
        "--batch-wait-ms",
        type=float,
        help="an idle worker gathers a batch until no request came for this long, 10x at most (default 10)",
    )
    serve.add_argument(
        "--max-request-bytes",
        type=int,
        help="largest request body; a larger one gets 413 before it is read (default 1048576, 1 MiB)",
    )
    serve.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    serve.add_argument("--dtype", default=None, help="e.g. bfloat16 (default: the checkpoint's)")
    serve.add_argument("--chat-template", default=None, help="Jinja chat template file, for tokenizers without one")
    serve.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code from the hub")
    serve.add_argument(
        "--base-model",
        "--base_model",
        dest="base_model",
        default=None,
        help="base model folder or hub id, when the one the adapter records has moved or was a GGUF file",
    )
    serve.set_defaults(run=_serve)
    convert = commands.add_parser(
        "convert-gguf", help="write a GGUF checkpoint as a transformers model folder that every command can load"
    )
    convert.add_argument("gguf_file", help="a .gguf file (llama.cpp's format) of an architecture transformers reads")
    convert.add_argument("output_dir", help="the model folder to write (new or empty)")
    convert.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="dtype of the saved weights"
    )
    convert.set_defaults(run=_convert_gguf)
    argv = sys.argv[1:] if argv is None else list(argv)
    args, unknown = parser.parse_known_args(argv)
    if args.command == "train":
        args.train_args = argv[argv.index("train") + 1 :]
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    from .scripts import limit_cpu_threads

    limit_cpu_threads()
    try:
        args.run(args)
    except (CommandError, OSError, ValueError, KeyError, ImportError) as error:
        # What a user can fix: the message says how; TRL_CLP_DEBUG=1 shows the traceback.
        if os.environ.get("TRL_CLP_DEBUG"):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        sys.exit(f"trl-clp {args.command}: error: {message}")


if __name__ == "__main__":
    main()
