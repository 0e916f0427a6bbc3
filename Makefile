# kdlab: one command to run the main job, one to test; each sets up what it needs first.
PY        ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
# Written once the environment is installed; newer than pyproject.toml means nothing to do,
# so `make run` / `make test` install on a fresh clone and never again until the
# dependencies change (`make -B install` forces a reinstall).
INSTALLED := $(VENV)/.installed
TORCH     ?= torch==2.13.0
DATA_DIR  ?= $(abspath ../shared/data)
export KDLAB_DATA_DIR ?= $(DATA_DIR)

.PHONY: install run smoke test test-slow lint bench clean

install: $(INSTALLED)  ## virtual environment + kdlab (editable) + dependencies, CPU torch

$(INSTALLED): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e ".[test,sweep]"
	touch $@

run: $(INSTALLED)  ## main job: 1,000 SST-2 labels + 20,000 unlabelled sentences, teacher and two students (ARGS=seed=9 for another seed)
	$(BIN)/kdlab experiment=glue_minilm $(ARGS)

smoke: $(INSTALLED)  ## the whole pipeline on tiny slices (under 2 minutes)
	$(BIN)/kdlab experiment=smoke

test: $(INSTALLED)  ## fast offline test suite (needs the data: KDLAB_DATA_DIR, or --skip-data in ARGS)
	$(BIN)/pytest -q $(ARGS)

