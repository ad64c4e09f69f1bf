"""Text: a transformers encoder as the backbone (tiny random BERT, offline), a CSV with a text
column tokenised for it, dynamic padding, layer groups, token augmentation, DANN and LoRA."""

import csv

import numpy as np
import pytest
import torch
from conftest import make_text_dir, synthetic_spec
from shiftray.config.load import spec_from_dict
from shiftray.data.loading import load_job_data
from shiftray.data.transforms import token_augment
from shiftray.errors import UserInputError
from shiftray.models.build import build_model
from shiftray.models.load import load_trained_model
from shiftray.train.loop import train_loop_per_worker
from shiftray.train.run import LoopConfig


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    return make_text_dir(tmp_path_factory.mktemp("text"))


def text_spec(d, name="text", **over):
    return spec_from_dict(synthetic_spec(**{
        "name": name,
        "data": {"benchmark": "table", "source": "a", "target": "b",
                 "options": {"path": str(d / "reviews.csv"), "text": "review", "label": "rating",
                             "domain": "condition", "max_length": 16}},
        "model": {"backbone": f"hf/{d / 'bert'}", "pretrained": True, "bottleneck_dim": 16},
        "optim": {"name": "adamw", "lr": 0.003, "schedule": "constant"},
        "train__batch_size": 16, **over,
    }))  # fmt: skip


def test_texts_are_tokenised_for_the_backbone(text_dir):
    data = load_job_data(text_spec(text_dir))
    assert data.input_shape == (16,) and data.source.x.dtype == np.int64
    assert data.classes == ["neg", "pos"]
    first = data.source.x[0]
    assert first[0] == 2 and 3 in first  # [CLS] ... [SEP], then [PAD]=0 up to max_length
    sep = list(first).index(3)
    assert (first[sep + 1 :] == 0).all() and (first[1:sep] > 4).all()  # words, no [UNK]


def test_text_encoder_pools_real_tokens_only_and_groups_layers(text_dir):
    spec = text_spec(text_dir)
    model = build_model(spec.model, (16,), 2).eval()
    assert list(model.param_groups()) == [
        "backbone.0",
        "backbone.1",
        "backbone.2",
        "bottleneck",
        "head",
    ]
    groups = model.layer_groups  # embeddings, layer 0, layer 1; no pooler (unused, dropped)
    assert "embeddings" in groups[0][0] and all(".layer.0." in n for n in groups[1])
    assert not any("pooler" in n for n, _ in model.named_parameters())
    ids = torch.tensor([[2, 7, 8, 3] + [0] * 12])
    with torch.no_grad():  # more padding, or a cut at the longest row, changes nothing
        a = model.backbone(ids)
        b = model.backbone(ids[:, :6])
        h = model.backbone.model(input_ids=ids[:, :4]).last_hidden_state.mean(1)
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, h, atol=1e-6)


def test_token_augment_deletes_and_swaps_inside_the_text():
    torch.manual_seed(0)
    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 3, 0, 0, 0]] * 64)
    out = token_augment(pad=0, drop=0.3)(ids)
    assert (out[:, 0] == 2).all()  # [CLS] kept first
    for row in out:
        real = row[row != 0].tolist()
        assert real[-1] == 3 and sorted(real[1:-1]) == sorted(set(real[1:-1]))  # [SEP] last
        assert set(real[1:-1]) <= {10, 11, 12, 13, 14} and (row[len(real) :] == 0).all()
    assert (out != ids).any(1).float().mean() > 0.5  # most texts changed
    assert (token_augment(pad=0, drop=0.0)(ids) != ids).any(1).all()  # the swap alone


def test_text_dann_trains_and_reloads(text_dir, tmp_path):
    spec = text_spec(text_dir, method={"name": "dann", "params": {"disc_hidden": [16]}},
                     train__steps=60, tracking__output_dir=str(tmp_path))  # fmt: skip
    run_dir = tmp_path / "text"
    result = train_loop_per_worker(LoopConfig(spec, run_dir, load_job_data(spec)))
    assert result["target_acc"] > 75.0  # 2 classes: chance is 50
    model, labels = load_trained_model(run_dir)
    assert labels["input_shape"] == [16]


