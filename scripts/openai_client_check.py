#!/usr/bin/env python3
"""Calls an embedding server as the official OpenAI Python client does, the way LangChain,
LlamaIndex and Open WebUI call it: model discovery, embeddings (base64 by default, floats on
request), `dimensions`, and a refusal. Exits non-zero on the first difference.

    openai_client_check.py BASE_URL TOKEN MODEL_ID DIMS

BASE_URL is the server's root (the client gets BASE_URL/v1); TOKEN a tenant token when the
server runs --auth jwt (anything otherwise); MODEL_ID the served model name; DIMS its size.
Run by scripts/contract-fuzz.sh with the venv that holds schemathesis and openai.
"""

import math
import sys

import openai


def norm(vector):
    return math.sqrt(sum(x * x for x in vector))


def main(base_url, token, model, dims):
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=token, max_retries=0)

    ids = [m.id for m in client.models.list().data]
    assert ids == [model], ids
    assert client.models.retrieve(model).id == model
    try:
        client.models.retrieve("not-" + model)
        raise AssertionError("an unknown model id was found")
    except openai.NotFoundError as e:
        assert e.body["code"] == "model_not_found", e.body

    # The client asks for base64 unless told otherwise and decodes it itself.
    full = client.embeddings.create(model=model, input=["今天天气很好", "hello"])
    assert [d.index for d in full.data] == [0, 1]
    assert full.model == model, full.model
    for d in full.data:
        assert len(d.embedding) == dims, len(d.embedding)
        assert abs(norm(d.embedding) - 1) < 1e-4
    assert full.usage.prompt_tokens > 0

    cut = client.embeddings.create(
        model=model, input="今天天气很好", dimensions=16, encoding_format="float"
    )
    vector = cut.data[0].embedding
    assert len(vector) == 16, len(vector)
    assert abs(norm(vector) - 1) < 1e-4
    head = full.data[0].embedding[:16]
    expected = [x / norm(head) for x in head]
    assert max(abs(a - b) for a, b in zip(vector, expected)) < 1e-4

    try:
        client.embeddings.create(model=model, input="x", dimensions=dims + 1)
        raise AssertionError("dimensions above the model's size were accepted")
    except openai.BadRequestError as e:
        assert e.body["code"] == "invalid_dimensions", e.body
    print("the official OpenAI client (openai %s) gets what it expects" % openai.__version__)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
