"""The HTTP server: the real uvicorn server on a loopback port, called with the `openai` client and plain HTTP."""

import concurrent.futures
import dataclasses
import json
import logging
import math
import os
import random
import socket
import threading
import time

import httpx
import openai
import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, GenerationConfig, GPT2Config, GPT2LMHeadModel

from trl_clp import SteerableModel, demo, format_weighted_prompt
from trl_clp.serving import QueueFullError, ServerConfig, ServerThread, create_app, load_steerable_model
from trl_clp.serving.protocol import ChatCompletionChunk, CompletionChoice, CompletionResponse, ErrorResponse

NAMES = ["lower", "upper"]
CHAT_TEMPLATE = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
PROMPTS = ["Describe: quiet river\n", "Describe: a storm over the old city walls\n", "Hi", "Describe: green\n"]
EOS = 2
# A GPT-2 with learned positions: a row advanced past `n_positions` fails ("index out of range in self"), where the
# rotary Llama would go on.
GPT2_POSITIONS = 64


def make_tiny_gpt2():
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=259, n_positions=GPT2_POSITIONS, n_embd=64, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=2
    )
    return GPT2LMHeadModel(config)


def save_steerable(
    directory, variant="full", names=NAMES, min_kl_weight=None, learned_positions=False, features=("linear",)
):
    """A tiny CLP model with random LoRA A and B (so weightings change outputs), saved with its base and tokenizer:
    the rotary Llama of the demo, or with `learned_positions` a GPT-2 with a 64-token context."""
    tokenizer = demo.make_byte_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    base_path = os.path.join(directory, "base")
    (make_tiny_gpt2() if learned_positions else demo.make_tiny_llama(seed=0)).save_pretrained(base_path)
    torch.manual_seed(1)
    targets = ["c_attn", "c_proj", "c_fc"] if learned_positions else demo.LLAMA_LINEAR_MODULES
    lora = LoraConfig(
        r=4, lora_alpha=16, init_lora_weights=False, target_modules=targets, fan_in_fan_out=learned_positions
    )
    steer = SteerableModel.from_base_model(
        AutoModelForCausalLM.from_pretrained(base_path),
        names,
        lora,
        variant,
        tokenizer=tokenizer,
        conditioning_features=features,
    )
    if min_kl_weight is not None:  # the last block is the KL block of a multi-α model
        steer.conditioning_config = dataclasses.replace(
            steer.conditioning_config, objective_names=names[:-1], min_kl_weight=min_kl_weight
        )
    path = os.path.join(directory, "clp")
    steer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_steerable(str(tmp_path_factory.mktemp("served")))


@pytest.fixture(scope="module")
def reference(model_path):
    """A second copy of the model, never touched by the server: requests served alone, in plain Python."""
    return load_steerable_model(model_path)


@pytest.fixture(scope="module")
def server(model_path):
    app = create_app(load_steerable_model(model_path), ServerConfig(model_name="clp", max_new_tokens=64))
    with ServerThread(app) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def gpt2_path(tmp_path_factory):
    return save_steerable(str(tmp_path_factory.mktemp("served_gpt2")), learned_positions=True)


@pytest.fixture(scope="module")
def gpt2_server(gpt2_path):
    app = create_app(load_steerable_model(gpt2_path), ServerConfig(model_name="clp", max_new_tokens=64))
    with ServerThread(app) as running:
        yield running, openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def served_alone(steer, prompt_ids, weights, max_tokens, stop=None, kl_weight=None):
    """Greedy completion of one prompt in a batch of one, cut at EOS and at the stop string, as the API defines it."""
    ids = torch.tensor([prompt_ids])
    out = steer.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        weights=torch.tensor([weights]),
        kl_weight=kl_weight,
        max_new_tokens=max_tokens,
        do_sample=False,
        pad_token_id=0,
    )
    new = out[0, ids.size(1) :].tolist()
    new = new[: new.index(EOS)] if EOS in new else new
    text = steer.tokenizer.decode(new, skip_special_tokens=True)
    return text[: text.find(stop)] if stop and stop in text else text


def post(server, path, body=None, content=None, headers=None):
    return httpx.post(server.url + path, json=body, content=content, headers=headers, timeout=60)


