"""Zero-shot CLIP on a tiny, randomly initialised CLIP config (offline): the prompts, the
prompt-ensembled class embeddings recomputed by hand, and predictions that follow the
image-text similarity."""

import pytest
import torch
from shiftray.models.zeroshot import ZeroShotCLIP, embedding, prompts, unit

CLASSES = ["golden_retriever", "cat", "fire_truck"]
TEMPLATES = ("a photo of a {}.", "a drawing of a {}.")


@pytest.fixture(scope="module")
def clip():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    words = sorted({w for ps in prompts(CLASSES, TEMPLATES) for p in ps for w in p.replace(".", " .").split()})
    vocab = {"[PAD]": 0, "[BOS]": 1, "[EOS]": 2, "[UNK]": 3} | {w: i + 4 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 1), ("[EOS]", 2)]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    text = {"vocab_size": len(vocab), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 16, "pad_token_id": 0,
            "bos_token_id": 1, "eos_token_id": 2}  # fmt: skip
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "image_size": 32, "patch_size": 8}  # fmt: skip
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8))
    return model, tokenizer


def test_prompts_write_each_class_into_each_template():
    assert prompts(["golden_retriever", "cat"], TEMPLATES) == [
        ["a photo of a golden retriever.", "a drawing of a golden retriever."],
        ["a photo of a cat.", "a drawing of a cat."],
    ]


def test_class_embeddings_are_the_normalised_mean_of_normalised_prompt_embeddings(clip):
    model, tokenizer = clip
    zs = ZeroShotCLIP(model, tokenizer, CLASSES, TEMPLATES)
    for k, texts in enumerate(prompts(CLASSES, TEMPLATES)):
        per_prompt = []
        for t in texts:  # one prompt at a time: no padding involved
            ids = tokenizer(t, return_tensors="pt")
            out = model.get_text_features(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])
            per_prompt.append(unit(getattr(out, "pooler_output", out))[0])
        by_hand = unit(torch.stack(per_prompt).mean(dim=0))
        torch.testing.assert_close(zs.class_embeddings[k], by_hand, atol=1e-5, rtol=1e-5)
    assert not any(p.requires_grad for p in zs.parameters())  # frozen


def test_predictions_follow_the_image_text_similarity(clip):
    model, tokenizer = clip
    zs = ZeroShotCLIP(model, tokenizer, CLASSES, TEMPLATES)
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    logits, features = zs(images)
    out = model.get_image_features(pixel_values=images)
    image = unit(getattr(out, "pooler_output", out))
    torch.testing.assert_close(features, image)
    cosine = image @ zs.class_embeddings.T
    torch.testing.assert_close(logits, model.logit_scale.exp() * cosine)
    assert torch.equal(logits.argmax(1), cosine.argmax(1))
    # naming the classes in another order permutes the logits with them
    again = ZeroShotCLIP(model, tokenizer, CLASSES[::-1], TEMPLATES)
    torch.testing.assert_close(again(images)[0], logits.flip(1), atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def clip_dir(clip, tmp_path_factory):
    """The tiny CLIP saved as a folder, as a hub download would be."""
    model, tokenizer = clip
    d = tmp_path_factory.mktemp("clip")
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def _spec(clip_dir, **over):
    from conftest import synthetic_spec
    from shiftray.config.load import spec_from_dict

    return spec_from_dict(synthetic_spec(**{
        "data": {"benchmark": "synthetic", "source": "a", "target": "b", "options": {"dim": 64, "image": True}},
        "train__steps": 10, "train__eval_every": 10, "train__checkpoint_every": 10, **over,
    }))  # fmt: skip


def test_clip_image_tower_as_a_frozen_backbone(clip, clip_dir, tmp_path):
    from shiftray.data.loading import load_job_data
    from shiftray.models.build import build_model
    from shiftray.models.zeroshot import clip_pixels
    from shiftray.train.loop import train_loop_per_worker
    from shiftray.train.run import LoopConfig

    spec = _spec(clip_dir, model={"backbone": f"clip/{clip_dir}", "pretrained": True, "bottleneck_dim": 8},
                 finetune={"strategy": "feature-extraction"}, method={"name": "erm"})  # fmt: skip
    model = build_model(spec.model, (1, 8, 8), 3).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():  # grey 8x8 in [0, 1] -> CLIP's 3 x 32 x 32, normalised -> its embedding
        want = unit(embedding(clip[0].get_image_features(pixel_values=clip_pixels(x, 32))))
        torch.testing.assert_close(model.features(x), want, atol=1e-5, rtol=1e-5)
    result = train_loop_per_worker(LoopConfig(spec, tmp_path / "fe", load_job_data(spec)))
    assert result["trainable_params"] == sum(p.numel() for m in (model.bottleneck, model.head) for p in m.parameters())


def test_zero_shot_clip_as_the_distillation_teacher(clip, clip_dir, tmp_path):
    from shiftray.data.loading import load_job_data
    from shiftray.models.zeroshot import ZeroShotCLIP, clip_pixels
    from shiftray.train.loop import train_loop_per_worker
    from shiftray.train.run import LoopConfig, setup

    spec = _spec(clip_dir, model={"backbone": "mlp", "backbone_kwargs": {"hidden": [16]}, "bottleneck_dim": 8},
                 method={"name": "distill", "params": {"teacher": f"zeroshot:{clip_dir}"}})  # fmt: skip
    data = load_job_data(spec)
    run = setup(LoopConfig(spec, tmp_path / "setup", data))
    teacher = run.method.teacher
    x = torch.from_numpy(data.target_test.x[:5])
    by_hand = ZeroShotCLIP(clip[0], clip[1], ["c0", "c1", "c2"])  # the job's class names
    with torch.no_grad():
        torch.testing.assert_close(teacher(x)[0], by_hand(clip_pixels(x, 32))[0], atol=1e-5, rtol=1e-5)
    assert not any(p.requires_grad for p in teacher.parameters())
    result = train_loop_per_worker(LoopConfig(spec, tmp_path / "kd", data))
    assert result["step"] == 10
