import pytest
from conftest import ROOT, synthetic_spec
from shiftray.config.load import SpecError, apply_overrides, load_spec, spec_from_dict


def test_valid_spec_and_defaults():
    spec = spec_from_dict(synthetic_spec())
    assert spec.method.name == "dann"
    assert spec.method.resolved_params().trade_off == 1.0
    assert spec.optim.schedule == "inv"


def test_unknown_method_lists_registered():
    with pytest.raises(SpecError) as e:
        spec_from_dict(synthetic_spec(method__name="dannn"))
    msg = str(e.value)
    assert "method.name" in msg and "'dannn'" in msg
    assert "dann" in msg and "erm" in msg


def test_invalid_field_value_names_field_and_allowed():
    with pytest.raises(SpecError) as e:
        spec_from_dict(synthetic_spec(optim__name="sgdd"))
    msg = str(e.value)
    assert "optim.name" in msg and "'sgdd'" in msg and "'adamw'" in msg


def test_unknown_key_and_bad_method_param():
    with pytest.raises(SpecError, match=r"train\.stepz"):
        spec_from_dict(synthetic_spec(train__stepz=3))
    with pytest.raises(SpecError, match=r"method\.params\.trade_off"):
        spec_from_dict(synthetic_spec(method__params={"trade_off": "lots"}))


def test_a_misspelt_key_gets_the_closest_names():
    with pytest.raises(SpecError, match=r"train\.stepz: .*did you mean steps\?"):
        spec_from_dict(synthetic_spec(train__stepz=3))
    with pytest.raises(SpecError, match=r"optim\.weight_decy: .*did you mean weight_decay\?"):
        spec_from_dict(synthetic_spec(optim__weight_decy=0.1))


def test_an_override_that_is_not_yaml_is_one_line():
    with pytest.raises(SpecError) as e:
        apply_overrides({}, ["train.steps=["])
    assert "override 'train.steps=['" in str(e.value) and "\n" not in str(e.value)


def test_unknown_domain_lists_domains():
    with pytest.raises(SpecError, match=r"not a domain of 'digits'; allowed: mnist, usps"):
        spec_from_dict(
            synthetic_spec(data={"benchmark": "digits", "source": "svhn", "target": "usps"})
        )


def test_batch_must_split_over_workers():
    with pytest.raises(SpecError, match="divisible"):
        spec_from_dict(synthetic_spec(train__batch_size=33, resources__num_workers=2))


def test_overrides_parse_yaml_values(tmp_path):
    import yaml

    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(synthetic_spec()))
    spec = load_spec(
        path, ["train.steps=7", "method.params.disc_hidden=[8, 8]", "optim.nesterov=false"]
    )
    assert spec.train.steps == 7
    assert spec.method.resolved_params().disc_hidden == [8, 8]
    assert spec.optim.nesterov is False
    with pytest.raises(SpecError, match="section.field=value"):
        apply_overrides({}, ["train.steps"])


@pytest.mark.parametrize(
    "uri, ok",
    [
        ("s3://bucket/runs", None),
        ("gs://bucket/runs", None),
        ("file:///shared/runs", None),
        ("/mnt/shared/runs", None),
        ("abfss://runs@account.dfs.core.windows.net/shiftray", None),
        ("shared/runs", "relative path"),
        ("~/runs", "'~' is not expanded"),
        ("ftp://host/runs", "scheme 'ftp' is not a pyarrow.fs filesystem; allowed: file, s3"),
        ("s3://AKIA:secret@bucket/runs", "credentials in the URI"),
        ("s3://bucket/runs?access_key=AKIA&secret_key=x", "credentials in the URI's query"),
        ("s3://bucket/runs?region=eu-west-1&scheme=http", None),
        ("s3:///runs", "names no bucket"),
    ],
)
def test_storage_path_is_checked_before_ray_starts(uri, ok):
    spec = synthetic_spec(tracking={"wandb": "disabled", "storage_path": uri})
    if ok is None:
        assert spec_from_dict(spec).tracking.storage_path == uri
    else:
        with pytest.raises(SpecError, match=r"tracking\.storage_path") as e:
            spec_from_dict(spec)
        assert ok in str(e.value)