def test_text_lora_saves_adapters_only(text_dir, tmp_path):
    spec = text_spec(
        text_dir, finetune={"lora": {"rank": 2}}, method={"name": "erm"}, train__steps=20
    )
    model = build_model(spec.model, (16,), 2, lora=spec.finetune.lora)
    adapted = {
        n.split(".lora_")[0].rsplit(".", 1)[-1]
        for n, _ in model.named_parameters()
        if ".lora_" in n
    }
    assert adapted == {"query", "value"}  # BERT's attention projections, found by default
    result = train_loop_per_worker(LoopConfig(spec, tmp_path / "lora", load_job_data(spec)))
    assert result["trainable_params"] < result["total_params"] / 4
    unmerged, _ = load_trained_model(tmp_path / "lora", merge=False)
    merged, _ = load_trained_model(tmp_path / "lora")
    x = torch.from_numpy(load_job_data(spec).target_test.x[:32])
    with torch.no_grad():
        assert torch.allclose(unmerged(x)[0], merged(x)[0], atol=1e-5)


def test_text_specs_fail_early_and_say_why(text_dir):
    with pytest.raises(ValueError, match="mixval"):
        text_spec(text_dir, train__validators=["mixval"])
    spec = text_spec(text_dir, model={"backbone": "mlp"})
    with pytest.raises(UserInputError, match="hf/"):
        load_job_data(spec)


def test_minilm_dann_on_drug_reviews_runs_offline(tmp_path):
    """The real thing, short: all-MiniLM-L6-v2's weights from its pip package, the drugs.com
    reviews from theirs, DANN for 4 steps; the loaded encoder is the package's, tensor for tensor."""
    from safetensors.torch import load_file
    from shiftray.config.load import load_spec
    from shiftray.models.text import resolve

    spec = load_spec("jobs/drugreview/dann.yaml", [
        "data.options.max_length=32", "train.steps=4", "train.batch_size=8", "train.eval_every=4",
        "train.checkpoint_every=4", "tracking.wandb=disabled", f"tracking.output_dir={tmp_path}",
    ])  # fmt: skip
    data = load_job_data(spec)
    assert (len(data.source), len(data.target), len(data.target_test)) == (483, 117, 76)
    assert data.input_shape == (32,) and data.source.x[:, 0].tolist() == [101] * 483  # [CLS]
    result = train_loop_per_worker(LoopConfig(spec, tmp_path / "run", data))
    assert result["step"] == 4 and 0.0 <= result["target_acc"] <= 100.0
    assert load_trained_model(tmp_path / "run")[1]["classes"] == ["negative", "neutral", "positive"]
    shipped = load_file(f"{resolve('sentence-transformers/all-MiniLM-L6-v2')}/model.safetensors")
    built = build_model(spec.model, (32,), 3).backbone.model.state_dict()
    assert built["embeddings.word_embeddings.weight"].shape == (30522, 384)
    unused = {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}  # a buffer;
    assert set(built) == set(shipped) - unused  # the pooler, which mean pooling replaces
    for k, v in built.items():  # the pre-trained encoder, not a random one
        assert torch.equal(v, shipped.get(k, shipped.get(f"bert.{k}"))), k


