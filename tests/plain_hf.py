"""Scoring a saved student with transformers alone, in a fresh interpreter.

``score_without_kdlab`` writes the dev examples' texts (built here, with kdlab's data
layer and prompts) to a file, and a ``python -c`` subprocess that never imports kdlab
loads the model with the family's Auto class, follows the recipe of the model card and
prints its predictions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

from kdlab.data import load_split, prompts

SCRIPT = r"""
import json, sys
import torch
import transformers as T

model_dir, inputs = sys.argv[1], json.load(open(sys.argv[2]))
family, L = inputs["family"], inputs["max_length"]
cls = {"encoder": T.AutoModelForSequenceClassification, "seq2seq": T.AutoModelForSeq2SeqLM,
       "causal": T.AutoModelForCausalLM}[family]
model = cls.from_pretrained(model_dir).eval()
tok = T.AutoTokenizer.from_pretrained(model_dir)
assert not any(m == "kdlab" or m.startswith("kdlab.") for m in sys.modules), "kdlab was imported"
cfg, preds = model.config, []
with torch.no_grad():
    if family == "encoder":
        rows = inputs["rows"]
        for i in range(0, len(rows), 64):
            a = [r[0] for r in rows[i:i + 64]]
            b = [r[1] for r in rows[i:i + 64]]
            enc = tok(a, b if b[0] is not None else None, truncation=inputs["truncation"], max_length=L,
                      padding=True, return_tensors="pt")
            preds += model(**enc).logits.argmax(-1).tolist()
    for prompt, answers in inputs.get("choices", []):
        scores = []
        for answer in answers:
            ids = tok(answer, add_special_tokens=False)["input_ids"]
            if family == "seq2seq":
                src = tok(prompt, truncation=True, max_length=L, return_tensors="pt")["input_ids"]
                tgt = ids + [cfg.eos_token_id]
                dec = torch.tensor([[cfg.decoder_start_token_id] + tgt[:-1]])
                logits = model(input_ids=src, decoder_input_ids=dec).logits[0]
            else:
                room = L - max(len(tok(x, add_special_tokens=False)["input_ids"]) for x in answers) - 1
                p = [cfg.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"][-room:]
                logits = model(input_ids=torch.tensor([p + ids])).logits[0, len(p) - 1:-1]
                tgt = ids
            lp = torch.log_softmax(logits.float(), -1)
            scores.append(float(lp[torch.arange(len(tgt)), torch.tensor(tgt)].sum()))
        preds.append(scores.index(max(scores)))
print(json.dumps(preds))
"""


def plain_inputs(family: str, task: str, examples: List[Any], dataset: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"family": family, "max_length": dataset["max_length"],
                           "truncation": dataset["truncation"]}
    if family == "encoder":
        out["rows"] = [[ex.text_a, ex.text_b] for ex in examples]
        return out
    tpl = prompts.template(task, family)
    if family == "seq2seq":
        out["choices"] = [[prompts.seq2seq(task, ex, tpl)[0], list(tpl.targets)] for ex in examples]
    else:
        out["choices"] = [list(prompts.choices(task, ex, tpl)) for ex in examples]
    return out


def score_without_kdlab(model_dir: Path, run_dir: Path, data_dir: Path, tmp: Path) -> Tuple[List[int], List[Any]]:
    """Predictions on the run's dev examples by ``model_dir`` loaded with transformers only,
    and those examples (read as the run read them: its subsample size and seed)."""
    res = json.loads((run_dir / "results.json").read_text())
    meta = json.loads((model_dir / "kdlab_model.json").read_text())
    split = "validation"
    examples = load_split(res["task"], split, data_dir=str(data_dir), max_samples=meta["dataset"]["max_eval_samples"],
                          seed=res["seed"])
    inputs = tmp / "inputs.json"
    inputs.write_text(json.dumps(plain_inputs(meta["family"], res["task"], examples, meta["dataset"])))
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(model_dir), str(inputs)], capture_output=True,
                         text=True, timeout=600, cwd=tmp,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), examples
