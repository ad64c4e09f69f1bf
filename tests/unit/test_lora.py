"""LoRA adapters (peft) on a timm ViT: only adapters and new layers train and are saved, the
checkpoint names its base, resumes exactly, and merged predictions equal unmerged ones."""

import shutil

import numpy as np
import pytest
import torch
from conftest import VIT, lora_spec_dict, make_vit_base, synthetic_spec
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from shiftray.config.load import spec_from_dict
from shiftray.data.loading import load_job_data
from shiftray.errors import UserInputError
from shiftray.finetune.lora import canonical, is_adapter
from shiftray.models.build import build_model
from shiftray.models.load import load_trained_model
from shiftray.train.checkpoint import latest_checkpoint
from shiftray.train.loop import train_loop_per_worker
from shiftray.train.run import LoopConfig


@pytest.fixture
def base_file(tmp_path):
    return make_vit_base(tmp_path / "base.safetensors")


def lora_spec(base, name="lora", **over):
    return spec_from_dict(lora_spec_dict(base, name, **over))


def train(spec, run_dir):
    run_dir.mkdir(exist_ok=True)
    return train_loop_per_worker(LoopConfig(spec, run_dir, load_job_data(spec)))


def test_lora_trains_and_saves_only_adapters_and_resumes_exactly(tmp_path, base_file):
    spec = lora_spec(base_file)
    full = train(spec, tmp_path / "full")
    model = build_model(spec.model, (1, 8, 8), 3, lora=spec.finetune.lora)
    n_adapter = sum(p.numel() for n, p in model.backbone.named_parameters() if is_adapter(n))
    n_new = sum(p.numel() for m in (model.bottleneck, model.head) for p in m.parameters())
    assert full["trainable_params"] == n_adapter + n_new  # the base is frozen
    assert full["trainable_params"] < 0.2 * full["total_params"]
    ckpt = latest_checkpoint(tmp_path / "full")
    saved = load_file(ckpt / "model.safetensors")
    backbone = [k for k in saved if k.startswith("backbone.")]
    assert backbone and all(is_adapter(k) for k in backbone)  # no base tensor in the checkpoint
    with safe_open(ckpt / "model.safetensors", framework="pt") as f:
        assert len(f.metadata()["lora_base_sha256"]) == 64
    # the base did not move: the unmerged model's base tensors equal the file's
    unmerged, _ = load_trained_model(tmp_path / "full", merge=False)
    base = load_file(base_file)
    for k, v in unmerged.backbone.state_dict().items():
        if not is_adapter(k):
            assert torch.equal(v, base[canonical(k).removeprefix("model.")]), k
    # stopped after step 20's checkpoint, resumed: the same model as the uninterrupted run
    part = tmp_path / "part"
    train(spec, part)
    shutil.rmtree(part / "checkpoint_00000040")
    (part / "result.json").unlink()
    resumed = train(spec, part)
    assert resumed["resumed_from"] == 20
    assert resumed["target_loss"] == pytest.approx(full["target_loss"], abs=1e-9)


def test_merged_predictions_equal_unmerged(tmp_path, base_file):
    spec = lora_spec(base_file)
    train(spec, tmp_path / "run")
    unmerged, labels = load_trained_model(tmp_path / "run", merge=False)
    merged, _ = load_trained_model(tmp_path / "run")  # the loader's default
    assert not any(is_adapter(n) for n, _ in merged.named_parameters())
    lora_b = [p for n, p in unmerged.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().max() > 0 for p in lora_b)  # training moved the updates
    x = torch.rand(64, *labels["input_shape"])
    with torch.no_grad():
        a, b = unmerged(x)[0], merged(x)[0]
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    assert not torch.allclose(a, build_model(spec.model, (1, 8, 8), 3).eval()(x)[0], atol=1e-3)


def test_per_domain_adapters_share_one_base_when_served(tmp_path, base_file):
    """Two adapters of one base (other target domains) on one replica: one copy of the base,
    each model's own predictions (equal to its merged model's), and the base outlives the first
    model; an adapter of another base keeps its own."""
    import gc

    from shiftray.serving.bases import SharedBases
    from shiftray.serving.predictor import Predictor

    for name, angle in (("to_b", 30.0), ("to_c", 75.0)):  # two target domains: other shifts
        train(lora_spec(base_file, name=name, data__options__angle=angle), tmp_path / name)
    bases = SharedBases()
    first, second = (Predictor(tmp_path / n, bases=bases) for n in ("to_b", "to_c"))

    def base_of(p):
        return {n: t for n, t in p.model.backbone.named_parameters() if not is_adapter(n)}

    shared = base_of(first)
    assert all(t is shared[n] for n, t in base_of(second).items())
    assert first.shared_bytes == 0
    assert second.shared_bytes == sum(t.numel() * t.element_size() for t in shared.values())
    x = np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32)
    want = {n: Predictor(tmp_path / n, bases=None)(x).probabilities for n in ("to_b", "to_c")}
    np.testing.assert_allclose(first(x).probabilities, want["to_b"], atol=1e-5)
    np.testing.assert_allclose(second(x).probabilities, want["to_c"], atol=1e-5)
    assert np.abs(want["to_b"] - want["to_c"]).max() > 1e-3  # the adapters differ
    del first, shared
    gc.collect()
    np.testing.assert_allclose(second(x).probabilities, want["to_c"], atol=1e-5)
    assert len(bases.held()) == 1
    weights = load_file(base_file)  # another base: nothing to share
    weights["blocks.0.attn.qkv.weight"] += 0.01
    other = tmp_path / "other.safetensors"
    save_file(weights, str(other))
    train(lora_spec(other, name="other"), tmp_path / "other")
    third = Predictor(tmp_path / "other", bases=bases)
    assert third.shared_bytes == 0 and len(bases.held()) == 2
    del third  # the last model of a base leaves: so does the base
    gc.collect()
    assert len(bases.held()) == 1


