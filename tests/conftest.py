import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def real_data():
    """The real benchmark files: skip when absent, unless SHIFTRAY_REQUIRE_DATA=1 (CI) says fail."""
    d = os.environ.get("SHIFTRAY_DATA_DIR")
    if d and (Path(d) / "usps" / "usps.h5").is_file():
        return Path(d)
    if os.environ.get("SHIFTRAY_REQUIRE_DATA") == "1":
        pytest.fail(
            f"SHIFTRAY_REQUIRE_DATA=1 but the benchmark files are not under SHIFTRAY_DATA_DIR={d!r}"
        )
    pytest.skip("benchmark data not available (set SHIFTRAY_DATA_DIR)")


@pytest.fixture(scope="module")
def s3_endpoint():
    """A local S3 server (moto) speaking the real protocol over HTTP. Its endpoint and (fake)
    credentials reach Ray's workers the way a cluster's do: through the environment the nodes
    start with, so this fixture runs before Ray starts."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:  # a dev install has it (pyproject's dev extra); the S3 test says so
        yield None
        return
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}",
        }.items():  # fmt: skip
            mp.setenv(key, value)
        yield f"http://{host}:{port}"
    server.stop()


def synthetic_spec(**over):
    """A tiny, fast job spec on generated data (no files), as a dict."""
    spec = {
        "name": "tiny",
        "data": {
            "benchmark": "synthetic",
            "source": "a",
            "target": "b",
            "options": {"n": 256, "dim": 8},
        },
        "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": [32]}, "bottleneck_dim": 16},
        "method": {"name": "dann", "params": {"disc_hidden": [16]}},
        "optim": {"lr": 0.05},
        "train": {
            "steps": 40,
            "batch_size": 32,
            "eval_every": 20,
            "checkpoint_every": 20,
            "log_every": 10,
        },
        "tracking": {"wandb": "disabled"},
    }
    for key, value in over.items():
        node = spec
        *path, last = key.split("__")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return spec


def make_tree(root, n=6, size=20):
    """root/<domain>/<class>/*.png|jpg: red vs blue squares; the target domain is darker."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for domain, scale in (("photo", 1.0), ("night", 0.5)):
        for cls, channel in (("red", 0), ("blue", 2)):
            folder = root / domain / cls
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
                img[..., channel] = int(220 * scale)
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(img).save(folder / f"{i}.{ext}")


WORDS = {  # class words; each domain writes about its own things around them
    "pos": ["good", "great", "fine", "happy", "helped", "better"],
    "neg": ["bad", "awful", "worse", "sick", "pain", "sad"],
    "a": ["pill", "period", "skin", "weight", "cycle", "acne"],
    "b": ["mood", "sleep", "anxiety", "dose", "panic", "focus"],
}


def make_text_dir(d):
    """A tiny BERT (random weights, saved as if pre-trained), its tokenizer, and a CSV of
    two domains x two classes."""
    import csv

    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

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


VIT = {"img_size": 8, "patch_size": 4}  # timm test_vit on 8x8 grey inputs


def make_vit_base(path, seed=123):
    """A 'pre-trained' test_vit saved to a file: the base a LoRA run names."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    vit = timm.create_model("test_vit", num_classes=0, in_chans=1, **VIT)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    return path


def lora_spec_dict(base, name="lora", **over):
    """A LoRA DANN job on the synthetic 8x8 images, over a test_vit base file."""
    return synthetic_spec(**{
        "name": name, "model": {"backbone": "timm/test_vit", "pretrained": str(base), "bottleneck_dim": 8,
                                "backbone_kwargs": VIT},
        "data": {"benchmark": "synthetic", "source": "a", "target": "b",
                 "options": {"n": 96, "dim": 64, "image": True}},
        "finetune": {"lora": {"rank": 4, "alpha": 8}}, "method": {"name": "dann", "params": {"disc_hidden": [16]}},
        "optim": {"lr": 0.05}, "train__batch_size": 16, **over,
    })  # fmt: skip
