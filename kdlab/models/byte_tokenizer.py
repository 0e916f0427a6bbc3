"""A byte-level tokenizer built from code: one token per UTF-8 byte, plus ``<pad>``,
``<s>``, ``</s>`` and ``<unk>`` (260 tokens, no merges).

It gives offline runs a student whose tokenizer differs from the teacher's WordPiece one
in both vocabulary (260 vs 30,522 tokens) and segmentation (an answer is several bytes
where WordPiece has one token): the setting of cross-tokenizer distillation (ULD).
"""

from __future__ import annotations

from functools import lru_cache

from transformers import PreTrainedTokenizerFast

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")


@lru_cache(maxsize=1)
def byte_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())  # 256 printable stand-ins for the bytes
    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *alphabet])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # special tokens around texts (encoder inputs; the token families add their own)
    ids = {t: vocab[t] for t in ("<s>", "</s>")}
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1", special_tokens=list(ids.items()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=1 << 20)