def test_models_and_health(server, client):
    (card,) = client.models.list().data
    assert card.id == "clp" and card.objectives == NAMES and card.conditioning == "full" and card.max_model_len == 256
    assert card.conditioning_features == ["linear"]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_completion_is_steered_by_the_weights_field(client, reference):
    def complete(weights):
        kwargs = {} if weights is None else {"extra_body": {"weights": weights}}
        return client.completions.create(model="clp", prompt=PROMPTS[0], max_tokens=12, temperature=0, **kwargs)

    by_name = complete({"lower": 0.2, "upper": 0.8})
    prompt_ids = reference.tokenizer(PROMPTS[0])["input_ids"]
    assert by_name.choices[0].text == served_alone(reference, prompt_ids, [0.2, 0.8], 12)
    assert by_name.usage.prompt_tokens == len(prompt_ids) and by_name.usage.completion_tokens == 12
    assert by_name.choices[0].finish_reason == "length" and by_name.weights == {"lower": 0.2, "upper": 0.8}
    assert complete([0.2, 0.8]).choices[0].text == by_name.choices[0].text  # a list in objective order
    assert complete({"upper": 1.0}).choices[0].text == served_alone(
        reference, prompt_ids, [0.0, 1.0], 12
    )  # omitted: 0
    assert complete({"lower": 1.0}).choices[0].text != complete({"upper": 1.0}).choices[0].text  # weightings matter
    default = complete(None)  # documented default: the uniform weighting
    assert default.weights == {"lower": 0.5, "upper": 0.5}
    assert default.choices[0].text == served_alone(reference, prompt_ids, [0.5, 0.5], 12)


def test_chat_completion_uses_the_chat_template(client, reference):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe: a river"}]
    response = client.chat.completions.create(
        model="clp", messages=messages, max_tokens=10, temperature=0, extra_body={"weights": [0.7, 0.3]}
    )
    text = "<system>Be brief.\n<user>Describe: a river\n<assistant>"
    expected = served_alone(reference, reference.tokenizer(text)["input_ids"], [0.7, 0.3], 10)
    assert response.choices[0].message.content == expected and response.choices[0].message.role == "assistant"
    assert response.usage.prompt_tokens == len(text)  # one byte per token


def test_chat_template_keywords_of_training_template_the_served_conversations(model_path, reference):
    steer = load_steerable_model(model_path)
    steer.tokenizer.chat_template = CHAT_TEMPLATE + "{% if style is defined %}[{{ style }}]{% endif %}"
    # As saved by a trainer run with `chat_template_kwargs={"style": "brief"}`.
    steer.conditioning_config = dataclasses.replace(steer.conditioning_config, chat_template_kwargs={"style": "brief"})
    body = {"model": "clp", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "temperature": 0}
    with ServerThread(create_app(steer, ServerConfig(model_name="clp", max_new_tokens=64))) as running:
        response = post(running, "/v1/chat/completions", {**body, "weights": [0.7, 0.3]}).json()
    text = "<user>Hi\n<assistant>[brief]"
    assert response["usage"]["prompt_tokens"] == len(text)  # one byte per token
    expected = served_alone(reference, reference.tokenizer(text)["input_ids"], [0.7, 0.3], 8)
    assert response["choices"][0]["message"]["content"] == expected