def test_the_workers_of_an_existing_cluster_get_settings_never_secrets(monkeypatch):
    from shiftray.train.launch import forwarded_env

    for k, v in {"SHIFTRAY_DATA_DIR": "/data", "AWS_ENDPOINT_URL_S3": "http://minio:9000",
                 "AWS_REGION": "eu-west-1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
                 "AWS_SECRET_ACCESS_KEY": "s", "AWS_ACCESS_KEY_ID": "a", "WANDB_API_KEY": "k",
                 "HF_TOKEN": "t", "HOME": "/root"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    got = forwarded_env()
    assert {"SHIFTRAY_DATA_DIR", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "HF_HUB_OFFLINE",
            "WANDB_MODE"} <= set(got)  # fmt: skip
    assert not {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "WANDB_API_KEY", "HF_TOKEN",
                "HOME"} & set(got)  # fmt: skip


def test_placeholders_follow_the_spec_s_own_domains(tmp_path, monkeypatch):
    """A SHOT job's source run named from its own domains: a pair override moves it along. A
    relative run path is made absolute where the command runs (`shiftray -C DIR`), so Ray
    workers, whose working directory differs, find it."""
    monkeypatch.chdir(tmp_path)
    spec = load_spec(ROOT / "jobs/amazon/shot.yaml", ["data.source=kitchen", "data.target=dvd"])
    assert spec.method.params["source_checkpoint"] == str(tmp_path / "runs/amazon-source-kitchen")
    distill = load_spec(ROOT / "jobs/digits/mnist-usps-distill.yaml",
                        ["data.source=usps", "data.target=mnist"])  # fmt: skip
    assert distill.method.params["teacher"] == str(tmp_path / "runs/usps-mnist-dann")
    from shiftray.config.load import absolute_paths

    raw = {"data": {"options": {"path": "d.csv", "root": "~/images"}},
           "method": {"params": {"teacher": "s3://bucket/t", "source_checkpoint": "/abs/run"}}}  # fmt: skip
    assert absolute_paths(raw) == {
        "data": {"options": {"path": str(tmp_path / "d.csv"), "root": "~/images"}},
        "method": {"params": {"teacher": "s3://bucket/t", "source_checkpoint": "/abs/run"}}}
    assert load_spec(ROOT / "jobs/digits/usps-mnist-dann.yaml").name == "usps-mnist-dann"
    with pytest.raises(SpecError, match=r"name: unknown placeholder \{data.sorce\}"):
        load_spec(ROOT / "jobs/amazon/shot.yaml", ["name=x-{data.sorce}"])


def test_base_spec_merges_and_reports_cycles(tmp_path):
    """A spec with ``base:`` merges its sections over the base's (mappings key by key, lists
    replaced); a missing base and a cycle are errors naming the files."""
    from shiftray.config.load import SpecError, load_raw

    (tmp_path / "job.yaml").write_text(
        "name: j\ndata: {benchmark: amazon, source: books, target: dvd}\n"
        "method: {name: dann, params: {trade_off: 1.0, disc_hidden: [50]}}\n"
    )
    (tmp_path / "s.yaml").write_text(
        "base: job.yaml\ndata: {target: kitchen}\nmethod: {params: {disc_hidden: [8, 8]}}\n"
    )
    raw = load_raw(tmp_path / "s.yaml", ["method.params.trade_off=0.5"])
    assert raw["data"] == {"benchmark": "amazon", "source": "books", "target": "kitchen"}
    assert raw["method"] == {"name": "dann", "params": {"trade_off": 0.5, "disc_hidden": [8, 8]}}
    assert "base" not in raw
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(SpecError, match="extends itself"):
        load_raw(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(SpecError, match=r"nowhere.yaml does not exist \(the base of"):
        load_raw(tmp_path / "c.yaml")
