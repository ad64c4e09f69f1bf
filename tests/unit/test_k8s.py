"""k8s/: the image pins, the kustomize overlays and the manifests rendered from job specs, all
validated offline against the KubeRay CRDs (strict) and Kubernetes' core schemas; the submit
command's checks that need no cluster."""

import os
import re
import shutil
import subprocess

import pytest
import tomllib
import yaml
from conftest import ROOT
from packaging.requirements import Requirement
from shiftray.cluster import k8s
from shiftray.cluster.validate import validate_docs
from shiftray.errors import UserInputError

CRDS = os.environ.get("SHIFTRAY_KUBERAY_CRDS")
needs_crds = pytest.mark.skipif(
    not CRDS, reason="SHIFTRAY_KUBERAY_CRDS is unset (.ci/run sets it to ../shared/kuberay-crds)"
)
needs_kubectl = pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl (kustomize) not on PATH")
OVERLAYS = sorted(p.name for p in (ROOT / "k8s/overlays").iterdir())


def dockerfile_ray() -> str:
    return re.search(r"^ARG RAY_VERSION=(\S+)$", (ROOT / "k8s/Dockerfile").read_text(), re.M).group(1)


def pyproject_deps() -> list[Requirement]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [Requirement(d) for d in meta["project"]["dependencies"]]


def test_the_image_pins_the_ray_that_pyproject_pins_and_that_runs_here():
    import ray

    ray_req = next(r for r in pyproject_deps() if r.name == "ray")
    assert ray_req.specifier.contains(dockerfile_ray())
    assert dockerfile_ray() == ray.__version__
    for f in (ROOT / "k8s/base").glob("ray*.yaml"):  # every rayVersion in the manifests
        assert set(re.findall(r'rayVersion: "([^"]+)"', f.read_text())) == {dockerfile_ray()}, f


