"""The typed schema of every config node.

Each dataclass here is stored in Hydra's ConfigStore and is the base of the YAML file
that fills it, so a misspelt key (``trainer.lerning_rate``) or an ill-typed value
(``divergence.weight=hot``) is rejected by OmegaConf before any work starts. Value
ranges (alpha in [0, 1], positive temperatures, ...) are checked by ``validate``. Keys
that take one of a few words are enums (``kdlab.choices``): a typo is refused while the
config is composed.

The objective a run optimises is::

    loss = alpha * KD(student, teacher; T) + (1 - alpha) * CE(student, labels)
           + divergence.weight * divergence(student, teacher)
           + sum(term.weight * term(student, teacher) for term in objective.terms)

which is SinKD's ``alpha * KD + (1 - alpha) * CE + beta * Sinkhorn`` with
``divergence=sinkhorn`` (beta = ``divergence.weight``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING

from kdlab.choices import (
    Combine,
    Device,
    EvalStrategy,
    OnBadRow,
    OnlineMethod,
    OnNan,
    OnPolicySchedule,
    Precision,
    RankScoring,
    Select,
    TeacherTerm,
    Truncation,
    WeightFn,
)


@dataclass
class LoopConfig:
    """One training loop's settings, every one explicit: the student's loop (``trainer``),
    the teacher's fine-tuning (``teacher.finetune``) and every pre-stage of an objective
    term (TED's stage I, from ``trainer`` and its recipe) run ``kdlab.trainer.train`` with
    one of these, as is: nothing is copied key by key or filled from a default later."""

    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    grad_accum: int = 1  # micro-batches per optimiser step (equal to a batch_size * grad_accum batch)
    log_every: int = 10
    progress: bool = True  # false: no progress bar (CI)
    # Evaluation on dev: "end" (last checkpoint only), "epoch", or "steps" (every eval_every).
    eval_strategy: EvalStrategy = EvalStrategy.end
    eval_every: int = 0
    select: Select = Select.last  # "last" | "best" (by the task's main metric); both are reported
    patience: int = 0  # early stopping after this many evaluations without improvement (0: off)
    save_every: int = 0  # full-state checkpoint every N optimiser steps (0: none)
    keep_last: int = 2  # checkpoints kept
    on_nan: OnNan = OnNan.stop  # "stop" | "skip" (skip the step)
    seed: int = 0  # data order (and anything the loop draws)


@dataclass
class FinetuneConfig(LoopConfig):
    """How a teacher without a task head is fine-tuned before distillation.

    Together with the teacher, the task and the training examples, these values form the
    cache key of the fine-tuned teacher (``kdlab.cache_keys.teacher``): change any of them
    (but checkpointing, logging and the evaluation keys, which a fine-tuning without dev
    set does not read) and the teacher is fine-tuned again. ``save_every`` checkpoints under
    ``cache_dir/teachers/.partial-<key>``, so a killed run resumes the fine-tuning.
    """

    log_every: int = II("trainer.log_every")
    progress: bool = II("trainer.progress")
    max_train_samples: Optional[int] = None  # subsample the train split for fine-tuning


@dataclass
class TeacherConfig:
    name: str = MISSING  # registry name: "minilm" (embedded), "pretrained" (local dir or hub id)
    family: str = "encoder"  # "encoder" | "seq2seq" | "causal"; the student has the same family
    path: Optional[str] = None  # local directory or hub id (for "pretrained")
    # for "tiny" (a small random-init model built from code): "t5" | "gpt2" | "llama" | "bert"
    # (None: t5 for seq2seq, gpt2 for causal, bert for encoder), and config fields to override
    architecture: Optional[str] = None
    overrides: Dict[str, Any] = field(default_factory=dict)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    # True: always fine-tune on the task (a checkpoint that already has a head of the
    # right size is used as is when False).
    force_finetune: bool = False


@dataclass
class TeacherEntryConfig(TeacherConfig):
    """One teacher of several (``teachers.<name>``): a full teacher node and its weight in
    the combination (``objective.teachers.combine``). Weights are >= 0, not all 0, and
    normalised to sum to 1 (``kdlab.ensemble``)."""

    weight: float = 1.0


@dataclass
class StudentConfig:
    # registry name: "from_teacher" (a subset of the teacher's layers), "pretrained"
    # (local dir or hub id), "shrunk" (the teacher's architecture made smaller, random init)
    name: str = MISSING
    path: Optional[str] = None  # for "pretrained"
    layers: Optional[List[int]] = None  # for "from_teacher": teacher layer indices to keep
    # for "shrunk": config fields to override (num_hidden_layers, hidden_size, ...)
    overrides: Dict[str, Any] = field(default_factory=dict)
    # for "shrunk": "teacher" (share the teacher's tokenizer) or "bytes" (a byte-level
    # tokenizer of 260 tokens: a student that does not share the teacher's tokenizer)
    tokenizer: str = "teacher"


@dataclass
class DivergenceConfig:
    """The main distillation term between student and teacher outputs (SinKD's beta term)."""

    name: str = MISSING  # registered divergence, or "none" for no such term
    weight: float = 1.0  # beta
    params: Dict[str, Any] = field(default_factory=dict)  # checked against its signature


@dataclass
class TermConfig:
    """An extra objective term: a registered divergence with its weight and parameters."""

    name: str = MISSING
    weight: float = 1.0
    params: Dict[str, Any] = field(default_factory=dict)


@dataclass
class KDConfig:
    """Hinton soft-target KD, the alpha term: -sum p_t(T) log p_s(T), batch mean."""

    temperature: float = 1.0
    t2: bool = False  # multiply by T^2 (Hinton); the SinKD scripts do not
    # "none" | "epoch" (SinKD's kd_anneal: T drops once per epoch, the last epoch runs at 1)
    # | "step" (lowered every optimiser step, reaching 1 at the end); see objective.kd_temperature
    anneal: str = "none"


@dataclass
class TeachersObjectiveConfig:
    """How several teachers (``teachers``) enter the objective; read only when there are."""

    # mixture: the target is log(sum_i w_i softmax(z_i)), fed to every term as the teacher's
    # logits; sum: sum_i w_i * objective(student, teacher_i) (cross-entropy counted once)
    combine: Combine = Combine.mixture


@dataclass
class ObjectiveConfig:
    alpha: float = 0.0  # weight of soft-target KD; cross-entropy gets (1 - alpha)
    # weight of the cross-entropy on labels; None: 1 - alpha. 0 for terms that replace CE
    # (PLD, EMO's DEMD) or recipes that weight CE otherwise (Patient KD: 1 - its alpha)
    ce_weight: Optional[float] = None
    kd: KDConfig = field(default_factory=KDConfig)
    terms: Dict[str, TermConfig] = field(default_factory=dict)
    teachers: TeachersObjectiveConfig = field(default_factory=TeachersObjectiveConfig)


@dataclass
class DatasetConfig:
    name: str = MISSING  # registered task, e.g. "glue/rte"
    # Directory holding glue/<TASK>/*.tsv and superglue/<Task>/*.jsonl. Default: the
    # KDLAB_DATA_DIR environment variable; when neither is set, the Hugging Face hub.
    data_dir: Optional[str] = "${oc.env:KDLAB_DATA_DIR,null}"
    max_length: int = 128
    truncation: Truncation = Truncation.longest_first  # sentence pairs: "longest_first" | "only_first" | "only_second"
    max_train_samples: Optional[int] = None
    max_eval_samples: Optional[int] = None
    stratified: bool = False  # subsample keeping the label proportions
    on_bad_row: OnBadRow = OnBadRow.error  # "error" | "skip"
    # seq2seq / causal families: each answer choice is scored by its summed ("sum") or
    # per-token ("mean") log-likelihood, and the best one is the prediction
    rank_scoring: RankScoring = RankScoring.sum


@dataclass
class AugmentConfig:
    """Rules of ``transfer=augment`` (Tang et al. 2019's augmented transfer set, without the
    POS-guided substitution that needs a tagger). Applied to each text of an example
    (both sentences of a pair) on whitespace-separated words, in this order."""

    copies: int = 4  # augmented copies of each labelled example
    mask_prob: float = 0.1  # per word: replaced by the teacher tokenizer's mask (or unknown) token
    dropout_prob: float = 0.1  # per word: deleted (a text keeps at least one word)
    swap_prob: float = 0.1  # per adjacent pair, left to right: the two words swap places
    ngram_prob: float = 0.25  # per text: replaced by one of its n-grams, n uniform in 1..ngram_max
    ngram_max: int = 5


@dataclass
class TransferConfig:
    """Transfer data: examples without gold labels that the student learns from the
    teacher only (cross-entropy and label-based terms skip them; the baseline student and
    the teacher's fine-tuning never see them)."""

    name: str = "none"  # "none" | "unlabelled" | "augment" | "files"
    # at most this many transfer examples (None: all there are); unlabelled: rows of the
    # train split beyond the labelled ones, drawn under ``seed``
    max_samples: Optional[int] = None
    files: List[str] = field(default_factory=list)  # for "files": .tsv / .jsonl in the task's format, or .txt
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class HardwareConfig:
    device: Device = Device.cpu  # "cpu" | "cuda"
    precision: Precision = Precision.fp32  # "fp32" | "bf16" | "fp16"
    num_threads: Optional[int] = None  # torch intra-op threads on CPU (None: torch default)
    distributed: bool = False  # DDP across the processes started by torchrun / accelerate
    # the student's training forward through torch.compile (eager, after one warning, where
    # the platform cannot compile); evaluation and checkpoints use the plain module
    compile: bool = False


@dataclass
class TeacherCacheConfig:
    """The token-level teacher cache (seq2seq, causal; ``kdlab.token_cache``)."""

    # Tokens kept per answer position (top-k log-probabilities + the tail's log-mass).
    # null: token families compute the teacher live (exact); an integer k, with
    # trainer.cache_teacher_outputs=true, caches it once (approximate for k < V).
    top_k: Optional[int] = None
    shard_tokens: int = 1048576  # tokens per memory-mapped shard (~258 MB at k = 64)


@dataclass
class OnPolicyConfig:
    """Student-generated answers in the distillation loop (seq2seq, causal; ``kdlab.on_policy``).

    Each batch, a fraction ``lmbda`` of its examples (drawn under the run's seed and the
    micro-batch's number) get an answer sampled from the student in place of the gold one;
    the teacher scores it and the loss covers the generated tokens only. 0: off-policy.
    """

    lmbda: float = 0.0  # fraction of student-generated answers (GKD's lambda); adaptive: its start
    schedule: OnPolicySchedule = OnPolicySchedule.fixed  # "fixed" | "adaptive" (DistiLLM)
    temperature: float = 1.0  # sampling temperature of the student's generations
    top_p: float = 1.0  # nucleus sampling (1: the whole distribution)
    max_new_tokens: int = 16  # longest generated answer (EOS included)
    # adaptive: after an evaluation whose dev loss is >= the reference + loss_eps, lmbda rises
    # by lmbda_step (at most 1) and that loss becomes the reference (DistiLLM: 0.1 and 0.1)
    lmbda_step: float = 0.1
    loss_eps: float = 0.1


@dataclass
class TrainerConfig(LoopConfig):
    """The student's loop (and the baseline student's), and what the run does around it."""

    seed: int = II("seed")  # the run's seed, unless set apart
    eval_batch_size: int = 64
    resume: Optional[str] = None  # "auto" (this run dir) or a previous run dir
    # Compute the teacher's logits on the train set once and reuse them (disk, memory-mapped).
    cache_teacher_outputs: bool = True
    teacher_cache: TeacherCacheConfig = field(default_factory=TeacherCacheConfig)
    on_policy: OnPolicyConfig = field(default_factory=OnPolicyConfig)
    # Also train the student with cross-entropy only (no teacher), as a reference row.
    baseline_student: bool = False
    # Save each trained student in Hugging Face format under the run dir (student/,
    # baseline_student/) with a model card; false: nothing but the reports is written.
    save_student: bool = True
    # true: a run whose output_dir already holds results.json of the same config returns it
    # without training (a sweep into a fixed hydra.sweep.dir resumes where it stopped);
    # results.json of another config there is refused, never overwritten
    skip_if_done: bool = False


@dataclass
class OnlineTeacherConfig:
    """The teacher's own recipe in an online phase (``kdlab.online``): its AdamW group's peak
    rate, weight decay, clipping and loss weights. Steps, batches, warmup and the linear
    schedule's shape are ``trainer``'s, shared by both networks."""

    # true: start from the teacher the run would distil from (fine-tuned on the task, cached);
    # false: the loaded checkpoint with a fresh task head, trained only in the online phase
    finetuned: bool = False
    lr: float = 5e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    ce_weight: float = 1.0
    kl_weight: float = 1.0  # dml: KL(sg p_s || p_t); bdkd: its teacher_term


@dataclass
class OnlineConfig:
    """An online-distillation phase in place of offline distillation: the teacher trains
    with the student (``kdlab.online``; docs/methods.md). ``none``: offline (the default)."""

    method: OnlineMethod = OnlineMethod.none
    temperature: float = 1.0
    t2: bool = False  # multiply the KL terms by T^2
    ce_weight: float = 1.0  # the student's cross-entropy
    kl_weight: float = 1.0  # the student's distillation term
    # bdkd only: the forward-KL weight w = f(H(p_t) - H(p_s)) per example
    weight_fn: WeightFn = WeightFn.sigmoid  # sigmoid(scale * gap), or hard: 1 if gap > 0 else 0
    scale: float = 1.0
    detach_weights: bool = True
    # bdkd's teacher term: "reverse" KL(p_t || sg p_s), "forward" KL(sg p_s || p_t), "none"
    teacher_term: TeacherTerm = TeacherTerm.reverse
    teacher: OnlineTeacherConfig = field(default_factory=OnlineTeacherConfig)


@dataclass
class LoggerConfig:
    backend: str = "wandb"  # "wandb" | "none" (local files are always written)
    mode: str = "auto"  # "online" | "offline" | "disabled" | "auto" (offline without an API key)
    project: str = "kdlab"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)


@dataclass
class Config:
    teacher: TeacherConfig = MISSING
    student: StudentConfig = MISSING
    divergence: DivergenceConfig = MISSING
    dataset: DatasetConfig = MISSING
    hardware: HardwareConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    transfer: TransferConfig = MISSING
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    # Several teachers by name, in order (empty: the one ``teacher``). The first entry is
    # the run's teacher: ``teacher`` must describe it (kdlab.ensemble, docs/methods.md).
    teachers: Dict[str, TeacherEntryConfig] = field(default_factory=dict)
    seed: int = 0
    # Where fine-tuned teachers and the extracted MiniLM live; shared across runs.
    cache_dir: str = "${oc.env:KDLAB_CACHE_DIR,${oc.env:HOME}/.cache/kdlab}"
    output_dir: str = "${hydra:runtime.output_dir}"
    experiment_name: str = "default"


def register_configs() -> None:
    """Store the schema so that YAML files are validated against it."""
    cs = ConfigStore.instance()
    cs.store(name="kdlab_schema", node=Config)
