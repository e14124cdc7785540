"""`trl-clp` command line: inspect and evaluate saved steerable models.

    trl-clp info outputs/clp-demo
    trl-clp evaluate outputs/clp-demo --prompts prompts.txt --reward_funcs lowercase uppercase --grid_points 5
    trl-clp plot outputs/clp-demo/front.json other/front.json --labels CLP prompting --output fronts.png
    trl-clp export outputs/clp-demo lora/w-0.3-0.7 --weights 0.3,0.7
    trl-clp serve outputs/clp-demo --port 8000
"""

from __future__ import annotations

import argparse
import json
import os

from .conditioning.config import CLP_CONFIG_NAME


def _info(args) -> None:
    with open(os.path.join(args.model, CLP_CONFIG_NAME)) as handle:
        print(json.dumps(json.load(handle), indent=2))


def _evaluate(args) -> None:
    import torch

    from .conditioning.model import SteerableModel
    from .evaluation import evaluate_front
    from .rewards import resolve_reward_function
    from .sampling import simplex_grid

    steer = SteerableModel.from_pretrained(args.model)
    if steer.tokenizer is None:
        raise SystemExit(f"{args.model} has no tokenizer files: save the tokenizer beside the adapter.")
    steer.to("cuda" if torch.cuda.is_available() else "cpu")
    with open(args.prompts) as handle:
        prompts = [line.rstrip("\n").replace("\\n", "\n") for line in handle if line.strip()]
    reward_funcs = [resolve_reward_function(spec) for spec in args.reward_funcs]
    if any(isinstance(f, str) for f in reward_funcs):
        raise SystemExit("`evaluate` takes callable rewards (built-in names or module:function).")
    if len(reward_funcs) != steer.conditioning_config.num_objectives:
        raise SystemExit(f"Give one reward function per objective: {steer.objective_names}.")
    front = evaluate_front(
        steer,
        steer.tokenizer,
        prompts,
        reward_funcs,
        simplex_grid(steer.conditioning_config.num_objectives, args.grid_points),
        num_samples=args.samples_per_prompt,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    print(front.format_table())
    directory = args.output_dir or args.model
    paths = list(front.save(directory, stem="evaluation"))
    try:
        from .plotting import plot_fronts

        paths.append(plot_fronts({os.path.basename(os.path.normpath(args.model)): front},
                                 os.path.join(directory, "evaluation.png")))
    except ImportError as error:
        print(f"No plot: {error}")
    print("Wrote " + ", ".join(paths))


def _plot(args) -> None:
    from .evaluation import Front
    from .plotting import plot_fronts

    labels = args.labels or [os.path.basename(os.path.dirname(os.path.abspath(path))) for path in args.fronts]
    if len(labels) != len(args.fronts):
        raise SystemExit(f"Give one label per front: {len(args.fronts)} fronts, {len(labels)} labels.")
    fronts = {label: Front.load(path) for label, path in zip(labels, args.fronts, strict=True)}
    print("Wrote " + plot_fronts(fronts, args.output))


def _export(args) -> None:
    import torch

    from .conditioning.model import SteerableModel

    steer = SteerableModel.from_pretrained(args.model)
    try:
        weights = torch.tensor([float(w) for w in args.weights.split(",")])
    except ValueError as error:
        raise SystemExit(f"--weights takes comma-separated numbers, e.g. 0.3,0.7; got {args.weights!r}.") from error
    steer.export_lora(args.output_dir, weights, kl_weight=args.kl_weight)
    if steer.tokenizer is not None:
        steer.tokenizer.save_pretrained(args.output_dir)
    shown = ", ".join(f"{name}={w:g}" for name, w in zip(steer.objective_names, weights.tolist(), strict=True))
    print(f"Wrote a plain LoRA adapter for the weighting {shown} to {args.output_dir}")


def _serve(args) -> None:
    from .serving import serve

    # Options left unset keep `ServerConfig`'s defaults.
    settings = {name: getattr(args, name) for name in ("model_name", "max_batch_size", "max_queue_size",
                                                        "max_new_tokens", "batch_wait_ms")}
    serve(args.model, host=args.host, port=args.port, device=args.device, dtype=args.dtype,
          trust_remote_code=args.trust_remote_code, chat_template=args.chat_template, api_key=args.api_key,
          **{name: value for name, value in settings.items() if value is not None})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="trl-clp", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="print the conditioning metadata of a saved model")
    info.add_argument("model", help="directory written by MultiObjectiveTrainer.save_model")
    info.set_defaults(run=_info)
    evaluate = commands.add_parser("evaluate", help="score a saved model over a grid of weightings")
    evaluate.add_argument("model", help="directory written by MultiObjectiveTrainer.save_model")
    evaluate.add_argument("--prompts", required=True, help="text file, one prompt per line ('\\n' for newlines)")
    evaluate.add_argument("--reward_funcs", nargs="+", required=True, help="one per objective, in order")
    evaluate.add_argument("--grid_points", type=int, default=5, help="points per simplex edge")
    evaluate.add_argument("--samples_per_prompt", type=int, default=2)
    evaluate.add_argument("--max_new_tokens", type=int, default=32)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--output_dir", default=None, help="where to write evaluation.json/.csv (default: model)")
    evaluate.set_defaults(run=_evaluate)
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
    export.set_defaults(run=_export)
    serve = commands.add_parser("serve", help="OpenAI-compatible HTTP server, any weighting per request (docs/serving.md)")
    serve.add_argument("model", help="directory written by MultiObjectiveTrainer.save_model")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes it to the network)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", default=os.environ.get("TRL_CLP_API_KEY") or None,
                       help="bearer token clients must send (default: $TRL_CLP_API_KEY; none: no check)")
    serve.add_argument("--served-model-name", dest="model_name", help="the `model` id clients send (default: folder name)")
    serve.add_argument("--max-batch-size", type=int, help="most requests decoded together (default 32)")
    serve.add_argument("--max-queue-size", type=int, help="waiting requests before answering 503 (default 256)")
    serve.add_argument("--max-new-tokens", type=int, help="largest max_tokens a request may ask for (default 256)")
    serve.add_argument("--batch-wait-ms", type=float,
                       help="an idle worker gathers a batch until no request came for this long, 10x at most (default 10)")
    serve.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    serve.add_argument("--dtype", default=None, help="e.g. bfloat16 (default: the checkpoint's)")
    serve.add_argument("--chat-template", default=None, help="Jinja chat template file, for tokenizers without one")
    serve.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code from the hub")
    serve.set_defaults(run=_serve)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