def test_streaming_gives_the_same_text_as_a_plain_response(client):
    request = dict(model="clp", max_tokens=20, temperature=0, stop=["e"], extra_body={"weights": [0.4, 0.6]})
    plain = client.completions.create(prompt=PROMPTS[1], **request).choices[0]
    chunks = list(client.completions.create(prompt=PROMPTS[1], stream=True, **request))
    assert "".join(chunk.choices[0].text for chunk in chunks) == plain.text
    assert chunks[-1].choices[0].finish_reason == plain.finish_reason
    messages = [{"role": "user", "content": "Describe: a river"}]
    chat = client.chat.completions.create(messages=messages, **request).choices[0].message.content
    stream = client.chat.completions.create(messages=messages, stream=True, **request)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == chat


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_concurrent_requests_get_what_they_get_alone(request, positions):
    """32 clients at once, each with its own weighting, prompt, budget and stop string: every greedy response is the
    request served alone, although they shared batches (and sampled requests were mixed in). With learned positions
    (a 64-token context), each request fits alone but many pairs would not fit one batch run to its longest budget."""
    if positions == "rotary":
        server, client = request.getfixturevalue("server"), request.getfixturevalue("client")
        reference = request.getfixturevalue("reference")
    else:
        server, client = request.getfixturevalue("gpt2_server")
        reference = load_steerable_model(request.getfixturevalue("gpt2_path"))
    context = reference.model.config.max_position_embeddings
    rng = random.Random(0)
    jobs = []
    for index in range(32):
        prompt = rng.choice(PROMPTS) + "x" * rng.randrange(8)  # different lengths: left padding in a batch
        w = rng.random()
        room = context - len(reference.tokenizer(prompt)["input_ids"])
        weights, max_tokens = [w, 1 - w], min(rng.randint(4, 24), room)
        expected = served_alone(reference, reference.tokenizer(prompt)["input_ids"], weights, max_tokens)
        stop = None
        if index % 3 == 0 and len(expected) > 4 and expected[len(expected) // 2].isascii():  # ends the row early
            stop = expected[len(expected) // 2]
            expected = expected[: expected.find(stop)]
        jobs.append((prompt, weights, max_tokens, stop, expected))
    sampled = [dict(prompt=PROMPTS[0], temperature=0.8, max_tokens=8)] * 4
    batcher = server.server.config.app.state.batcher
    batches_before, rows_before = batcher.batches_run, batcher.rows_run
    start = threading.Barrier(len(jobs) + len(sampled))

    def call(kwargs):
        start.wait()
        return client.completions.create(model="clp", **kwargs).choices[0].text

    greedy = [dict(prompt=p, max_tokens=m, temperature=0, stop=s, extra_body={"weights": w}) for p, w, m, s, _ in jobs]
    with concurrent.futures.ThreadPoolExecutor(len(greedy) + len(sampled)) as pool:
        texts = list(pool.map(call, greedy + sampled))
    assert texts[: len(jobs)] == [expected for *_, expected in jobs]
    batches, rows = batcher.batches_run - batches_before, batcher.rows_run - rows_before
    assert rows == 36 and batches <= (12 if positions == "rotary" else 24), (batches, rows)  # requests shared batches
    assert server.server.config.app.state.steer.conditioner.conditioning_vectors is None  # no weighting left behind


def test_a_request_is_answered_as_alone_whatever_shares_its_batch(gpt2_path):
    """The issue's pair on a 64-position GPT-2: A (58-token prompt, 4 new tokens) and B (5-token prompt, 50 new
    tokens) each fit alone; queued together, one batch run to B's budget would advance A to position 108."""
    reference = load_steerable_model(gpt2_path)
    app = create_app(load_steerable_model(gpt2_path), ServerConfig(model_name="clp", batch_wait_ms=1000))
    prompts, budgets = ["Describe: " + "river " * 8, "Hi yo"], [4, 50]
    assert [len(reference.tokenizer(prompt)["input_ids"]) for prompt in prompts] == [58, 5]
    start = threading.Barrier(2)

    def call(server, prompt, max_tokens):
        start.wait()  # both arrive within the worker's 1 s gathering window
        body = {"model": "clp", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "weights": [0.3, 0.7]}
        return post(server, "/v1/completions", body)

    with ServerThread(app) as server, concurrent.futures.ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(call, [server] * 2, prompts, budgets))
    assert [response.status_code for response in responses] == [200, 200], [r.text for r in responses]
    for response, prompt, max_tokens in zip(responses, prompts, budgets, strict=True):
        ids = reference.tokenizer(prompt)["input_ids"]
        assert response.json()["choices"][0]["text"] == served_alone(reference, ids, [0.3, 0.7], max_tokens)


def test_a_chat_prompt_with_no_room_left_gets_400_naming_the_context(server):
    """Without `max_tokens`, chat asks for what is left of the context: none left is a 400, not a failed batch."""
    template_tokens = len("<user>\n<assistant>")  # one byte per token

    def chat(length):
        messages = [{"role": "user", "content": "x" * length}]
        return post(server, "/v1/chat/completions", {"model": "clp", "messages": messages, "temperature": 0})

    for length in (256 - template_tokens, 300):  # no room for one token; past the context
        response = chat(length)
        assert response.status_code == 400, response.text
        message = response.json()["error"]["message"]
        assert "context is 256 tokens" in message and "shorten the prompt" in message
    one_left = chat(256 - template_tokens - 1).json()  # room for exactly one token: served
    assert one_left["usage"]["prompt_tokens"] == 255 and one_left["usage"]["completion_tokens"] == 1


def test_a_body_over_the_limit_gets_413_before_it_is_read(model_path):
    app = create_app(load_steerable_model(model_path), ServerConfig(model_name="clp", max_request_bytes=1024))
    with ServerThread(app) as server:
        # Announces 8 MiB and sends 100 bytes: the answer comes without the server waiting for the rest.
        connection = socket.create_connection((server.host, server.port), timeout=10)
        head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        connection.sendall(f"{head}Content-Length: {8 << 20}\r\n\r\n".encode() + b"{" * 100)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
        connection.close()
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 413"), answer
        message = json.loads(rest.partition(b"\r\n\r\n")[2])["error"]["message"]
        assert "limit of 1024 bytes" in message and "--max-request-bytes" in message
        # Without Content-Length (chunked), counted as it arrives.
        chunked = httpx.post(server.url + "/v1/completions", content=iter([b" " * 700, b" " * 700]), timeout=30)
        assert chunked.status_code == 413 and "1024 bytes" in chunked.json()["error"]["message"]
        body = {"model": "clp", "prompt": "Hi", "max_tokens": 2, "user": "u" * 900}  # about 970 bytes: within it
        assert post(server, "/v1/completions", body).status_code == 200
    with pytest.raises(ValueError, match="max_request_bytes"):
        ServerConfig(max_request_bytes=0)


def test_a_python_client_posting_8_mib_reads_the_413_not_a_connection_reset(model_path):
    """urllib sends the whole body before it reads the answer: a server that closed after answering would reset the
    connection under it, and the client would see ConnectionResetError instead of the 413."""
    import urllib.error
    import urllib.request

    app = create_app(load_steerable_model(model_path), ServerConfig(model_name="clp", max_request_bytes=1024))
    with ServerThread(app) as server:
        body = json.dumps({"model": "clp", "prompt": "x" * (8 << 20)}).encode()
        for _ in range(3):  # a reset depends on timing: every attempt must read the 413
            request = urllib.request.Request(
                server.url + "/v1/completions", data=body, headers={"Content-Type": "application/json"}
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=30)
            assert refused.value.code == 413
            assert "limit of 1024 bytes" in json.loads(refused.value.read())["error"]["message"]
        assert post(server, "/v1/completions", {"model": "clp", "prompt": "Hi", "max_tokens": 2}).status_code == 200


def test_templating_and_tokenizing_run_off_the_event_loop(model_path):
    """A request stuck in its chat template (as an 8 MiB prompt would be) does not hold up /health."""
    app = create_app(load_steerable_model(model_path), ServerConfig(model_name="clp"))
    tokenizer, entered, release = app.state.steer.tokenizer, threading.Event(), threading.Event()
    render = tokenizer.apply_chat_template

    def slow_render(*args, **kwargs):
        entered.set()
        release.wait(30)
        return render(*args, **kwargs)

    tokenizer.apply_chat_template = slow_render
    body = {"model": "clp", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    with ServerThread(app) as server, concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            slow = pool.submit(post, server, "/v1/chat/completions", body)
            assert entered.wait(30)
            started = time.monotonic()
            assert httpx.get(server.url + "/health", timeout=5).json()["status"] == "ok"
            assert time.monotonic() - started < 5
        finally:
            release.set()
        assert slow.result().status_code == 200


def test_greedy_requests_ignore_the_checkpoints_generation_config(tmp_path):
    """A `repetition_penalty` in the base model's generation_config.json changes plain greedy `generate`; the API
    cannot ask for penalties, so served greedy text is the text without it."""
    path = save_steerable(str(tmp_path))
    reference = load_steerable_model(path)  # no penalty
    base_path = str(tmp_path / "base")
    GenerationConfig(bos_token_id=1, eos_token_id=2, repetition_penalty=3.0).save_pretrained(base_path)
    penalised = load_steerable_model(path)
    assert penalised.model.generation_config.repetition_penalty == 3.0
    ids = reference.tokenizer(PROMPTS[0])["input_ids"]
    expected = served_alone(reference, ids, [0.5, 0.5], 24)
    assert served_alone(penalised, ids, [0.5, 0.5], 24) != expected  # the penalty changes greedy tokens
    with ServerThread(create_app(penalised, ServerConfig(model_name="clp"))) as server:
        body = {"model": "clp", "prompt": PROMPTS[0], "max_tokens": 24, "temperature": 0}
        assert post(server, "/v1/completions", body).json()["choices"][0]["text"] == expected
    # An option with no neutral value would change every completion: refused when the server is built.
    penalised.model.generation_config.suppress_tokens = [5]
    with pytest.raises(ValueError, match=r"\['suppress_tokens'\].*generation_config.json"):
        create_app(penalised, ServerConfig(model_name="clp"))


def test_server_errors_name_a_request_id_and_keep_details_in_the_log(model_path, caplog):
    app = create_app(load_steerable_model(model_path), ServerConfig(model_name="clp"))
    secret = "CUDA error: device-side assert at /home/alice/models/secret.py:42"

    def failing(*args, **kwargs):
        raise RuntimeError(secret)

    body = {"model": "clp", "prompt": "Hi", "max_tokens": 3, "temperature": 0}
    with ServerThread(app) as server, caplog.at_level(logging.ERROR):
        app.state.steer.model.generate, real = failing, app.state.steer.model.generate
        failed = post(server, "/v1/completions", body)
        streamed = post(server, "/v1/completions", {**body, "stream": True})
        app.state.steer.model.generate = real
        tokenizer = app.state.steer.tokenizer
        tokenizer.apply_chat_template = failing  # an unexpected failure outside generation
        chat = post(server, "/v1/chat/completions", {"model": "clp", "messages": [{"role": "user", "content": "x"}]})
        del tokenizer.apply_chat_template
    error_chunk = json.loads(streamed.text.split("data: ")[2])
    for message in (
        failed.json()["error"]["message"],
        error_chunk["error"]["message"],
        chat.json()["error"]["message"],
    ):
        assert "secret" not in message and "CUDA" not in message and "server log" in message
    assert failed.status_code == 500 and chat.status_code == 500
    logged = caplog.text
    for message in (
        failed.json()["error"]["message"],
        error_chunk["error"]["message"],
        chat.json()["error"]["message"],
    ):
        request_id = message.split("(request ")[1].split(")")[0]
        assert request_id in logged
    assert secret in logged


def test_the_schema_needs_the_api_key_when_one_is_set(model_path):
    steer = load_steerable_model(model_path)
    with ServerThread(create_app(steer, ServerConfig(model_name="clp"))) as server:  # no key: open, as /v1/*
        assert "/v1/completions" in httpx.get(server.url + "/openapi.json").json()["paths"]
        assert httpx.get(server.url + "/docs").status_code == 200
    with ServerThread(create_app(steer, ServerConfig(model_name="clp", api_key="k"))) as server:
        assert httpx.get(server.url + "/openapi.json").status_code == 401
        with_key = httpx.get(server.url + "/openapi.json", headers={"Authorization": "Bearer k"})
        assert "/v1/completions" in with_key.json()["paths"]
        assert httpx.get(server.url + "/docs").status_code == 404  # a browser could not send the key
        assert httpx.get(server.url + "/redoc").status_code == 404


def test_the_schema_shows_the_response_and_error_models_the_server_answers(model_path, server):
    schema = create_app(load_steerable_model(model_path), ServerConfig(model_name="clp")).openapi()

    def model_of(path, method, status):
        content = schema["paths"][path][method]["responses"][status]["content"]["application/json"]
        return content["schema"]["$ref"].rsplit("/", 1)[-1]

    assert model_of("/v1/completions", "post", "200") == "CompletionResponse"
    assert model_of("/v1/chat/completions", "post", "200") == "ChatCompletionResponse"
    assert model_of("/v1/models", "get", "200") == "ModelList"
    for status in ("400", "401", "404", "500", "503"):
        assert model_of("/v1/completions", "post", status) == "ErrorResponse"
    # What the server answers is what the schema says, field for field.
    body = {"model": "clp", "max_tokens": 4, "temperature": 0, "weights": [0.2, 0.8]}
    answered = post(server, "/v1/completions", {**body, "prompt": PROMPTS[0]}).json()
    CompletionResponse.model_validate(answered)
    assert set(answered) == set(CompletionResponse.model_fields) - {"kl_weight"}  # no KL-weight conditioning here
    assert set(answered["choices"][0]) == set(CompletionChoice.model_fields)
    chat = {**body, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    events = post(server, "/v1/chat/completions", chat).text.split("data: ")[1:]
    assert events[-1].strip() == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert set(chunk) == set(ChatCompletionChunk.model_fields) - {"kl_weight"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant" and chunks[-1]["choices"][0]["delta"] == {}
    refused = post(server, "/v1/completions", {**body, "prompt": PROMPTS[0], "weights": [1.0, 0.0, 0.0]})
    assert refused.status_code == 400
    assert set(ErrorResponse.model_validate(refused.json()).error.model_dump()) == set(refused.json()["error"])


BAD_REQUESTS = [
    ({"weights": [0.2, 0.3, 0.5]}, 400, "give one weight per objective"),
    ({"weights": {"lower": 0.5, "shouting": 0.5}}, 400, "unknown objectives ['shouting']"),
    ({"weights": [1.5, -0.5]}, 400, "negative"),
    ({"weights": [0.3, 0.3]}, 400, "must sum to 1"),
    ({"weights": "lower"}, 400, "weights"),
    ({"kl_weight": 0.5}, 400, "drop `kl_weight`"),
    ({"prompt": "x" * 250, "max_tokens": 10}, 400, "context is 256 tokens"),
    ({"prompt": ""}, 400, "prompt is empty"),
    ({"max_tokens": 65}, 400, "limit of 64"),
    ({"max_tokens": 0}, 400, "max_tokens"),
    ({"n": 2}, 400, "n=2"),
    ({"logprobs": 3}, 400, "log-probabilities"),
    ({"seed": 1}, 400, "temperature=0"),
    ({"presence_penalty": 0.5}, 400, "penalties"),
    ({"best_of": 3}, 400, "best_of"),
    ({"top_k": 5}, 400, "Unsupported parameter `top_k`"),
    ({"temperature": -1}, 400, "temperature"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "up to 4"),
    ({"model": "gpt-4"}, 404, "this server serves `clp`"),
]


@pytest.mark.parametrize(("change", "status", "message"), BAD_REQUESTS)
def test_bad_requests_get_a_4xx_that_says_what_to_fix(server, change, status, message):
    response = post(server, "/v1/completions", {"model": "clp", "prompt": "Hi", "max_tokens": 4, **change})
    assert response.status_code == status
    assert message in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"model": "clp", "prompt": "Hi",', "not valid JSON"),
        (b'{"model": "clp", "prompt": "Hi", "weights": [NaN, 0.5]}', "NaN or inf"),
        (b'{"model": "clp", "prompt": "Hi", "weights": [1e999, 0]}', "NaN or inf"),
        (b'{"model": "clp", "prompt": "Hi", "weights": [0.5, 0.5], "kl_weight": Infinity}', "kl_weight"),
        (b'{"prompt": "Hi"}', "Missing required field `model`"),
    ],
)
def test_malformed_and_non_finite_bodies_get_400(server, content, message):
    response = post(server, "/v1/completions", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_bad_chat_requests_and_the_server_keeps_serving(server, client, reference):
    assert post(server, "/v1/chat/completions", {"model": "clp", "messages": []}).status_code == 400
    bad_role = post(server, "/v1/chat/completions", {"model": "clp", "messages": [{"role": "robot", "content": "x"}]})
    assert bad_role.status_code == 400 and "role" in bad_role.json()["error"]["message"]
    # After every bad request above: the worker still serves, with no weighting left set.
    text = (
        client.completions.create(
            model="clp", prompt="Hi", max_tokens=6, temperature=0, extra_body={"weights": [0.9, 0.1]}
        )
        .choices[0]
        .text
    )
    assert text == served_alone(reference, reference.tokenizer("Hi")["input_ids"], [0.9, 0.1], 6)
    assert server.server.config.app.state.steer.conditioner.conditioning_vectors is None


def test_a_full_queue_answers_503_and_a_failed_batch_500(model_path):
    app = create_app(
        load_steerable_model(model_path), ServerConfig(model_name="clp", max_batch_size=1, max_queue_size=2)
    )
    batcher = app.state.batcher
    busy, release, generate = threading.Event(), threading.Event(), batcher._generate

    def held_generate(batch):  # the worker is busy until released: the queue fills deterministically
        busy.set()
        release.wait(30)
        generate(batch)

    batcher._generate = held_generate
    body = {"model": "clp", "prompt": "Hi", "max_tokens": 3, "temperature": 0}
    with ServerThread(app) as server, concurrent.futures.ThreadPoolExecutor(3) as pool:
        held = [pool.submit(post, server, "/v1/completions", body)]
        # Wait for the worker to hold the first request: polling `queued` alone passes before that request arrives
        # on a loaded machine, and the third request then finds room in the queue.
        assert busy.wait(30)
        held += [pool.submit(post, server, "/v1/completions", body) for _ in range(2)]
        while batcher.queued < 2:
            time.sleep(0.01)
        full = post(server, "/v1/completions", body)
        assert full.status_code == 503 and "at capacity" in full.json()["error"]["message"]
        assert full.headers["retry-after"] == "1"
        release.set()
        assert [future.result().status_code for future in held] == [200, 200, 200]

        def failing(*args, **kwargs):
            raise RuntimeError("out of memory")

        app.state.steer.model.generate, real = failing, app.state.steer.model.generate
        failed = post(server, "/v1/completions", body)
        assert failed.status_code == 500 and "server log" in failed.json()["error"]["message"]
        app.state.steer.model.generate = real
        assert post(server, "/v1/completions", body).status_code == 200
        assert app.state.steer.conditioner.conditioning_vectors is None


def test_a_client_that_disconnects_frees_its_row(model_path, monkeypatch):
    from trl_clp.serving import batcher as batching

    app = create_app(load_steerable_model(model_path), ServerConfig(model_name="clp", max_new_tokens=200))
    batches, started, release, finish_reasons = [], threading.Event(), threading.Event(), []
    generate, check_rows = app.state.batcher._generate, batching._RowProgress.__call__

    def recorded_generate(batch):
        batches.append(batch)
        generate(batch)

    def held_after_the_first_token(progress, input_ids, scores, **kwargs):
        if not started.is_set():  # the worker waits mid-generation until the test has hung up
            started.set()
            release.wait(30)
        finished = check_rows(progress, input_ids, scores, **kwargs)
        finish_reasons.append((input_ids.size(1), list(progress.finish_reason)))
        return finished

    app.state.batcher._generate = recorded_generate
    monkeypatch.setattr(batching._RowProgress, "__call__", held_after_the_first_token)
    body = json.dumps({"model": "clp", "prompt": "Hi", "max_tokens": 200, "temperature": 0}).encode()
    with ServerThread(app) as server:
        host, port = httpx.URL(server.url).host, httpx.URL(server.url).port
        connection = socket.create_connection((host, port))
        request = f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        connection.sendall(f"{request}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert started.wait(30)
        connection.close()  # the client gives up while its row is being generated
        (row,) = batches[0]
        deadline = time.monotonic() + 10
        while not row.cancelled.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        assert row.cancelled.is_set(), "the server did not notice that the client went away"
        assert post(server, "/v1/completions", {**json.loads(body), "max_tokens": 2}).status_code == 200
    stopped_at, reasons = next(entry for entry in finish_reasons if entry[1] != [None])
    assert reasons == ["cancelled"] and stopped_at - 2 < 200  # stopped early: not the 200 tokens asked for


def test_submit_is_all_or_nothing_when_the_queue_fills(reference):
    from trl_clp.serving import GenerationRequest, RequestBatcher, SamplingKey

    batcher = RequestBatcher(reference, reference.tokenizer, max_queue_size=2)  # not started: nothing is taken
    requests = [GenerationRequest([5], None, 1, SamplingKey(0.0, 1.0), emit=print) for _ in range(3)]
    with pytest.raises(QueueFullError, match="retry later"):
        batcher.submit(requests)
    assert [r.cancelled.is_set() for r in requests] == [True, True, False]  # queued ones are skipped by the worker


def test_variants_kl_weight_and_prompting(tmp_path):
    kl_path = save_steerable(str(tmp_path / "kl"), names=["reward", "kl"], min_kl_weight=0.1)
    prompt_path = save_steerable(str(tmp_path / "prompt"), variant="prompt")
    with ServerThread(create_app(load_steerable_model(kl_path), ServerConfig(model_name="kl"))) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        reference = load_steerable_model(kl_path)
        ids = reference.tokenizer("Hi")["input_ids"]
        texts = {}
        for alpha in (0.1, 0.4):
            response = client.completions.create(
                model="kl",
                prompt="Hi",
                max_tokens=10,
                temperature=0,
                extra_body={"weights": [1.0], "kl_weight": alpha},
            )
            assert response.choices[0].text == served_alone(reference, ids, [1.0], 10, kl_weight=alpha)
            texts[alpha] = response.choices[0].text
        assert texts[0.1] != texts[0.4]
        low = post(server, "/v1/completions", {"model": "kl", "prompt": "Hi", "kl_weight": 0.01})
        assert low.status_code == 400 and ">= 0.1" in low.json()["error"]["message"]
    with ServerThread(create_app(load_steerable_model(prompt_path), ServerConfig(model_name="p"))) as server:
        response = post(
            server,
            "/v1/completions",
            {"model": "p", "prompt": "Hi", "max_tokens": 8, "temperature": 0, "weights": [0.25, 0.75]},
        )
        reference = load_steerable_model(prompt_path)
        text = format_weighted_prompt("Hi", [0.25, 0.75], NAMES)  # the weighting written into the prompt text
        ids = torch.tensor([reference.tokenizer(text)["input_ids"]])
        out = reference.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False, pad_token_id=0
        )[0, ids.size(1) :].tolist()
        expected = reference.tokenizer.decode(out[: out.index(EOS)] if EOS in out else out)
        assert response.json()["choices"][0]["text"] == expected
        assert response.json()["usage"]["prompt_tokens"] == len(text)


def test_only_safetensors_are_loaded(tmp_path, model_path):
    import shutil

    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(model_path, pickled)
    torch.save(load_file(str(pickled / "adapter_model.safetensors")), pickled / "adapter_model.bin")
    os.remove(pickled / "adapter_model.safetensors")
    with pytest.raises(ValueError, match="safetensors only"):
        load_steerable_model(str(pickled))


def test_cli_serves_on_loopback_with_the_api_key_from_the_environment(model_path, monkeypatch):
    """`trl-clp serve PATH`: binds 127.0.0.1 by default and takes the key from $TRL_CLP_API_KEY. uvicorn.run is
    replaced by a call that records its app, which is then run on a free loopback port."""
    import uvicorn

    from trl_clp import cli

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    monkeypatch.setenv("TRL_CLP_API_KEY", "secret-key")
    cli.main(["serve", model_path, "--max-batch-size", "4", "--max-request-bytes", "4096"])
    ((app, kwargs),) = calls
    assert kwargs["host"] == "127.0.0.1" and kwargs["port"] == 8000
    assert app.state.config.max_batch_size == 4 and app.state.config.max_request_bytes == 4096
    with ServerThread(app) as server:
        assert httpx.get(server.url + "/health").status_code == 200  # health needs no key
        body = {"model": "clp", "prompt": "Hi", "max_tokens": 4, "weights": {"lower": 1.0}}
        missing = post(server, "/v1/completions", body)
        assert missing.status_code == 401 and "Bearer" in missing.json()["error"]["message"]
        assert httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="secret-key", max_retries=0)
        assert client.models.list().data[0].id == "clp"  # the folder's name
        assert client.completions.create(model="clp", prompt="Hi", max_tokens=4).usage.completion_tokens >= 1


def test_no_api_key_means_no_check(server):
    assert httpx.get(server.url + "/v1/models").status_code == 200
    assert math.isfinite(json.loads(httpx.get(server.url + "/health").text)["rows"])


def test_a_model_with_shared_and_pairwise_blocks_serves_each_request_as_its_merged_model(tmp_path):
    """Conditioning features go through the server unchanged: concurrent requests sharing batches each get what the
    plain model merged for their weighting generates."""
    path = save_steerable(str(tmp_path), features=("linear", "shared", "pairwise"))
    steer = load_steerable_model(path)
    weightings = [[1.0, 0.0], [0.7, 0.3], [0.5, 0.5], [0.2, 0.8], [0.0, 1.0]]
    prompt_ids = steer.tokenizer(PROMPTS[1])["input_ids"]
    expected = []
    for weights in weightings:
        merged = steer.merge(torch.tensor(weights)).eval()
        ids = torch.tensor([prompt_ids])
        out = merged.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False)
        new = out[0, ids.size(1) :].tolist()
        expected.append(steer.tokenizer.decode(new[: new.index(EOS)] if EOS in new else new, skip_special_tokens=True))
    assert len(set(expected)) > 1  # the weighting steers the text
    app = create_app(load_steerable_model(path), ServerConfig(model_name="clp", max_new_tokens=64))
    with ServerThread(app) as running:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        assert client.models.list().data[0].conditioning_features == ["linear", "shared", "pairwise"]
        start = threading.Barrier(len(weightings))

        def call(weights):
            start.wait()
            request = dict(
                model="clp", prompt=PROMPTS[1], max_tokens=10, temperature=0, extra_body={"weights": weights}
            )
            return client.completions.create(**request).choices[0].text

        with concurrent.futures.ThreadPoolExecutor(len(weightings)) as pool:
            assert list(pool.map(call, weightings)) == expected
