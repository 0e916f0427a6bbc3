"""Token-level distillation in the seq2seq and causal families: the masked loss against a
hand computation, and no gradient from prompt or padding positions."""

import torch
import torch.nn.functional as F
from famtools import Pair

from kdlab import divergences
from kdlab.families.seq2seq import shift_right
from kdlab.objective import Objective, Term


def objective() -> Objective:
    """0.5 * CE + 1.0 * KL(p_t || p_s) + 0.7 * KD at T = 2."""
    return Objective(0.5, [Term("kl", 1.0, divergences.get("kl")),
                           Term("kd", 0.7, divergences.get("kd", temperature=2.0))])


def per_example_logits(p: Pair, model, i: int) -> tuple:
    """Logits predicting example i's target / answer tokens, from one unpadded forward
    pass of that example alone: ``([n, V], targets [n])``."""
    ds, V = p.dataset, len(p.teacher.tokenizer)
    if p.family.name == "seq2seq":
        src, tgt = torch.tensor([ds.sources[i]]), torch.tensor([ds.targets[i]])
        logits = model(input_ids=src, decoder_input_ids=shift_right(model, tgt)).logits[0]
        return logits[:, :V], tgt[0]
    answer = ds.choices[i][int(ds.labels[i])]
    seq = torch.tensor([ds.prompts[i] + answer])
    logits = model(input_ids=seq).logits[0, :, :V]
    start = len(ds.prompts[i])  # the first answer token; predicted from position start - 1
    return logits[start - 1:-1], seq[0, start:]


def test_masked_loss_equals_hand_computation(pair: Pair):
    p = pair
    with torch.no_grad():
        out_s = p.family.forward(p.student.model, p.batch)
        out_t = p.family.forward(p.teacher.model, p.batch)
        loss, parts = objective()(out_s, p.family.supervised_loss(out_s, p.batch), out_t)
        ce, kl, kd, n = 0.0, 0.0, 0.0, 0
        for i in range(len(p.dataset)):
            zs, y = per_example_logits(p, p.student.model, i)
            zt, _ = per_example_logits(p, p.teacher.model, i)
            for j in range(len(y)):  # token by token, no batching, no padding
                log_q, log_p = F.log_softmax(zs[j], -1), F.log_softmax(zt[j], -1)
                ce -= log_q[y[j]].item()
                kl += (log_p.exp() * (log_p - log_q)).sum().item()
                kd -= (F.softmax(zt[j] / 2, -1) * F.log_softmax(zs[j] / 2, -1)).sum().item()
                n += 1
    assert int(out_s.mask.sum()) == n  # exactly the target / answer tokens are distilled
    assert abs(parts["ce"].item() - ce / n) < 1e-4
    assert abs(parts["kl"].item() - kl / n) < 1e-4
    assert abs(parts["kd"].item() - kd / n) < 1e-4
    assert abs(loss.item() - (0.5 * ce + kl + 0.7 * kd) / n) < 1e-4


def test_padding_and_prompt_positions_get_no_gradient(pair: Pair):
    p = pair
    captured = []

    def keep(module, inputs, output):  # the embeddings of each call (T5: encoder, decoder)
        output.retain_grad()
        captured.append(output)

    model = p.student.model
    inner = model.get_encoder() if p.family.name == "seq2seq" else model  # the stack reading input_ids
    hook = inner.get_input_embeddings().register_forward_hook(keep)
    out = p.family.forward(p.student.model, p.batch)
    hook.remove()
    out.logits.retain_grad()
    with torch.no_grad():
        teacher = p.family.forward(p.teacher.model, p.batch)
    loss, _ = objective()(out, p.family.supervised_loss(out, p.batch), teacher)
    loss.backward()
    mask = out.mask
    assert not mask.all(), "the tiny batch must contain masked (prompt or padding) positions"
    g = out.logits.grad  # [B, T, V]
    assert torch.count_nonzero(g[~mask]) == 0
    assert (g[mask].abs().sum(-1) > 0).all()
    # padded input tokens: not a single gradient reaches their embeddings
    ids = p.batch["input_ids"]
    (inputs,) = captured
    assert inputs.shape[:2] == ids.shape
    padding = p.batch["attention_mask"] == 0
    assert padding.any()
    assert torch.count_nonzero(inputs.grad[padding]) == 0
    real = ~padding
    if p.family.name == "causal":
        real[:, -1] = False  # the last answer token is only a target: nothing reads it
    assert (inputs.grad[real].abs().sum(-1) > 0).all()  # prompt tokens do condition the answer


def test_causal_answer_window(cache_dir):
    """The window holds the answer tokens only: prompt positions inside it are masked."""
    from famtools import make_pair

    p = make_pair("causal", cache_dir)
    for i in range(len(p.dataset)):
        answer = p.dataset.choices[i][int(p.dataset.labels[i])]
        row_mask = p.batch["target_mask"][i]
        assert int(row_mask.sum()) == len(answer)
        assert p.batch["target_ids"][i][row_mask].tolist() == answer