def test_a_checkpoint_on_other_base_weights_is_refused(tmp_path, base_file):
    spec = lora_spec(base_file)
    train(spec, tmp_path / "run")
    weights = load_file(base_file)
    weights["blocks.0.attn.qkv.weight"] += 0.01  # someone replaced the base file
    save_file(weights, str(base_file))
    with pytest.raises(UserInputError, match="other base weights"):
        load_trained_model(tmp_path / "run")


def test_lora_spec_errors_name_the_fix(tmp_path, base_file):
    with pytest.raises(ValueError, match="model.pretrained"):
        spec_from_dict(synthetic_spec(model={"backbone": "timm/test_vit", "backbone_kwargs": VIT},
                                      finetune={"lora": {}}))  # fmt: skip
    with pytest.raises(ValueError, match="feature-extraction"):
        lora_spec(base_file, finetune={"strategy": "feature-extraction", "lora": {}})
    spec = lora_spec(base_file, finetune={"lora": {"target_modules": ["query"]}})
    with pytest.raises(UserInputError, match="qkv") as e:
        build_model(spec.model, (1, 8, 8), 3, lora=spec.finetune.lora)
    assert "fc1" in str(e.value)  # the linear layers it does have


def test_run_summary_shows_the_trainable_share():
    from shiftray.cli.train import _params

    assert _params({"trainable_params": 1_234, "total_params": 100_000}) == "1,234 (1.2%)"
    assert _params({"trainable_params": 2_500_000, "total_params": 10_000_000}) == "2.50M (25.0%)"


def test_layer_groups_hold_each_layers_adapters(base_file):
    """Layer-wise rates and gradual unfreezing act on the adapters, group by group: a block's
    A and B join that block's group; no frozen base tensor reaches the optimizer."""
    spec = lora_spec(base_file)
    plain = build_model(spec.model, (1, 8, 8), 3).param_groups()
    groups = build_model(spec.model, (1, 8, 8), 3, lora=spec.finetune.lora).param_groups()
    assert list(groups) == list(plain)
    backbone = {k: v for k, v in groups.items() if k.startswith("backbone.")}
    assert all(p.requires_grad for ps in backbone.values() for p in ps)
    assert [len(ps) for ps in backbone.values()] == [
        0,
        2,
        2,
        2,
        2,
        2,
        2,
    ]  # stem; 6 blocks' qkv A, B


def test_batchnorm_statistics_are_saved_and_do_not_change_the_base_fingerprint(tmp_path):
    """LoRA on a CNN's convolutions (timm test_resnet): BatchNorm's running statistics move in
    training, so they are checkpointed, and the base fingerprint covers the frozen weights only."""
    import timm

    torch.manual_seed(5)
    net = timm.create_model("test_resnet", num_classes=0, in_chans=1)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "cnn.safetensors"))
    spec = spec_from_dict(synthetic_spec(**{
        "model": {"backbone": "timm/test_resnet", "pretrained": str(tmp_path / "cnn.safetensors"), "bottleneck_dim": 8},
        "data": {"benchmark": "synthetic", "source": "a", "target": "b", "options": {"n": 64, "dim": 64, "image": True}},
        "finetune": {"lora": {"rank": 2, "target_modules": ["conv2"]}}, "method": {"name": "erm"},
        "train__steps": 6, "train__eval_every": 6, "train__checkpoint_every": 6, "train__batch_size": 16,
    }))  # fmt: skip
    result = train(spec, tmp_path / "run")
    saved = load_file(latest_checkpoint(tmp_path / "run") / "model.safetensors")
    stats = [k for k in saved if k.endswith("running_mean")]
    assert stats and not torch.equal(saved[stats[0]], net.state_dict()[stats[0].removeprefix("backbone.model.")])
    unmerged, labels = load_trained_model(tmp_path / "run", merge=False)  # no fingerprint refusal
    merged, _ = load_trained_model(tmp_path / "run")
    x = torch.rand(8, *labels["input_shape"])
    with torch.no_grad():
        assert torch.allclose(unmerged(x)[0], merged(x)[0], atol=1e-5)
    assert result["trainable_params"] < result["total_params"]