test-slow: $(INSTALLED)  ## long end-to-end runs too
	$(BIN)/pytest -q -m "slow or not slow" $(ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check kdlab tests scripts

bench: $(INSTALLED)  ## divergence, trainer and method benchmarks (measured figures, several minutes)
	$(BIN)/python scripts/bench_divergences.py
	$(BIN)/python scripts/bench_trainer.py
	$(BIN)/python scripts/bench_methods.py

clean:
	rm -rf outputs multirun .pytest_cache

.PHONY: bench-gpu
bench-gpu:  ## on a CUDA machine: the GPU tests, then kdlab's student step against a plain PyTorch loop and the token-level divergences against F.kl_div (ratios)
	$(BIN)/pytest -q -m gpu -rs; status=$$?; \
	$(BIN)/python scripts/bench_gpu.py --device cuda && \
	$(BIN)/python scripts/bench_divergences.py --device cuda && exit $$status

# -- SinKD tables (docs/reproducing.md): one Hydra multirun per table, then kdlab-table ------
# Every invocation sweeps into a fresh directory, so a rerun never mixes with stale results.
# The table is written even when some jobs failed (they show as gaps); make then fails.
TABLE_STAMP := $(shell date +%Y-%m-%d_%H-%M-%S)
SEEDS       ?= 0,1,2
METHODS     ?= finetune,kd,rkl,js,tvd,sinkd,sinkd_sound
GLUE_TASKS  ?= cola,mnli,mrpc,qnli,qqp,rte,sst2
SG_TASKS    ?= superglue/boolq,superglue/cb,superglue/copa,superglue/rte,superglue/wic,superglue/wsc
TABLE_ROOT  ?= multirun/tables
CPU_SEEDS   ?= 0,1,2
CPU_METHODS ?= $(METHODS)
CPU_TASKS   ?= sst2,mrpc
CPU_BASELINE ?= KD
# MRPC's F1 sits at or below the all-"paraphrase" 81.2 for these students; accuracy moves
CPU_METRIC  ?= accuracy
# The CPU study sweeps into one fixed directory and skips the jobs whose results.json is
# there already (trainer.skip_if_done), so an interrupted `make table-glue-cpu` resumes;
# each finished job's results.json and overrides are copied to STUDY_RUNS (committed), from
# which a fresh checkout's sweep directory is seeded and the table is written.
STUDY_DIR   ?= $(TABLE_ROOT)/glue_cpu/study
STUDY_RUNS  ?= docs/results/glue_cpu/runs
REFERENCE   ?=
BASELINE    ?=
TABLE_ARGS  = $(if $(REFERENCE),--reference $(REFERENCE)) $(if $(BASELINE),--baseline $(BASELINE))

.PHONY: table-glue-cpu table-glue table-superglue-seq2seq table-superglue-causal

comma := ,
empty :=
space := $(empty) $(empty)
define newline


endef
cpu_list = $(subst $(comma),$(space),$(1))
CPU_DISTILLED = $(subst $(space),$(comma),$(filter-out finetune,$(call cpu_list,$(CPU_METHODS))))
# One task's sweep of the CPU study: $(1) task, $(2) sweep name, $(3) methods, $(4) overrides.
# A failed sweep goes on to the next (the leading -); the table lists its gaps and fails.
cpu_sweep = -$(BIN)/kdlab -m experiment=sinkd/glue_cpu experiment/sinkd/glue/task=$(1) seed=$(CPU_SEEDS) \
  experiment/sinkd/method=$(3) $(4) logger=none trainer.skip_if_done=true hydra.sweep.dir=$(STUDY_DIR)/$(1)/$(2) \
  $(ARGS)$(newline)$(MAKE) --no-print-directory glue-cpu-collect$(newline)

.PHONY: glue-cpu-collect
table-glue-cpu: $(INSTALLED)  ## CPU SinKD GLUE study: 7 rows x SST-2, MRPC x 3 seeds, resumable (~1 h on 2 cores: docs/reproducing.md)
	mkdir -p $(STUDY_DIR) && if [ -d $(STUDY_RUNS) ]; then cp -Rn $(STUDY_RUNS)/. $(STUDY_DIR)/; fi
	$(foreach t,$(call cpu_list,$(CPU_TASKS)),$(if $(filter finetune,$(call cpu_list,$(CPU_METHODS))),$(call \
	  cpu_sweep,$(t),no_teacher,finetune,transfer=none))$(if $(CPU_DISTILLED),$(call cpu_sweep,$(t),distilled,$(CPU_DISTILLED))))
	$(BIN)/kdlab-table $(STUDY_RUNS) --out docs/results/glue_cpu --baseline $(or $(BASELINE),$(CPU_BASELINE)) \
	  --metric $(CPU_METRIC) $(if $(REFERENCE),--reference $(REFERENCE)) --title "SinKD GLUE study, CPU-sized (MiniLM-L6 -> 2 layers, 250 steps)"

glue-cpu-collect:  ## copy the CPU study's finished jobs (results.json, overrides) into STUDY_RUNS
	@cd $(STUDY_DIR) && find . -name results.json | while read -r f; do d=$$(dirname "$$f"); \
	  mkdir -p "$(CURDIR)/$(STUDY_RUNS)/$$d/.hydra" && cp "$$f" "$(CURDIR)/$(STUDY_RUNS)/$$d/" && \
	  cp "$$d/.hydra/overrides.yaml" "$(CURDIR)/$(STUDY_RUNS)/$$d/.hydra/"; done

table-glue: $(INSTALLED)  ## SinKD GLUE table, one GPU: 7 methods x 7 tasks x 3 seeds (add hydra/launcher=slurm via ARGS)
	$(BIN)/kdlab -m experiment=sinkd/glue experiment/sinkd/glue/task=$(GLUE_TASKS) seed=$(SEEDS) \
	  experiment/sinkd/method=$(METHODS) hydra.sweep.dir=$(TABLE_ROOT)/glue/$(TABLE_STAMP) $(ARGS); \
	status=$$?; $(BIN)/kdlab-table $(TABLE_ROOT)/glue/$(TABLE_STAMP) --out $(TABLE_ROOT)/glue/$(TABLE_STAMP)/table \
	  $(TABLE_ARGS) --title "SinKD GLUE study (BERT-base -> BERT-6L)" && exit $$status

table-superglue-seq2seq: $(INSTALLED)  ## SinKD SuperGLUE table, encoder-decoder teacher and student
	$(BIN)/kdlab -m experiment=sinkd/superglue_seq2seq dataset=$(SG_TASKS) seed=$(SEEDS) \
	  experiment/sinkd/method=$(METHODS) hydra.sweep.dir=$(TABLE_ROOT)/superglue_seq2seq/$(TABLE_STAMP) $(ARGS); \
	status=$$?; $(BIN)/kdlab-table $(TABLE_ROOT)/superglue_seq2seq/$(TABLE_STAMP) \
	  --out $(TABLE_ROOT)/superglue_seq2seq/$(TABLE_STAMP)/table $(TABLE_ARGS) --title "SinKD SuperGLUE study, encoder-decoder" && exit $$status

table-superglue-causal: $(INSTALLED)  ## SinKD SuperGLUE table, decoder-only teacher and student
	$(BIN)/kdlab -m experiment=sinkd/superglue_causal dataset=$(SG_TASKS) seed=$(SEEDS) \
	  experiment/sinkd/method=$(METHODS) hydra.sweep.dir=$(TABLE_ROOT)/superglue_causal/$(TABLE_STAMP) $(ARGS); \
	status=$$?; $(BIN)/kdlab-table $(TABLE_ROOT)/superglue_causal/$(TABLE_STAMP) \
	  --out $(TABLE_ROOT)/superglue_causal/$(TABLE_STAMP)/table $(TABLE_ARGS) --title "SinKD SuperGLUE study, decoder-only" && exit $$status
