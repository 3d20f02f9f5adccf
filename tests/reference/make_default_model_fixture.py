#!/usr/bin/env python3
"""Reference logits of the embedded default model (SmolLM2-135M-Instruct,
Q4_1 GGUF) computed by Hugging Face transformers from the same GGUF file
(transformers dequantises it to fp32 and undoes llama.cpp's q/k row
permutation itself), so that tests/test_default_model.c checks our GGUF
loading, un-permutation and forward pass on the real model end to end.

Writes tests/fixtures/default_model/reference.safetensors:
  input_ids      int32 [T]      a fixed token sequence
  last_logits    float32 [V]    logits at the last position
  argmax         int32 [T]      argmax of the logits at every position
  greedy_ids     int32 [16]     greedy continuation of input_ids

Needs: pip install torch transformers gguf safetensors; and models/default.gguf
(bash scripts/install_deps.sh). Rerun: python3 tests/reference/make_default_model_fixture.py
"""
import os, sys
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GGUF = os.path.realpath(os.path.join(ROOT, "models", "default.gguf"))
OUT = os.path.join(ROOT, "tests", "fixtures", "default_model")

torch.manual_seed(0)
torch.set_num_threads(2)
model = AutoModelForCausalLM.from_pretrained(os.path.dirname(GGUF), gguf_file=os.path.basename(GGUF),
                                             dtype=torch.float32)
model.eval()
# "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n" style ids
# are tokenizer-dependent; use fixed ids so this fixture tests the forward pass alone.
ids = torch.tensor([[1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28,
                     7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575,
                     282, 4649, 47, 2, 198, 1, 520, 9531, 198]], dtype=torch.long)
with torch.no_grad():
    logits = model(ids).logits[0]
    gen = model.generate(ids, do_sample=False, max_new_tokens=16, min_new_tokens=16,
                         eos_token_id=None, pad_token_id=0)[0, ids.shape[1]:]
os.makedirs(OUT, exist_ok=True)
save_file({"input_ids": ids[0].to(torch.int32), "last_logits": logits[-1].contiguous(),
           "argmax": logits.argmax(-1).to(torch.int32), "greedy_ids": gen.to(torch.int32)},
          os.path.join(OUT, "reference.safetensors"), metadata={"source": os.path.basename(GGUF)})
top2 = torch.topk(logits, 2, dim=-1).values
print("T=%d max|logit|=%.3f min top1-top2 margin=%.4f greedy=%s" % (
    ids.shape[1], logits.abs().max(), (top2[:, 0] - top2[:, 1]).min(), gen.tolist()))
