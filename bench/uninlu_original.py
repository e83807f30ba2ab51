"""The original UniNLU deployment that nlu-server replaces, for bench/uninlu_side_by_side.py:
ModelScope's `siamese-uie` pipeline behind Flask, served by Gunicorn's sync workers, each worker
loading its own pipeline (the seed guide's setup; its JWT and Redis checks are left out, as
nlu-server runs without auth in the same benchmark).

    UNINLU_MODEL=target/bench-models/uninlu-base gunicorn -w 2 -b 127.0.0.1:8001 \
        --chdir bench uninlu_original:app

POST /api/predict {"text", "schema"} -> {"output": [[{"type", "span", "offset"}...]...]}.
"""

import os

from flask import Flask, jsonify, request
from modelscope.pipelines import pipeline
from modelscope.utils.constant import Tasks

app = Flask(__name__)
uninlu = pipeline(Tasks.siamese_uie, model=os.environ["UNINLU_MODEL"])


@app.post("/api/predict")
def predict():
    body = request.get_json()
    return jsonify(uninlu(input=body["text"], schema=body["schema"]))
