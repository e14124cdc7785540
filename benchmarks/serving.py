"""Serving throughput and latency: requests with mixed weightings through the HTTP server, batched together, against
serving them one at a time and against swapping a merged model per weighting (Rewarded Soups), plus a load run.

    python benchmarks/serving.py            # the demo-sized model, 16 clients, 5 repeats, a 20 s load run
    python benchmarks/serving.py --quick    # the same figures, 2 repeats and a 4 s load run (about 2 minutes)
    python benchmarks/serving.py --model_size 20m   # the 20.7M-parameter Llama of the other benchmarks

The model is a CLP adapter (full-CLP, m = 2, LoRA r = 8 per objective, random `lora_B` so that weightings change
outputs) saved to a temporary folder and loaded the way `trl-clp serve` loads it, then served by the real uvicorn
server on a loopback port. Every request is greedy (`temperature=0`), so every method computes the same tokens and
the results can be checked. Figures (`RATIO` lines, then the JSON in `--output_json`):

- `batched_vs_one_at_a_time`: completion tokens per second of `--clients` concurrent clients, each with its own
  Dirichlet weighting, with the server's default batching (`max_batch_size=32`) against the same server with
  `max_batch_size=1` (the requests queue and run one by one). Target ≥ 4.
- `batched_vs_rewarded_soups`: the same requests served the Rewarded Soups way, in-process and without HTTP: for each
  weighting `SteerableModel.merge(w)` (a merged copy of the model) then `generate` on its prompt. No target.
- `latency_p50`, `latency_p99` (lower is better, no target): request latency seen by the clients, batched against one
  at a time.
- `LOAD` line: `--load_clients` clients send requests back to back for `--load_seconds` (weightings, prompts and
  budgets drawn from a menu), every response is checked against the same request served alone; target: 0 errors,
  0 mismatches.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

# Measure this checkout's trl_clp, not a copy installed in site-packages (the servers get the same path).
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPOSITORY)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx
import torch
import workload
from reporting import Figure, Measurement, describe_machine, machine_line, write_report
from transformers import AutoModelForCausalLM
from trl import TrlParser

from trl_clp import SteerableModel, demo
from trl_clp.sampling import sample_group_weights, simplex_grid
from trl_clp.serving import load_steerable_model

EOS = 2


@dataclass
class BenchmarkArguments:
    quick: bool = field(default=False, metadata={"help": "2 repeats and a 4 s load run: about 2 minutes."})
    model_size: str = field(default="tiny", metadata={"help": "`tiny` (the demo's 0.2M Llama) or `20m`."})
    clients: int = field(default=16, metadata={"help": "Concurrent clients, each request with its own weighting."})
    new_tokens: int = field(default=32, metadata={"help": "`max_tokens` of every throughput request."})
    repeats: int | None = field(default=None, metadata={"help": "Interleaved repeats (default 5, quick 2)."})
    load_clients: int = field(default=32, metadata={"help": "Clients of the load run."})
    load_seconds: float | None = field(
        default=None, metadata={"help": "Length of the load run (default 20, quick 4)."}
    )
    output_json: str | None = field(
        default=None, metadata={"help": "Default: benchmarks/results/serving[_quick].json."}
    )

    def __post_init__(self):
        if self.repeats is None:
            self.repeats = 2 if self.quick else 5
        if self.load_seconds is None:
            self.load_seconds = 4.0 if self.quick else 20.0
        if self.output_json is None:
            self.output_json = os.path.join("benchmarks", "results", f"serving{'_quick' if self.quick else ''}.json")


def save_model(directory: str, model_size: str) -> str:
    """A full-CLP model (m = 2) with random `lora_B`, saved with its base model and tokenizer; returns its path."""
    base_path = os.path.join(directory, "base")
    workload.make_base_model(model_size, seed=0).save_pretrained(base_path)
    steer = SteerableModel.from_base_model(
        AutoModelForCausalLM.from_pretrained(base_path),
        ["lower", "upper"],
        workload.lora_config(),
        tokenizer=demo.make_byte_tokenizer(),
    )
    generator = torch.Generator().manual_seed(1)
    for name, parameter in steer.named_parameters():
        if "lora_B" in name:
            parameter.data.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    path = os.path.join(directory, "clp")
    steer.save_pretrained(path)
    return path


# One connection pool shared by every client thread (creating a client per request costs more CPU than the tiny
# model's generation).
HTTP = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=256, max_keepalive_connections=256))


def complete(url: str, prompt: str, weights: list[float], max_tokens: int) -> tuple[dict, float]:
    """One greedy completion over HTTP; returns the response body and its latency in seconds."""
    start = time.perf_counter()
    response = HTTP.post(
        url + "/v1/completions",
        json={
            "model": "clp",
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "weights": weights,
        },
    )
    response.raise_for_status()
    return response.json(), time.perf_counter() - start


def concurrent_run(url: str, requests: list[tuple[str, list[float]]], max_tokens: int) -> tuple[float, list, list]:
    """All requests at once, one client thread each; returns the wall time, the texts and the latencies."""
    barrier = threading.Barrier(len(requests) + 1)

    def client(request):
        barrier.wait()
        return complete(url, *request, max_tokens)

    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(client, request) for request in requests]
        barrier.wait()
        start = time.perf_counter()
        results = [future.result() for future in futures]
        wall = time.perf_counter() - start
    tokens = sum(body["usage"]["completion_tokens"] for body, _ in results)
    return wall, tokens, [body["choices"][0]["text"] for body, _ in results], [latency for _, latency in results]


class ServerProcess:
    """`trl-clp serve` in its own process (so that the benchmark's client threads do not share its interpreter)."""

    def __init__(self, path: str, max_batch_size: int, max_new_tokens: int):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable,
            "-m",
            "trl_clp.cli",
            "serve",
            path,
            "--port",
            str(self.port),
            "--served-model-name",
            "clp",
            "--max-batch-size",
            str(max_batch_size),
            "--max-new-tokens",
            str(max_new_tokens),
            "--device",
            "cpu",
        ]

    def start(self) -> ServerProcess:
        env = {**os.environ, "PYTHONPATH": REPOSITORY + os.pathsep + os.environ.get("PYTHONPATH", "")}
        env.pop("TRL_CLP_API_KEY", None)
        self.process = subprocess.Popen(self.command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __enter__(self) -> ServerProcess:
        if not hasattr(self, "process"):
            self.start()
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("The server exited: " + self.process.stderr.read().decode()[-2000:])
            try:
                if HTTP.get(self.url + "/health").status_code == 200:
                    return self
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("The server did not start in 5 minutes.") from None
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def served_alone_tokens(steer: SteerableModel, prompt: str, weights: list[float], max_tokens: int) -> list[int]:
    ids = steer.tokenizer([prompt], return_tensors="pt")["input_ids"]
    out = steer.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        weights=torch.tensor([weights]),
        max_new_tokens=max_tokens,
        do_sample=False,
        pad_token_id=0,
    )
    return out[0, ids.size(1) :].tolist()


