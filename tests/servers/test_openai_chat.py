"""`OpenAI` chat prompts, streaming and min_p against a scripted local HTTP server (fast): what is sent
(messages, rendered templates, ``stream``, ``stop``, ``min_p``), how pieces are held back and cut, and faults.
The same features against llama_cpp.server are in tests/test_chat_smol.py (slow)."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from autocog.errors import ChatTemplateError, InvalidPromptError, MalformedResponseError, RequestFailedError

openai = pytest.importorskip("openai")
from autocog.core.types import ScoreRequest
from autocog.lm.openai import OpenAI
from autocog.lm.openai.chat import ChatPrompt
from autocog.lm.scoring import check_request

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


class ScriptServer:
    """Answers by path from ``routes``: a path maps to a list of answers used in turn (the last one repeats):
    ("json", status, body), ("sse", [chunk dicts or raw str]) (``data: [DONE]`` appended), ("sse-broken",
    [chunks]) (chunked, then the connection drops). Records (path, decoded JSON body) of every request."""

    def __init__(self, routes):
        self.routes = {k: list(v) for k, v in routes.items()}
        self.requests = []
        self.served = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self.answer(b"")

            def do_POST(self):
                self.answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def answer(self, raw):
                path = self.path.split("?")[0]
                outer.requests.append((path, json.loads(raw) if raw else None))
                script = outer.routes.get(path) or [("json", 404, {"error": {"message": "not found"}})]
                n = outer.served.get(path, 0)
                outer.served[path] = n + 1
                action = script[min(n, len(script) - 1)]
                if action[0] == "json":
                    data = json.dumps(action[2]).encode()
                    self.send_response(action[1])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                events = [c if isinstance(c, str) else json.dumps(c) for c in action[1]]
                if action[0] == "sse":
                    events.append("[DONE]")
                for event in events:
                    data = f"data: {event}\n\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                if action[0] == "sse-broken":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(b"0\r\n\r\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def lm(self, **kwargs):
        settings = dict(
            model="m",
            base_url=self.base_url,
            api_key="none",
            server="generic",
            max_retries=2,
            backoff=0.01,
            max_backoff=0.02,
            timeout=5.0,
            tokenizer="cl100k_base",
            check_tokenizer=False,
        )
        settings.update(kwargs)
        return OpenAI(**settings)

    def bodies(self, path):
        return [body for p, body in self.requests if p == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def script():
    servers = []

    def make(routes):
        servers.append(ScriptServer(routes))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def text_chunk(text, finish=None, **extra):
    return {
        "id": "c",
        "object": "text_completion",
        "created": 0,
        "model": "m",
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish, **extra}],
    }


def chat_chunk(text, finish=None, **extra):
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"delta": {"content": text}, "index": 0, "finish_reason": finish, **extra}],
    }


def completion(text, finish="length", **extra):
    return {
        "id": "c",
        "object": "text_completion",
        "created": 0,
        "model": "m",
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish, **extra}],
    }


def chat_completion(text, finish="length", **extra):
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"message": {"role": "assistant", "content": text}, "index": 0, "finish_reason": finish, **extra}],
    }


# --- streaming -------------------------------------------------------------------------------------------
def test_llama_cpp_stream_matches_stops_locally_and_closes(script):
    chunks = [text_chunk(t) for t in [" Hello", " wor", "ld", ". M", "ore", " text"]]
    server = script({"/v1/completions": [("sse", chunks)]})
    lm = server.lm(server="llama.cpp")
    pieces = list(lm.stream("Say:", stop=["d. M", "xyz"], max_tokens=9, min_p=0.1))
    assert "".join(pieces) == " Hello world. M"  # ends with the stop: generation ended on it
    body = server.bodies("/v1/completions")[0]
    assert body["stream"] is True and "stop" not in body and body["max_tokens"] == 9
    assert body["min_p"] == 0.1 and body["repeat_penalty"] == 1.0  # llama.cpp's defaults reset, min_p as asked


def test_stream_holds_back_the_start_of_a_stop(script):
    server = script({"/v1/completions": [("sse", [text_chunk(t) for t in ["a", "b\n", "c", "\ufffd", "é"]])]})
    lm = server.lm(server="llama.cpp")
    assert list(lm.stream("x", stop="\n\n")) == ["a", "b", "\nc", "\ufffdé"]  # "\n", a trailing U+FFFD wait


@pytest.mark.parametrize("chat", [False, True])
def test_stream_equals_complete_when_the_server_cuts_the_stop(script, chat):
    make = chat_chunk if chat else text_chunk
    path = "/v1/chat/completions" if chat else "/v1/completions"
    whole = chat_completion if chat else completion
    cases = [  # (streamed chunks, the same answer as one completion, expected text)
        (
            [make(" Hel"), make("lo"), make("", "stop", stop_reason="\n\n")],
            whole(" Hello", "stop", stop_reason="\n\n"),
            " Hello\n\n",
        ),
        (
            [make(" Hel"), make("lo"), make("", "stop", stop_reason=None)],
            whole(" Hello", "stop", stop_reason=None),
            " Hello",
        ),  # EOS: no stop string
        ([make(" a\n"), make("\nb")], whole(" a\n\nb"), " a\n\n"),  # a server that did not cut
    ]
    for chunks, answer, expected in cases:
        server = script({path: [("sse", chunks), ("json", 200, answer)]})
        lm = server.lm(server="vllm", chat=chat)
        assert "".join(lm.stream("x", stop=["\n\n"], max_tokens=5)) == expected
        assert lm.complete("x", stop=["\n\n"], max_tokens=5) == expected
        streamed, plain = server.bodies(path)
        assert streamed["stream"] is True and streamed["stop"] == ["\n\n"] and "stream" not in plain


def test_broken_stream_is_a_request_failure(script):
    server = script({"/v1/completions": [("sse-broken", [text_chunk(" a"), text_chunk(" b")])]})
    pieces = []
    with pytest.raises(RequestFailedError, match="broke after"):
        for piece in server.lm().stream("x", stop=None):
            pieces.append(piece)
    assert pieces == [" a", " b"]
    server = script({"/v1/completions": [("sse", [text_chunk(" a"), {"error": {"message": "boom"}}])]})
    with pytest.raises(RequestFailedError, match="boom"):
        list(server.lm().stream("x", stop=None))
    server = script({"/v1/completions": [("sse", [text_chunk(" a"), "{not json"])]})
    with pytest.raises(MalformedResponseError, match="not valid JSON"):
        list(server.lm().stream("x", stop=None))


def test_opening_a_stream_is_retried(script):
    server = script({"/v1/completions": [("json", 503, {"error": {"message": "busy"}}), ("sse", [text_chunk(" ok")])]})
    lm = server.lm()
    assert list(lm.stream("x", stop=None)) == [" ok"]
    assert lm.requests["completions"] == 1 and lm.requests["attempts"] == 2


def test_stream_checks_before_any_request(script):
    server = script({})
    lm = server.lm(server="openai", chat=True)
    with pytest.raises(ValueError, match="min_p"):
        lm.stream("x", min_p=0.05)
    with pytest.raises(ValueError, match="min_p"):
        lm.complete("x", min_p=0.05)
    with pytest.raises(InvalidPromptError):
        lm.stream([{"role": "user"}])
    assert list(lm.stream("x", max_tokens=0)) == []
    assert server.requests == []


def test_min_p_on_servers(script):
    for kind, expected in [("vllm", {"min_p": 0.2, "top_k": 3}), ("generic", {"min_p": 0.2})]:
        server = script({"/v1/completions": [("json", 200, completion(" a"))]})
        server.lm(server=kind).complete("x", min_p=0.2, top_k=3)
        body = server.bodies("/v1/completions")[0]
        assert {k: body[k] for k in expected} == expected and (kind == "vllm" or "top_k" not in body)


# --- chat prompts ------------------------------------------------------------------------------------------
def test_chat_endpoint_sends_the_messages(script):
    server = script(
        {
            "/v1/chat/completions": [
                ("json", 200, chat_completion("Paris")),
                ("sse", [chat_chunk("Par"), chat_chunk("is")]),
                ("json", 200, chat_completion("Paris")),
            ]
        }
    )
    lm = server.lm(chat=True, system="You are terse.")
    assert lm.complete(MESSAGES, stop=None) == "Paris"
    assert "".join(lm.stream(MESSAGES, stop=None)) == "Paris"
    lm.complete("Capital?", stop=None)
    sent = [b["messages"] for b in server.bodies("/v1/chat/completions")]
    assert sent == [
        MESSAGES,
        MESSAGES,
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Capital?"}],
    ]
    prompt = lm.render_prompt(MESSAGES)
    assert isinstance(prompt, ChatPrompt) and list(prompt.messages) == MESSAGES
    assert check_request(lm, ScoreRequest(MESSAGES, ["Paris", "Rome"])).prompt == prompt
    assert prompt != str(prompt) and hash(prompt) != hash(str(prompt))  # never a cache hit for a text prompt
    assert prompt.rstrip() is prompt  # the boundary keeps the conversation whole


def test_completions_endpoint_renders_the_template(script):
    server = script({"/v1/completions": [("json", 200, completion(" Paris"))]})
    lm = server.lm(chat_template=TEMPLATE)
    expected = "<|system|>Be brief.\n<|user|>Capital of France?\n<|assistant|>"
    assert lm.apply_chat_template(MESSAGES) == expected
    assert lm.render_prompt(MESSAGES) == expected and type(lm.render_prompt(MESSAGES)) is str
    assert lm.complete(MESSAGES, stop=None) == " Paris"
    assert server.bodies("/v1/completions")[0]["prompt"] == expected


class BosTokenizer:
    """A tokenizer object whose server adds a BOS (bytes as ids, 256 = BOS)."""

    bos_token_id = 256

    def encode(self, text, add_special_tokens=False):
        return ([256] if add_special_tokens else []) + list(text.encode())

    def decode(self, ids, skip_special_tokens=True):
        return bytes(i for i in ids if i < 256).decode("utf-8", "replace")


class TemplateTokenizer(BosTokenizer):
    """... with its own chat template and BOS text."""

    bos_token = "<s>"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "<s>" + "".join(f"[{m['role']}] {m['content']}\n" for m in messages) + "[assistant]"


def test_template_sources_and_bos(script):
    server = script(
        {
            "/props": [("json", 200, {"chat_template": TEMPLATE, "bos_token": "<s>"})],
            "/tokenize": [("json", 200, {"tokens": [1, 2]})],
        }
    )
    own = server.lm(tokenizer=TemplateTokenizer())
    assert own.apply_chat_template(MESSAGES).startswith("<s>[system] Be brief.")
    assert own.render_prompt(MESSAGES) == own.apply_chat_template(MESSAGES)[3:]  # the server adds BOS itself
    props = server.lm(server="llama.cpp", tokenizer=BosTokenizer())
    rendered = "<s><|system|>Be brief.\n<|user|>Capital of France?\n<|assistant|>"  # bos_token from /props
    assert props.apply_chat_template(MESSAGES) == rendered
    assert not props.render_prompt(MESSAGES).startswith("<s>")
    vllm = server.lm(server="vllm", tokenizer="cl100k_base")
    assert vllm.apply_chat_template(MESSAGES) == vllm.tokenizer.decode([1, 2])
    assert server.bodies("/tokenize")[0]["messages"] == MESSAGES
    assert [p for p, _ in server.requests].count("/props") == 1  # read once


def test_no_template_names_the_fix(script):
    server = script({})
    for kind in ("generic", "llama.cpp"):
        lm = server.lm(server=kind)
        with pytest.raises(ChatTemplateError, match="chat_template=.*chat=True"):
            lm.choose(MESSAGES, ["Paris", "Rome"])
    assert all(p == "/props" for p, _ in server.requests)  # nothing but the template lookup was sent