def test_the_lock_satisfies_every_runtime_dependency():
    lock = {}
    for line in (ROOT / "k8s/requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            lock[name] = version
    for req in pyproject_deps():
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in lock, f"{req.name} is not in k8s/requirements.lock (shiftray k8s lock)"
        assert req.specifier.contains(lock[name]), f"{name}=={lock[name]} does not satisfy {req}"
    assert lock["ray"] == dockerfile_ray()
    assert not [n for n in lock if n == "triton" or n.startswith("nvidia-")]  # torch's own


def rendered(overlay: str) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s/overlays" / overlay)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d]


def containers(doc: dict) -> list[dict]:
    """Every container of every pod template in a manifest."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            found.extend(c for c in node.get("containers", []) if isinstance(c, dict))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    return found


@needs_kubectl
@needs_crds
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_and_validates(overlay):
    docs = rendered(overlay)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["PersistentVolumeClaim", "RayCluster", "RayJob", "RayJob", "RayService"]
    assert validate_docs(docs, CRDS) == []
    for d in docs:
        for c in containers(d):  # one image, tagged per overlay; requests and limits everywhere
            assert c["image"] == f"shiftray:0.1.0-{overlay}", (d["metadata"]["name"], c["name"])
            assert c["resources"]["requests"] and c["resources"]["limits"]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            for env in c.get("env", []):  # credentials only by reference to a Secret
                if re.search(r"KEY|SECRET|TOKEN|PASSWORD", env["name"]):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], env


@needs_crds
def test_a_misspelt_or_mistyped_field_fails_validation():
    job = yaml.safe_load((ROOT / "k8s/base/rayjob-run.yaml").read_text())
    assert validate_docs([job], CRDS) == []
    job["spec"]["shutdownAfterJobFinish"] = True  # the field is shutdownAfterJobFinishes
    cluster = job["spec"]["rayClusterSpec"]
    cluster["workerGroupSpecs"][0]["replicas"] = "two"
    cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    errors = "\n".join(validate_docs([job], CRDS))
    assert "'shutdownAfterJobFinish' was unexpected" in errors
    assert "'two' is not of type 'integer'" in errors
    assert "'imagePullPolicyy' was unexpected" in errors
    pvc = yaml.safe_load((ROOT / "k8s/base/storage.yaml").read_text())
    pvc["spec"]["acessModes"] = pvc["spec"].pop("accessModes")
    assert "'acessModes' was unexpected" in "\n".join(validate_docs([pvc], CRDS))


def workers(job: dict) -> dict:
    return job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]


@needs_kubectl
@needs_crds
def test_render_a_gpu_job_from_a_spec():
    """The issue's command: 4 GPU workers, the spec in a ConfigMap mounted on the head."""
    from shiftray.config.load import load_spec, spec_from_dict

    overrides = ["resources.num_workers=4", "resources.use_gpu=true"]
    out = k8s.render_job("jobs/digits/mnist-usps-dann.yaml", overrides, overlay="gpu")
    cm, job = out.docs
    assert validate_docs(out.docs, CRDS) == []
    group = workers(job)
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 4
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1 and limits["cpu"] == "1"
    assert group["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert job["spec"]["entrypoint"] == "shiftray -C /mnt/shiftray run /home/ray/job/spec.yaml"
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert {"name": "job-spec", "configMap": {"name": cm["metadata"]["name"]}} in head["volumes"]
    travelled = spec_from_dict(yaml.safe_load(cm["data"]["spec.yaml"]))
    assert travelled == load_spec(ROOT / "jobs/digits/mnist-usps-dann.yaml", overrides)
    assert list(yaml.safe_load_all(out.yaml())) == out.docs  # the YAML printed is what was checked
    with pytest.raises(UserInputError, match="needs --overlay gpu"):
        k8s.render_job("jobs/digits/mnist-usps-dann.yaml", overrides, overlay="cpu")


@needs_kubectl
@needs_crds
def test_render_a_search_and_a_service():
    out = k8s.render_job("jobs/amazon/dann-search.yaml", ["search.max_concurrent_trials=3"])
    cm, job = out.docs
    assert validate_docs(out.docs, CRDS) == []
    assert job["spec"]["entrypoint"].split()[3] == "tune"
    assert workers(job)["replicas"] == 3  # 3 concurrent one-worker trials
    assert yaml.safe_load(cm["data"]["spec.yaml"])["search"]["metric"] == "validator/im"
    (svc,) = k8s.render_serve("jobs/digits/mnist-usps-dann.yaml", [], None, overlay="gpu").docs
    assert validate_docs([svc], CRDS) == []
    app = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"][0]
    assert app["import_path"] == "shiftray.serving:build_app"
    assert app["args"]["models"] == {"mnist-usps-dann": "/mnt/shiftray/runs/mnist-usps-dann"}
    assert app["args"]["device"] == "cuda"


def test_cuda_serving_asks_ray_for_a_gpu():
    from shiftray.serving.app import build_app

    app = build_app({"models": {"m": "/nowhere"}, "device": "cuda"})
    assert app._bound_deployment.ray_actor_options["num_gpus"] == 1


def test_the_service_serves_as_shiftray_serve_does():
    """The RayService's pods run Serve with the environment `shiftray serve` sets."""
    from shiftray.serving.local import SERVING_ENVIRONMENT

    docs = [d for d in yaml.safe_load_all((ROOT / "k8s/base/rayservice.yaml").read_text()) if d]
    for c in containers(docs[0]):
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert {k: env.get(k) for k in SERVING_ENVIRONMENT} == SERVING_ENVIRONMENT, c["name"]


def test_submit_uploads_the_checkout_without_runs_or_git_and_checks_its_size(tmp_path):
    from shiftray.cluster.submit import files, stage

    for p in ("a.py", "runs/x/ckpt.bin", ".git/HEAD", ".venv/bin/python", "pkg/__pycache__/m.pyc", "pkg/m.py"):
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_bytes(b"x" * 1000)
    assert sorted(str(p.relative_to(tmp_path)) for p in files(tmp_path)) == ["a.py", "pkg/m.py"]
    staged = stage(tmp_path, "name: j\n", max_mb=1)
    assert (staged / ".shiftray/spec.yaml").read_text() == "name: j\n" and (staged / "pkg/m.py").is_file()
    (tmp_path / "big.npy").write_bytes(b"x" * 2**21)
    with pytest.raises(UserInputError, match=r"2\.0 MiB to upload \(limit 1 MiB.*big\.npy"):
        stage(tmp_path, "name: j\n", max_mb=1)


def test_submit_refuses_a_relative_output_dir_before_contacting_anything():
    from shiftray.cluster.submit import submit

    with pytest.raises(UserInputError, match="relative path lands in the job's temporary"):
        submit("jobs/digits/mnist-usps-erm.yaml", [], address="http://127.0.0.1:9")


def test_names_fit_kuberay_and_relative_paths_resolve_on_the_shared_volume():
    name = k8s.slug("2024 Office-Caltech10 CDAN+E search over the learning rate and more")
    assert name[0].isalpha() and len(f"{name}-12345678") <= 47  # KubeRay's RayJob name limit
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
    spec, text = k8s.load_job("jobs/amazon/shot.yaml", ["data.source=kitchen"])
    assert spec.method.params["source_checkpoint"] == "/mnt/shiftray/runs/amazon-source-kitchen"
    assert "/mnt/shiftray/runs/amazon-source-kitchen" in text  # what the ConfigMap carries


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_service_takes_api_keys_from_a_secret(overlay):
    """The keys file (shiftray keys add) reaches every serving pod read-only from the Secret,
    not optional (no pod comes up open by mistake), and the app's `auth.keys_file` names it."""
    from shiftray.serving.args import AppArgs

    svc = next(d for d in rendered(overlay) if d["kind"] == "RayService")
    args = AppArgs.model_validate(
        yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"][0]["args"]
    )
    cluster = svc["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]]
    pods += [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        (volume,) = [v for v in pod["volumes"] if "secret" in v]
        assert volume["secret"]["secretName"] == "shiftray-api-keys"
        assert not volume["secret"].get("optional") and volume["secret"]["defaultMode"] == 0o440
        (mount,) = [
            m for c in pod["containers"] for m in c["volumeMounts"] if m["name"] == volume["name"]
        ]
        assert mount["readOnly"] is True
        file = volume["secret"]["items"][0]
        assert (
            args.auth.keys_file == f"{mount['mountPath']}/{file['path']}"
            and file["key"] == "keys.yaml"
        )
    (served,) = k8s.render_serve("jobs/digits/mnist-usps-dann.yaml", [], None, overlay=overlay).docs
    assert yaml.safe_load(served["spec"]["serveConfigV2"])["applications"][0]["args"]["auth"] == {
        "keys_file": args.auth.keys_file
    }