def text_of(tokenizer, tokens: list[int], max_tokens: int) -> str:
    tokens = tokens[:max_tokens]
    return tokenizer.decode(tokens[: tokens.index(EOS)] if EOS in tokens else tokens)


def rewarded_soups(
    steer: SteerableModel, requests: list[tuple[str, list[float]]], max_tokens: int
) -> tuple[float, int]:
    """Serve each request with a model merged for its weighting; returns the wall time and the tokens generated."""
    start, tokens = time.perf_counter(), 0
    for prompt, weights in requests:
        merged = steer.merge(torch.tensor(weights))
        ids = steer.tokenizer([prompt], return_tensors="pt")["input_ids"]
        out = merged.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_tokens,
            do_sample=False,
            pad_token_id=0,
        )[0, ids.size(1) :].tolist()
        tokens += len(out[: out.index(EOS) + 1] if EOS in out else out)
    return time.perf_counter() - start, tokens


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_run(url: str, steer: SteerableModel, args: BenchmarkArguments) -> dict:
    """`load_clients` clients back to back for `load_seconds`; every response checked against the request alone."""
    prompts = list(demo.make_prompt_dataset(4, seed=2)["prompt"])
    weightings = simplex_grid(2, 3 if args.quick else 5).tolist()
    budgets = [8, 16, args.new_tokens]
    # The greedy tokens of a budget are a prefix of a larger budget's: one reference per (prompt, weighting).
    references = {
        (p, i): served_alone_tokens(steer, p, w, max(budgets)) for p in prompts for i, w in enumerate(weightings)
    }
    stop_at = time.monotonic() + args.load_seconds
    lock = threading.Lock()
    stats = {"served": 0, "errors": 0, "mismatches": 0, "tokens": 0, "latencies": [], "error_messages": []}

    def client(seed: int):
        rng = random.Random(seed)
        while time.monotonic() < stop_at:
            prompt, index, budget = rng.choice(prompts), rng.randrange(len(weightings)), rng.choice(budgets)
            try:
                body, latency = complete(url, prompt, weightings[index], budget)
            except Exception as error:  # counted, not raised: the load run reports every failure
                with lock:
                    stats["errors"] += 1
                    stats["error_messages"].append(repr(error)[:200])
                continue
            expected = text_of(steer.tokenizer, references[(prompt, index)], budget)
            with lock:
                stats["served"] += 1
                stats["tokens"] += body["usage"]["completion_tokens"]
                stats["latencies"].append(latency)
                stats["mismatches"] += body["choices"][0]["text"] != expected

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.load_clients) as pool:
        list(pool.map(client, range(args.load_clients)))
    wall = time.perf_counter() - start
    latencies = stats.pop("latencies")
    return {
        **stats,
        "clients": args.load_clients,
        "seconds": wall,
        "requests_per_s": stats["served"] / wall,
        "tokens_per_s": stats["tokens"] / wall,
        "latency_p50_s": percentile(latencies, 0.5) if latencies else None,
        "latency_p99_s": percentile(latencies, 0.99) if latencies else None,
    }


