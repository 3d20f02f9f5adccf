#!/usr/bin/env python3
"""Records transformers' RoPE inverse frequencies for the bench/models
configs that scale RoPE (Llama 3.x, rope_type llama3), so that
tests/test_real_models.c checks our dms_config_rope_inv_freq against
transformers itself rather than against our reading of it.

    pip install torch transformers   # any recent version; 4.57.3 recorded this
    python3 tests/reference/make_rope_fixtures.py   # writes tests/fixtures/rope/inv_freq.json
"""
import json
import os

import transformers
from transformers import AutoConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "rope", "inv_freq.json")


def main():
    rec = {"transformers": transformers.__version__, "models": {}}
    models = os.path.join(ROOT, "bench", "models")
    for name in sorted(os.listdir(models)):
        if not os.path.isfile(os.path.join(models, name, "config.json")):
            continue
        cfg = AutoConfig.from_pretrained(os.path.join(models, name))
        scaling = getattr(cfg, "rope_scaling", None) or {}
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind == "default":
            continue
        inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[kind](cfg, "cpu")
        rec["models"][name] = {"rope_type": kind, "attention_factor": float(attention_factor),
                               "inv_freq": [float(x) for x in inv_freq.double().tolist()]}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(rec, f, indent=1)
    print("%d models -> %s" % (len(rec["models"]), OUT))


if __name__ == "__main__":
    main()
