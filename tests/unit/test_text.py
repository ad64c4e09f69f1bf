"""Text: a transformers encoder as the backbone (tiny random BERT, offline), a CSV with a text
column tokenised for it, dynamic padding, layer groups, token augmentation, DANN and LoRA."""

import csv

import numpy as np
import pytest
import torch
from conftest import synthetic_spec
from shiftray.config.load import spec_from_dict
from shiftray.data.loading import load_job_data
from shiftray.data.transforms import token_augment
from shiftray.errors import UserInputError
from shiftray.models.build import build_model
from shiftray.models.load import load_trained_model
from shiftray.train.loop import train_loop_per_worker
from shiftray.train.run import LoopConfig

WORDS = {  # class words; each domain writes about its own things around them
    "pos": ["good", "great", "fine", "happy", "helped", "better"],
    "neg": ["bad", "awful", "worse", "sick", "pain", "sad"],
    "a": ["pill", "period", "skin", "weight", "cycle", "acne"],
    "b": ["mood", "sleep", "anxiety", "dose", "panic", "focus"],
}


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    """A tiny BERT (random weights, saved as if pre-trained), its tokenizer, and a CSV of
    two domains x two classes."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("text")
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *sorted({w for ws in WORDS.values() for w in ws}),
    ]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(d / "bert")
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(d / "bert")
    rng = np.random.default_rng(0)
    with open(d / "reviews.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "rating", "condition"])
        for dom in ("a", "b"):
            for i in range(96):
                cls = ("neg", "pos")[i % 2]
                n = int(rng.integers(3, 12))
                words = [
                    str(rng.choice(WORDS[cls] if rng.random() < 0.4 else WORDS[dom]))
                    for _ in range(n)
                ]
                w.writerow([" ".join(words), cls, dom])
    return d


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