def main(args: BenchmarkArguments):
    machine = describe_machine()
    print(machine_line(machine))
    if args.quick:
        print("QUICK: fewer repeats and a short load run")
    started = time.perf_counter()
    directory = tempfile.mkdtemp(prefix="serving-bench-")
    path = save_model(directory, args.model_size)
    steer = load_steerable_model(path, device="cpu")  # the in-process Rewarded Soups baseline and the references
    parameters = workload.count_parameters(steer.model.get_base_model())
    print(f"MODEL {args.model_size}: {parameters / 1e6:.1f}M parameters; full-CLP m=2, LoRA r={workload.LORA['r']}")
    prompts = list(demo.make_prompt_dataset(args.clients, seed=1)["prompt"])
    weights = sample_group_weights("dirichlet", args.clients, 2, seed=0, stream=(3, 0)).tolist()
    requests = list(zip(prompts, weights, strict=True))

    throughput = {
        "one_at_a_time": Measurement("one at a time (max_batch_size=1)", "tokens/s"),
        "batched": Measurement(f"batched ({args.clients} clients, max_batch_size=32)", "tokens/s"),
        "rewarded_soups": Measurement("Rewarded Soups: merge + generate per weighting", "tokens/s"),
    }
    latency = {"one_at_a_time": {"p50": [], "p99": []}, "batched": {"p50": [], "p99": []}}
    mismatches = {"batched": 0}
    max_new_tokens = max(args.new_tokens, 32)
    # Two servers of the same saved model, one batching (the default settings) and one with max_batch_size=1.
    starting = [ServerProcess(path, 1, max_new_tokens).start(), ServerProcess(path, 32, max_new_tokens).start()]
    with starting[0] as alone, starting[1] as batched:
        servers = {"one_at_a_time": alone, "batched": batched}
        for server in servers.values():  # warm-up: first-call allocations, lazy initialisation, connections
            for _ in range(2):
                concurrent_run(server.url, requests, 4)
        for repeat in range(args.repeats):  # interleaved: every repeat runs every method once
            texts = {}
            for name, server in servers.items():
                wall, tokens, texts[name], latencies = concurrent_run(server.url, requests, args.new_tokens)
                throughput[name].samples.append(tokens / wall)
                latency[name]["p50"].append(percentile(latencies, 0.5))
                latency[name]["p99"].append(percentile(latencies, 0.99))
            mismatches["batched"] += sum(a != b for a, b in zip(texts["batched"], texts["one_at_a_time"], strict=True))
            wall, soups_tokens = rewarded_soups(steer, requests, args.new_tokens)
            throughput["rewarded_soups"].samples.append(soups_tokens / wall)
            print(f"repeat {repeat + 1}/{args.repeats} done ({time.perf_counter() - started:.0f} s)", flush=True)
        before = HTTP.get(batched.url + "/health").json()
        load = load_run(batched.url, steer, args)
        after = HTTP.get(batched.url + "/health").json()
        load["mean_batch_size"] = (after["rows"] - before["rows"]) / max(after["batches"] - before["batches"], 1)

    latency_measurements = {
        (name, q): Measurement(f"{name.replace('_', ' ')} {q}", "s", latency[name][q])
        for name in latency
        for q in ("p50", "p99")
    }
    figures = [
        Figure(
            "serving/batched_vs_one_at_a_time",
            throughput["one_at_a_time"],
            throughput["batched"],
            (">=", 4.0),
            notes=f"{args.clients} concurrent clients over HTTP, each with its own weighting",
        ),
        Figure(
            "serving/batched_vs_rewarded_soups",
            throughput["rewarded_soups"],
            throughput["batched"],
            notes="Rewarded Soups in-process without HTTP (favours the baseline)",
        ),
        Figure(
            "serving/latency_p50",
            latency_measurements[("one_at_a_time", "p50")],
            latency_measurements[("batched", "p50")],
            notes="lower is better",
        ),
        Figure(
            "serving/latency_p99",
            latency_measurements[("one_at_a_time", "p99")],
            latency_measurements[("batched", "p99")],
            notes="lower is better",
        ),
    ]
    for figure in figures:
        print(figure.line())
    print(f"CHECK batched responses differing from the same requests served one at a time: {mismatches['batched']}")
    print(
        f"LOAD {load['clients']} clients for {load['seconds']:.1f} s: {load['served']} requests served "
        f"({load['requests_per_s']:.1f}/s, {load['tokens_per_s']:.0f} tokens/s), errors {load['errors']}, "
        f"mismatches {load['mismatches']} | mean batch {load['mean_batch_size']:.1f} rows | latency p50 {load['latency_p50_s'] * 1000:.0f} ms, "
        f"p99 {load['latency_p99_s'] * 1000:.0f} ms | target 0 errors, 0 mismatches: "
        + ("met" if load["errors"] == 0 and load["mismatches"] == 0 else "MISSED")
    )
    settings = {**vars(args), "model_parameters": parameters, "lora": workload.LORA}
    extra = {"load": load, "batched_mismatches": mismatches["batched"], "wall_seconds": time.perf_counter() - started}
    write_report(args.output_json, figures, machine, settings, extra)


if __name__ == "__main__":
    (benchmark_args,) = TrlParser(BenchmarkArguments).parse_args_and_config()
    main(benchmark_args)