def test_lora_on_the_real_minilm(tmp_path):
    """LoRA on all-MiniLM-L6-v2 (the package's weights): adapters on query/value only train and
    are saved; the checkpoint names its base; merged and unmerged predictions agree."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    from shiftray.config.load import load_spec
    from shiftray.train.checkpoint import latest_checkpoint

    spec = load_spec("jobs/drugreview/erm.yaml", [
        "data.options.max_length=32", "train.steps=2", "train.batch_size=4", "train.eval_every=2",
        "train.checkpoint_every=2", "tracking.wandb=disabled", "finetune.strategy=fine-tune",
        "finetune.lora.rank=4",
    ])  # fmt: skip
    data = load_job_data(spec)
    result = train_loop_per_worker(LoopConfig(spec, tmp_path / "run", data))
    adapters = 6 * 2 * 4 * (384 + 384)  # 6 layers x (query, value) x r (d_in + d_out)
    new = 384 * 256 + 256 + 2 * 256 + 256 * 3 + 3  # bottleneck (linear, batch norm) and head
    assert result["trainable_params"] == adapters + new and result["total_params"] > 22_000_000
    ckpt = latest_checkpoint(tmp_path / "run")
    saved = load_file(ckpt / "model.safetensors")
    assert all(".lora_" in k for k in saved if k.startswith("backbone."))
    with safe_open(ckpt / "model.safetensors", framework="pt") as f:
        assert "lora_base_sha256" in f.metadata()
    unmerged, _ = load_trained_model(tmp_path / "run", merge=False)
    merged, _ = load_trained_model(tmp_path / "run")
    for n, p in unmerged.named_parameters():  # make the updates non-zero: a real check
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02)
    merged = unmerged.merged().eval()
    x = torch.from_numpy(data.target_test.x[:8])
    with torch.no_grad():
        assert torch.allclose(unmerged(x)[0], merged(x)[0], atol=1e-5)


@pytest.mark.parametrize("method", ["cdan", "mcc", "self_training", "fixmatch"])
def test_adaptation_methods_run_on_text(text_dir, tmp_path, method):
    """Feature-level methods (CDAN, MCC), pseudo-labels, and consistency with the token strong
    view (FixMatch: deletion and swap) train on token ids."""
    params = {"cdan": {"disc_hidden": [16]}, "fixmatch": {"threshold": 0.8}}.get(method, {})
    spec = text_spec(
        text_dir, name=method, method={"name": method, "params": params}, train__steps=60
    )
    result = train_loop_per_worker(LoopConfig(spec, tmp_path / method, load_job_data(spec)))
    assert result["target_acc"] > 70.0  # 2 classes: chance is 50


def test_a_text_model_is_served_from_raw_text(text_dir, tmp_path):
    """The serving path of a text model: strings in (V1 instances, V2 BYTES), tokenised as
    training tokenised them, the offline model's predictions out; what is not a text is a 422."""
    from shiftray.serving.catalog import inspect_model
    from shiftray.serving.inputs import BadInput, v1_instances, v2_tensor
    from shiftray.serving.predictor import Predictor

    spec = text_spec(text_dir, train__steps=20, tracking__output_dir=str(tmp_path))
    data = load_job_data(spec)
    train_loop_per_worker(LoopConfig(spec, tmp_path / "text", data))
    card = inspect_model("reviews", tmp_path / "text")
    assert card.ready, card.reason
    assert card.input.kind == "text" and card.input.shape == (16,)
    assert "string" in card.public()["input"]["accepts"][0]
    with open(text_dir / "reviews.csv") as f:  # the target rows, as the reader read them
        texts = [r["review"] for r in csv.DictReader(f) if r["condition"] == "b"][:8]
    ids = v1_instances(texts, card.input, limit=32)
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, v2_tensor([8], "BYTES", texts, card.input, limit=32))
    rows = [i for i in range(len(data.target.x)) if data.target.x[i].tolist() in ids.tolist()]
    assert len(rows) >= 8  # the same token ids as training's
    model, _ = load_trained_model(tmp_path / "text")
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(ids))[0], 1).numpy()
    np.testing.assert_allclose(Predictor(tmp_path / "text")(ids).probabilities, want, atol=1e-6)
    for bad, message in (([3], "expected a string"), (["  "], "empty"), (["x" * 100_001], "limit")):
        with pytest.raises(BadInput, match=message):
            v1_instances(bad, card.input, limit=32)
    with pytest.raises(BadInput, match="BYTES of shape"):
        v2_tensor([1, 16], "INT64", [0] * 16, card.input, limit=32)
